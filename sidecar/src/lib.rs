//! kproxy sidecar: a transparent Kafka protocol proxy with pooled upstream connections and a hot-reloaded policy.
#![forbid(unsafe_code)]

pub mod admin;
pub mod broker_map;
pub mod budget;
pub mod buffer;
pub mod cluster;
pub mod filter;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod proxy;
pub mod ratelog;
pub mod reload;
pub mod routing;
pub mod settings;

/// Errors of the sidecar library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Config(#[from] kproxy_api::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("upstream {addr}: {reason}")]
    Upstream { addr: String, reason: String },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("config watch: {0}")]
    Watch(#[from] notify::Error),
}

impl Error {
    /// Wraps a kafka-protocol encode/decode failure with what was being done.
    pub fn protocol(what: &str, e: impl std::fmt::Display) -> Self {
        Error::Protocol(format!("{what}: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
