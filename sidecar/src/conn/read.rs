//! The reading half of a client connection: frames in, the pipeline's step carried out.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::error::{Error, Result};
use super::{Body, Copy, Pending, Shared, Target};
use crate::budget::{Charge, Share};
use crate::buffer::Buf;
use crate::pipeline::{self, Forward, Step, api_name, request, sasl};
use crate::protocol::request::{Malformed, Request};
use crate::protocol::{self, FrameError, MIN_REQUEST, reader};
use crate::upstream::Upstream;
use crate::upstream::pool::{BrokerPool, Lease};

/// How long a Metadata request waits for a connection to another routed cluster before leaving it out.
const FANOUT_CONNECT: Duration = Duration::from_secs(2);
/// Room reserved for a Fetch response beyond `max_bytes`: headers, topic and partition entries, aborted
/// transactions.
const FETCH_OVERHEAD: usize = 16 * 1024;
/// The least a Fetch reserves (it waits for this much); with less, its `max_bytes` is lowered to what it got.
const FETCH_FLOOR: usize = 64 * 1024;
/// Added to the time a request's own fields let the broker hold it: its deadline upstream. Requests the broker
/// answers at once get this alone, about a Kafka client's request.timeout.ms.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(30);
/// How long a connection's last read at shutdown waits: what the client sent before is already in the socket, so
/// this only has to cover the reactor's turn, and a frame still arriving.
const LAST_READ: Duration = Duration::from_millis(200);

/// What the reader knows of its client connection.
pub(super) struct Client<'a> {
    pub target: &'a Target,
    /// Cancelled when the writer stopped or the sidecar shuts down.
    pub dead: &'a CancellationToken,
    pub peer: SocketAddr,
    /// When the next request may be read (quotas).
    pub hold: &'a Hold,
    /// The connection's share of the memory budget.
    pub share: &'a Share,
    /// Answers due, in request order, to the writer.
    pub tx: &'a mpsc::Sender<Pending>,
}

/// The upstream side a connection currently uses; looked up again when a reload replaces its cluster.
struct Route {
    up: Arc<Upstream>,
    pool: Arc<BrokerPool>,
    lease: Lease,
}

fn reject(shared: &Shared, reason: &'static str) {
    shared.metrics.frames_rejected.with_label_values(&[reason]).inc();
}

/// Reads and carries out requests until the client closes (`Ok`) or the connection must close (`Err`, why).
pub(super) async fn run(shared: &Arc<Shared>, mut rd: OwnedReadHalf, client: &Client<'_>) -> Result<()> {
    let limits = &shared.limits;
    let mut current: Option<Route> = None;
    let mut sasl = sasl::Local::new(shared.listen, client.peer);
    let frame_limits = reader::Limits {
        max: limits.max_frame_bytes,
        min: MIN_REQUEST,
        idle: limits.idle_timeout,
        partial: limits.frame_timeout,
    };
    let mut frames =
        reader::FrameReader::new(&mut rd, shared.buffers.clone(), frame_limits).with_budget(client.share.clone());
    // When the frames at hand were read: the frames of one read share it (one clock read per batch).
    let mut started = Instant::now();
    // Set once shutdown has been met: the frames read by then are served, nothing more is read.
    let mut draining = false;
    loop {
        let held = client.hold.wait().await;
        // A frame already read needs neither the select nor a clock read; only waiting for the client does.
        let (frame, waited) = match frames.next_buffered() {
            Ok(None) => match wait_frame(shared, client, &mut frames, &mut draining).await {
                Some(f) => (f, true),
                None => return Ok(()),
            },
            buffered => (buffered, held),
        };
        if waited {
            started = Instant::now();
        }
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(e) => {
                return match e.reason() {
                    Some(reason) => {
                        reject(shared, reason);
                        Err(Error::Frame(e))
                    }
                    None => {
                        tracing::debug!(peer = %client.peer, error = %e, "client connection ended");
                        Ok(())
                    }
                };
            }
        };
        let request_bytes = frame.len() as u64;
        let request = match Request::new(frame) {
            Ok(r) => r,
            Err((Malformed::Short, _)) => return Err(Error::ShortFrame),
            Err((Malformed::UnknownApi(key), _)) => {
                reject(shared, "unknown_api");
                return Err(Error::UnknownApi(key));
            }
        };
        // A connection served by a fallback cluster tries its own broker again on every request.
        let fallback = |r: &Route| matches!(client.target, Target::Broker { cluster, .. } if cluster != r.up.name());
        let route = match &mut current {
            Some(r) if !(r.up.is_retired() || r.lease.conn.is_closed() || fallback(r)) => r,
            slot => slot.insert(route(shared, client.target).await?),
        };
        let Some(versions) = route.up.versions() else { return Err(Error::VersionsUnknown) };
        let snapshot = shared.store.snapshot();
        let health = shared.store.health.view_if(snapshot.routed);
        let ctx = request::Ctx {
            snapshot: &snapshot,
            live: &shared.store.live,
            health: health.as_deref().unwrap_or(crate::state::no_routes()),
            versions: &versions,
            own: route.up.endpoint(),
            now: started,
        };
        let (header, api) = (request.header, request.api);
        let pending = |up: &Arc<Upstream>, body, owed, fanout| Pending {
            header,
            api,
            started,
            request_bytes,
            up: up.clone(),
            snapshot: snapshot.clone(),
            body,
            owed,
            fanout,
        };
        match pipeline::decide(&ctx, &mut sasl, request) {
            Step::Respond { version, body, owed } => {
                if !owed.delay.is_zero() {
                    tokio::select! {
                        _ = shared.shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(owed.delay) => {}
                    }
                }
                let mut frame = shared.buffers.get(body.len() + 16);
                protocol::response_frame(&mut frame, api, version, header.correlation_id, &body);
                send(shared, client, pending(&route.up, Body::Local(frame), owed, Vec::new())).await?;
            }
            Step::Close { reason, label } => {
                reject(shared, label.unwrap_or("policy"));
                return Err(Error::Refused(reason));
            }
            Step::Forward(forward) => {
                match dispatch(shared, client, route, forward, started).await? {
                    Some((up, body, owed, fanout)) => send(shared, client, pending(&up, body, owed, fanout)).await?,
                    // acks=0: no answer comes to count the request's bytes with.
                    None => shared
                        .metrics
                        .request_bytes
                        .with_label_values(&[api_name(api), route.up.name()])
                        .inc_by(request_bytes),
                }
            }
        }
    }
}

