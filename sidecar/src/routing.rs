//! Routes in the data path: one cluster as the client sees it, several behind it.
//!
//! Metadata is asked of every cluster a route uses and the answers merged (each topic from the cluster its route
//! picks now, brokers of all under virtual ids); a group's or transaction's coordinator is looked up in its
//! cluster. Cluster health is probed in the background; when a route's cluster becomes unreachable its topics
//! are answered from the first reachable fallback, so clients move there on their next metadata refresh (which
//! the failing connections to the old leader trigger), and back when the cluster returns.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, RequestKind, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kproxy_policy::route::{self, Health, Kind, Switches};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::sync::{oneshot, watch};

use crate::buffer::Buf;
use crate::cluster::Upstream;
use crate::proxy::App;
use crate::reload::Snapshot;
use crate::{Error, Result, protocol};

/// Metadata version of the health probe.
const PROBE_VERSION: i16 = 9;

/// Longest wait for a probe's connection and for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a Metadata request waits for a connection to another routed cluster before leaving it out.
const FANOUT_CONNECT: Duration = Duration::from_secs(2);

const METRIC_REFUSED: &str = "kproxy_route_refused_total";

/// One warning per interval about refused cross-cluster requests (a client retrying one would repeat it).
static REFUSING: crate::ratelog::Gate = crate::ratelog::Gate::every_ms(5_000);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Cluster health and the route switches it caused.
pub struct Routing {
    health: Mutex<Health>,
    switches: Mutex<Switches>,
    switches_total: IntCounterVec,
    reachable: IntGaugeVec,
    /// Requests refused because they would span clusters, by api.
    refused: IntCounterVec,
    /// The clusters found unreachable, for requests waiting on them to give up (a hung broker answers nothing).
    down: watch::Sender<Arc<BTreeSet<String>>>,
}

