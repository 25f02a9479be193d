//! Benchmark-only tools for kproxy: a minimal Kafka responder standing in for a broker, and a load generator.
//!
//! Nothing here is part of the product. The responder exists so the proxy's own ceiling can be measured without
//! a JVM broker competing for the same cores; it answers just enough of the protocol for the load generator and
//! the sidecar (ApiVersions, Metadata, Produce, Fetch) and stores nothing.
#![forbid(unsafe_code)]

pub mod frame;
pub mod load;
pub mod upstream;

/// Errors of the benchmark tools' library parts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("peer closed the connection")]
    Closed,
}

impl Error {
    /// Wraps a kafka-protocol encode/decode failure with what was being done.
    pub fn protocol(what: &str, e: impl std::fmt::Display) -> Self {
        Error::Protocol(format!("{what}: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
