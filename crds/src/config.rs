//! The rendered sidecar config: what the operator writes into the ConfigMap and the sidecar reads and validates.

use std::collections::HashSet;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::policy::{Acls, Quotas, Route};
use crate::{Error, Result};

/// File name of the rendered config inside the ConfigMap (and so inside the mounted directory).
pub const CONFIG_FILE: &str = "config.yaml";
/// Where the injected sidecar finds the mounted ConfigMap.
pub const CONFIG_MOUNT_DIR: &str = "/etc/kproxy/config";
/// Where the injected sidecar finds mounted Secrets: `<root>/<secret name>/<key>`.
pub const SECRETS_MOUNT_DIR: &str = "/etc/kproxy/secrets";

/// The rendered config's schema, `major.minor`. A sidecar reads every config of its major version: a newer minor
/// only adds fields, which it reports ([`SidecarConfig::unknown_fields`]) and otherwise ignores. A newer major is
/// refused ([`crate::Error::NewerSchema`]) and the config being served stays.
pub const SCHEMA_VERSION: &str = "1.0";
/// The major version of [`SCHEMA_VERSION`].
const SCHEMA_MAJOR: u64 = 1;

/// Everything one sidecar needs to serve a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarConfig {
    /// `major.minor` of the schema the config was rendered with ([`SCHEMA_VERSION`]); absent means 1.0 (configs
    /// rendered before the field existed, hand-written ones).
    #[serde(default = "default_schema_version")]
    pub schema_version: String,
    /// `namespace/name` of the policy this was rendered from (empty for hand-written configs).
    #[serde(default)]
    pub policy: String,
    /// The policy's `metadata.generation` at render time, so a pod shows which edit it runs.
    #[serde(default)]
    pub generation: i64,
    /// The policy's `metadata.uid`. A policy deleted and created again starts its generations over, so
    /// generations are only compared between renderings of one policy object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy_uid: String,
    /// When the operator rendered this content, in milliseconds since the Unix epoch (0: unknown). It orders
    /// renderings of one generation and gives the sidecar its propagation delay; re-rendering unchanged content
    /// keeps the time, so an unchanged config stays byte-identical.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rendered_at_ms: u64,
    pub clusters: Vec<Cluster>,
    /// Cluster for anything no route matches; defaults to the first cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Absent: everything is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acls: Option<Acls>,
    #[serde(default)]
    pub quotas: Quotas,
    #[serde(default)]
    pub failover: FailoverSettings,
    /// Client SASL the sidecar answers itself; left out of the rendering while it has its defaults.
    #[serde(default, skip_serializing_if = "ClientSasl::is_default")]
    pub client_sasl: ClientSasl,
}

/// How the sidecar answers its own clients' SASL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientSasl {
    /// Answer SCRAM-SHA-256/512 for the cluster's own username and password. Off by default: it is the only
    /// local mechanism that checks a password, so it lets an application try passwords it was never given.
    #[serde(default)]
    pub scram: bool,
    /// A failed authentication is answered this late, and each further failure on the same connection twice as
    /// late (at most [`MAX_FAILED_AUTHENTICATION_DELAY_MS`]), as Kafka's `connection.failed.authentication.delay.ms`.
    #[serde(default = "default_failed_authentication_delay_ms")]
    pub failed_authentication_delay_ms: u64,
}

/// The longest a failed authentication is delayed, however many failures the connection had.
pub const MAX_FAILED_AUTHENTICATION_DELAY_MS: u64 = 30_000;

impl Default for ClientSasl {
    fn default() -> Self {
        ClientSasl { scram: false, failed_authentication_delay_ms: default_failed_authentication_delay_ms() }
    }
}

impl ClientSasl {
    fn is_default(&self) -> bool {
        *self == ClientSasl::default()
    }
}

/// Kafka's default `connection.failed.authentication.delay.ms`.
fn default_failed_authentication_delay_ms() -> u64 {
    100
}

/// One upstream Kafka cluster (one datacenter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub name: String,
    pub bootstrap_servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<Sasl>,
}

impl Cluster {
    /// Whether two versions of a cluster can share upstream connections (same addresses and security).
    pub fn same_connection(&self, other: &Cluster) -> bool {
        self.bootstrap_servers == other.bootstrap_servers && self.tls == other.tls && self.sasl == other.sasl
    }
}

/// Upstream TLS. Paths are absolute, or relative to the sidecar's secrets directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    /// PEM CA bundle; absent means the platform's roots are not used and the connection fails closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Client certificate and key for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Name to verify instead of each broker's advertised host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Skips hostname verification (the chain is still verified). For brokers advertising IPs without SANs.
    #[serde(default)]
    pub insecure_skip_hostname_verification: bool,
}

