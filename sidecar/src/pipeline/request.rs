//! The request side of the pipeline: local answers → policy → routes, one [`Step`] out.

use std::time::Instant;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, RequestKind};
use kproxy_policy::Outcome;
use kproxy_policy::quota::Kind;
use kproxy_policy::route::Health;

use super::{Forward, Owed, Step, api_name, route, sasl};
use crate::protocol::errors::{self, Fill};
use crate::protocol::request::Request;
use crate::protocol::versions::Versions;
use crate::state::{Live, Snapshot};
use crate::upstream::Endpoint;

/// What a request is decided against: the snapshot it took, the shared measurements, the health view, and the
/// cluster serving its connection.
pub struct Ctx<'a> {
    pub snapshot: &'a Snapshot,
    pub live: &'a Live,
    pub health: &'a Health,
    /// What clients are offered (the intersection over every broker).
    pub versions: &'a Versions,
    /// The cluster serving the connection (its SASL settings answer client SASL).
    pub own: &'a Endpoint,
    pub now: Instant,
}

/// Decides one request; see the [module docs](super).
pub fn decide(ctx: &Ctx, sasl: &mut sasl::Local, mut request: Request) -> Step {
    let (api, version) = (request.api, request.version());
    // 1. Local answers.
    if let Some(answer) = sasl.answer(ctx.own, &ctx.snapshot.config.client_sasl, api, version, request.frame()) {
        return match answer {
            // A failed authentication owes its delay (the connection is not read meanwhile).
            Ok((version, body)) => {
                Step::Respond { version, body, owed: Owed { delay: sasl.take_delay(), ..Owed::default() } }
            }
            Err(reason) => Step::close(reason),
        };
    }
    if api == ApiKey::ApiVersions {
        let answer = ctx.versions.answer(version).map_err(|e| e.to_string());
        return match answer.and_then(|(version, body)| Ok((version, sasl::advertise(body, version)?))) {
            Ok((version, body)) => Step::Respond { version, body, owed: Owed::default() },
            Err(reason) => Step::close(reason),
        };
    }
    if !ctx.versions.allows(request.header.api_key, version) {
        // UNSUPPORTED_VERSION on every entity the request names; a version kafka-protocol cannot encode has no
        // answer the client could parse, so the connection closes (as a broker's does).
        return match errors::unsupported(api, version, request.frame()) {
            Some(body) => Step::Respond { version, body, owed: Owed::default() },
            None => Step::Close {
                reason: format!("{api:?} v{version} is not supported"),
                label: Some("unsupported_version"),
            },
        };
    }
    // 2. Policy.
    let mut owed = quotas(ctx, &request);
    if ctx.snapshot.policy.decides(api) {
        match authorize(ctx, &mut request) {
            Ok(merge) => owed.merge = merge.map(Box::new),
            Err(Acl::Respond(body)) => return Step::Respond { version, body, owed },
            Err(Acl::Close(reason)) => return Step::close(reason),
        }
    } else {
        owed.learn_ids &= ctx.snapshot.failover;
    }
    // 3. Routes.
    if !ctx.snapshot.routed {
        return Step::Forward(Forward { cluster: None, request, fanout: Vec::new(), owed });
    }
    routed(ctx, request, owed)
}

/// Measures the request against the quotas (every request counts, allowed or not) and notes what its response
/// owes.
fn quotas(ctx: &Ctx, request: &Request) -> Owed {
    let mut owed = Owed { learn_ids: request.api == ApiKey::Metadata, ..Owed::default() };
    if !ctx.snapshot.quotas {
        return owed;
    }
    // Read only with quotas: most requests never need their client id.
    let client_id = request.client_id().unwrap_or_default();
    if request.api == ApiKey::Fetch {
        owed.fetch_client = Some(client_id.to_string());
    }
    for (kind, amount) in [(Kind::Request, 1), (Kind::Produce, request.frame().len() as u64)] {
        if kind == Kind::Produce && request.api != ApiKey::Produce {
            continue;
        }
        let t = ctx.live.record(kind, client_id, amount, ctx.now);
        if t > owed.throttle {
            owed.throttle = t;
            owed.throttle_kind = Some(kind);
        }
    }
    owed
}

/// What the ACLs make of a request they do not simply forward.
enum Acl {
    /// Answer locally with this body.
    Respond(BytesMut),
    /// Close the connection for this reason.
    Close(String),
}

/// The ACLs: forward (the body possibly trimmed, with the merge the response owes), answer locally, or close.
fn authorize(ctx: &Ctx, request: &mut Request) -> Result<Option<kproxy_policy::Merge>, Acl> {
    let (api, version) = (request.api, request.version());
    let (live, policy) = (ctx.live, &ctx.snapshot.policy);
    let body = request.body_mut().map_err(|e| Acl::Close(format!("policy cannot read the request: {e}")))?;
    let decision = live.with_topic_ids(|ids| policy.authorize(ids, version, body));
    if decision.denied > 0 {
        live.acl_denied.with_label_values(&[api_name(api)]).inc_by(decision.denied as u64);
    }
    match decision.outcome {
        Outcome::Forward { rewritten, merge } => {
            if rewritten {
                request.mark_modified();
            }
            Ok(merge)
        }
        Outcome::Respond(response) => {
            let mut out = BytesMut::new();
            match response.encode(&mut out, version) {
                Ok(()) => Err(Acl::Respond(out)),
                Err(e) => Err(Acl::Close(format!("cannot encode the {api:?} denial: {e}"))),
            }
        }
        Outcome::Deny(code) => {
            let body = request.parsed().ok_or_else(|| Acl::Close("no body".into()))?;
            match errors::encode(body, &Fill { version, code, message: None }) {
                Some(out) => Err(Acl::Respond(out)),
                None => Err(Acl::Close(format!("no {api:?} v{version} denial can be encoded"))),
            }
        }
        Outcome::Close => Err(Acl::Close(format!("{api:?} is not allowed through the sidecar"))),
    }
}

