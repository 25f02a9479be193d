//! The filter seam: per request, after the header is peeked, the policy decides what happens to it.
//!
//! `check` is called once per client request with the request (body decoded only if the ACLs need it) and the
//! config snapshot taken for that request; `respond` is called once per response on its way back. Invariants the
//! caller keeps: every request that gets a `Forward`, `ForwardRewritten` or `RespondLocally` receives exactly one
//! response, in order; `Close` drops the client connection after the responses already due are written.
//! ApiVersions and version checks happen before the filter and never reach it.
//!
//! Order of the filters: quotas are measured first (every request counts, allowed or not, as on a broker), then
//! the ACLs split or answer the request; on the way back the denied entries are merged in and the throttle time
//! is written into the response.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use kproxy_policy::enforce::{Merge, Outcome};
use kproxy_policy::quota::{self, Kind, Quotas};
use kproxy_policy::{Policy, TopicIds};
use prometheus::{CounterVec, GaugeVec, IntCounterVec, Opts, Registry};

use crate::buffer::Buf;
use crate::protocol::errors::Fill;
use crate::protocol::{self, Header};
use crate::reload::Snapshot;
use crate::{Error, Result};

/// What to do with one request.
#[derive(Debug)]
pub enum Verdict {
    /// Send the original bytes upstream.
    Forward,
    /// Send this frame (length prefix and the client's header included) instead: the policy removed denied parts.
    ForwardRewritten(BytesMut),
    /// Answer without the broker: a response body encoded at the request's version (no header; the proxy adds
    /// it with the client's correlation id).
    RespondLocally(BytesMut),
    /// Drop the client connection, logging the reason.
    Close(String),
}

/// What the response path owes a request: denied entries to merge, throttling to apply.
#[derive(Debug, Default)]
pub struct After {
    merge: Option<Merge>,
    /// Throttle the request already earned (request rate, produce bytes).
    throttle: Duration,
    throttle_kind: Option<Kind>,
    /// Client id whose fetched bytes count against the consumer quota.
    fetch_client: Option<String>,
    /// Learn topic ids from this Metadata response (newer Fetch/Produce name topics by id only).
    learn_ids: bool,
}

/// The throttle a request without a response (acks=0 produce) earned, counted as [`respond`] counts the others;
/// the caller holds the connection's next read that long.
pub fn unanswered(state: &State, after: &After) -> Duration {
    if let Some(kind) = after.throttle_kind.filter(|_| !after.throttle.is_zero()) {
        state.throttle_seconds.with_label_values(&[kind.label()]).inc_by(after.throttle.as_secs_f64());
    }
    after.throttle
}

/// Policy state that outlives requests and reloads: quota measurements, topic ids, the compiled policy.
pub struct State {
    /// The policy compiled from the snapshot with this hash.
    compiled: ArcSwapOption<(String, Policy)>,
    quotas: Mutex<Quotas>,
    topic_ids: RwLock<TopicIds>,
    acl_denied: IntCounterVec,
    throttle_seconds: CounterVec,
    rate: GaugeVec,
    /// Cluster health and route switches.
    pub routing: crate::routing::Routing,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl State {
    /// Registers the policy metrics on the sidecar's registry.
    pub fn new(registry: &Registry) -> Result<Self> {
        let acl_denied = IntCounterVec::new(
            Opts::new("kproxy_acl_denied_total", "Entities (partitions, groups, requests) denied by ACLs, by api"),
            &["api"],
        )?;
        let throttle_seconds = CounterVec::new(
            Opts::new(quota::METRIC_THROTTLE_SECONDS, "Throttle time handed to clients by quotas, by kind"),
            &["kind"],
        )?;
        let rate = GaugeVec::new(Opts::new(quota::METRIC_RATE, "Pod-wide measured rate by quota kind"), &["kind"])?;
        registry.register(Box::new(acl_denied.clone()))?;
        registry.register(Box::new(throttle_seconds.clone()))?;
        registry.register(Box::new(rate.clone()))?;
        for kind in Kind::ALL {
            throttle_seconds.with_label_values(&[kind.label()]);
            rate.with_label_values(&[kind.label()]);
        }
        Ok(State {
            routing: crate::routing::Routing::new(registry)?,
            compiled: ArcSwapOption::empty(),
            quotas: Mutex::new(Quotas::default()),
            topic_ids: RwLock::new(TopicIds::default()),
            acl_denied,
            throttle_seconds,
            rate,
        })
    }

    /// The compiled policy of a snapshot, compiled once per config (quota limits follow it).
    pub fn policy(&self, snapshot: &Snapshot) -> Arc<(String, Policy)> {
        if let Some(current) = self.compiled.load_full()
            && current.0 == snapshot.hash
        {
            return current;
        }
        let compiled = Arc::new((snapshot.hash.clone(), Policy::from_config(&snapshot.config)));
        lock(&self.quotas).update(&snapshot.config.quotas);
        self.compiled.store(Some(compiled.clone()));
        compiled
    }

    /// A topic's name from its id, as learnt from Metadata answers.
    pub fn topic_name(&self, id: uuid::Uuid) -> Option<String> {
        use kproxy_policy::TopicNames;
        let ids = self.topic_ids.read().unwrap_or_else(|p| p.into_inner());
        ids.topic_name(id).map(|n| n.as_str().to_string())
    }

    fn record(&self, kind: Kind, client_id: &str, amount: u64, now: Instant) -> Duration {
        let mut quotas = lock(&self.quotas);
        if !quotas.limits(kind) {
            return Duration::ZERO;
        }
        let throttle = quotas.record(kind, client_id, amount, now);
        self.rate.with_label_values(&[kind.label()]).set(quotas.pod_rate(kind, now));
        throttle
    }
}

/// One client request as the filters see it.
pub struct Request<'a> {
    pub header: Header,
    pub api: ApiKey,
    /// The whole frame, length prefix included.
    frame: &'a [u8],
}

