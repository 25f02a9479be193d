//! kproxy sidecar injection: the pure pod mutation, the admission webhook server and its certificates.
//!
//! A pod annotated `kproxy.dev/inject: "true"` gets the kproxy native sidecar ([`inject()`]), configured by the
//! KafkaProxyPolicy named by `kproxy.dev/policy` or else the single one whose podSelector matches
//! ([`policy_for`]). [`serve`] answers the API server's admission reviews over HTTPS with the resulting JSON patch
//! or a refusal that says what to change; [`tls`] provides its certificate (generated and shared through a Secret,
//! or mounted from cert-manager) and swaps it on rotation without a restart; [`registration`] describes which pods
//! the API server sends at all. [`cli::WebhookArgs`] holds the flags the operator and the chart use.
#![forbid(unsafe_code)]

pub mod annotation;
pub mod cert;
pub mod cli;
pub mod inject;
pub mod metrics;
pub mod policies;
pub mod quantity;
pub mod registration;
pub mod select;
pub mod selector;
pub mod server;
pub mod tls;

pub use inject::{InjectConfig, Resources, inject, patch};
pub use registration::{Registration, register};
pub use select::policy_for;
pub use server::{WebhookConfig, serve};
pub use tls::TlsSource;

/// Why a pod cannot be admitted as it is. The text is what `kubectl` shows the user, so each one says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("annotation {annotation}={value:?} is invalid: {reason}")]
    InvalidAnnotation { annotation: &'static str, value: String, reason: String },
    #[error(
        "no KafkaProxyPolicy in namespace {namespace:?} selects this pod (labels {labels}); create one whose \
         podSelector matches, or name one with the annotation {annotation}: <name>",
        annotation = annotation::POLICY
    )]
    NoPolicy { namespace: String, labels: String },
    #[error(
        "{count} KafkaProxyPolicies in namespace {namespace:?} select this pod; choose one with the annotation \
         {annotation}: <name>, or narrow their podSelectors",
        annotation = annotation::POLICY
    )]
    AmbiguousPolicy { namespace: String, count: usize },
    #[error(
        "annotation {annotation} names KafkaProxyPolicy {name:?}, which does not exist in namespace {namespace:?}",
        annotation = annotation::POLICY
    )]
    UnknownPolicy { namespace: String, name: String },
    #[error(
        "the pod sets hostNetwork: true, so the kproxy sidecar's listeners (127.0.0.1:9092 and the virtual broker \
         ports) would belong to the node and give every process on it this policy's Kafka identity; remove \
         hostNetwork or the annotation {annotation}",
        annotation = annotation::INJECT
    )]
    HostNetwork,
    #[error(
        "the kproxy operator does not watch namespace {namespace:?}; ask the platform team to add it to the \
         operator's namespaces"
    )]
    NotWatched { namespace: String },
    #[error("cannot inject the kproxy sidecar: {0}")]
    Conflict(String),
}

/// Errors of the webhook crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod is refused admission; the message is returned to the client.
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid certificate material: {0}")]
    BadCert(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid webhook configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}
