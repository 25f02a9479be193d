//! The response side of the pipeline: Metadata merge → deny-merge and throttle → address rewrite, applied to the
//! response frame in place. No I/O: the connection has already awaited every answer.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatResponse, JoinGroupResponse, MetadataResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kproxy_policy::quota::{self, Kind};
use kproxy_policy::route::{self, Health};

use super::Owed;
use crate::broker_map::BrokerMap;
use crate::buffer::Buf;
use crate::protocol::{self, rewrite};
use crate::state::{Live, Snapshot};
use crate::{Error, Result};

/// What a response is finished against: the snapshot its request took, the shared measurements, the health
/// view and the broker map addresses are rewritten through.
pub struct Ctx<'a> {
    pub snapshot: &'a Snapshot,
    pub live: &'a Live,
    pub health: &'a Health,
    pub brokers: &'a BrokerMap,
}

/// Where a response came from.
pub enum Source<'a> {
    /// Built by the sidecar: nothing to merge or rewrite.
    Local,
    /// From `cluster`; with the other clusters' answers to a fanned-out Metadata request (`None`: no answer).
    Upstream { cluster: &'a str, others: Vec<(String, Option<Buf>, Vec<String>)> },
}

/// Finishes a response frame (any correlation id) in place. Returns the throttle: the caller holds the
/// connection's next request that long (KIP-219 clients) or, for older ones, delays this response.
pub fn finish(
    ctx: &Ctx,
    mut owed: Owed,
    api: ApiKey,
    version: i16,
    frame: &mut Buf,
    source: Source<'_>,
) -> Result<Duration> {
    let mut merged = false;
    let cluster = match source {
        Source::Local => None,
        Source::Upstream { cluster, others } => {
            if api == ApiKey::Metadata && ctx.snapshot.routed {
                merge(ctx, version, (cluster, frame), others)?;
                merged = true;
            } else if let Some(split) = owed.split.take() {
                merge_split(ctx, api, version, (cluster, frame), others, *split)?;
                merged = true;
            }
            Some(cluster)
        }
    };
    if let (Some(member), Some(cluster)) = (owed.member.take(), cluster) {
        learn_epoch(ctx, &member, version, frame, cluster);
    }
    if let (Some(group), Some(cluster)) = (owed.joined.take(), cluster) {
        learn_joined(ctx, &group, version, frame, cluster);
    }
    if let Some(answer) = owed.answer.take() {
        let at = protocol::response_body_offset(frame, api, version)
            .ok_or_else(|| Error::Protocol(format!("{api:?} v{version} response header is truncated")))?;
        replace_body(frame, at, &answer);
    }
    let throttle = policy(ctx, owed, api, version, frame)?;
    if let Some(cluster) = cluster
        && !merged
        && rewrite::needs_rewrite(api, version)
    {
        rewrite::rewrite(frame, api, version, &mut ctx.brokers.rewriter(cluster))?;
    }
    Ok(throttle)
}

/// Notes which cluster granted the member of a KIP-848 heartbeat its epoch (a routed member must not take it to
/// another cluster).
fn learn_epoch(ctx: &Ctx, member: &(String, String), version: i16, frame: &Buf, cluster: &str) {
    if let Some(answer) = group_answer::<ConsumerGroupHeartbeatResponse>(ApiKey::ConsumerGroupHeartbeat, version, frame)
    {
        ctx.live.learn_epoch(&member.0, &member.1, &answer, cluster);
    }
}

/// Notes which cluster gave a classic member of `group` its id (see `kproxy_policy::route::members::Classic`).
fn learn_joined(ctx: &Ctx, group: &str, version: i16, frame: &Buf, cluster: &str) {
    if let Some(answer) = group_answer::<JoinGroupResponse>(ApiKey::JoinGroup, version, frame)
        && answer.error_code == 0
    {
        ctx.live.classic_joined(group, answer.member_id.as_str(), cluster);
    }
}

/// A group answer the sidecar learns from; one that does not decode teaches nothing, and the client gets it as
/// it came.
fn group_answer<R: Decodable>(api: ApiKey, version: i16, frame: &Buf) -> Option<R> {
    let at = protocol::response_body_offset(frame, api, version)?;
    R::decode(&mut &frame[at..], version)
        .map_err(|e| tracing::debug!(error = %e, api = ?api, "group answer did not decode"))
        .ok()
}

/// Applies what the request owes to its response: merges denied entries, measures fetched bytes, writes
/// `throttle_time_ms`, learns topic ids.
fn policy(ctx: &Ctx, owed: Owed, api: ApiKey, version: i16, frame: &mut Buf) -> Result<Duration> {
    let mut throttle = owed.throttle;
    let mut kind = owed.throttle_kind;
    if let Some(client_id) = &owed.fetch_client {
        let t = ctx.live.record(Kind::Fetch, client_id, frame.len() as u64, Instant::now());
        if t > throttle {
            throttle = t;
            kind = Some(Kind::Fetch);
        }
    }
    if let Some(kind) = kind.filter(|_| !throttle.is_zero()) {
        ctx.live.throttled(kind, throttle);
    }
    let ms = i32::try_from(throttle.as_millis()).unwrap_or(i32::MAX);
    let needs_decode = owed.merge.is_some() || owed.learn_ids;
    if !needs_decode && ms == 0 {
        return Ok(throttle);
    }
    let at = protocol::response_body_offset(frame, api, version)
        .ok_or_else(|| Error::Protocol(format!("{api:?} v{version} response header is truncated")))?;
    if !needs_decode && quota::set_throttle_time(api, version, &mut frame[at..], ms) {
        return Ok(throttle);
    }
    let mut response = frame
        .with_frozen(|bytes| ResponseKind::decode(api, &mut bytes.slice(at..), version))
        .map_err(|e| Error::protocol(&format!("decoding {api:?} response"), e))?;
    if let Some(merge) = owed.merge {
        (*merge).apply_to(&mut response);
    }
    if owed.learn_ids
        && let ResponseKind::Metadata(metadata) = &response
    {
        ctx.live.learn_topic_ids(metadata);
    }
    if ms > 0 {
        quota::set_throttle_in(&mut response, ms);
    }
    let mut body = BytesMut::new();
    response.encode(&mut body, version).map_err(|e| Error::protocol(&format!("encoding {api:?} response"), e))?;
    replace_body(frame, at, &body);
    Ok(throttle)
}

