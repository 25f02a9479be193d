//! Generated certificates shared through a Secret: create-if-absent, renewal before expiry, and the caBundle.
//!
//! Every replica runs the same loop. Writes carry the resourceVersion they read, so when two replicas race to
//! create or renew, one wins and the other adopts what it wrote.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use time::OffsetDateTime;

use super::{Resolver, certified_key};
use crate::cert::{Lifetimes, Material};
use crate::{Error, Result};

/// Settings of the generated-certificate mode.
#[derive(Clone, Debug)]
pub struct GeneratedTls {
    /// Namespace of the Secret (the operator's own).
    pub namespace: String,
    pub secret_name: String,
    /// Names the API server dials: the Service's DNS names, plus `127.0.0.1` when it runs on the same host.
    pub sans: Vec<String>,
    /// The MutatingWebhookConfiguration whose `caBundle` is kept in step with the CA; `None` publishes nothing.
    pub webhook_configuration: Option<String>,
    pub lifetimes: Lifetimes,
    /// How often the Secret is re-read: this is how replicas that did not renew pick up a new certificate.
    pub check_interval: Duration,
}

const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_NOT_AFTER: &str = "kproxy.dev/ca-not-after";
const CERT_NOT_AFTER: &str = "kproxy.dev/cert-not-after";
const SANS: &str = "kproxy.dev/sans";
/// Writes lost to another replica are retried this often before the pass gives up until the next tick.
const ATTEMPTS: usize = 5;
/// Wait after a failed pass (API server unreachable, webhook configuration not created yet).
pub(crate) const RETRY: Duration = Duration::from_secs(5);

/// Keeps the certificate current until `shutdown`, after a first pass the caller ran: the next pass comes after
/// `first_wait`, later ones every `check_interval` (sooner after a failure).
pub async fn maintain_secret(
    client: Client,
    cfg: GeneratedTls,
    resolver: Arc<Resolver>,
    first_wait: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut wait = first_wait;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = match sync_once(&client, &cfg, &resolver).await {
            Ok(_) => cfg.check_interval,
            Err(e) => {
                tracing::warn!(error = %e, secret = %cfg.secret_name, "webhook certificate sync failed; retrying");
                cfg.check_interval.min(RETRY)
            }
        };
    }
}

/// One pass: make sure the Secret holds fresh material, serve it, and publish its CA.
pub async fn sync_once(client: &Client, cfg: &GeneratedTls, resolver: &Resolver) -> Result<Material> {
    let material = ensure_secret(client, cfg).await?;
    let key = certified_key(material.cert.as_bytes(), material.key.as_bytes())?;
    if resolver.current_der().as_deref() != key.cert.first().map(|c| c.as_ref()) {
        tracing::info!(secret = %cfg.secret_name, not_after = %material.cert_not_after, "serving webhook certificate");
        resolver.set(key);
    }
    if let Some(name) = &cfg.webhook_configuration {
        publish_ca_bundle(client, name, &material.ca_bundle).await?;
    }
    Ok(material)
}