impl Routing {
    pub fn new(registry: &Registry) -> Result<Self> {
        let switches_total = IntCounterVec::new(
            Opts::new(route::METRIC_SWITCHES, "Routes switched to a fallback or back to their primary cluster"),
            &["direction"],
        )?;
        let reachable = IntGaugeVec::new(
            Opts::new(route::METRIC_CLUSTER_REACHABLE, "1 while a cluster is reachable, 0 while it is not"),
            &["cluster"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                METRIC_REFUSED,
                "Requests refused because their group or transaction and topics are routed to different clusters",
            ),
            &["api"],
        )?;
        registry.register(Box::new(switches_total.clone()))?;
        registry.register(Box::new(reachable.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        for d in ["fallback", "primary"] {
            switches_total.with_label_values(&[d]);
        }
        Ok(Routing {
            health: Mutex::new(Health::new(Duration::from_secs(5))),
            switches: Mutex::new(Switches::default()),
            switches_total,
            reachable,
            refused,
            down: watch::Sender::new(Arc::default()),
        })
    }

    pub fn health(&self) -> Health {
        lock(&self.health).clone()
    }

    /// Records a probe result and logs and counts every route that switched because of it.
    /// `started`: when the probe was sent (a probe that timed out has seen no answer since then).
    fn observe(&self, snapshot: &Snapshot, routes: &route::Routes, cluster: &str, ok: bool, started: Instant) {
        let mut health = lock(&self.health);
        health.set_unreachable_after(Duration::from_millis(snapshot.config.failover.unreachable_after_ms));
        let transition =
            if ok { health.success(cluster) } else { health.failure_since(cluster, started, Instant::now()) };
        self.reachable.with_label_values(&[cluster]).set(i64::from(health.reachable(cluster)));
        if let Some(t) = transition {
            tracing::warn!(cluster = %t.cluster, reachable = t.reachable, "cluster reachability changed");
            self.down.send_modify(|down| {
                let mut next = BTreeSet::clone(down);
                if t.reachable {
                    next.remove(&t.cluster)
                } else {
                    next.insert(t.cluster.clone())
                };
                *down = Arc::new(next);
            });
        }
        for s in lock(&self.switches).observe(routes, &health) {
            self.switches_total.with_label_values(&[s.direction()]).inc();
            tracing::warn!(route = s.route, from = %s.from, to = %s.to, direction = s.direction(), "route switched");
        }
    }
}

impl Routing {
    /// Whether the probes found `cluster` unreachable (only ever with routes).
    pub fn is_down(&self, cluster: &str) -> bool {
        self.down.borrow().contains(cluster)
    }

    /// Resolves once `cluster` is found unreachable.
    async fn until_down(&self, cluster: &str) {
        if self.down.subscribe().wait_for(|down| down.contains(cluster)).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// An upstream answer, or `None` when its connection was lost or its cluster was found unreachable meanwhile: a
/// client waiting on a hung cluster is then closed like one whose broker went away, and reconnects to where its
/// routes point now instead of waiting for the request timeout.
pub async fn answer(app: &App, up: &Upstream, rx: oneshot::Receiver<Buf>) -> Option<Buf> {
    // Without routes there are no probes and nowhere else to go: the common case skips the watch entirely (and a
    // cluster marked down before a reload removed the routes cannot close its clients).
    if !routed(&app.config.load()) {
        return rx.await.ok();
    }
    tokio::select! {
        r = rx => r.ok(),
        _ = app.filters.routing.until_down(up.name()) => None,
    }
}

/// Whether this config routes at all (more than one cluster in play).
pub fn routed(snapshot: &Snapshot) -> bool {
    !snapshot.config.routes.is_empty() && snapshot.config.clusters.len() > 1
}

/// The clusters besides `own` whose Metadata answers are merged into one: every cluster of the config.
pub fn fanout(app: &App, snapshot: &Snapshot, own: &str) -> Vec<Arc<Upstream>> {
    snapshot.config.clusters.iter().filter(|c| c.name != own).filter_map(|c| app.upstream(&c.name)).collect()
}

/// The Metadata request for one cluster.
pub struct ClusterRequest {
    pub cluster: String,
    pub frame: BytesMut,
    /// The topics asked of this cluster by name; answered with a retriable error when the cluster does not answer.
    pub topics: Vec<String>,
}

/// A copy of a client's Metadata request sent to another routed cluster.
pub struct Copy {
    pub up: Arc<Upstream>,
    /// `None` when the cluster could not be reached at all.
    pub answer: Option<oneshot::Receiver<Buf>>,
    pub topics: Vec<String>,
}

/// The Metadata request each cluster is asked: only the topics routed to it, so that no cluster auto-creates a
/// topic that lives elsewhere. All-topics requests go to every cluster unchanged.
pub fn metadata_requests(app: &App, snapshot: &Snapshot, frame: &[u8], version: i16) -> Result<Vec<ClusterRequest>> {
    let api = ApiKey::Metadata;
    let at = protocol::request_body_offset(frame, api, version)
        .ok_or_else(|| Error::Protocol("Metadata request too short".into()))?;
    let mut body = &frame[at..];
    let request = MetadataRequest::decode(&mut body, version).map_err(|e| Error::protocol("decoding Metadata", e))?;
    let compiled = app.filters.policy(snapshot);
    let health = app.filters.routing.health();
    let mut out = Vec::new();
    for cluster in &snapshot.config.clusters {
        let mut mine = request.clone();
        if let Some(topics) = &mut mine.topics {
            topics.retain(|t| match &t.name {
                Some(name) => compiled.1.routes.cluster(Kind::Topic, name, &health) == cluster.name,
                None => true,
            });
        }
        let topics = mine.topics.iter().flatten().filter_map(|t| t.name.as_ref().map(|n| n.to_string())).collect();
        let mut bytes = BytesMut::with_capacity(frame.len());
        bytes.extend_from_slice(&frame[..at]);
        mine.encode(&mut bytes, version).map_err(|e| Error::protocol("encoding Metadata", e))?;
        let len = (bytes.len() - 4) as i32;
        bytes[..4].copy_from_slice(&len.to_be_bytes());
        out.push(ClusterRequest { cluster: cluster.name.clone(), frame: bytes, topics });
    }
    Ok(out)
}

/// Sends a copy of a Metadata request to another cluster; `None` when it cannot be reached (it then contributes
/// no brokers, and its topics are answered LEADER_NOT_AVAILABLE until a route moves them or it returns).
pub async fn send_copy(app: &App, up: &Arc<Upstream>, frame: &[u8]) -> Option<oneshot::Receiver<Buf>> {
    // A cluster the probes found unreachable is not waited for (a hung one would hold every Metadata request for
    // a dial's timeout); the probes notice when it returns.
    if !app.filters.routing.health().reachable(up.name()) {
        return None;
    }
    let lease = match tokio::time::timeout(FANOUT_CONNECT, up.bootstrap_pool().lease()).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return left_out(up, &e.to_string()),
        Err(_) => return left_out(up, "connect timed out"),
    };
    let mut copy = app.buffers.get(frame.len());
    copy.extend_from_slice(frame);
    lease.conn.send(copy, true, None).await.ok().flatten()
}

fn left_out(up: &Upstream, error: &str) -> Option<oneshot::Receiver<Buf>> {
    up.bootstrap_failed();
    tracing::debug!(cluster = up.name(), error, "metadata fan-out: cluster unreachable");
    None
}

/// Merges the Metadata answers (own first) into `own_frame`: addresses rewritten per cluster, topics by route.
pub async fn merge(
    app: &Arc<App>,
    snapshot: &Snapshot,
    version: i16,
    own: (Arc<Upstream>, &mut Buf),
    others: Vec<Copy>,
) -> Result<()> {
    let api = ApiKey::Metadata;
    let (own_up, own_frame) = own;
    let mut parts = vec![(own_up.name().to_string(), decode_rewritten(app, &own_up, own_frame, version)?)];
    let mut unanswered = Vec::new();
    for Copy { up, answer, topics } in others {
        let answer = match answer {
            Some(rx) => tokio::time::timeout(Duration::from_secs(5), rx).await.ok().and_then(|r| r.ok()),
            None => None,
        };
        match answer {
            Some(mut frame) => parts.push((up.name().to_string(), decode_rewritten(app, &up, &mut frame, version)?)),
            None => {
                tracing::debug!(cluster = up.name(), "metadata fan-out: no answer");
                unanswered.extend(topics);
            }
        }
    }
    let compiled = app.filters.policy(snapshot);
    let health = app.filters.routing.health();
    let mut merged = route::merge_metadata(
        parts.iter().map(|(c, r)| (c.as_str(), r.clone())).collect(),
        &compiled.1.routes,
        &health,
    );
    unavailable(&mut merged, unanswered);
    let mut body = BytesMut::new();
    merged.encode(&mut body, version).map_err(|e| Error::protocol("encoding merged Metadata", e))?;
    let correlation_id = protocol::response_correlation(own_frame).unwrap_or_default();
    protocol::response_frame(own_frame, api, version, correlation_id, &body);
    Ok(())
}

/// Kafka's LEADER_NOT_AVAILABLE: retriable, and clients keep what they knew of the topic (librdkafka ignores the
/// entry; Java retries), whereas a topic left out would start the clients' "topic does not exist" countdown.
const LEADER_NOT_AVAILABLE: i16 = 5;

/// Topics asked of a cluster that did not answer (while its route has not switched yet, or has no fallback) are
/// answered LEADER_NOT_AVAILABLE, so clients hold their records and ask again instead of failing them.
fn unavailable(merged: &mut MetadataResponse, topics: Vec<String>) {
    for name in topics {
        if merged.topics.iter().any(|t| t.name.as_ref().is_some_and(|n| n.as_str() == name)) {
            continue;
        }
        let topic = MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name))))
            .with_error_code(LEADER_NOT_AVAILABLE);
        merged.topics.push(topic);
    }
}

