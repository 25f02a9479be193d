//! The `KafkaProxyPolicy` custom resource (`kproxy.dev/v1alpha1`): the spec users write, its schema checks, and
//! the status the operator reports.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, MicroTime};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::SaslMechanism;
use crate::policy::{Acls, Quotas, Route};

/// Name of the `Ready` condition in the policy's status.
pub const READY: &str = "Ready";
/// Condition type: `True` while injected pods run without a Secret the policy now names (Secret volumes are fixed
/// when a pod is created, so only a restart gives it to them).
pub const PODS_NEED_RESTART: &str = "PodsNeedRestart";

/// Which pods use the policy, which Kafka clusters they reach, and what they may do there.
///
/// Cross-references (routes, failover lists and `defaultCluster` naming defined clusters, unique cluster names)
/// are checked by the apiserver through CEL, so `kubectl apply` refuses a policy that breaks them.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kproxy.dev",
    version = "v1alpha1",
    kind = "KafkaProxyPolicy",
    doc = "A kproxy policy: which Kafka clusters the selected pods' sidecars reach, and what they may do there.",
    namespaced,
    shortname = "kpp",
    category = "kafka",
    category = "kproxy",
    status = "KafkaProxyPolicyStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name": "Clusters", "type": "string", "jsonPath": ".status.clusters"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name": "Message", "type": "string", "priority": 1, "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[cfg_attr(test, kube(cel))]
#[x_kube(validation = Rule::new("self.clusters.all(c, self.clusters.exists_one(d, d.name == c.name))")
    .message("cluster names must be unique: two entries in spec.clusters have the same name")
    .field_path(".clusters"))]
#[x_kube(validation = Rule::new("!has(self.defaultCluster) || self.clusters.exists(c, c.name == self.defaultCluster)")
    .message(Message::Expression("'defaultCluster ' + self.defaultCluster + ' is not the name of any entry in spec.clusters'".into()))
    .field_path(".defaultCluster"))]
#[x_kube(validation = Rule::new("!has(self.routes) || self.routes.all(r, self.clusters.exists(c, c.name == r.cluster))")
    .message("every route's cluster must be the name of an entry in spec.clusters")
    .field_path(".routes"))]
#[x_kube(validation = Rule::new("!has(self.routes) || self.routes.all(r, !has(r.failover) || r.failover.all(f, self.clusters.exists(c, c.name == f)))")
    .message("every cluster in a route's failover list must be the name of an entry in spec.clusters")
    .field_path(".routes"))]
#[x_kube(validation = Rule::new("!has(self.routes) || self.routes.all(r, !has(r.failover) || !(r.cluster in r.failover))")
    .message("a route's failover list must not contain the route's own cluster")
    .field_path(".routes"))]
#[serde(rename_all = "camelCase")]
pub struct KafkaProxyPolicySpec {
    /// Which injected pods in this namespace use the policy; empty selects every injected pod. A pod can also name
    /// its policy with the `kproxy.dev/policy` annotation.
    #[serde(default)]
    pub pod_selector: LabelSelector,
    /// Upstream Kafka clusters, typically one per datacenter.
    #[schemars(length(min = 1, max = 16))]
    pub clusters: Vec<ClusterSpec>,
    /// Cluster for topics and groups no route matches; defaults to the first cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub default_cluster: Option<String>,
    /// Routes by topic, group or transactional id; the first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub routes: Vec<Route>,
    /// ACLs with Kafka semantics (a matching Deny beats any Allow). Absent: everything is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acls: Option<Acls>,
    /// Pod-wide quotas with Kafka semantics (throttle, never drop). Absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Quotas>,
    /// When a route's cluster counts as unreachable and how often it is probed to switch back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverSpec>,
    /// How the sidecar answers the application's own SASL handshake (PLAIN and OAUTHBEARER are always accepted
    /// on the pod's loopback; SCRAM only when turned on here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_sasl: Option<ClientSaslSpec>,
}

/// Client SASL answered by the sidecar.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientSaslSpec {
    /// Accept SCRAM-SHA-256/512 from the application, for exactly the username and password of the cluster's own
    /// SASL Secret (for applications that keep the credentials they used against the brokers). Off by default:
    /// it lets the application try passwords.
    #[serde(default)]
    pub scram: bool,
    /// Milliseconds a failed authentication waits before its answer, doubling with each further failure on the
    /// same connection up to 30 s (default 100, as Kafka's connection.failed.authentication.delay.ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 30000))]
    pub failed_authentication_delay_ms: Option<u64>,
}

/// One upstream Kafka cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Name that routes, failover lists and `defaultCluster` refer to (a DNS label).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// `host:port` addresses of some of the cluster's brokers.
    #[schemars(length(min = 1, max = 32), inner(length(max = 261), regex(pattern = r"^\S+:[0-9]{1,5}$")))]
    pub bootstrap_servers: Vec<String>,
    /// Upstream TLS; absent means plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Upstream SASL authentication; absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<SaslSpec>,
}

/// Upstream TLS: the CA to trust and, for mutual TLS, the client certificate, all read from Secrets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.certSecretRef) == has(self.keySecretRef)")
    .message("certSecretRef and keySecretRef go together"))]