async fn ensure_secret(client: &Client, cfg: &GeneratedTls) -> Result<Material> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    for _ in 0..ATTEMPTS {
        let now = OffsetDateTime::now_utc();
        let Some(existing) = api.get_opt(&cfg.secret_name).await? else {
            let material = Material::generate(&cfg.sans, cfg.lifetimes, now)?;
            match api.create(&PostParams::default(), &to_secret(cfg, &material, None)).await {
                Ok(_) => return Ok(material),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let next = match from_secret(&existing) {
            Some(current) => match current.renewed(&cfg.sans, cfg.lifetimes, now)? {
                None => return Ok(current),
                Some(next) => next,
            },
            // Unreadable contents: start over rather than serve nothing.
            None => Material::generate(&cfg.sans, cfg.lifetimes, now)?,
        };
        let version = existing.metadata.resource_version.clone();
        match api.replace(&cfg.secret_name, &PostParams::default(), &to_secret(cfg, &next, version)).await {
            Ok(_) => {
                tracing::info!(secret = %cfg.secret_name, "renewed webhook certificate");
                return Ok(next);
            }
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Config(format!("Secret {} kept changing while being renewed", cfg.secret_name)))
}

/// Writes the CA bundle into every webhook of the configuration that does not have it yet.
async fn publish_ca_bundle(client: &Client, name: &str, bundle: &str) -> Result<()> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let wanted = ByteString(bundle.as_bytes().to_vec());
    for _ in 0..ATTEMPTS {
        let Some(mut config) = api.get_opt(name).await? else {
            return Err(Error::Config(format!("MutatingWebhookConfiguration {name} does not exist")));
        };
        let mut changed = false;
        for webhook in config.webhooks.iter_mut().flatten() {
            if webhook.client_config.ca_bundle.as_ref() != Some(&wanted) {
                webhook.client_config.ca_bundle = Some(wanted.clone());
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        match api.replace(name, &PostParams::default(), &config).await {
            Ok(_) => {
                tracing::info!(configuration = name, "published webhook CA bundle");
                return Ok(());
            }
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Config(format!("MutatingWebhookConfiguration {name} kept changing")))
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

fn to_secret(cfg: &GeneratedTls, m: &Material, resource_version: Option<String>) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let data = BTreeMap::from([
        (CA_CRT.to_string(), bytes(&m.ca_bundle)),
        (CA_KEY.to_string(), bytes(&m.ca_key)),
        (TLS_CRT.to_string(), bytes(&m.cert)),
        (TLS_KEY.to_string(), bytes(&m.key)),
    ]);
    let annotations = BTreeMap::from([
        (CA_NOT_AFTER.to_string(), m.ca_not_after.unix_timestamp().to_string()),
        (CERT_NOT_AFTER.to_string(), m.cert_not_after.unix_timestamp().to_string()),
        (SANS.to_string(), m.sans.join(",")),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(cfg.secret_name.clone()),
            namespace: Some(cfg.namespace.clone()),
            annotations: Some(annotations),
            labels: Some(BTreeMap::from([("app.kubernetes.io/name".into(), "kproxy-webhook".into())])),
            resource_version,
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// `None` when the Secret is not one this code wrote completely.
fn from_secret(secret: &Secret) -> Option<Material> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| data.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok());
    let annotations = secret.metadata.annotations.as_ref()?;
    let time = |key: &str| {
        let secs: i64 = annotations.get(key)?.parse().ok()?;
        OffsetDateTime::from_unix_timestamp(secs).ok()
    };
    let sans = annotations.get(SANS)?;
    Some(Material {
        ca_bundle: text(CA_CRT)?,
        ca_key: text(CA_KEY)?,
        cert: text(TLS_CRT)?,
        key: text(TLS_KEY)?,
        ca_not_after: time(CA_NOT_AFTER)?,
        cert_not_after: time(CERT_NOT_AFTER)?,
        sans: if sans.is_empty() { Vec::new() } else { sans.split(',').map(String::from).collect() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_round_trips_material() {
        let cfg = GeneratedTls {
            namespace: "kproxy".into(),
            secret_name: "kproxy-webhook-tls".into(),
            sans: vec!["svc.ns.svc".into(), "127.0.0.1".into()],
            webhook_configuration: None,
            lifetimes: Lifetimes::default(),
            check_interval: Duration::from_secs(60),
        };
        let now = OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).unwrap();
        let m = Material::generate(&cfg.sans, cfg.lifetimes, now).unwrap();
        let secret = to_secret(&cfg, &m, Some("7".into()));
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(from_secret(&secret), Some(m));
        let mut broken = secret.clone();
        broken.data.as_mut().unwrap().remove(TLS_KEY);
        assert_eq!(from_secret(&broken), None);
    }
}