fn decode_rewritten(app: &Arc<App>, up: &Upstream, frame: &mut Buf, version: i16) -> Result<MetadataResponse> {
    let api = ApiKey::Metadata;
    let mut rewriter = app.brokers.rewriter(up.name());
    protocol::rewrite::rewrite(frame, api, version, &mut rewriter)?;
    app.serve_brokers(rewriter.new_listeners);
    let at = protocol::response_body_offset(frame, api, version)
        .ok_or_else(|| Error::Protocol("Metadata response too short".into()))?;
    let mut body = &frame[at..];
    MetadataResponse::decode(&mut body, version).map_err(|e| Error::protocol("decoding Metadata", e))
}

/// The cluster a FindCoordinator request must be answered by: the one its group's or transaction's route uses now.
pub fn coordinator_cluster(app: &App, snapshot: &Snapshot, body: &RequestKind) -> Option<String> {
    let RequestKind::FindCoordinator(r) = body else { return None };
    let kind = if r.key_type == 1 { Kind::TransactionalId } else { Kind::Group };
    let key = r.coordinator_keys.first().map(|k| k.as_str()).unwrap_or(r.key.as_str());
    let compiled = app.filters.policy(snapshot);
    let health = app.filters.routing.health();
    Some(compiled.1.routes.cluster(kind, key, &health).to_string())
}

