//! kproxy upstream connections: TCP, TLS and SASL authentication to Kafka brokers.
//!
//! [`connect`] (or [`open`], which also returns the SASL [`Session`]) dials one broker of a cluster and hands back
//! a [`Stream`] that is ready for Kafka requests: TCP_NODELAY set, TLS verified, SASL completed. Credentials and
//! certificates come from files through a [`Context`], which notices when mounted Secrets are rotated, so new
//! connections use the new material while established ones keep working.
//!
//! Re-authentication (KIP-368): when [`Session::reauthenticate_at`] is reached, the owner of a pooled connection
//! waits for a moment with no request in flight on it and calls [`reauthenticate`] on the same stream; the broker
//! closes connections whose session expired without it.
//!
//! [`ScramServer`] is the other side of SCRAM, for a proxy answering its own clients with the cluster's
//! configured credentials.

#![forbid(unsafe_code)]

mod connect;
mod context;
mod sasl;
mod stream;
mod tls;
mod wire;

use std::time::Duration;

pub use connect::{connect, open, reauthenticate};
pub use context::Context;
pub use sasl::Session;
pub use sasl::scram::Refused as ScramRefused;
pub use sasl::scram::Server as ScramServer;
pub use stream::Stream;

/// Why an upstream connection could not be established or authenticated. Each message names the broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid broker address {0:?}: expected host:port")]
    Address(String),
    #[error("{addr}: {what} timed out after {after:?}")]
    Timeout { addr: String, what: &'static str, after: Duration },
    #[error("{addr}: cannot connect: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("{addr}: TLS handshake failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error("upstream connection settings: {0}")]
    Config(String),
    #[error("reading {path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error("{addr}: SASL {mechanism} authentication failed: {reason}")]
    Auth { addr: String, mechanism: &'static str, reason: String },
    #[error("{addr}: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("{addr}: connection lost: {source}")]
    Io { addr: String, source: std::io::Error },
}

impl Error {
    /// A label from a fixed set, for metrics and rate-limited logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Address(_) | Error::Config(_) | Error::File { .. } => "config",
            Error::Timeout { .. } => "timeout",
            Error::Connect { .. } => "connect",
            Error::Tls { .. } => "tls",
            Error::Auth { .. } => "auth",
            Error::Protocol { .. } => "protocol",
            Error::Io { .. } => "io",
        }
    }

    /// The message without the leading broker address, for callers that print the address themselves.
    pub fn detail(&self) -> String {
        let text = self.to_string();
        let addr = match self {
            Error::Timeout { addr, .. }
            | Error::Connect { addr, .. }
            | Error::Tls { addr, .. }
            | Error::Auth { addr, .. }
            | Error::Protocol { addr, .. }
            | Error::Io { addr, .. } => addr,
            Error::Address(_) | Error::Config(_) | Error::File { .. } => return text,
        };
        text.strip_prefix(addr.as_str()).and_then(|t| t.strip_prefix(": ")).map(str::to_string).unwrap_or(text)
    }

    /// Whether retrying the same broker later may succeed without a config or Secret change.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::Connect { .. } | Error::Io { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
