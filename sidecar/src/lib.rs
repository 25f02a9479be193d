//! kproxy sidecar: a transparent Kafka protocol proxy with pooled upstream connections and a hot-reloaded policy.
//!
//! Dependencies point one way: [`server`] (wiring) → [`conn`] (client I/O), [`reload`], [`health`], [`admin`] →
//! [`pipeline`] (the request and response path, pure) → [`state`], [`upstream`], [`protocol`]; below them the
//! leaf modules ([`budget`], [`buffer`], [`batch`], [`broker_map`], [`metrics`], [`settings`]).
#![forbid(unsafe_code)]

pub mod admin;
pub mod batch;
pub mod broker_map;
pub mod budget;
pub mod buffer;
pub mod conn;
pub mod health;
pub mod metrics;
pub mod pipeline;
pub mod protocol;
pub mod ratelog;
pub mod reload;
pub mod server;
pub mod settings;
pub mod state;
pub mod upstream;

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