/// Waits for the client's next frame; `None` once the connection stops reading: its writer stopped, or the sidecar
/// shuts down and the connection's one last read (after which `draining` is set) brought no frame.
async fn wait_frame(
    shared: &Shared,
    client: &Client<'_>,
    frames: &mut reader::FrameReader<&mut OwnedReadHalf>,
    draining: &mut bool,
) -> Option<std::result::Result<Option<Buf>, FrameError>> {
    tokio::select! {
        biased;
        _ = client.dead.cancelled() => {}
        f = frames.next() => return Some(f),
    }
    if *draining || !shared.shutdown.is_cancelled() {
        return None;
    }
    // Requests the client sent before the shutdown may still sit in the socket: one last read takes them, so they
    // are answered within the grace period rather than cut off unanswered.
    *draining = true;
    tokio::time::timeout(LAST_READ, frames.next()).await.ok()
}

/// Queues an answer for the writer. A client whose in-flight queue stays full (its answers do not come) is still
/// closed at the idle timeout.
async fn send(shared: &Shared, client: &Client<'_>, p: Pending) -> Result<()> {
    // With room in the queue (the common case) no timer is set up.
    let p = match client.tx.try_send(p) {
        Ok(()) => return Ok(()),
        Err(TrySendError::Closed(_)) => return Err(Error::WriterStopped),
        Err(TrySendError::Full(p)) => p,
    };
    let idle = shared.limits.idle_timeout;
    match tokio::time::timeout(idle, client.tx.send(p)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Error::WriterStopped),
        Err(_) => Err(Error::Stalled(idle)),
    }
}

/// An answer to wait for: the cluster giving it, the body, what the response owes, the fan-out copies.
type Due = (Arc<Upstream>, Body, pipeline::Owed, Vec<Copy>);

