//! One multiplexed upstream connection: many client requests share it, each under a correlation id of its own.
//!
//! Kafka brokers answer requests on a connection in the order they were sent, so pending requests wait in a
//! FIFO; a response whose correlation id is not the one at the head means the stream is corrupt and the
//! connection is dropped (every request waiting on it fails, and their clients reconnect as they would after a
//! broker restart). Each request has its own deadline (from its own fields, see
//! [`crate::protocol::deadline`]); a head of the FIFO past its deadline means the broker hangs, and the
//! connection is closed. The writer takes every frame queued when it wakes and writes them with one vectored
//! write ([`crate::batch`]); the reader hands out every response of one read. A SASL connection's writer also renews the session before the broker ends it (see
//! [`super::reauth`]).
//!
//! The send queue is bounded ([`QUEUE`] frames; their bytes are bounded by the memory budget, which they hold
//! until written). A request may carry a [`Credit`]: room its client reserved for the response, which becomes the
//! response buffer's charge when it is read (larger responses are charged the difference), so this reader never
//! waits on a budget. Draining (a reload replaced the pool) writes every queued frame, acks=0 produce included,
//! and waits for the answers before closing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::BoxStream;
use super::reauth::{Reauth, RoundTrip};
use crate::budget::Credit;
use crate::buffer::{Buf, Pool};
use crate::protocol::{self, MIN_RESPONSE, reader};

/// Responses are bounded only loosely: the broker caps them by fetch sizes the client chose.
const MAX_RESPONSE: usize = 1 << 30;

/// Frames queued for one upstream connection's writer before senders wait.
pub const QUEUE: usize = 256;

/// A request queued for the writer task.
struct Outgoing {
    frame: Buf,
    reply: Option<Reply>,
}

/// Where a response goes, with the room reserved for it and when it is due.
pub struct Reply {
    tx: oneshot::Sender<Buf>,
    credit: Option<Credit>,
    deadline: Instant,
}

/// A request awaiting its response: upstream correlation id, where the answer goes.
struct Waiting {
    id: i32,
    reply: Reply,
}

/// Requests awaiting their response, oldest first.
type Fifo = Arc<Mutex<VecDeque<Waiting>>>;

/// Handle to an upstream connection; cheap to share.
pub struct Conn {
    tx: mpsc::Sender<Outgoing>,
    /// Requests sent and not yet answered; long-poll requests pick the least busy connection by it.
    pending: Arc<AtomicUsize>,
    /// Frames queued and not yet written (acks=0 produce included): a draining connection writes them all.
    queued: Arc<AtomicUsize>,
    /// Client connections bound to this one; ordinary requests stick to one connection per client so the
    /// broker sees each client's requests in the order the client sent them.
    pub(super) clients: AtomicUsize,
    closed: CancellationToken,
}

impl Conn {
    /// Starts the reader and writer tasks over an established (and authenticated) stream. With `reauth`, the
    /// writer renews the SASL session in place before the broker's session lifetime ends.
    pub fn start(
        stream: BoxStream,
        buffers: Arc<Pool>,
        frame_timeout: Duration,
        request_timeout: Duration,
        reauth: Option<Reauth>,
        on_close: impl FnOnce() + Send + 'static,
    ) -> Arc<Conn> {
        let (rd, wr) = tokio::io::split(stream);
        let (tx, rx) = mpsc::channel(QUEUE);
        let fifo: Fifo = Arc::default();
        let closed = CancellationToken::new();
        let pending = Arc::new(AtomicUsize::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        let conn = Arc::new(Conn {
            tx,
            pending: pending.clone(),
            queued: queued.clone(),
            clients: AtomicUsize::new(0),
            closed: closed.clone(),
        });
        let out = Writer { wr, fifo: fifo.clone(), pending: pending.clone(), queued, next_id: 0, request_timeout };
        let writer = tokio::spawn(write_loop(out, rx, closed.clone(), reauth, buffers.clone()));
        tokio::spawn(watchdog(fifo.clone(), closed.clone()));
        tokio::spawn(async move {
            let result = tokio::select! {
                r = read_loop(rd, &fifo, &pending, &buffers, frame_timeout) => r,
                _ = closed.cancelled() => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "upstream connection closed");
            }
            closed.cancel();
            let _ = writer.await;
            // Dropping the senders tells every waiting client that its request is lost.
            lock(&fifo).clear();
            on_close();
        });
        conn
    }

