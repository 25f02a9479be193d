//! Routes in the request path: one cluster as the client sees it, several behind it.
//!
//! Metadata is asked of every cluster a route uses (each only for the topics routed to it) and the answers are
//! merged ([`super::response`]); a group's or transaction's coordinator is looked up in its cluster, and group
//! requests still reaching the cluster a route switch left are sent back to look it up ([`group_steer`]); admin
//! requests are split per cluster or sent to the default cluster ([`admin_plan`]); requests that would span
//! clusters are refused; Produce and Fetch reaching a cluster their topic was routed away from
//! are answered NOT_LEADER_OR_FOLLOWER, which sends the client back to Metadata. All of it reads the compiled
//! routes of the request's snapshot and the health view; none of it does I/O.

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, MetadataRequest, RequestKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use kproxy_policy::route::{self, Health, Kind};

use crate::protocol::errors::{self, Fill};
use crate::protocol::request::Request;
use crate::state::{Live, Snapshot};
use crate::{Error, Result, protocol};

/// One warning per interval about refused cross-cluster requests (a client retrying one would repeat it).
static REFUSING: crate::ratelog::Gate = crate::ratelog::Gate::every_ms(5_000);
/// Likewise for group requests answered after a route switch (every member of a group gets them).
static STEERING: crate::ratelog::Gate = crate::ratelog::Gate::every_ms(5_000);

/// A copy of a client's Metadata request for another routed cluster.
pub struct Copy {
    pub cluster: String,
    pub frame: BytesMut,
    /// The topics asked of this cluster by name; answered with a retriable error when it does not answer.
    pub topics: Vec<String>,
}

/// The Metadata request each cluster is asked: only the topics routed to it, so that no cluster auto-creates a
/// topic that lives elsewhere (all-topics requests go to every cluster unchanged). Returns the frame for `own`
/// (`None`: unchanged) and the copies for the others.
pub fn metadata_plan(
    snapshot: &Snapshot,
    health: &Health,
    request: &Request,
    own: &str,
) -> Result<(Option<BytesMut>, Vec<Copy>)> {
    let version = request.version();
    let frame = request.frame();
    let at = protocol::request_body_offset(frame, ApiKey::Metadata, version)
        .ok_or_else(|| Error::Protocol("Metadata request too short".into()))?;
    let mut body = &frame[at..];
    let asked = MetadataRequest::decode(&mut body, version).map_err(|e| Error::protocol("decoding Metadata", e))?;
    let mut mine = None;
    let mut copies = Vec::new();
    for cluster in &snapshot.config.clusters {
        let mut ask = asked.clone();
        if let Some(topics) = &mut ask.topics {
            topics.retain(|t| match &t.name {
                Some(name) => snapshot.policy.routes.cluster(Kind::Topic, name, health) == cluster.name,
                None => true,
            });
        }
        let topics = ask.topics.iter().flatten().filter_map(|t| t.name.as_ref().map(|n| n.to_string())).collect();
        let mut bytes = BytesMut::with_capacity(frame.len());
        bytes.extend_from_slice(&frame[..at]);
        ask.encode(&mut bytes, version).map_err(|e| Error::protocol("encoding Metadata", e))?;
        let len = (bytes.len() - 4) as i32;
        bytes[..4].copy_from_slice(&len.to_be_bytes());
        if cluster.name == own {
            mine = Some(bytes);
        } else {
            copies.push(Copy { cluster: cluster.name.clone(), frame: bytes, topics });
        }
    }
    Ok((mine, copies))
}

/// How the answers to a request split across clusters are put back together.
#[derive(Debug)]
pub struct Split {
    /// The entities' keys in request order.
    pub order: kproxy_policy::route::Order,
    /// Per other cluster, the answer its part gets when that cluster does not answer in time: REQUEST_TIMED_OUT
    /// on each of its entities (retriable: admin clients ask again).
    pub fallbacks: Vec<(String, BytesMut)>,
}