/// SASL mechanisms the sidecar speaks upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "OAUTHBEARER")]
    OauthBearer,
}

/// Upstream SASL; credentials live in files so Secret rotations are picked up without a new config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// OAUTHBEARER token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

/// When a route's cluster counts as unreachable, and how often it is probed to switch back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSettings {
    /// A cluster failing every connection and metadata request for this long is unreachable.
    #[serde(default = "default_unreachable_after_ms")]
    pub unreachable_after_ms: u64,
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
}

impl Default for FailoverSettings {
    fn default() -> Self {
        Self { unreachable_after_ms: default_unreachable_after_ms(), probe_interval_ms: default_probe_interval_ms() }
    }
}

fn default_schema_version() -> String {
    "1.0".to_string()
}

/// The major version of a `major.minor` schema version.
fn schema_major(version: &str) -> Option<u64> {
    let (major, minor) = version.split_once('.')?;
    minor.parse::<u64>().ok()?;
    major.parse().ok()
}

/// Refuses a config of another major schema version before its body is read: a newer major may have changed what
/// a field means, so its parse (or its success) says nothing useful.
fn check_schema(text: &str) -> Result<()> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Version {
        #[serde(default)]
        schema_version: Option<String>,
    }
    let Some(found) = serde_yaml_ng::from_str::<Version>(text)?.schema_version else { return Ok(()) };
    match schema_major(&found) {
        Some(major) if major == SCHEMA_MAJOR => Ok(()),
        Some(major) if major > SCHEMA_MAJOR => Err(Error::NewerSchema { found, supported: SCHEMA_VERSION }),
        _ => Err(Error::Invalid(vec![format!(
            "schemaVersion: {found:?} is not a version this sidecar reads ({SCHEMA_VERSION})"
        )])),
    }
}

fn default_unreachable_after_ms() -> u64 {
    5_000
}

fn default_probe_interval_ms() -> u64 {
    1_000
}

