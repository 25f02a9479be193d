//! One client connection: I/O only. The reader task reads frames (reserving their bytes in the memory budget),
//! puts each through [`crate::pipeline::decide`] and carries out the step (answer, send upstream, close); the
//! writer task awaits the answers in request order, puts each through [`crate::pipeline::finish`] and writes
//! every answer that is ready with one vectored write.
//!
//! Tasks and wake-ups per forwarded request: the client's reader and writer, the upstream connection's writer
//! and reader — four tasks, each woken once per batch rather than once per request: a read of pipelined requests
//! yields all of them, the upstream writer takes every frame queued when it wakes and writes them with one
//! system call, the upstream reader completes every response of one read, and the client writer writes every
//! answer that is ready at once. With 16 requests in flight per connection that is well under one wake-up (and
//! one write) per request on each side. With one CPU (a container limited to one, or `--worker-threads 1`) all
//! of them run on one thread: a wake-up is a queue push, not a signal to another thread. The frames of one read
//! share one clock reading. The request keeps the config snapshot it was decided under until its answer is
//! written.

mod error;
mod read;
mod write;

pub use error::Error;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::ApiKey;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::broker_map::BrokerMap;
use crate::budget::{Budget, Share};
use crate::buffer::{Buf, Pool};
use crate::metrics::Metrics;
use crate::pipeline::Owed;
use crate::protocol::Header;
use crate::ratelog::Gate;
use crate::settings::Limits;
use crate::state::{Snapshot, Store};
use crate::upstream::{Clusters, Upstream};

/// What every client connection uses; built once by the server.
pub struct Shared {
    pub limits: Limits,
    /// The bootstrap listener's address: client SASL is answered only on a loopback listener.
    pub listen: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub buffers: Arc<Pool>,
    pub budget: Arc<Budget>,
    pub store: Arc<Store>,
    pub clusters: Arc<Clusters>,
    pub brokers: Arc<BrokerMap>,
    pub shutdown: CancellationToken,
}

/// Which listener a client connection came in on.
#[derive(Clone, Debug)]
pub enum Target {
    /// The bootstrap address: served by a bootstrap server of the default cluster.
    Bootstrap,
    /// A virtual broker: served by that real broker.
    Broker { cluster: String, node: i32 },
}

/// An answer on its way back, in request order.
struct Pending {
    header: Header,
    api: ApiKey,
    started: Instant,
    /// The request frame's length as read from the client, for the byte counters.
    request_bytes: u64,
    /// The cluster that answers (for the address rewrite and the latency label).
    up: Arc<Upstream>,
    /// The snapshot the request was decided under; its answer is finished under the same one.
    snapshot: Arc<Snapshot>,
    body: Body,
    owed: Owed,
    /// Metadata answers of the other routed clusters, merged into this one.
    fanout: Vec<Copy>,
}

enum Body {
    /// Answered by the sidecar itself; complete frame with the client's correlation id.
    Local(Buf),
    /// From upstream, due by `deadline`.
    Upstream { rx: oneshot::Receiver<Buf>, deadline: Instant },
    /// Taken by the writer.
    Taken,
}

/// A copy of a client's Metadata request sent to another cluster.
struct Copy {
    cluster: String,
    /// `None` when the cluster could not be reached at all.
    answer: Option<oneshot::Receiver<Buf>>,
    topics: Vec<String>,
}

/// Warnings that one bad client, or a broker going away under many clients, would otherwise repeat per
/// connection; `suppressed` on each line says how many were held back since the previous one.
static CLOSING: Gate = Gate::every_ms(5_000);

/// Serves one client connection until it closes; returns its permit once every frame it read is written.
pub async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    target: Target,
    _permit: OwnedSemaphorePermit,
) {
    shared.metrics.client_connections.inc();
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(shared.limits.max_in_flight);
    // Cancelled when the writer stops, and by shutdown: the reader waits on this one token.
    let dead = shared.shutdown.child_token();
    // Quotas hold the connection's next request (KIP-219): the writer sets it, the reader waits it out.
    let hold = Arc::new(read::Hold::default());
    let paused = Some(shared.metrics.client_paused_seconds.clone());
    let share = Share::new(shared.budget.clone(), shared.limits.connection_memory_bytes, paused);
    let writer = tokio::spawn(write::run(shared.clone(), wr, rx, dead.clone(), peer, hold.clone()));
    let client = read::Client { target: &target, dead: &dead, peer, hold: &hold, share: &share, tx: &tx };
    if let Err(reason) = read::run(&shared, rd, &client).await {
        match CLOSING.allow() {
            Some(suppressed) => tracing::warn!(%peer, ?target, %reason, suppressed, "closing client connection"),
            None => tracing::debug!(%peer, ?target, %reason, "closing client connection"),
        }
    }
    drop(tx);
    let _ = writer.await;
    shared.metrics.client_connections.dec();
    // Frames this connection read and the sidecar still holds (acks=0 produce on their way upstream) are
    // written before the connection's permit goes back: shutdown waits for them instead of dropping them.
    if !share.drained(shared.limits.shutdown_grace).await {
        tracing::debug!(%peer, held = share.held(), "connection's frames not all written within the grace period");
    }
}

#[cfg(test)]
mod tests;
