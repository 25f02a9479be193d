//! The API path: the policy's ConfigMap followed through the API server with the pod's own token
//! ([`kproxy_watch`]); each version is offered to the [`Reloader`] exactly as a volume change is, so the same
//! validation applies and the newer rendering wins whichever path brings it first.

use std::path::PathBuf;
use std::sync::Arc;

use kproxy_api::config::CONFIG_FILE;
use kproxy_watch::{Error, Sink, Target, Timing};
use tokio_util::sync::CancellationToken;

use super::{Outcome, Reloader, Source};

/// Where the projected token volume the webhook injects is mounted (token `token`, CA bundle `ca.crt`).
pub const TOKEN_DIR: &str = "/var/run/secrets/kproxy.dev/api";

/// What the API path needs from flags and the environment.
#[derive(Clone, Debug)]
pub struct Options {
    /// The ConfigMap the policy renders into (the one mounted as the volume).
    pub config_map: String,
    pub namespace: String,
    /// `host:port` of the API server; empty: `KUBERNETES_SERVICE_HOST`/`_PORT`, which kubelet sets in every
    /// container.
    pub server: String,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
}

impl Options {
    /// The watch target, or what is missing to build it.
    pub fn target(&self) -> Result<Target, String> {
        let (host, port) = if self.server.is_empty() {
            let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| "KUBERNETES_SERVICE_HOST is not set")?;
            let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
            (host, port)
        } else {
            let (host, port) =
                self.server.rsplit_once(':').ok_or_else(|| format!("{:?} is not host:port", self.server))?;
            (host.trim_start_matches('[').trim_end_matches(']').to_string(), port.to_string())
        };
        let port = port.parse::<u16>().map_err(|e| format!("API server port {port:?}: {e}"))?;
        if self.namespace.is_empty() {
            return Err("the pod's namespace is not known (KPROXY_NAMESPACE)".into());
        }
        Ok(Target {
            host,
            port,
            namespace: self.namespace.clone(),
            name: self.config_map.clone(),
            key: CONFIG_FILE.into(),
            token_file: self.token_file.clone(),
            ca_file: self.ca_file.clone(),
        })
    }
}

/// Hands each version to the reloader and keeps the watch's metrics.
struct Offer {
    reloader: Arc<Reloader>,
}

impl Sink for Offer {
    fn object(&self, value: Option<String>, resource_version: &str) {
        match value {
            None => tracing::warn!(resource_version, "the config ConfigMap has no {CONFIG_FILE}; ignored"),
            Some(text) => {
                let outcome = self.reloader.offer(Source::Api, text);
                if matches!(outcome, Outcome::Unchanged | Outcome::Stale) {
                    tracing::debug!(resource_version, outcome = outcome.label(), "config through the API");
                }
            }
        }
    }

    fn connected(&self, up: bool) {
        self.reloader.sources.api_up.set(i64::from(up));
    }

    fn failed(&self, error: &Error) {
        self.reloader.sources.api_errors.with_label_values(&[error.metric_label()]).inc();
    }
}

/// Follows the ConfigMap until `shutdown`; the volume keeps working whatever happens here.
pub fn spawn(reloader: Arc<Reloader>, target: Target, shutdown: CancellationToken) {
    tracing::info!(namespace = %target.namespace, configmap = %target.name, server = %target.authority(), "watching config through the API");
    tokio::spawn(async move {
        let sink = Offer { reloader };
        kproxy_watch::run(target, Timing::default(), &sink, shutdown).await;
    });
}