/// The leave of the classic members of `group` that `own` still lists from before a route switch, as a LeaveGroup
/// frame for the group's coordinator (the connection the join goes on); `None` when there are none, or when the
/// brokers speak no LeaveGroup that names several members (before v3).
fn stale_leave(ctx: &Ctx, group: &str, own: &str) -> Option<BytesMut> {
    use kafka_protocol::messages::{GroupId, LeaveGroupRequest, leave_group_request::MemberIdentity};
    use kafka_protocol::protocol::StrBytes;
    let (_, max) = ctx.versions.range(ApiKey::LeaveGroup as i16)?;
    let version = max.min(5);
    if version < 3 {
        return None;
    }
    let stale = ctx.live.classic_stale(group, own);
    if stale.is_empty() {
        return None;
    }
    let count = stale.len() as u64;
    let members = stale.into_iter().map(|m| MemberIdentity::default().with_member_id(StrBytes::from_string(m)));
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_members(members.collect());
    let mut frame = BytesMut::new();
    crate::protocol::request_frame(&mut frame, ApiKey::LeaveGroup, version, 0, &leave).ok()?;
    ctx.live.group_steered.with_label_values(&["LeaveGroup", "stale_member"]).inc_by(count);
    tracing::info!(group, cluster = own, members = count, "leaving for classic members a route switch left behind");
    Some(frame)
}

/// Routes: refusals, Metadata fan-out, steering, the coordinator's cluster.
fn routed(ctx: &Ctx, mut request: Request, mut owed: Owed) -> Step {
    let (api, version) = (request.api, request.version());
    let own = ctx.own.cluster.name.as_str();
    let expects = request.expects_response();
    if expects
        && route::for_coordinator(api)
        && let Ok(body) = request.body()
    {
        if let Some(steered) = route::group_steer(ctx.snapshot, ctx.live, ctx.health, own, (api, body, version)) {
            // A route switch left the group request at the wrong cluster, or with another cluster's epoch.
            let Some(leave) = steered.leave_first else {
                return Step::Respond { version, body: steered.answer, owed };
            };
            // The member's old session here ends first; the client gets the fencing whatever `own` answers.
            return match request.body_mut() {
                Ok(body) => {
                    *body = leave;
                    request.mark_modified();
                    owed.answer = Some(Box::new(steered.answer));
                    Step::Forward(Forward { cluster: None, request, fanout: Vec::new(), owed })
                }
                Err(_) => Step::Respond { version, body: steered.answer, owed },
            };
        }
        match body {
            RequestKind::ConsumerGroupHeartbeat(r) => {
                owed.member = Some(Box::new((r.group_id.to_string(), r.member_id.to_string())));
            }
            RequestKind::JoinGroup(r) => {
                owed.before = stale_leave(ctx, r.group_id.as_str(), own).map(Box::new);
                owed.joined = Some(r.group_id.as_str().into());
            }
            RequestKind::LeaveGroup(r) => {
                let members = r.members.iter().map(|m| m.member_id.as_str());
                for member in std::iter::once(r.member_id.as_str()).chain(members).filter(|m| !m.is_empty()) {
                    ctx.live.classic_left(r.group_id.as_str(), member);
                }
            }
            _ => {}
        }
    }
    if expects
        && route::may_span(&request)
        && let Ok(body) = request.body()
        && let Some(answer) = route::refuse(ctx.snapshot, ctx.live, api, body, version)
    {
        // A group's offsets or a transaction's partitions in another cluster than its own: refused.
        return Step::Respond { version, body: answer, owed };
    }
    if kproxy_policy::route::split::plans(api) {
        return match route::admin_plan(ctx.snapshot, ctx.health, &mut request, own) {
            Ok(None) => Step::Forward(Forward { cluster: None, request, fanout: Vec::new(), owed }),
            Ok(Some((cluster, fanout, split))) => {
                let owed = Owed { split: split.map(Box::new), ..owed };
                Step::Forward(Forward { cluster, request, fanout, owed })
            }
            Err(e) => Step::close(format!("cannot route the {api:?} request: {e}")),
        };
    }
    match api {
        ApiKey::Metadata => match route::metadata_plan(ctx.snapshot, ctx.health, &request, own) {
            Ok((mine, fanout)) => {
                if let Some(mine) = mine {
                    request.frame_mut().replace_with(&mine);
                }
                Step::Forward(Forward { cluster: None, request, fanout, owed })
            }
            Err(e) => Step::close(e.to_string()),
        },
        ApiKey::Produce | ApiKey::Fetch if expects && ctx.snapshot.failover => {
            let steered = request
                .body()
                .ok()
                .and_then(|body| route::steer(ctx.snapshot, ctx.live, ctx.health, own, body, version));
            match steered {
                // The route moved: send the client back to Metadata, which now points at the other cluster.
                Some(answer) => Step::Respond { version, body: answer, owed },
                None => Step::Forward(Forward { cluster: None, request, fanout: Vec::new(), owed }),
            }
        }
        ApiKey::FindCoordinator => {
            // The group's (or transaction's) coordinator lives in the cluster its route picks.
            let cluster = request
                .body()
                .ok()
                .and_then(|body| route::coordinator_cluster(ctx.snapshot, ctx.health, body))
                .filter(|c| *c != own)
                .map(str::to_string);
            Step::Forward(Forward { cluster, request, fanout: Vec::new(), owed })
        }
        _ => Step::Forward(Forward { cluster: None, request, fanout: Vec::new(), owed }),
    }
}
