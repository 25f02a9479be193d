//! One client connection: a reader task that peeks at each request, asks the filters and hands it to the
//! upstream pool, and a writer task that returns responses strictly in request order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::messages::ApiKey;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::App;
use crate::budget::{Charge, Share};
use crate::buffer::Buf;
use crate::cluster::Upstream;
use crate::filter::{self, Verdict};
use crate::pool::{BrokerPool, Lease};
use crate::protocol::{self, Header, MIN_REQUEST, errors, reader, rewrite};
use crate::ratelog::Gate;

/// Which listener a client connection came in on.
#[derive(Clone, Debug)]
pub enum Target {
    /// The bootstrap address: served by a bootstrap server of the default cluster.
    Bootstrap,
    /// A virtual broker: served by that real broker.
    Broker { cluster: String, node: i32 },
}

/// A response on its way back, in request order.
struct Pending {
    header: Header,
    api: ApiKey,
    started: Instant,
    up: Arc<Upstream>,
    body: Body,
    /// What the policy owes the response (denied entries to merge, throttling).
    after: filter::After,
    /// Metadata answers of the other routed clusters, merged into this one.
    fanout: Vec<crate::routing::Copy>,
}

enum Body {
    /// Answered by the sidecar itself; complete frame with the client's correlation id.
    Local(Buf),
    Upstream(oneshot::Receiver<Buf>),
}

/// The upstream side a connection currently uses; looked up again when a reload replaces its cluster.
struct Route {
    up: Arc<Upstream>,
    pool: Arc<BrokerPool>,
    lease: Lease,
}

pub async fn serve(app: Arc<App>, stream: TcpStream, peer: SocketAddr, target: Target, _permit: OwnedSemaphorePermit) {
    app.metrics.client_connections.inc();
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(app.settings.limits.max_in_flight);
    let dead = CancellationToken::new();
    // Quotas hold the connection's next request (KIP-219): the writer sets it, the reader waits it out.
    let hold = Arc::new(filter::Hold::default());
    let paused = Some(app.metrics.client_paused_seconds.clone());
    let share = Share::new(app.budget.clone(), app.settings.limits.connection_memory_bytes, paused);
    let writer = tokio::spawn(write_loop(app.clone(), wr, rx, dead.clone(), peer, hold.clone()));
    let client = Client { target: &target, dead: &dead, peer, hold: &hold, share: &share };
    if let Err(reason) = read_loop(&app, rd, &tx, &client).await {
        match CLOSING.allow() {
            Some(suppressed) => tracing::warn!(%peer, ?target, %reason, suppressed, "closing client connection"),
            None => tracing::debug!(%peer, ?target, %reason, "closing client connection"),
        }
    }
    drop(tx);
    let _ = writer.await;
    app.metrics.client_connections.dec();
    // Frames this connection read and the sidecar still holds (acks=0 produce on their way upstream) are
    // written before the connection's permit goes back: shutdown waits for them instead of dropping them.
    if !share.drained(app.settings.limits.shutdown_grace).await {
        tracing::debug!(%peer, held = share.held(), "connection's frames not all written within the grace period");
    }
}

/// What the read loop knows of its client connection.
struct Client<'a> {
    target: &'a Target,
    /// Cancelled when the writer stopped.
    dead: &'a CancellationToken,
    peer: SocketAddr,
    /// When the next request may be read (quotas).
    hold: &'a filter::Hold,
    /// The connection's share of the memory budget.
    share: &'a Share,
}

/// Room reserved for a Fetch response beyond `max_bytes`: headers, topic and partition entries, aborted
/// transactions.
const FETCH_OVERHEAD: usize = 16 * 1024;
/// The least a Fetch reserves (it waits for this much); with less, its `max_bytes` is lowered to what it got.
const FETCH_FLOOR: usize = 64 * 1024;

