//! Turns a `KafkaProxyPolicy` into the sidecar config its ConfigMap holds. Pure: no API calls, every problem
//! collected before failing.

use kproxy_api::config::{
    ClientSasl, Cluster, FailoverSettings, SCHEMA_VERSION, Sasl, SaslMechanism, SidecarConfig, Tls,
};
use kproxy_api::crd::{
    ClientSaslSpec, ClusterSpec, DEFAULT_TOKEN_KEY, KafkaProxyPolicy, KafkaProxyPolicySpec, TLS_CERT_KEY, TLS_KEY_KEY,
    TlsSpec, secret_file,
};
use kube::ResourceExt;

/// Renders the sidecar config for a policy, or every reason it cannot be rendered.
///
/// The apiserver's schema already refuses most mistakes; these checks repeat the ones the sidecar would refuse
/// (so a CRD installed without its CEL rules still cannot push a broken config) and add what the schema cannot
/// express, such as port ranges and duplicate client ids.
pub fn render(policy: &KafkaProxyPolicy) -> Result<SidecarConfig, Vec<String>> {
    let config =
        render_spec(&policy.spec, &format!("{}/{}", policy.namespace().unwrap_or_default(), policy.name_any()));
    let config = SidecarConfig {
        generation: policy.metadata.generation.unwrap_or_default(),
        policy_uid: policy.metadata.uid.clone().unwrap_or_default(),
        ..config
    };
    match config.validate() {
        Ok(()) => Ok(config),
        Err(kproxy_api::Error::Invalid(problems)) => Err(problems.into_iter().map(|p| format!("spec.{p}")).collect()),
        Err(other) => Err(vec![other.to_string()]),
    }
}

fn render_spec(spec: &KafkaProxyPolicySpec, policy: &str) -> SidecarConfig {
    let defaults = FailoverSettings::default();
    let failover = spec.failover.clone().unwrap_or_default();
    SidecarConfig {
        schema_version: SCHEMA_VERSION.to_string(),
        policy: policy.to_string(),
        generation: 0,
        policy_uid: String::new(),
        rendered_at_ms: 0,
        clusters: spec.clusters.iter().map(cluster).collect(),
        default_cluster: spec.default_cluster.clone(),
        routes: spec.routes.clone(),
        acls: spec.acls.clone(),
        quotas: spec.quotas.clone().unwrap_or_default(),
        failover: FailoverSettings {
            unreachable_after_ms: failover.unreachable_after_ms.unwrap_or(defaults.unreachable_after_ms),
            probe_interval_ms: failover.probe_interval_ms.unwrap_or(defaults.probe_interval_ms),
        },
        client_sasl: client_sasl(spec.client_sasl.as_ref()),
    }
}

fn client_sasl(spec: Option<&ClientSaslSpec>) -> ClientSasl {
    let defaults = ClientSasl::default();
    let Some(spec) = spec else { return defaults };
    ClientSasl {
        scram: spec.scram,
        failed_authentication_delay_ms: spec
            .failed_authentication_delay_ms
            .unwrap_or(defaults.failed_authentication_delay_ms),
    }
}

fn cluster(spec: &ClusterSpec) -> Cluster {
    Cluster {
        name: spec.name.clone(),
        bootstrap_servers: spec.bootstrap_servers.clone(),
        tls: spec.tls.as_ref().map(tls),
        sasl: spec.sasl.as_ref().map(|sasl| {
            let r = &sasl.secret_ref;
            let file = |key: &str| Some(secret_file(&r.name, key));
            if sasl.mechanism == SaslMechanism::OauthBearer {
                Sasl {
                    mechanism: sasl.mechanism,
                    username_file: None,
                    password_file: None,
                    token_file: file(r.token_key.as_deref().unwrap_or(DEFAULT_TOKEN_KEY)),
                }
            } else {
                Sasl {
                    mechanism: sasl.mechanism,
                    username_file: file(&r.username_key),
                    password_file: file(&r.password_key),
                    token_file: None,
                }
            }
        }),
    }
}

fn tls(spec: &TlsSpec) -> Tls {
    let (cert_file, key_file) = match (&spec.client_secret_ref, &spec.cert_secret_ref, &spec.key_secret_ref) {
        (Some(client), _, _) => {
            (Some(secret_file(&client.name, TLS_CERT_KEY)), Some(secret_file(&client.name, TLS_KEY_KEY)))
        }
        (None, cert, key) => {
            (cert.as_ref().map(|r| secret_file(&r.name, &r.key)), key.as_ref().map(|r| secret_file(&r.name, &r.key)))
        }
    };
    Tls {
        ca_file: Some(secret_file(&spec.ca_secret_ref.name, &spec.ca_secret_ref.key)),
        cert_file,
        key_file,
        server_name: spec.server_name.clone(),
        insecure_skip_hostname_verification: spec.insecure_skip_hostname_verification,
    }
}

#[cfg(test)]
mod tests;