impl SidecarConfig {
    /// Parses and validates a config from YAML (or JSON), collecting every problem before failing.
    pub fn parse(text: &str) -> Result<Self> {
        check_schema(text)?;
        let config: SidecarConfig = serde_yaml_ng::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// The fields of `text` no type of this version knows, as paths (`clusters.0.tls.pinnedKey`): what a newer
    /// minor added. They do not stop the config from loading; the sidecar counts and logs them.
    pub fn unknown_fields(text: &str) -> Vec<String> {
        let mut unknown = Vec::new();
        let parsed: Result<SidecarConfig, _> =
            serde_ignored::deserialize(serde_yaml_ng::Deserializer::from_str(text), |path| {
                // `?` stands for the Some of an optional field: not part of the path as written.
                unknown.push(path.to_string().replace(".?", ""))
            });
        // A config that does not parse is reported by `parse`; it has no fields to speak of.
        if parsed.is_err() {
            unknown.clear();
        }
        unknown
    }

    /// Reads a config from a file, or from `config.yaml` inside a mounted ConfigMap directory.
    pub fn load(path: &Path) -> Result<(Self, String)> {
        let file = if path.is_dir() { path.join(CONFIG_FILE) } else { path.to_path_buf() };
        let text =
            std::fs::read_to_string(&file).map_err(|source| Error::Io { path: file.display().to_string(), source })?;
        let config = Self::parse(&text)?;
        Ok((config, text))
    }

    /// Renders the config as the ConfigMap holds it.
    pub fn to_yaml(&self) -> Result<String> {
        Ok(serde_yaml_ng::to_string(self)?)
    }

    /// The cluster anything unrouted goes to.
    pub fn default_cluster_name(&self) -> &str {
        self.default_cluster.as_deref().or_else(|| self.clusters.first().map(|c| c.name.as_str())).unwrap_or_default()
    }

    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// Checks what serde cannot: names are unique and every reference resolves. Every problem is reported.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.clusters.is_empty() {
            problems.push("clusters: at least one cluster is required".to_string());
        }
        let mut names = HashSet::new();
        for (i, cluster) in self.clusters.iter().enumerate() {
            if cluster.name.is_empty() {
                problems.push(format!("clusters[{i}].name: must not be empty"));
            }
            if !names.insert(cluster.name.as_str()) {
                problems.push(format!("clusters[{i}].name: duplicate cluster name {:?}", cluster.name));
            }
            if cluster.bootstrap_servers.is_empty() {
                problems.push(format!("clusters[{i}].bootstrapServers: at least one address is required"));
            }
            for (j, server) in cluster.bootstrap_servers.iter().enumerate() {
                if !valid_host_port(server) {
                    problems.push(format!("clusters[{i}].bootstrapServers[{j}]: {server:?} is not host:port"));
                }
            }
            if let Some(sasl) = &cluster.sasl {
                let needs = match sasl.mechanism {
                    SaslMechanism::OauthBearer => sasl.token_file.is_none(),
                    _ => sasl.username_file.is_none() || sasl.password_file.is_none(),
                };
                if needs {
                    problems.push(format!(
                        "clusters[{i}].sasl: {:?} needs {}",
                        sasl.mechanism,
                        if sasl.mechanism == SaslMechanism::OauthBearer {
                            "tokenFile"
                        } else {
                            "usernameFile and passwordFile"
                        }
                    ));
                }
            }
            if let Some(tls) = &cluster.tls
                && tls.cert_file.is_some() != tls.key_file.is_some()
            {
                problems.push(format!("clusters[{i}].tls: certFile and keyFile go together"));
            }
        }
        if let Some(default) = &self.default_cluster
            && !names.contains(default.as_str())
        {
            problems.push(format!("defaultCluster: {default:?} is not one of the clusters"));
        }
        for (i, route) in self.routes.iter().enumerate() {
            let m = &route.matches;
            let set =
                [&m.topic, &m.topic_prefix, &m.group, &m.group_prefix, &m.transactional_id, &m.transactional_id_prefix]
                    .iter()
                    .filter(|f| f.is_some())
                    .count();
            if set != 1 {
                problems.push(format!("routes[{i}].match: exactly one of topic, topicPrefix, group, groupPrefix, transactionalId, transactionalIdPrefix must be set"));
            }
            if !names.contains(route.cluster.as_str()) {
                problems.push(format!("routes[{i}].cluster: {:?} is not one of the clusters", route.cluster));
            }
            for (j, fallback) in route.failover.iter().enumerate() {
                if !names.contains(fallback.as_str()) {
                    problems.push(format!("routes[{i}].failover[{j}]: {fallback:?} is not one of the clusters"));
                }
            }
        }
        if let Some(acls) = &self.acls {
            for (i, rule) in acls.rules.iter().enumerate() {
                if rule.operations.is_empty() {
                    problems.push(format!("acls.rules[{i}].operations: at least one operation is required"));
                }
            }
        }
        let mut clients = HashSet::new();
        for (i, o) in self.quotas.client_id_overrides.iter().enumerate() {
            if !clients.insert(o.client_id.as_str()) {
                problems.push(format!("quotas.clientIdOverrides[{i}].clientId: duplicate {:?}", o.client_id));
            }
        }
        for (what, rate) in [
            ("quotas.producerByteRate", self.quotas.producer_byte_rate),
            ("quotas.consumerByteRate", self.quotas.consumer_byte_rate),
            ("quotas.requestRate", self.quotas.request_rate),
        ] {
            if rate == Some(0) {
                problems.push(format!("{what}: must be positive (leave it out for no limit)"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(Error::Invalid(problems)) }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl SidecarConfig {
    /// Whether this config may replace `current`, which is being served. The volume and the API deliver the same
    /// renderings in any order; an older one arriving after a newer one must not win. Renderings of one policy
    /// object are ordered by (generation, render time); a different policy object (recreated) by render time.
    /// Hand-written configs (no policy generation) are always taken: there is nothing to order them by.
    pub fn supersedes(&self, current: &SidecarConfig) -> bool {
        if self.generation == 0 || current.generation == 0 {
            return true;
        }
        let same_object =
            self.policy_uid.is_empty() || current.policy_uid.is_empty() || self.policy_uid == current.policy_uid;
        if same_object {
            (self.generation, self.rendered_at_ms) >= (current.generation, current.rendered_at_ms)
        } else {
            self.rendered_at_ms >= current.rendered_at_ms
        }
    }
}

/// `sha256:<hex>` of the rendered text: the identity of a config shown in status and on `/metrics`.
pub fn config_hash(text: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

fn valid_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "clusters:\n- name: east\n  bootstrapServers: [\"127.0.0.1:9093\"]\n";

    #[test]
    fn minimal_config_parses_and_defaults_apply() {
        let c = SidecarConfig::parse(MINIMAL).unwrap();
        assert_eq!(c.default_cluster_name(), "east");
        assert!(c.acls.is_none());
        assert_eq!(c.failover, FailoverSettings::default());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = "clusters:\n- name: east\n  bootstrapServers: [\"nohost\"]\n- name: east\n  bootstrapServers: []\ndefaultCluster: west\nroutes:\n- match: {}\n  cluster: north\n";
        let Err(Error::Invalid(problems)) = SidecarConfig::parse(text) else { panic!("expected invalid") };
        let all = problems.join("\n");
        for needle in [
            "bootstrapServers[0]",
            "duplicate cluster",
            "at least one address",
            "defaultCluster",
            "routes[0].match",
            "routes[0].cluster",
        ] {
            assert!(all.contains(needle), "missing {needle} in {all}");
        }
    }

    #[test]
    fn a_rendering_supersedes_only_an_older_one_of_the_same_policy() {
        let at = |uid: &str, generation: i64, rendered_at_ms: u64| SidecarConfig {
            policy_uid: uid.into(),
            generation,
            rendered_at_ms,
            ..SidecarConfig::parse(MINIMAL).unwrap()
        };
        assert!(at("a", 3, 100).supersedes(&at("a", 2, 200)), "a newer generation wins whatever its time");
        assert!(!at("a", 2, 200).supersedes(&at("a", 3, 100)), "never an older generation after a newer one");
        assert!(at("a", 3, 300).supersedes(&at("a", 3, 100)), "a later rendering of one generation");
        assert!(!at("a", 3, 100).supersedes(&at("a", 3, 300)));
        assert!(at("b", 1, 500).supersedes(&at("a", 9, 400)), "a recreated policy starts its generations over");
        assert!(!at("b", 1, 300).supersedes(&at("a", 9, 400)));
        assert!(at("", 0, 0).supersedes(&at("a", 9, 400)), "a hand-written config is always taken");
        assert!(at("a", 1, 1).supersedes(&at("", 0, 0)));
        let text = at("a", 3, 1_700_000_000_123).to_yaml().unwrap();
        assert!(text.contains("policyUid: a") && text.contains("renderedAtMs: 1700000000123"), "{text}");
        assert!(!SidecarConfig::parse(MINIMAL).unwrap().to_yaml().unwrap().contains("renderedAtMs"));
    }

    #[test]
    fn a_newer_major_schema_is_refused_before_its_body_is_read() {
        // A body this version could not parse: the refusal names the version, not a field.
        let text = "schemaVersion: \"2.0\"\nclusters: {east: [\"127.0.0.1:9093\"]}\n";
        let err = SidecarConfig::parse(text).unwrap_err();
        assert!(matches!(&err, Error::NewerSchema { found, .. } if found == "2.0"), "{err}");
        assert!(err.to_string().contains("newer than this sidecar reads (1.0)"), "{err}");
        for bad in ["\"0.9\"", "\"one\"", "\"1\""] {
            let err = SidecarConfig::parse(&format!("schemaVersion: {bad}\n{MINIMAL}")).unwrap_err();
            assert!(err.to_string().contains("schemaVersion"), "{bad}: {err}");
        }
        let newer_minor = format!("schemaVersion: \"1.7\"\n{MINIMAL}");
        assert_eq!(SidecarConfig::parse(&newer_minor).unwrap().schema_version, "1.7");
        assert_eq!(SidecarConfig::parse(MINIMAL).unwrap().schema_version, "1.0", "absent means 1.0");
    }

    #[test]
    fn unknown_fields_at_any_depth_are_reported_and_the_config_still_loads() {
        let text = "schemaVersion: \"1.3\"\nsinceV13: true\nclusters:\n- name: east\n  bootstrapServers: [\"127.0.0.1:9093\"]\n  tls: {caFile: ca.crt, pinnedKey: abc}\nquotas: {requestRate: 5, burst: 10}\n";
        let config = SidecarConfig::parse(text).unwrap();
        assert_eq!(config.quotas.request_rate, Some(5));
        let unknown: std::collections::BTreeSet<String> = SidecarConfig::unknown_fields(text).into_iter().collect();
        let expected: std::collections::BTreeSet<String> =
            ["sinceV13", "clusters.0.tls.pinnedKey", "quotas.burst"].map(String::from).into();
        assert_eq!(unknown, expected);
        assert!(SidecarConfig::unknown_fields(MINIMAL).is_empty());
        assert!(SidecarConfig::unknown_fields("clusters: 3").is_empty(), "an unparsable config has none to report");
    }

    #[test]
    fn round_trips_through_yaml_and_hash_is_stable() {
        let c = SidecarConfig::parse(MINIMAL).unwrap();
        let text = c.to_yaml().unwrap();
        assert!(text.starts_with("schemaVersion: '1.0'\n"), "the version leads the rendered config: {text}");
        assert_eq!(SidecarConfig::parse(&text).unwrap(), c);
        assert_eq!(config_hash(&text), config_hash(&text));
        assert!(config_hash(&text).starts_with("sha256:"));
    }
}