/// Room for the response of a request about to be sent: a Fetch reserves up to its `max_bytes` and, when the
/// budget is short, has `max_bytes` lowered in the frame to the room it got; other responses are charged when
/// they arrive (a zero credit).
async fn response_credit(app: &App, share: &Share, header: &Header, frame: &mut Buf) -> Charge {
    let Some((at, max_bytes)) = protocol::fetch_max_bytes(frame, header) else { return share.force(0) };
    let want = usize::try_from(max_bytes).unwrap_or(0).saturating_add(FETCH_OVERHEAD);
    let credit = share.reserve_up_to(want, FETCH_FLOOR.min(want)).await;
    if credit.bytes() < want {
        let lowered = i32::try_from(credit.bytes().saturating_sub(FETCH_OVERHEAD).max(1)).unwrap_or(i32::MAX);
        frame[at..at + 4].copy_from_slice(&lowered.to_be_bytes());
        app.metrics.fetch_lowered.inc();
    }
    credit
}

/// Warnings that one bad client, or a broker going away under many clients, would otherwise repeat per
/// connection; `suppressed` on each line says how many were held back since the previous one.
static CLOSING: Gate = Gate::every_ms(5_000);
static UPSTREAM_LOST: Gate = Gate::every_ms(5_000);
static UPSTREAM_SLOW: Gate = Gate::every_ms(5_000);

fn reject(app: &App, reason: &'static str) {
    app.metrics.frames_rejected.with_label_values(&[reason]).inc();
}

async fn route(app: &Arc<App>, target: &Target) -> Result<Route, String> {
    match target {
        Target::Bootstrap => {
            let up = app.default_upstream().ok_or("no default cluster")?;
            let servers = up.cluster.bootstrap_servers.len().max(1);
            let mut last = format!("{} is unreachable", up.name());
            let tries = if app.filters.routing.is_down(up.name()) { 0 } else { servers };
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
            let snapshot = app.config.load_full();
            if crate::routing::routed(&snapshot) {
                for other in crate::routing::fanout(app, &snapshot, up.name()) {
                    let pool = other.bootstrap_pool();
                    if let Ok(lease) = pool.lease().await {
                        return Ok(Route { up: other, pool, lease });
                    }
                }
            }
            Err(format!("no bootstrap server of {} answers: {last}", up.name()))
        }
        Target::Broker { cluster, node } => {
            let up = app.upstream(cluster).ok_or_else(|| format!("cluster {cluster} is no longer configured"))?;
            let addr = app.brokers.upstream(cluster, *node).ok_or_else(|| format!("broker {node} is unknown"))?;
            let pool = up.pool(&addr);
            // A cluster the probes found unreachable is not dialled (a hung one would hold the client for a
            // dial's timeout on every request).
            let error = if app.filters.routing.is_down(cluster) {
                format!("cluster {cluster} is unreachable")
            } else {
                match pool.lease().await {
                    Ok(lease) => return Ok(Route { up, pool, lease }),
                    Err(e) => e.to_string(),
                }
            };
            // With routes, a client still holding this broker is served by another cluster while this one is
            // down: its Metadata then shows where routes point now, and Produce/Fetch for topics routed away
            // are answered NOT_LEADER_OR_FOLLOWER, which sends it there.
            let snapshot = app.config.load_full();
            if crate::routing::routed(&snapshot) {
                for other in crate::routing::fanout(app, &snapshot, up.name()) {
                    let pool = other.bootstrap_pool();
                    if let Ok(lease) = pool.lease().await {
                        return Ok(Route { up: other, pool, lease });
                    }
                }
            }
            Err(error)
        }
    }
}

