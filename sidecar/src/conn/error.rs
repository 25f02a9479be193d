//! Why a client connection closes: one kind per cause, so callers and tests match on the kind; each displays
//! as the line the sidecar logs for it.

use std::time::Duration;

use crate::protocol::FrameError;

/// Why a client connection's reader stopped before the client closed it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A frame the sidecar does not read (negative or oversized length, too short, half-read for too long).
    #[error(transparent)]
    Frame(FrameError),
    /// A frame shorter than a request header.
    #[error("frame too short")]
    ShortFrame,
    /// An API key kafka-protocol does not know.
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    /// The pipeline closed the connection (a policy or SASL refusal); the text is its reason.
    #[error("{0}")]
    Refused(String),
    /// The writer stopped (the client stopped reading, or a write failed).
    #[error("response writer stopped")]
    WriterStopped,
    /// Answers were due but none could be queued for the idle timeout.
    #[error("no answer due could be written for {0:?}")]
    Stalled(Duration),
    /// The config has no default cluster to bootstrap from.
    #[error("no default cluster")]
    NoDefaultCluster,
    /// No bootstrap server of the default cluster answered (nor another routed cluster); `last` says why.
    #[error("no bootstrap server of {cluster} answers: {last}")]
    NoBootstrap { cluster: String, last: String },
    /// The virtual broker's cluster was removed by a reload.
    #[error("cluster {0} is no longer configured")]
    ClusterGone(String),
    /// The virtual broker maps to no known upstream broker.
    #[error("broker {0} is unknown")]
    UnknownBroker(i32),
    /// The probes found the broker's cluster unreachable (and no other routed cluster could serve).
    #[error("cluster {0} is unreachable")]
    ClusterDown(String),
    /// The upstream broker could not be dialled.
    #[error(transparent)]
    Upstream(crate::Error),
    /// The route's cluster has not told its API versions yet.
    #[error("upstream versions unknown")]
    VersionsUnknown,
    /// The upstream connection closed with the request on it (after the one retry).
    #[error("upstream connection closed")]
    UpstreamClosed,
    /// A request forwarded to a coordinator in another cluster was sent as one without an answer.
    #[error("no reply expected")]
    NoReply,
    /// A changed request could not be encoded again.
    #[error(transparent)]
    Encode(crate::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