    /// Queues a request, waiting while the queue is full. With `expects` (a response credit and a deadline) the
    /// receiver yields the response frame (correlation id as sent upstream; the caller restores its own), charged
    /// to the credit when one is given. Gives the frame back if the connection is closed.
    pub async fn send(
        &self,
        frame: Buf,
        expects: Option<(Option<Credit>, Instant)>,
    ) -> Result<Option<oneshot::Receiver<Buf>>, Buf> {
        if self.is_closed() {
            return Err(frame);
        }
        let (reply, rx) = match expects {
            Some((credit, deadline)) => {
                let (tx, rx) = oneshot::channel();
                (Some(Reply { tx, credit, deadline }), Some(rx))
            }
            None => (None, None),
        };
        let expects = reply.is_some();
        if expects {
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        // With room in the queue (the common case) the frame goes in without waiting on its semaphore.
        let sent = match self.tx.try_send(Outgoing { frame, reply }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(out)) => self.tx.send(out).await.map_err(|e| e.0),
            Err(mpsc::error::TrySendError::Closed(out)) => Err(out),
        };
        match sent {
            Ok(()) => Ok(rx),
            Err(out) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                if expects {
                    self.pending.fetch_sub(1, Ordering::Relaxed);
                }
                Err(out.frame)
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Closes once the requests already queued are written and those sent are answered (used when a cluster's
    /// pool is replaced).
    pub fn drain(self: &Arc<Self>) {
        let conn = self.clone();
        tokio::spawn(async move {
            while (conn.pending() > 0 || conn.queued.load(Ordering::Relaxed) > 0) && !conn.is_closed() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            conn.closed.cancel();
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Closes a connection whose oldest request is past its deadline, as Kafka clients do at request.timeout.ms: a
/// hung broker would otherwise keep every later request on it waiting too. Its waiting clients are closed and
/// reconnect to a fresh connection. Checks a few times a second: the deadlines are seconds long.
async fn watchdog(fifo: Fifo, closed: CancellationToken) {
    let tick = Duration::from_millis(250);
    loop {
        tokio::select! {
            _ = closed.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let now = Instant::now();
        if let Some(late) = lock(&fifo).front().map(|w| w.reply.deadline).filter(|d| *d < now) {
            tracing::warn!(
                late_by = ?now - late,
                "no upstream response within the request's deadline; closing the upstream connection"
            );
            closed.cancel();
            return;
        }
    }
}

/// The writing side of a connection: numbers each request and records it in the FIFO before writing it.
struct Writer {
    wr: WriteHalf<BoxStream>,
    fifo: Fifo,
    /// Shared with [`Conn`]; the reader decrements it per response, so requests made here count too.
    pending: Arc<AtomicUsize>,
    /// Shared with [`Conn`]: decremented once a queued frame is written.
    queued: Arc<AtomicUsize>,
    next_id: i32,
    /// The deadline of the writer's own round trips (re-authentication).
    request_timeout: Duration,
}

impl Writer {
    /// Numbers a batch of requests, records those expecting an answer in the FIFO (in order, before any byte of
    /// them is written, so the reader always finds its head), and writes them all at once.
    async fn write(&mut self, batch: &mut Vec<Outgoing>) -> std::io::Result<()> {
        {
            let mut fifo = lock(&self.fifo);
            for out in batch.iter_mut() {
                self.next_id = self.next_id.wrapping_add(1) & i32::MAX;
                protocol::set_request_correlation(&mut out.frame, self.next_id);
                if let Some(reply) = out.reply.take() {
                    fifo.push_back(Waiting { id: self.next_id, reply });
                }
            }
        }
        let frames: Vec<&[u8]> = batch.iter().map(|o| &o.frame[..]).collect();
        let written = crate::batch::write_all(&mut self.wr, &frames).await;
        self.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        // The frames (and their budget charges) go as soon as they are written.
        batch.clear();
        written
    }
}

impl RoundTrip for Writer {
    async fn round_trip(&mut self, frame: Buf) -> Option<Buf> {
        let (tx, rx) = oneshot::channel();
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.queued.fetch_add(1, Ordering::Relaxed);
        let reply = Reply { tx, credit: None, deadline: Instant::now() + self.request_timeout };
        self.write(&mut vec![Outgoing { frame, reply: Some(reply) }]).await.ok()?;
        rx.await.ok()
    }
}

async fn write_loop(
    mut out: Writer,
    mut rx: mpsc::Receiver<Outgoing>,
    closed: CancellationToken,
    mut reauth: Option<Reauth>,
    buffers: Arc<Pool>,
) {
    loop {
        let due = reauth.as_ref().and_then(Reauth::due);
        let out_next = tokio::select! {
            biased;
            _ = closed.cancelled() => None,
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                // Requests arriving meanwhile wait in `rx`, in order, until the session is renewed.
                let renewed = tokio::select! {
                    ok = renew(&mut out, reauth.as_mut(), &buffers) => ok,
                    _ = closed.cancelled() => false,
                };
                if !renewed {
                    break;
                }
                continue;
            }
            out = rx.recv() => out,
        };
        let Some(first) = out_next else { break };
        // Everything queued meanwhile leaves with it.
        let mut batch = vec![first];
        while batch.len() < crate::batch::MAX_FRAMES
            && let Ok(next) = rx.try_recv()
        {
            batch.push(next);
        }
        let written = tokio::select! {
            r = out.write(&mut batch) => r,
            _ = closed.cancelled() => Err(std::io::ErrorKind::ConnectionAborted.into()),
        };
        out.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        if let Err(e) = written {
            tracing::warn!(error = %e, "upstream write failed");
            break;
        }
    }
    closed.cancel();
    let _ = out.wr.shutdown().await;
}

/// Waits until every request sent is answered, then re-authenticates. The FIFO is polled: this happens once per
/// session lifetime, and the reader need not know about it.
async fn renew(out: &mut Writer, reauth: Option<&mut Reauth>, buffers: &Arc<Pool>) -> bool {
    let Some(reauth) = reauth else { return true };
    while !lock(&out.fifo).is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    reauth.run(out, buffers).await
}

async fn read_loop(
    mut rd: ReadHalf<BoxStream>,
    fifo: &Fifo,
    pending: &AtomicUsize,
    buffers: &Arc<Pool>,
    frame_timeout: Duration,
) -> crate::Result<()> {
    // Upstream silence is normal (idle pooled connections); only a started frame must complete.
    let idle = Duration::from_secs(365 * 24 * 3600);
    let limits = reader::Limits { max: MAX_RESPONSE, min: MIN_RESPONSE, idle, partial: frame_timeout };
    let mut frames = reader::FrameReader::new(&mut rd, buffers.clone(), limits);
    loop {
        let frame =
            frames.next().await.map_err(|e| crate::Error::Protocol(format!("reading upstream response: {e}")))?;
        let Some(frame) = frame else { return Ok(()) };
        let id = protocol::response_correlation(&frame).unwrap_or(-1);
        let head = lock(fifo).pop_front();
        match head {
            Some(Waiting { id: want, reply }) if want == id => {
                pending.fetch_sub(1, Ordering::Relaxed);
                let mut frame = frame;
                if let Some(mut credit) = reply.credit {
                    credit.resize(frame.capacity());
                    frame.set_charge(credit);
                }
                // The client may have gone; its response is then simply dropped (and the buffer reused).
                let _ = reply.tx.send(frame);
            }
            other => {
                return Err(crate::Error::Protocol(format!(
                    "response correlation id {id} does not match the oldest request {:?}",
                    other.map(|w| w.id)
                )));
            }
        }
    }
}