/// Sends a forwarded request upstream; the answer to wait for, if any.
async fn dispatch(
    shared: &Shared,
    client: &Client<'_>,
    route: &mut Route,
    forward: Forward,
    started: Instant,
) -> Result<Option<Due>> {
    let Forward { cluster, mut request, fanout, mut owed } = forward;
    let before = owed.before.take();
    let snapshot_clusters = &shared.clusters;
    let mut copies = Vec::new();
    for copy in fanout {
        let answer = match snapshot_clusters.get(&copy.cluster) {
            Some(other) => send_copy(shared, client.share, &other, copy.frame).await,
            None => None,
        };
        copies.push(Copy { cluster: copy.cluster, answer, topics: copy.topics });
    }
    let expects = request.expects_response();
    let deadline = started + deadline(shared, &mut request);
    let long_poll = request.is_long_poll();
    let api = request.api;
    let mut frame = request.into_frame().map_err(Error::Encode)?;
    if let Some(other) = cluster.and_then(|c| shared.clusters.get(&c)) {
        // The group's (or transaction's) coordinator lives in another cluster.
        let lease = other.bootstrap_pool().lease().await.map_err(Error::Upstream)?;
        let credit = response_credit(shared, client.share, &mut frame).await;
        let rx = lease.conn.send(frame, Some((Some(credit), deadline))).await;
        let rx = rx.map_err(|_| Error::UpstreamClosed)?.ok_or(Error::NoReply)?;
        return Ok(Some((other, Body::Upstream { rx, deadline }, owed, copies)));
    }
    let mut credit = if expects { Some(response_credit(shared, client.share, &mut frame).await) } else { None };
    // A closed connection gives the frame back: retry once on a fresh one.
    for attempt in 0..2 {
        let conn = if long_poll {
            route.pool.long_poll().await.map_err(Error::Upstream)?
        } else {
            if attempt > 0 {
                if matches!(client.target, Target::Bootstrap) {
                    // A bootstrap connection is tied to no broker: the retry goes through the cluster's bootstrap
                    // list, as a new connection would (a rolling restart takes one broker away at a time).
                    *route = self::route(shared, client.target).await?;
                } else {
                    route.lease = route.pool.lease().await.map_err(Error::Upstream)?;
                }
            }
            route.lease.conn.clone()
        };
        if let Some(before) = before.as_deref() {
            // Ahead of the request on the same connection (a broker answers each connection's requests in turn);
            // its answer is dropped.
            let mut first = shared.buffers.get(before.len());
            first.extend_from_slice(before);
            let _ = conn.send(first, Some((Some(client.share.force(0)), deadline))).await;
        }
        let reply = expects.then(|| (credit.take(), deadline));
        match conn.send(frame, reply).await {
            Ok(Some(rx)) => {
                let body = Body::Upstream { rx, deadline };
                return Ok(Some((route.up.clone(), body, owed, copies)));
            }
            Ok(None) => {
                // acks=0: no answer carries the throttle, so the connection's next read is held instead (as a
                // broker mutes the channel).
                let throttle = owed.throttle();
                if let Some(kind) = owed.throttle_kind.filter(|_| !throttle.is_zero()) {
                    shared.store.live.throttled(kind, throttle);
                    client.hold.set(throttle);
                }
                shared.metrics.requests.with_label_values(&[api_name(api), "forwarded"]).inc();
                return Ok(None);
            }
            Err(back) if attempt == 0 => {
                frame = back;
                if expects {
                    credit = Some(response_credit(shared, client.share, &mut frame).await);
                }
            }
            Err(_) => return Err(Error::UpstreamClosed),
        }
    }
    Err(Error::UpstreamClosed)
}

/// How long the answer may take upstream: what the request's own fields let the broker wait, plus a margin,
/// capped by `--request-timeout-seconds`.
fn deadline(shared: &Shared, request: &mut Request) -> Duration {
    (request.own_wait() + DEADLINE_MARGIN).min(shared.limits.request_timeout)
}

/// Room for the response of a request about to be sent: a Fetch reserves up to its `max_bytes` and, when the
/// budget is short, has `max_bytes` lowered in the frame to the room it got; other responses are charged when
/// they arrive (a zero credit).
async fn response_credit(shared: &Shared, share: &Share, frame: &mut Buf) -> Charge {
    let Some(header) = protocol::Header::peek(frame) else { return share.force(0) };
    let Some((at, max_bytes)) = protocol::fetch_max_bytes(frame, &header) else { return share.force(0) };
    let want = usize::try_from(max_bytes).unwrap_or(0).saturating_add(FETCH_OVERHEAD);
    let credit = share.reserve_up_to(want, FETCH_FLOOR.min(want)).await;
    if credit.bytes() < want {
        let lowered = i32::try_from(credit.bytes().saturating_sub(FETCH_OVERHEAD).max(1)).unwrap_or(i32::MAX);
        frame[at..at + 4].copy_from_slice(&lowered.to_be_bytes());
        shared.metrics.fetch_lowered.inc();
    }
    credit
}