/// Kafka's REQUEST_TIMED_OUT.
const REQUEST_TIMED_OUT: i16 = 7;

/// Where an admin request goes when routes are in play (see `kproxy_policy::route::split`): `Ok(None)` to the
/// connection's own cluster unchanged; else the cluster the request (now its first part) goes to (`None`: its
/// own), the other parts as copies for their clusters, and how to merge the answers.
#[allow(clippy::type_complexity)]
pub fn admin_plan(
    snapshot: &Snapshot,
    health: &Health,
    request: &mut Request,
    own: &str,
) -> Result<Option<(Option<String>, Vec<Copy>, Option<Split>)>> {
    use kproxy_policy::route::Plan;
    let version = request.version();
    let plan = route::plan(request.body()?, &snapshot.policy.routes, health, own);
    let (parts, order) = match plan {
        Plan::Own => return Ok(None),
        Plan::Elsewhere(cluster) => return Ok(Some((Some(cluster), Vec::new(), None))),
        Plan::Split { parts, order } => (parts, order),
    };
    // The connection's own cluster answers its part on the connection's own upstream; else the first cluster.
    let first = parts.iter().position(|(c, _)| c == own).unwrap_or(0);
    let mut copies = Vec::new();
    let mut fallbacks = Vec::new();
    let mut main = None;
    for (i, (cluster, part)) in parts.into_iter().enumerate() {
        if i == first {
            main = Some((cluster, part));
            continue;
        }
        let message = format!("cluster {cluster:?}, which routes give part of this request, did not answer in time");
        let fill = Fill { version, code: REQUEST_TIMED_OUT, message: Some(&message) };
        let fallback = errors::encode(&part, &fill)
            .ok_or_else(|| Error::Protocol(format!("no {:?} v{version} error answer", request.api)))?;
        copies.push(Copy { cluster: cluster.clone(), frame: request.with_body(&part)?, topics: Vec::new() });
        fallbacks.push((cluster, fallback));
    }
    let Some((cluster, part)) = main else { return Ok(None) };
    *request.body_mut()? = part;
    request.mark_modified();
    let cluster = (cluster != own).then_some(cluster);
    Ok(Some((cluster, copies, Some(Split { order, fallbacks }))))
}

/// The cluster a FindCoordinator request must be answered by: the one its group's or transaction's route uses now.
pub fn coordinator_cluster<'a>(snapshot: &'a Snapshot, health: &Health, body: &RequestKind) -> Option<&'a str> {
    let RequestKind::FindCoordinator(r) = body else { return None };
    let kind = if r.key_type == 1 { Kind::TransactionalId } else { Kind::Group };
    let key = r.coordinator_keys.first().map(|k| k.as_str()).unwrap_or(r.key.as_str());
    Some(snapshot.policy.routes.cluster(kind, key, health))
}

/// Whether requests of this API go to a group's coordinator (and name one group).
pub fn for_coordinator(api: ApiKey) -> bool {
    use ApiKey as A;
    matches!(
        api,
        A::JoinGroup
            | A::SyncGroup
            | A::Heartbeat
            | A::LeaveGroup
            | A::OffsetCommit
            | A::OffsetDelete
            | A::OffsetFetch
            | A::ConsumerGroupHeartbeat
    )
}

/// What a group request a route switch left behind gets (see `kproxy_policy::route::members`).
pub struct Steered {
    /// The client's answer: NOT_COORDINATOR when the group's route uses another cluster than `own` now, so the
    /// client finds its coordinator again; FENCED_MEMBER_EPOCH (heartbeat or commit) when another cluster granted
    /// the KIP-848 member epoch it carries, so the member rejoins here instead of passing for the member another
    /// cluster knew.
    pub answer: BytesMut,
    /// The leave (epoch -1) a fenced heartbeat is first sent to `own` as: `own` may still hold the
    /// member from before the route left it, at an epoch it granted then, and would fence its rejoin (epoch 0 is
    /// below it) until that old session expired.
    pub leave_first: Option<RequestKind>,
}