#[x_kube(validation = Rule::new("!has(self.clientSecretRef) || !has(self.certSecretRef)")
    .message("use either clientSecretRef or certSecretRef/keySecretRef, not both"))]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// PEM CA bundle the brokers' certificates must chain to.
    pub ca_secret_ref: SecretKeyRef,
    /// PEM client certificate for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret_ref: Option<SecretKeyRef>,
    /// PEM private key for the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_ref: Option<SecretKeyRef>,
    /// A `kubernetes.io/tls` Secret holding the client certificate (`tls.crt`) and key (`tls.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretRef>,
    /// Name to verify instead of each broker's advertised host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub server_name: Option<String>,
    /// Skips hostname verification while still verifying the chain (for brokers advertising IPs without SANs).
    #[serde(default)]
    pub insecure_skip_hostname_verification: bool,
}

/// One key of a Secret in the policy's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the policy's namespace; mounted into the sidecar only.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A whole Secret in the policy's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the policy's namespace; mounted into the sidecar only.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Upstream SASL authentication with credentials from a Secret (rotations are picked up without a new config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaslSpec {
    /// SASL mechanism to authenticate upstream with: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER.
    pub mechanism: SaslMechanism,
    /// The Secret holding the credentials, and which of its keys hold what.
    pub secret_ref: SaslSecretRef,
}

/// The Secret holding SASL credentials and which keys hold what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaslSecretRef {
    /// Name of the Secret, in the policy's namespace; mounted into the sidecar only.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the username (PLAIN, SCRAM).
    #[serde(default = "default_username_key")]
    #[schemars(length(min = 1, max = 253))]
    pub username_key: String,
    /// Key holding the password (PLAIN, SCRAM).
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: String,
    /// Key holding the bearer token (OAUTHBEARER); `token` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub token_key: Option<String>,
}

/// Key of the OAUTHBEARER token when `tokenKey` is absent.
pub const DEFAULT_TOKEN_KEY: &str = "token";
/// Keys of a `kubernetes.io/tls` Secret.
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";

fn default_username_key() -> String {
    "username".to_string()
}

fn default_password_key() -> String {
    "password".to_string()
}

/// Failover timing; absent fields take the sidecar's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSpec {
    /// A cluster failing every connection and metadata request for this long is unreachable (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100))]
    pub unreachable_after_ms: Option<u64>,
    /// How often an unreachable cluster is probed to switch back (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100))]
    pub probe_interval_ms: Option<u64>,
}

/// What the operator last did with the policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaProxyPolicyStatus {
    /// `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// ConfigMap holding the rendered sidecar config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_name: Option<String>,
    /// `sha256:<hex>` of the rendered config in that ConfigMap; sidecars show the same on `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// When that config was rendered (it carries the same time, `renderedAtMs`): sidecars measure propagation
    /// from it, and re-rendering unchanged content keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered_at: Option<MicroTime>,
    /// The policy's cluster names, comma-separated, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<String>,
    /// `Ready`: True once the ConfigMap holds this generation and every referenced Secret exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One use of a Secret key by a policy, with the spec field that names it (for messages).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretKeyUse {
    pub secret: String,
    pub key: String,
    pub field: String,
}

/// Path of a Secret key as the rendered config names it: relative to the sidecar's secrets directory, where each
/// referenced Secret is mounted as a directory of its own (`SECRETS_MOUNT_DIR/<secret>/<key>`).
pub fn secret_file(secret: &str, key: &str) -> String {
    format!("{secret}/{key}")
}

impl KafkaProxyPolicySpec {
    /// Every Secret key the spec needs, in spec order.
    pub fn secret_keys(&self) -> Vec<SecretKeyUse> {
        let mut uses = Vec::new();
        let mut add = |secret: &str, key: &str, field: String| {
            uses.push(SecretKeyUse { secret: secret.to_string(), key: key.to_string(), field })
        };
        for (i, cluster) in self.clusters.iter().enumerate() {
            if let Some(tls) = &cluster.tls {
                let at = format!("spec.clusters[{i}].tls");
                add(&tls.ca_secret_ref.name, &tls.ca_secret_ref.key, format!("{at}.caSecretRef"));
                if let Some(r) = &tls.cert_secret_ref {
                    add(&r.name, &r.key, format!("{at}.certSecretRef"));
                }
                if let Some(r) = &tls.key_secret_ref {
                    add(&r.name, &r.key, format!("{at}.keySecretRef"));
                }
                if let Some(r) = &tls.client_secret_ref {
                    add(&r.name, TLS_CERT_KEY, format!("{at}.clientSecretRef"));
                    add(&r.name, TLS_KEY_KEY, format!("{at}.clientSecretRef"));
                }
            }
            if let Some(sasl) = &cluster.sasl {
                let r = &sasl.secret_ref;
                let at = format!("spec.clusters[{i}].sasl.secretRef");
                if sasl.mechanism == SaslMechanism::OauthBearer {
                    add(&r.name, r.token_key.as_deref().unwrap_or(DEFAULT_TOKEN_KEY), at);
                } else {
                    add(&r.name, &r.username_key, at.clone());
                    add(&r.name, &r.password_key, at);
                }
            }
        }
        uses
    }
}

/// The CRD as `crdgen` prints it and `crds/kafkaproxypolicies.yaml` holds it.
pub fn crd_yaml() -> crate::Result<String> {
    use kube::CustomResourceExt;
    Ok(serde_yaml_ng::to_string(&KafkaProxyPolicy::crd())?)
}

/// Names of every Secret the spec references, sorted and without duplicates: the Secrets the sidecar mounts.
pub fn referenced_secrets(spec: &KafkaProxyPolicySpec) -> Vec<String> {
    spec.secret_keys().into_iter().map(|u| u.secret).collect::<BTreeSet<_>>().into_iter().collect()
}

#[cfg(test)]
mod tests;
