//! `kproxy-bench-upstream`: a minimal Kafka responder used only by benchmarks, standing in for a broker.
//!
//! It answers ApiVersions, Metadata (one broker: itself; any topic asked for exists), Produce (success, nothing
//! stored) and Fetch (a pre-built record batch), so a benchmark measures the proxy and not a JVM broker sharing
//! its cores. It is not a Kafka broker and must never be used as one outside benchmarks.

mod handlers;

pub use handlers::record_batch;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::frame::Reader;
use crate::{Error, Result};

/// What the responder says about itself and the data it serves.
#[derive(Clone, Debug)]
pub struct Options {
    /// Host and port written into Metadata as the one broker; the bound address when `None`.
    pub advertise: Option<SocketAddr>,
    /// Partitions every topic has.
    pub partitions: i32,
    /// Records in the batch every Fetch returns.
    pub fetch_records: usize,
    /// Value size of those records.
    pub fetch_record_bytes: usize,
    /// Most copies of that batch in one answer, as many as `max_bytes` allows (at least one).
    pub fetch_batches: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { advertise: None, partitions: 1, fetch_records: 100, fetch_record_bytes: 1024, fetch_batches: 1 }
    }
}

/// Shared by every connection: the topics seen (so "all topics" Metadata lists them) and counters.
pub struct State {
    advertise: SocketAddr,
    partitions: i32,
    topics: Mutex<BTreeSet<String>>,
    fetch_batch: Bytes,
    fetch_batches: usize,
    next_offset: AtomicI64,
    /// Requests answered, for the responder's own exit report.
    pub requests: AtomicU64,
}

/// A bound responder, ready to [`Responder::run`].
pub struct Responder {
    listener: TcpListener,
    state: Arc<State>,
}

impl Responder {
    pub async fn bind(listen: SocketAddr, options: Options) -> Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let local = listener.local_addr()?;
        let state = Arc::new(State {
            advertise: options.advertise.unwrap_or(local),
            partitions: options.partitions.max(1),
            topics: Mutex::new(BTreeSet::new()),
            fetch_batch: handlers::record_batch(options.fetch_records, options.fetch_record_bytes)?,
            fetch_batches: options.fetch_batches.max(1),
            next_offset: AtomicI64::new(0),
            requests: AtomicU64::new(0),
        });
        Ok(Responder { listener, state })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    pub fn state(&self) -> Arc<State> {
        self.state.clone()
    }

    /// Accepts connections until the task is dropped.
    pub async fn run(self) -> Result<()> {
        loop {
            let (stream, _) = self.listener.accept().await?;
            let state = self.state.clone();
            tokio::spawn(async move {
                match serve(stream, state).await {
                    Ok(()) | Err(Error::Closed) => {}
                    Err(e) => eprintln!("kproxy-bench-upstream: connection closed: {e}"),
                }
            });
        }
    }
}

/// One connection: answers requests in order, writing every response buffered since the last read at once.
async fn serve(stream: TcpStream, state: Arc<State>) -> Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = Reader::new(read);
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        let frame = reader.next().await?;
        if let Some(response) = handlers::answer(&state, &frame)? {
            out.extend_from_slice(&response);
        }
        state.requests.fetch_add(1, Ordering::Relaxed);
        if !reader.has_frame() && !out.is_empty() {
            write.write_all(&out).await?;
            out.clear();
        }
    }
}