/// The answer to a group request a route switch left behind, if it is one.
pub fn group_steer(
    snapshot: &Snapshot,
    live: &Live,
    health: &Health,
    own: &str,
    (api, body, version): (ApiKey, &RequestKind, i16),
) -> Option<Steered> {
    use kproxy_policy::route::members;
    let (code, message, reason) = if members::misdirected(body, &snapshot.policy.routes, health, own) {
        let message = format!("the group is coordinated in another cluster than {own:?} now");
        (members::NOT_COORDINATOR, message, "not_coordinator")
    } else {
        let (code, message) = live.foreign_epoch(body, own)?;
        (code, message, "fenced_member_epoch")
    };
    let answer = errors::encode(body, &Fill { version, code, message: Some(&message) })?;
    let api = super::api_name(api);
    live.group_steered.with_label_values(&[api, reason]).inc();
    if let Some(suppressed) = STEERING.allow() {
        tracing::info!(api, reason, %message, suppressed, "group request answered after a route switch");
    }
    let leave_first = if code == members::FENCED_MEMBER_EPOCH { leave(body) } else { None };
    Some(Steered { answer, leave_first })
}

/// The leave (epoch -1) of the member a KIP-848 heartbeat names, static or not.
fn leave(body: &RequestKind) -> Option<RequestKind> {
    let RequestKind::ConsumerGroupHeartbeat(r) = body else { return None };
    let leave = kafka_protocol::messages::ConsumerGroupHeartbeatRequest::default()
        .with_group_id(r.group_id.clone())
        .with_member_id(r.member_id.clone())
        .with_instance_id(r.instance_id.clone())
        .with_member_epoch(-1);
    Some(RequestKind::ConsumerGroupHeartbeat(leave))
}

/// Whether a request of this API may name a group or transaction and topics that routes put in different
/// clusters, so its body must be read (a Produce only when it belongs to a transaction).
pub fn may_span(request: &Request) -> bool {
    use ApiKey as A;
    match request.api {
        A::OffsetCommit | A::TxnOffsetCommit | A::OffsetFetch | A::JoinGroup | A::AddPartitionsToTxn => true,
        A::ConsumerGroupHeartbeat => true,
        A::AddOffsetsToTxn => true,
        A::Produce => transactional(request.frame(), request.version()),
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
/// INVALID_REQUEST on everything it names with the reason as message, logged and counted.
pub fn refuse(snapshot: &Snapshot, live: &Live, api: ApiKey, body: &RequestKind, version: i16) -> Option<BytesMut> {
    let why = route::cross_cluster(body, &snapshot.policy.routes)?;
    let fill = Fill { version, code: kproxy_policy::code::INVALID_REQUEST, message: Some(&why) };
    let out = errors::encode(body, &fill)?;
    let name = super::api_name(api);
    live.refused.with_label_values(&[name]).inc();
    if let Some(suppressed) = REFUSING.allow() {
        tracing::warn!(api = name, reason = %why, suppressed, "request refused: it would span clusters");
    }
    Some(out)
}

/// The NOT_LEADER_OR_FOLLOWER answer for a Produce or Fetch reaching `own` for a topic whose route moved away
/// (after a failover or a failback), encoded at `version`.
pub fn steer(
    snapshot: &Snapshot,
    live: &Live,
    health: &Health,
    own: &str,
    body: &RequestKind,
    version: i16,
) -> Option<BytesMut> {
    let routes = &snapshot.policy.routes;
    let elsewhere = |name: &str| !name.is_empty() && routes.cluster(Kind::Topic, name, health) != own;
    let by_id = |id: uuid::Uuid| live.topic_name(id).is_some_and(|n| elsewhere(&n));
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
