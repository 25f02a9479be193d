//! The kproxy operator: renders each `KafkaProxyPolicy` into the ConfigMap its sidecars mount, reports the result
//! in the policy's status, and keeps one active replica through a Lease.
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod configmap;
pub mod controller;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod pods;
pub mod render;
pub mod status;
pub mod written;

/// Field manager of everything the operator writes with server-side apply.
pub const FIELD_MANAGER: &str = "kproxy-operator";

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot serialize the rendered config: {0}")]
    Render(#[from] kproxy_api::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("object has no {0}")]
    Missing(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A fixed label for `kproxy_operator_reconciles_total{result="error"}` breakdowns in logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Render(_) | Error::Json(_) => "serialize",
            Error::Metrics(_) => "metrics",
            Error::Io { .. } => "io",
            Error::Missing(_) => "missing_field",
        }
    }
}