impl<'a> Request<'a> {
    pub fn new(header: Header, api: ApiKey, frame: &'a [u8]) -> Self {
        Request { header, api, frame }
    }

    /// The client id from the request header.
    pub fn client_id(&self) -> Option<&'a str> {
        let len = i16::from_be_bytes(self.frame.get(12..14)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        std::str::from_utf8(self.frame.get(14..14 + len)?).ok()
    }

    fn body_offset(&self) -> Result<usize> {
        let v = self.header.api_version;
        protocol::request_body_offset(self.frame, self.api, v)
            .ok_or_else(|| Error::Protocol(format!("{:?} v{v} request header is truncated", self.api)))
    }

    /// Decodes the body; only filters that need topic or group names should call it. Record batches stay
    /// views into the frame only when decoding from `Bytes`; this copies, so keep it off the produce hot path
    /// unless a policy needs it.
    pub fn body(&self) -> Result<RequestKind> {
        let at = self.body_offset()?;
        let mut bytes = bytes::Bytes::copy_from_slice(&self.frame[at..]);
        RequestKind::decode(self.api, &mut bytes, self.header.api_version)
            .map_err(|e| Error::protocol(&format!("decoding {:?}", self.api), e))
    }

    /// The frame with the same header and a new body.
    fn with_body(&self, body: &RequestKind) -> Result<BytesMut> {
        let at = self.body_offset()?;
        let mut out = BytesMut::with_capacity(self.frame.len());
        out.extend_from_slice(&self.frame[..at]);
        body.encode(&mut out, self.header.api_version)
            .map_err(|e| Error::protocol(&format!("encoding {:?}", self.api), e))?;
        let len = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        Ok(out)
    }
}