/// Whether a request of this API may name a group or transaction and topics that routes put in different
/// clusters, so its body must be read (a Produce only when it belongs to a transaction).
pub fn may_span(api: ApiKey, frame: &[u8], version: i16) -> bool {
    use ApiKey as A;
    match api {
        A::OffsetCommit | A::TxnOffsetCommit | A::OffsetFetch | A::JoinGroup | A::AddPartitionsToTxn => true,
        A::AddOffsetsToTxn => true,
        A::Produce => transactional(frame, version),
        _ => false,
    }
}

/// Whether a Produce request carries a transactional id (its first field from v3 on), read without decoding.
fn transactional(frame: &[u8], version: i16) -> bool {
    if version < 3 {
        return false;
    }
    let Some(at) = protocol::request_body_offset(frame, ApiKey::Produce, version) else { return false };
    match version {
        // Nullable string: i16 length, -1 for null.
        3..=8 => frame.get(at..at + 2).is_some_and(|b| i16::from_be_bytes([b[0], b[1]]) >= 0),
        // Compact nullable string: unsigned varint length + 1, 0 for null (its first byte is 0 only then).
        _ => frame.get(at).is_some_and(|&b| b != 0),
    }
}

/// The local answer to a request that cannot be served by one cluster (see `kproxy_policy::route::cross_cluster`):
/// INVALID_REQUEST on everything it names, encoded at `version`, logged and counted.
pub fn refuse(app: &App, snapshot: &Snapshot, api: ApiKey, body: &RequestKind, version: i16) -> Option<BytesMut> {
    let compiled = app.filters.policy(snapshot);
    let why = route::cross_cluster(body, &compiled.1.routes)?;
    let fill = protocol::errors::Fill { version, code: kproxy_policy::code::INVALID_REQUEST, message: Some(&why) };
    let out = protocol::errors::encode(body, &fill)?;
    let name = crate::proxy::api_name(api);
    app.filters.routing.refused.with_label_values(&[name]).inc();
    if let Some(suppressed) = REFUSING.allow() {
        tracing::warn!(api = name, reason = %why, suppressed, "request refused: it would span clusters");
    }
    Some(out)
}

/// Whether some route has fallbacks, so Produce and Fetch must be checked for having been routed away.
pub fn has_failover(snapshot: &Snapshot) -> bool {
    routed(snapshot) && snapshot.config.routes.iter().any(|r| !r.failover.is_empty())
}

