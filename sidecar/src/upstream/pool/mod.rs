//! Upstream connection pool: per broker, a few multiplexed connections for ordinary requests and a separate
//! lane for long-poll requests, so a Fetch waiting for data or a JoinGroup waiting for a rebalance never holds
//! up a produce. Pools belong to their cluster and outlive client connections and config reloads.

mod backoff;
pub mod conn;
mod lane;
pub mod reauth;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncWrite};

pub use conn::Conn;
use lane::Lane;

use super::cluster::Endpoint;
use crate::{Error, Result};

/// Any byte stream to a broker: plain TCP today, TLS/SASL-wrapped when the cluster asks for it.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}
pub type BoxStream = Box<dyn Stream>;

/// Opens one connection to a broker, ready for Kafka requests. The single place where upstream transport
/// (TLS, SASL) is set up.
pub async fn dial(up: &Endpoint, addr: &str) -> Result<BoxStream> {
    reauth::dial(up, addr).await.map(|(stream, _)| stream)
}

/// The connections to one broker.
pub struct BrokerPool {
    pub addr: String,
    /// The `broker` label of its connection series: the address only when the metrics may show it.
    label: String,
    up: Arc<Endpoint>,
    ordinary: Lane<Conn>,
    long_poll: Lane<Conn>,
    /// Dials wait after failures so a broker that is down is not dialled by every client's reconnect.
    backoff: std::sync::Mutex<backoff::Backoff>,
}

/// A client connection's claim on one ordinary-lane connection; released when dropped.
pub struct Lease {
    pub conn: Arc<Conn>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.conn.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

impl BrokerPool {
    /// The pool of the broker at `addr`, the `index`th pool its cluster opened.
    pub fn new(up: Arc<Endpoint>, addr: String, index: usize) -> Self {
        let label = if up.limits.metrics_broker_addresses { addr.clone() } else { index.to_string() };
        let (ordinary, long_poll) = (Lane::default(), Lane::default());
        BrokerPool { addr, label, up, ordinary, long_poll, backoff: Default::default() }
    }

    /// Binds a client connection to the ordinary connection with the fewest clients, opening another one while
    /// every existing connection already serves someone and the bound allows it.
    pub async fn lease(self: &Arc<Self>) -> Result<Lease> {
        let bound = self.up.limits.upstream_connections;
        let choose = |conns: &[Arc<Conn>]| {
            let best = conns.iter().min_by_key(|c| c.clients.load(Ordering::Relaxed))?;
            (best.clients.load(Ordering::Relaxed) == 0 || conns.len() >= bound).then(|| best.clone())
        };
        let conn = self.ordinary.get(choose, self.clone().dial_task()).await.map_err(|reason| self.failed(reason))?;
        conn.clients.fetch_add(1, Ordering::Relaxed);
        Ok(Lease { conn })
    }

    /// A long-poll connection for one request: an idle one, a new one while the bound allows, else the least
    /// busy (long polls of different clients then wait for each other, as they would on one broker connection).
    pub async fn long_poll(self: &Arc<Self>) -> Result<Arc<Conn>> {
        let bound = self.up.limits.upstream_long_poll_connections;
        let choose = |conns: &[Arc<Conn>]| {
            let best = conns.iter().min_by_key(|c| c.pending())?;
            (best.pending() == 0 || conns.len() >= bound).then(|| best.clone())
        };
        self.long_poll.get(choose, self.clone().dial_task()).await.map_err(|reason| self.failed(reason))
    }

    /// A dial for a lane, owning the pool so it outlives the caller that started it.
    async fn dial_task(self: Arc<Self>) -> std::result::Result<Arc<Conn>, String> {
        self.open().await.map_err(|e| match e {
            Error::Upstream { reason, .. } => reason,
            other => other.to_string(),
        })
    }

    fn failed(&self, reason: String) -> Error {
        Error::Upstream { addr: self.addr.clone(), reason }
    }

    async fn open(&self) -> Result<Arc<Conn>> {
        let backoff = || self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reason) = backoff().wait(std::time::Instant::now()) {
            return Err(Error::Upstream { addr: self.addr.clone(), reason });
        }
        let dialled = async {
            let (stream, session) = reauth::dial(&self.up, &self.addr).await?;
            Ok::<_, Error>((self.up.learn_versions(stream, &self.addr).await?, session))
        }
        .await;
        let (stream, session) = match dialled {
            Ok(dialled) => {
                backoff().succeeded();
                dialled
            }
            Err(e) => {
                let delay = backoff().failed(std::time::Instant::now(), e.to_string());
                tracing::debug!(addr = %self.addr, ?delay, "next upstream dial waits");
                return Err(e);
            }
        };
        let m = &self.up.metrics;
        let gauge = m.upstream_connections.with_label_values(&[&self.up.cluster.name, &self.label]);
        gauge.inc();
        m.upstream_connections_opened.with_label_values(&[&self.up.cluster.name]).inc();
        tracing::debug!(cluster = %self.up.cluster.name, addr = %self.addr, "upstream connection opened");
        let limits = &self.up.limits;
        let on_close = move || gauge.dec();
        let reauth = reauth::Reauth::new(self.up.clone(), self.addr.clone(), session);
        let buffers = self.up.buffers.clone();
        Ok(Conn::start(stream, buffers, limits.frame_timeout, limits.request_timeout, reauth, on_close))
    }

    /// Number of open connections per lane.
    pub async fn sizes(&self) -> (usize, usize) {
        (self.ordinary.conns().len(), self.long_poll.conns().len())
    }

    /// Lets every connection finish what it has in flight, then closes it.
    pub async fn drain(&self) {
        for c in self.ordinary.take().into_iter().chain(self.long_poll.take()) {
            c.drain();
        }
    }
}

impl lane::Member for Conn {
    fn is_closed(&self) -> bool {
        Conn::is_closed(self)
    }

    fn retire(self: &Arc<Self>) {
        self.drain();
    }

    fn load(&self) -> usize {
        self.clients.load(Ordering::Relaxed) + self.pending()
    }
}