/// Sends a copy of a Metadata request to another cluster; `None` when it cannot be reached (it then contributes
/// no brokers, and its topics are answered LEADER_NOT_AVAILABLE until a route moves them or it returns).
async fn send_copy(
    shared: &Shared,
    share: &Share,
    up: &Arc<Upstream>,
    frame: bytes::BytesMut,
) -> Option<oneshot::Receiver<Buf>> {
    // A cluster the probes found unreachable is not waited for (a hung one would hold every Metadata request for
    // a dial's timeout); the probes notice when it returns.
    if !shared.store.health.view().reachable(up.name()) {
        return None;
    }
    let lease = match tokio::time::timeout(FANOUT_CONNECT, up.bootstrap_pool().lease()).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return left_out(up, &e.to_string()),
        Err(_) => return left_out(up, "connect timed out"),
    };
    let mut copy = shared.buffers.get(frame.len());
    copy.extend_from_slice(&frame);
    let deadline = Instant::now() + DEADLINE_MARGIN.min(shared.limits.request_timeout);
    lease.conn.send(copy, Some((Some(share.force(0)), deadline))).await.ok().flatten()
}

fn left_out(up: &Upstream, error: &str) -> Option<oneshot::Receiver<Buf>> {
    up.bootstrap_failed();
    tracing::debug!(cluster = up.name(), error, "metadata fan-out: cluster unreachable");
    None
}

/// The cluster and broker connection a client connection uses.
async fn route(shared: &Shared, target: &Target) -> Result<Route> {
    let health = &shared.store.health;
    match target {
        Target::Bootstrap => {
            let snapshot = shared.store.snapshot();
            let up = shared.clusters.get(snapshot.default_cluster()).ok_or(Error::NoDefaultCluster)?;
            let servers = up.cluster.bootstrap_servers.len().max(1);
            let mut last = format!("{} is unreachable", up.name());
            let tries = if health.is_down(up.name()) { 0 } else { servers };
            for _ in 0..tries {
                let pool = up.bootstrap_pool();
                match pool.lease().await {
                    Ok(lease) => return Ok(Route { up, pool, lease }),
                    Err(e) => {
                        last = e.to_string();
                        up.bootstrap_failed();
                    }
                }
            }
            // With routes, another cluster can still serve metadata while the default one is down.
            if let Some(route) = fallback(shared, up.name()).await {
                return Ok(route);
            }
            Err(Error::NoBootstrap { cluster: up.name().to_string(), last })
        }
        Target::Broker { cluster, node } => {
            let up = shared.clusters.get(cluster).ok_or_else(|| Error::ClusterGone(cluster.clone()))?;
            let addr = shared.brokers.upstream(cluster, *node).ok_or(Error::UnknownBroker(*node))?;
            let pool = up.pool(&addr);
            // A cluster the probes found unreachable is not dialled (a hung one would hold the client for a
            // dial's timeout on every request).
            let error = if health.is_down(cluster) {
                Error::ClusterDown(cluster.clone())
            } else {
                match pool.lease().await {
                    Ok(lease) => return Ok(Route { up, pool, lease }),
                    Err(e) => Error::Upstream(e),
                }
            };
            // With routes, a client still holding this broker is served by another cluster while this one is
            // down: its Metadata then shows where routes point now, and Produce/Fetch for topics routed away
            // are answered NOT_LEADER_OR_FOLLOWER, which sends it there.
            if let Some(route) = fallback(shared, up.name()).await {
                return Ok(route);
            }
            Err(error)
        }
    }
}

/// Another cluster's bootstrap connection, when routes are in play.
async fn fallback(shared: &Shared, own: &str) -> Option<Route> {
    let snapshot = shared.store.snapshot();
    if !snapshot.routed {
        return None;
    }
    for other in shared.clusters.others(&snapshot, own) {
        let pool = other.bootstrap_pool();
        if let Ok(lease) = pool.lease().await {
            return Some(Route { up: other, pool, lease });
        }
    }
    None
}

/// When a connection may read its next request; set by quotas on the response path.
#[derive(Debug, Default)]
pub(super) struct Hold(Mutex<Option<Instant>>);

impl Hold {
    /// Holds the next request for `throttle` from now (a longer hold already in place stays).
    pub fn set(&self, throttle: Duration) {
        let until = Instant::now() + throttle;
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none_or(|u| u < until) {
            *slot = Some(until);
        }
    }

    /// Waits until the hold (if any) is over; whether there was one.
    pub async fn wait(&self) -> bool {
        let until = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(until) = until {
            tokio::time::sleep_until(until.into()).await;
        }
        until.is_some()
    }
}
