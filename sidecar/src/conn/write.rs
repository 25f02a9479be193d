//! The writing half of a client connection: answers in request order, finished by the pipeline, written in
//! batches. An answer that is ready when the one before it is done joins its batch; the batch leaves (one
//! vectored write) as soon as the next answer is not ready yet, so no ready answer waits for a slow one.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use prometheus::{Histogram, IntCounter};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::oneshot::error::TryRecvError as OneshotTryRecvError;
use tokio_util::sync::CancellationToken;

use super::read::Hold;
use super::{Body, Pending, Shared};
use crate::buffer::Buf;
use crate::pipeline::api_name;
use crate::pipeline::response::{self, Source};
use crate::protocol;
use crate::ratelog::Gate;
use crate::upstream::Upstream;

static UPSTREAM_LOST: Gate = Gate::every_ms(5_000);
static UPSTREAM_SLOW: Gate = Gate::every_ms(5_000);

/// How long the other clusters of a fanned-out Metadata request may take.
const FANOUT_WAIT: Duration = Duration::from_secs(5);

pub(super) async fn run(
    shared: Arc<Shared>,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Pending>,
    dead: CancellationToken,
    peer: SocketAddr,
    hold: Arc<Hold>,
) {
    let mut batch: Vec<Buf> = Vec::new();
    let mut ahead: VecDeque<Pending> = VecDeque::new();
    let mut handles = Handles::default();
    let write_timeout = shared.limits.frame_timeout;
    // The time answers are taken as done at (their latency): read once for the answers ready together, again
    // after anything that waited.
    let mut now: Option<Instant> = None;
    loop {
        let mut p = match ahead.pop_front() {
            Some(p) => p,
            None => match rx.try_recv() {
                Ok(p) => p,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    if !flush(&mut wr, &mut batch, write_timeout, peer).await {
                        break;
                    }
                    now = None;
                    match rx.recv().await {
                        Some(p) => p,
                        None => break,
                    }
                }
            },
        };
        // Answers that are ready now join the batch; the batch leaves before waiting for one that is not.
        let (ready, early) = try_ready(&mut p);
        if !ready {
            if !flush(&mut wr, &mut batch, write_timeout, peer).await {
                break;
            }
            now = None;
        }
        let Ok((result, mut frame, throttle)) = answer(&shared, &mut p, early, peer).await else {
            // An answer could not be had or finished: the connection closes after what is already due.
            shared.metrics.requests.with_label_values(&[api_name(p.api), "error"]).inc();
            break;
        };
        if !throttle.is_zero() {
            if kproxy_policy::quota::client_throttles(p.api, p.header.api_version) {
                // KIP-219 clients pause themselves on throttle_time_ms and the connection is held.
                hold.set(throttle);
            } else {
                // Older clients expect the response itself to be late.
                if !flush(&mut wr, &mut batch, write_timeout, peer).await {
                    break;
                }
                tokio::time::sleep(throttle).await;
                now = None;
            }
        }
        protocol::set_response_correlation(&mut frame, p.header.correlation_id);
        let series = handles.get(&shared, p.api, result, &p.up);
        series.count.inc();
        let done = *now.get_or_insert_with(Instant::now);
        series.latency.observe(done.saturating_duration_since(p.started).as_secs_f64());
        series.request_bytes.inc_by(p.request_bytes);
        series.response_bytes.inc_by(frame.len() as u64);
        batch.push(frame);
        // More answers may already be here: take them in, in order, before deciding to write.
        while ahead.len() < crate::batch::MAX_FRAMES
            && let Ok(next) = rx.try_recv()
        {
            ahead.push_back(next);
        }
        if batch.len() >= crate::batch::MAX_FRAMES {
            if !flush(&mut wr, &mut batch, write_timeout, peer).await {
                break;
            }
            now = None;
        }
    }
    let _ = flush(&mut wr, &mut batch, write_timeout, peer).await;
    dead.cancel();
    let _ = wr.shutdown().await;
}