async fn read_loop(
    app: &Arc<App>,
    mut rd: OwnedReadHalf,
    tx: &mpsc::Sender<Pending>,
    client: &Client<'_>,
) -> Result<(), String> {
    let Client { target, dead, peer, hold, share } = *client;
    let limits = &app.settings.limits;
    let mut current: Option<Route> = None;
    let mut sasl = super::sasl::Local::new(app.settings.listen, peer);
    let frame_limits = reader::Limits {
        max: limits.max_frame_bytes,
        min: MIN_REQUEST,
        idle: limits.idle_timeout,
        partial: limits.frame_timeout,
    };
    let mut frames = reader::FrameReader::new(&mut rd, app.buffers.clone(), frame_limits).with_budget(share.clone());
    loop {
        hold.wait().await;
        let read = frames.next();
        let frame = tokio::select! {
            biased;
            _ = app.shutdown.cancelled() => return Ok(()),
            _ = dead.cancelled() => return Ok(()),
            f = read => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(e) => {
                return match e.reason() {
                    Some(reason) => {
                        reject(app, reason);
                        Err(e.to_string())
                    }
                    None => {
                        tracing::debug!(%peer, error = %e, "client connection ended");
                        Ok(())
                    }
                };
            }
        };
        let started = Instant::now();
        let Some(header) = Header::peek(&frame) else { return Err("frame too short".into()) };
        let Some(api) = header.api() else {
            reject(app, "unknown_api");
            return Err(format!("unknown api key {}", header.api_key));
        };
        // A connection served by a fallback cluster tries its own broker again on every request.
        let fallback = |r: &Route| matches!(target, Target::Broker { cluster, .. } if cluster != r.up.name());
        if current.as_ref().is_none_or(|r| r.up.is_retired() || r.lease.conn.is_closed() || fallback(r)) {
            current = Some(route(app, target).await?);
        }
        let Some(route) = current.as_mut() else { return Err("no route".into()) };
        let up = route.up.clone();
        let Some(versions) = up.versions() else { return Err("upstream versions unknown".into()) };
        let local = |body: &[u8], version: i16| {
            let mut buf = app.buffers.get(body.len() + 16);
            protocol::response_frame(&mut buf, api, version, header.correlation_id, body);
            buf
        };
        // Client SASL is completed here (loopback only); upstream, the pool authenticates with the policy's own.
        if let Some(answer) = sasl.answer(&up, api, header.api_version, &frame) {
            let (version, body) = answer?;
            let body = Body::Local(local(&body, version));
            send(tx, Pending { header, api, started, up, body, after: Default::default(), fanout: Vec::new() }).await?;
            continue;
        }
        if api == ApiKey::ApiVersions {
            let (version, body) = versions.answer(header.api_version).map_err(|e| e.to_string())?;
            let body = super::sasl::advertise(body, version)?;
            let body = Body::Local(local(&body, version));
            send(tx, Pending { header, api, started, up, body, after: Default::default(), fanout: Vec::new() }).await?;
            continue;
        }
        if !versions.allows(header.api_key, header.api_version) {
            // UNSUPPORTED_VERSION on every entity the request names; a version kafka-protocol cannot encode has
            // no answer the client could parse, so the connection closes (as a broker's does), counted and logged.
            let Some(body) = errors::unsupported(api, header.api_version, &frame) else {
                reject(app, "unsupported_version");
                return Err(format!("{api:?} v{} is not supported", header.api_version));
            };
            let body = Body::Local(local(&body, header.api_version));
            send(tx, Pending { header, api, started, up, body, after: Default::default(), fanout: Vec::new() }).await?;
            continue;
        }
        let snapshot = app.config.load_full();
        let (verdict, after) = filter::check(&filter::Request::new(header, api, &frame), &snapshot, &app.filters);
        let mut rewritten = None;
        match verdict {
            Verdict::Forward => {}
            Verdict::ForwardRewritten(new) => rewritten = Some(new),
            Verdict::RespondLocally(body) => {
                let body = Body::Local(local(&body, header.api_version));
                send(tx, Pending { header, api, started, up, body, after, fanout: Vec::new() }).await?;
                continue;
            }
            Verdict::Close(reason) => {
                reject(app, "policy");
                return Err(reason);
            }
        }
        let mut frame = frame;
        if let Some(new) = rewritten {
            frame.replace_with(&new);
        }
        let expects = protocol::expects_response(&frame, &header);
        let mut after = Some(after);
        let mut fanout = Vec::new();
        if crate::routing::routed(&snapshot) {
            if expects
                && crate::routing::may_span(api, &frame, header.api_version)
                && let Ok(body) = filter::Request::new(header, api, &frame).body()
                && let Some(answer) = crate::routing::refuse(app, &snapshot, api, &body, header.api_version)
            {
                // A group's offsets or a transaction's partitions in another cluster than its own: refused.
                let body = Body::Local(local(&answer, header.api_version));
                let after = after.take().unwrap_or_default();
                send(tx, Pending { header, api, started, up, body, after, fanout }).await?;
                continue;
            }
            if api == ApiKey::Metadata {
                let requests = crate::routing::metadata_requests(app, &snapshot, &frame, header.api_version)
                    .map_err(|e| e.to_string())?;
                for request in requests {
                    if request.cluster == up.name() {
                        frame.replace_with(&request.frame);
                    } else if let Some(other) = app.upstream(&request.cluster) {
                        let answer = crate::routing::send_copy(app, &other, &request.frame).await;
                        fanout.push(crate::routing::Copy { up: other, answer, topics: request.topics });
                    }
                }
            } else if (api == ApiKey::Produce || api == ApiKey::Fetch)
                && expects
                && crate::routing::has_failover(&snapshot)
                && let Ok(body) = filter::Request::new(header, api, &frame).body()
                && let Some(answer) = crate::routing::steer(app, &snapshot, up.name(), &body, header.api_version)
            {
                // The route moved: send the client back to Metadata, which now points at the other cluster.
                let body = Body::Local(local(&answer, header.api_version));
                let after = after.take().unwrap_or_default();
                send(tx, Pending { header, api, started, up, body, after, fanout }).await?;
                continue;
            } else if api == ApiKey::FindCoordinator
                && let Ok(body) = filter::Request::new(header, api, &frame).body()
                && let Some(cluster) = crate::routing::coordinator_cluster(app, &snapshot, &body)
                && cluster != up.name()
                && let Some(there) = app.upstream(&cluster)
            {
                // The group's (or transaction's) coordinator lives in the cluster its route picks.
                let lease = there.bootstrap_pool().lease().await.map_err(|e| e.to_string())?;
                let rx = lease
                    .conn
                    .send(frame, true, Some(share.force(0)))
                    .await
                    .map_err(|_| "upstream connection closed".to_string())?;
                let rx = rx.ok_or("no reply expected")?;
                let after = after.take().unwrap_or_default();
                let body = Body::Upstream(rx);
                send(tx, Pending { header, api, started, up: there, body, after, fanout }).await?;
                continue;
            }
        }
        let mut credit = if expects { Some(response_credit(app, share, &header, &mut frame).await) } else { None };
        // A closed connection gives the frame back: retry once on a fresh one.
        for attempt in 0..2 {
            let conn = if protocol::is_long_poll(&frame, &header) {
                route.pool.long_poll().await.map_err(|e| e.to_string())?
            } else {
                if attempt > 0 {
                    route.lease = route.pool.lease().await.map_err(|e| e.to_string())?;
                }
                route.lease.conn.clone()
            };
            match conn.send(frame, expects, credit.take()).await {
                Ok(Some(rx)) => {
                    let after = after.take().unwrap_or_default();
                    let fanout = std::mem::take(&mut fanout);
                    send(tx, Pending { header, api, started, up, body: Body::Upstream(rx), after, fanout }).await?;
                    break;
                }
                Ok(None) => {
                    // acks=0: no response carries the throttle, so the connection's next read is held instead (as
                    // a broker mutes the channel).
                    if let Some(after) = after.take() {
                        let throttle = filter::unanswered(&app.filters, &after);
                        if !throttle.is_zero() {
                            hold.set(throttle);
                        }
                    }
                    app.metrics.requests.with_label_values(&[api_name(api), "forwarded"]).inc();
                    break;
                }
                Err(back) if attempt == 0 => {
                    frame = back;
                    if expects {
                        credit = Some(response_credit(app, share, &header, &mut frame).await);
                    }
                }
                Err(_) => return Err("upstream connection closed".into()),
            }
        }
    }
}