/// The filter chain: quota measurement, then ACLs.
pub fn check(request: &Request<'_>, snapshot: &Snapshot, state: &State) -> (Verdict, After) {
    let compiled = state.policy(snapshot);
    let policy = &compiled.1;
    let client_id = request.client_id().unwrap_or_default();
    let now = Instant::now();
    let mut after = After::default();
    for (kind, amount) in [(Kind::Request, 1), (Kind::Produce, request.frame.len() as u64)] {
        if kind == Kind::Produce && request.api != ApiKey::Produce {
            continue;
        }
        let t = state.record(kind, client_id, amount, now);
        if t > after.throttle {
            after.throttle = t;
            after.throttle_kind = Some(kind);
        }
    }
    if request.api == ApiKey::Fetch {
        after.fetch_client = Some(client_id.to_string());
    }
    after.learn_ids = request.api == ApiKey::Metadata;
    if !policy.decides(request.api) {
        after.learn_ids &= crate::routing::has_failover(snapshot);
        return (Verdict::Forward, after);
    }
    let version = request.header.api_version;
    let mut body = match request.body() {
        Ok(body) => body,
        Err(e) => return (Verdict::Close(format!("policy cannot read the request: {e}")), after),
    };
    let ids = state.topic_ids.read().unwrap_or_else(|p| p.into_inner());
    let decision = policy.authorize(&*ids, version, &mut body);
    drop(ids);
    if decision.denied > 0 {
        state.acl_denied.with_label_values(&[crate::proxy::api_name(request.api)]).inc_by(decision.denied as u64);
    }
    let verdict = match decision.outcome {
        Outcome::Forward { rewritten, merge } => {
            after.merge = merge;
            if rewritten {
                match request.with_body(&body) {
                    Ok(frame) => Verdict::ForwardRewritten(frame),
                    Err(e) => Verdict::Close(e.to_string()),
                }
            } else {
                Verdict::Forward
            }
        }
        Outcome::Respond(response) => {
            let mut out = BytesMut::new();
            match response.encode(&mut out, version) {
                Ok(()) => Verdict::RespondLocally(out),
                Err(e) => Verdict::Close(format!("cannot encode the {:?} denial: {e}", request.api)),
            }
        }
        Outcome::Deny(code) => match protocol::errors::encode(&body, &Fill { version, code, message: None }) {
            Some(out) => Verdict::RespondLocally(out),
            None => Verdict::Close(format!("no {:?} v{version} denial can be encoded", request.api)),
        },
        Outcome::Close => Verdict::Close(format!("{:?} is not allowed through the sidecar", request.api)),
    };
    (verdict, after)
}

/// Applies what the request owes to its response frame (complete frame, any correlation id): merges denied
/// entries, measures fetched bytes, writes `throttle_time_ms`. Returns the throttle: the caller holds the
/// connection's next request that long (KIP-219) or, for older clients, delays this response.
pub fn respond(state: &State, after: After, api: ApiKey, version: i16, frame: &mut Buf) -> Result<Duration> {
    let mut throttle = after.throttle;
    let mut kind = after.throttle_kind;
    if let Some(client_id) = &after.fetch_client {
        let t = state.record(Kind::Fetch, client_id, frame.len() as u64, Instant::now());
        if t > throttle {
            throttle = t;
            kind = Some(Kind::Fetch);
        }
    }
    if let Some(kind) = kind.filter(|_| !throttle.is_zero()) {
        state.throttle_seconds.with_label_values(&[kind.label()]).inc_by(throttle.as_secs_f64());
    }
    let ms = i32::try_from(throttle.as_millis()).unwrap_or(i32::MAX);
    let at = protocol::response_body_offset(frame, api, version)
        .ok_or_else(|| Error::Protocol(format!("{api:?} v{version} response header is truncated")))?;
    let needs_decode = after.merge.is_some() || after.learn_ids;
    if !needs_decode && (ms == 0 || quota::set_throttle_time(api, version, &mut frame[at..], ms)) {
        return Ok(throttle);
    }
    let mut response = frame
        .with_frozen(|bytes| ResponseKind::decode(api, &mut bytes.slice(at..), version))
        .map_err(|e| Error::protocol(&format!("decoding {api:?} response"), e))?;
    if let Some(merge) = after.merge {
        merge.apply_to(&mut response);
    }
    if after.learn_ids
        && let ResponseKind::Metadata(metadata) = &response
    {
        state.topic_ids.write().unwrap_or_else(|p| p.into_inner()).learn(metadata);
    }
    if ms > 0 {
        quota::set_throttle_in(&mut response, ms);
    }
    let mut body = BytesMut::new();
    response.encode(&mut body, version).map_err(|e| Error::protocol(&format!("encoding {api:?} response"), e))?;
    let mut out = BytesMut::with_capacity(at + body.len());
    out.extend_from_slice(&frame[..at]);
    out.extend_from_slice(&body);
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    frame.replace_with(&out);
    Ok(throttle)
}

/// When a connection may read its next request; set by quotas on the response path.
#[derive(Debug, Default)]
pub struct Hold(Mutex<Option<Instant>>);

impl Hold {
    /// Holds the next request for `throttle` from now (a longer hold already in place stays).
    pub fn set(&self, throttle: Duration) {
        let until = Instant::now() + throttle;
        let mut slot = lock(&self.0);
        if slot.is_none_or(|u| u < until) {
            *slot = Some(until);
        }
    }

    /// Waits until the hold (if any) is over.
    pub async fn wait(&self) {
        let until = lock(&self.0).take();
        if let Some(until) = until {
            tokio::time::sleep_until(until.into()).await;
        }
    }
}