/// Puts `body` after the frame's first `at` bytes (its length and header), the length fixed.
fn replace_body(frame: &mut Buf, at: usize, body: &[u8]) {
    let mut out = BytesMut::with_capacity(at + body.len());
    out.extend_from_slice(&frame[..at]);
    out.extend_from_slice(body);
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    frame.replace_with(&out);
}

/// Merges the Metadata answers (own first) into `own_frame`: addresses rewritten per cluster, topics by route.
fn merge(
    ctx: &Ctx,
    version: i16,
    own: (&str, &mut Buf),
    others: Vec<(String, Option<Buf>, Vec<String>)>,
) -> Result<()> {
    let (own_cluster, own_frame) = own;
    let mut parts = vec![(own_cluster.to_string(), decode_rewritten(ctx, own_cluster, own_frame, version)?)];
    let mut unanswered = Vec::new();
    for (cluster, answer, topics) in others {
        match answer {
            Some(mut frame) => {
                let part = decode_rewritten(ctx, &cluster, &mut frame, version)?;
                parts.push((cluster, part));
            }
            None => {
                tracing::debug!(cluster, "metadata fan-out: no answer");
                unanswered.extend(topics);
            }
        }
    }
    let mut merged = route::merge_metadata(
        parts.iter().map(|(c, r)| (c.as_str(), r.clone())).collect(),
        &ctx.snapshot.policy.routes,
        ctx.health,
    );
    unavailable(&mut merged, unanswered);
    let mut body = BytesMut::new();
    merged.encode(&mut body, version).map_err(|e| Error::protocol("encoding merged Metadata", e))?;
    let correlation_id = protocol::response_correlation(own_frame).unwrap_or_default();
    protocol::response_frame(own_frame, ApiKey::Metadata, version, correlation_id, &body);
    Ok(())
}

/// Merges the answers to a request split across clusters (own first) into `own_frame`: each part's broker ids
/// rewritten for its own cluster, a part whose cluster did not answer given its REQUEST_TIMED_OUT answer, the
/// entities put back in request order.
fn merge_split(
    ctx: &Ctx,
    api: ApiKey,
    version: i16,
    own: (&str, &mut Buf),
    others: Vec<(String, Option<Buf>, Vec<String>)>,
    split: super::route::Split,
) -> Result<()> {
    let (own_cluster, own_frame) = own;
    let mut parts = vec![decode_part(ctx, own_cluster, own_frame, api, version)?];
    for (cluster, answer, _) in others {
        let part = match answer {
            Some(mut frame) => decode_part(ctx, &cluster, &mut frame, api, version)?,
            None => {
                tracing::debug!(cluster, ?api, "split request: a cluster did not answer its part");
                let body = split.fallbacks.iter().find(|(c, _)| *c == cluster).map(|(_, b)| b.clone());
                let body = body.ok_or_else(|| Error::Protocol(format!("no fallback answer for {cluster}")))?;
                ResponseKind::decode(api, &mut body.freeze(), version)
                    .map_err(|e| Error::protocol(&format!("decoding {api:?} fallback"), e))?
            }
        };
        parts.push(part);
    }
    let merged = route::split::merge(parts, &split.order)
        .ok_or_else(|| Error::Protocol(format!("no {api:?} answer to merge")))?;
    let mut body = BytesMut::new();
    merged.encode(&mut body, version).map_err(|e| Error::protocol(&format!("encoding merged {api:?}"), e))?;
    let correlation_id = protocol::response_correlation(own_frame).unwrap_or_default();
    protocol::response_frame(own_frame, api, version, correlation_id, &body);
    Ok(())
}

/// One cluster's answer, its broker references rewritten for that cluster, decoded.
fn decode_part(ctx: &Ctx, cluster: &str, frame: &mut Buf, api: ApiKey, version: i16) -> Result<ResponseKind> {
    if rewrite::needs_rewrite(api, version) {
        rewrite::rewrite(frame, api, version, &mut ctx.brokers.rewriter(cluster))?;
    }
    let at = protocol::response_body_offset(frame, api, version)
        .ok_or_else(|| Error::Protocol(format!("{api:?} response too short")))?;
    frame
        .with_frozen(|bytes| ResponseKind::decode(api, &mut bytes.slice(at..), version))
        .map_err(|e| Error::protocol(&format!("decoding {api:?}"), e))
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

fn decode_rewritten(ctx: &Ctx, cluster: &str, frame: &mut Buf, version: i16) -> Result<MetadataResponse> {
    let api = ApiKey::Metadata;
    rewrite::rewrite(frame, api, version, &mut ctx.brokers.rewriter(cluster))?;
    let at = protocol::response_body_offset(frame, api, version)
        .ok_or_else(|| Error::Protocol("Metadata response too short".into()))?;
    let mut body = &frame[at..];
    MetadataResponse::decode(&mut body, version).map_err(|e| Error::protocol("decoding Metadata", e))
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