/// The metric series a connection's answers count in, looked up once per (api, result, cluster) rather than per
/// answer (a label lookup hashes the label values under a lock).
#[derive(Default)]
struct Handles(Vec<(ApiKey, &'static str, Arc<Upstream>, Series)>);

/// One (api, result, cluster)'s series.
struct Series {
    count: IntCounter,
    latency: Histogram,
    request_bytes: IntCounter,
    response_bytes: IntCounter,
}

impl Handles {
    fn get(&mut self, shared: &Shared, api: ApiKey, result: &'static str, up: &Arc<Upstream>) -> &Series {
        let at = match self.0.iter().position(|(a, r, u, _)| *a == api && *r == result && Arc::ptr_eq(u, up)) {
            Some(at) => at,
            None => {
                let name = api_name(api);
                let m = &shared.metrics;
                let series = Series {
                    count: m.requests.with_label_values(&[name, result]),
                    latency: m.latency.with_label_values(&[name, up.name()]),
                    request_bytes: m.request_bytes.with_label_values(&[name, up.name()]),
                    response_bytes: m.response_bytes.with_label_values(&[name, up.name()]),
                };
                // A connection speaks a handful of APIs to one or two clusters; a reload may bring new ones.
                if self.0.len() >= 16 {
                    self.0.remove(0);
                }
                self.0.push((api, result, up.clone(), series));
                self.0.len() - 1
            }
        };
        &self.0[at].3
    }
}

/// Writes the batch; false when the client cannot be written to (gone, or not reading for `timeout`).
async fn flush(wr: &mut OwnedWriteHalf, batch: &mut Vec<Buf>, timeout: Duration, peer: SocketAddr) -> bool {
    if batch.is_empty() {
        return true;
    }
    // Most batches fit in the socket's buffer: written at once, with no timer set up for them.
    let total: usize = batch.iter().map(|b| b.len()).sum();
    let done = match wr.try_write_vectored(&crate::batch::slices(batch)) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "client write failed");
            batch.clear();
            return false;
        }
    };
    if done == total {
        batch.clear();
        return true;
    }
    let written = tokio::time::timeout(timeout, crate::batch::write_rest(wr, batch, done)).await;
    // The frames (and their budget charges) go once written, or once the connection gives up on them.
    batch.clear();
    match written {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "client write failed");
            false
        }
        Err(_) => {
            tracing::warn!(%peer, ?timeout, "client did not read its answers in time; closing client connection");
            false
        }
    }
}

/// Whether the answer is there without waiting; takes an upstream answer that already came.
fn try_ready(p: &mut Pending) -> (bool, Option<Buf>) {
    if !p.fanout.is_empty() {
        return (false, None);
    }
    match &mut p.body {
        Body::Local(_) | Body::Taken => (true, None),
        Body::Upstream { rx, .. } => match rx.try_recv() {
            Ok(frame) => (true, Some(frame)),
            Err(OneshotTryRecvError::Empty) => (false, None),
            Err(OneshotTryRecvError::Closed) => (true, None),
        },
    }
}

/// The finished answer: result label, frame, throttle.
type Answer = (&'static str, Buf, Duration);

/// Awaits a request's answer (within its deadline) and puts it through the response pipeline; `Err` (logged) when
/// there is none to give.
async fn answer(shared: &Shared, p: &mut Pending, early: Option<Buf>, peer: SocketAddr) -> Result<Answer, ()> {
    let snapshot = p.snapshot.clone();
    let (result, mut frame, source) = match std::mem::replace(&mut p.body, Body::Taken) {
        Body::Taken => return Err(()),
        Body::Local(frame) => ("local", frame, Source::Local),
        Body::Upstream { rx, deadline } => {
            let frame = match early {
                Some(frame) => Some(frame),
                None => {
                    let wait = upstream(shared, &snapshot, p.up.name(), rx);
                    match tokio::time::timeout_at(deadline.into(), wait).await {
                        Ok(frame) => frame,
                        Err(_) => {
                            if let Some(suppressed) = UPSTREAM_SLOW.allow() {
                                let late = Instant::now() - p.started;
                                tracing::warn!(%peer, api = ?p.api, ?late, suppressed, "upstream did not answer in time");
                            }
                            return Err(());
                        }
                    }
                }
            };
            let Some(frame) = frame else {
                if let Some(suppressed) = UPSTREAM_LOST.allow() {
                    tracing::warn!(%peer, api = ?p.api, suppressed, "upstream connection lost; closing client connection");
                }
                return Err(());
            };
            let mut others = Vec::new();
            for copy in std::mem::take(&mut p.fanout) {
                let answer = match copy.answer {
                    Some(rx) => tokio::time::timeout(FANOUT_WAIT, rx).await.ok().and_then(|r| r.ok()),
                    None => None,
                };
                others.push((copy.cluster, answer, copy.topics));
            }
            ("forwarded", frame, Source::Upstream { cluster: p.up.name(), others })
        }
    };
    let health = shared.store.health.view_if(snapshot.routed);
    let health = health.as_deref().unwrap_or(crate::state::no_routes());
    let ctx = response::Ctx { snapshot: &snapshot, live: &shared.store.live, health, brokers: &shared.brokers };
    let owed = std::mem::take(&mut p.owed);
    match response::finish(&ctx, owed, p.api, p.header.api_version, &mut frame, source) {
        Ok(throttle) => Ok((result, frame, throttle)),
        Err(e) => {
            tracing::warn!(%peer, api = ?p.api, error = %e, "cannot finish a response; closing client connection");
            Err(())
        }
    }
}

/// An upstream answer, or `None` when its connection was lost or its cluster was found unreachable meanwhile: a
/// client waiting on a hung cluster is then closed like one whose broker went away, and reconnects to where its
/// routes point now instead of waiting for its deadline.
async fn upstream(
    shared: &Shared,
    snapshot: &crate::state::Snapshot,
    cluster: &str,
    rx: tokio::sync::oneshot::Receiver<Buf>,
) -> Option<Buf> {
    // Without routes there are no probes and nowhere else to go: the common case skips the watch entirely.
    if !snapshot.routed {
        return rx.await.ok();
    }
    tokio::select! {
        r = rx => r.ok(),
        _ = shared.store.health.until_down(cluster) => None,
    }
}