/// The NOT_LEADER_OR_FOLLOWER answer for a Produce or Fetch reaching `own` for a topic whose route moved away
/// (after a failover or a failback), encoded at `version`.
pub fn steer(app: &App, snapshot: &Snapshot, own: &str, body: &RequestKind, version: i16) -> Option<BytesMut> {
    let compiled = app.filters.policy(snapshot);
    let health = app.filters.routing.health();
    let elsewhere = |name: &str| !name.is_empty() && compiled.1.routes.cluster(Kind::Topic, name, &health) != own;
    let by_id = |id: uuid::Uuid| app.filters.topic_name(id).is_some_and(|n| elsewhere(&n));
    let moved = match body {
        RequestKind::Fetch(r) => {
            r.topics.iter().any(|t| t.topic.is_empty() && !t.topic_id.is_nil() && by_id(t.topic_id))
        }
        RequestKind::Produce(r) => {
            r.topic_data.iter().any(|t| t.name.is_empty() && !t.topic_id.is_nil() && by_id(t.topic_id))
        }
        _ => false,
    };
    let response = route::steer(body, |name| moved || elsewhere(name))?;
    let mut out = BytesMut::new();
    response.encode(&mut out, version).ok()?;
    Some(out)
}

/// Probes every cluster every `probeIntervalMs` and keeps the health (and so the routes) current.
pub fn spawn_probes(app: Arc<App>) {
    tokio::spawn(async move {
        loop {
            let snapshot = app.config.load_full();
            let interval = Duration::from_millis(snapshot.config.failover.probe_interval_ms.max(100));
            if routed(&snapshot) {
                let routes = kproxy_policy::route::Routes::compile(&snapshot.config);
                // A hung cluster is found within about unreachableAfterMs plus one probe, not several probe timeouts.
                let after = Duration::from_millis(snapshot.config.failover.unreachable_after_ms);
                let timeout = (after / 2).clamp(Duration::from_millis(200), PROBE_TIMEOUT);
                for cluster in &snapshot.config.clusters {
                    let started = Instant::now();
                    let ok = match app.upstream(&cluster.name) {
                        Some(up) => probe(&app, &up, timeout).await.is_ok(),
                        None => false,
                    };
                    app.filters.routing.observe(&snapshot, &routes, &cluster.name, ok, started);
                }
            }
            tokio::select! {
                _ = app.shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    });
}

async fn probe(app: &App, up: &Arc<Upstream>, timeout: Duration) -> Result<()> {
    let lease = tokio::time::timeout(timeout, up.bootstrap_pool().lease())
        .await
        .map_err(|_| Error::Protocol("connect timed out".into()))??;
    let mut frame = app.buffers.get(64);
    let request = MetadataRequest::default().with_topics(Some(vec![]));
    protocol::request_frame(&mut frame, ApiKey::Metadata, PROBE_VERSION, 0, &request)?;
    let rx = lease.conn.send(frame, true, None).await.map_err(|_| Error::Protocol("connection closed".into()))?;
    let rx = rx.ok_or_else(|| Error::Protocol("no reply expected".into()))?;
    tokio::time::timeout(timeout, rx)
        .await
        .map_err(|_| Error::Protocol("probe timed out".into()))?
        .map_err(|_| Error::Protocol("connection lost".into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_of_a_silent_cluster_are_leader_not_available_and_answered_ones_stay() {
        let name = |n: &'static str| Some(TopicName(StrBytes::from_static_str(n)));
        let mut merged =
            MetadataResponse::default().with_topics(vec![MetadataResponseTopic::default().with_name(name("moved"))]);
        unavailable(&mut merged, vec!["moved".into(), "waiting".into()]);
        let codes: Vec<_> = merged.topics.iter().map(|t| (t.name.clone(), t.error_code, t.partitions.len())).collect();
        assert_eq!(codes, [(name("moved"), 0, 0), (name("waiting"), LEADER_NOT_AVAILABLE, 0)]);
    }
}