async fn send(tx: &mpsc::Sender<Pending>, p: Pending) -> Result<(), String> {
    tx.send(p).await.map_err(|_| "response writer stopped".to_string())
}

async fn write_loop(
    app: Arc<App>,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Pending>,
    dead: CancellationToken,
    peer: SocketAddr,
    hold: Arc<filter::Hold>,
) {
    let timeout = app.settings.limits.request_timeout;
    while let Some(p) = rx.recv().await {
        let (mut frame, result) = match p.body {
            Body::Local(frame) => (frame, "local"),
            Body::Upstream(rx) => match tokio::time::timeout(timeout, crate::routing::answer(&app, &p.up, rx)).await {
                Ok(Some(frame)) => (frame, "forwarded"),
                Ok(None) => {
                    app.metrics.requests.with_label_values(&[api_name(p.api), "error"]).inc();
                    if let Some(suppressed) = UPSTREAM_LOST.allow() {
                        tracing::warn!(%peer, api = ?p.api, suppressed, "upstream connection lost; closing client connection");
                    }
                    break;
                }
                Err(_) => {
                    app.metrics.requests.with_label_values(&[api_name(p.api), "error"]).inc();
                    if let Some(suppressed) = UPSTREAM_SLOW.allow() {
                        tracing::warn!(%peer, api = ?p.api, ?timeout, suppressed, "upstream did not answer in time");
                    }
                    break;
                }
            },
        };
        let version = p.header.api_version;
        let merged = result == "forwarded" && p.api == ApiKey::Metadata && crate::routing::routed(&app.config.load());
        if merged {
            let snapshot = app.config.load_full();
            if let Err(e) = crate::routing::merge(&app, &snapshot, version, (p.up.clone(), &mut frame), p.fanout).await
            {
                app.metrics.requests.with_label_values(&[api_name(p.api), "error"]).inc();
                tracing::warn!(%peer, error = %e, "cannot merge Metadata of the routed clusters; closing client connection");
                break;
            }
        }
        match filter::respond(&app.filters, p.after, p.api, version, &mut frame) {
            Ok(throttle) if throttle.is_zero() => {}
            // KIP-219 clients pause themselves on throttle_time_ms and the connection is held; older ones
            // expect the response itself to be late.
            Ok(throttle) if kproxy_policy::quota::client_throttles(p.api, version) => hold.set(throttle),
            Ok(throttle) => tokio::time::sleep(throttle).await,
            Err(e) => {
                app.metrics.requests.with_label_values(&[api_name(p.api), "error"]).inc();
                tracing::warn!(%peer, error = %e, "cannot apply the policy to a response; closing client connection");
                break;
            }
        }
        if result == "forwarded" && !merged && rewrite::needs_rewrite(p.api, version) {
            let mut rewriter = app.brokers.rewriter(p.up.name());
            if let Err(e) = rewrite::rewrite(&mut frame, p.api, version, &mut rewriter) {
                app.metrics.requests.with_label_values(&[api_name(p.api), "error"]).inc();
                tracing::warn!(%peer, error = %e, "cannot rewrite broker addresses; closing client connection");
                break;
            }
            app.serve_brokers(rewriter.new_listeners);
        }
        protocol::set_response_correlation(&mut frame, p.header.correlation_id);
        if let Err(e) = wr.write_all(&frame).await {
            tracing::debug!(%peer, error = %e, "client write failed");
            break;
        }
        drop(frame);
        let name = api_name(p.api);
        app.metrics.requests.with_label_values(&[name, result]).inc();
        app.metrics.latency.with_label_values(&[name, p.up.name()]).observe(p.started.elapsed().as_secs_f64());
    }
    dead.cancel();
    let _ = wr.shutdown().await;
}

/// The `api` label: the API's name as Kafka spells it in its schemas.
pub fn api_name(api: ApiKey) -> &'static str {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (0..=200i16)
            .map(|k| match ApiKey::try_from(k) {
                Ok(api) => &*Box::leak(format!("{api:?}").into_boxed_str()),
                Err(()) => "Unknown",
            })
            .collect()
    });
    names.get(api as usize).copied().unwrap_or("Unknown")
}
