//! The request path in one place, as plain functions over the request's snapshot; no I/O.
//!
//! A request ([`Request`]: raw frame, header, body decoded at most once) goes through [`request::decide`]:
//!
//! 1. local answers: client SASL ([`sasl`]), ApiVersions, versions outside what is offered (UNSUPPORTED_VERSION);
//! 2. policy: quotas measure it (every request counts, allowed or not, as on a broker), then the ACLs forward it,
//!    forward part of it, answer it or close the connection;
//! 3. routes ([`route`]): group requests a route switch left at another cluster than their group's, or carrying a
//!    KIP-848 member epoch another cluster granted, are answered with the error that sends the client to the
//!    group's coordinator now; requests that would span clusters are refused, Produce/Fetch for topics routed away
//!    are steered back to Metadata, FindCoordinator goes to its group's cluster, Metadata is planned per cluster,
//!    admin requests naming topics or config resources of several clusters are split per cluster, cluster-wide
//!    admin requests (ACLs, client quotas, SCRAM credentials, features) go to the default cluster.
//!
//! and comes out as one [`Step`]: answer locally, forward (to the connection's cluster or another, with the
//! Metadata copies for the other clusters), or close the connection. What the response owes the request
//! ([`Owed`]: denied entries to merge, throttle, topic ids to learn) travels with it, and [`response::finish`]
//! applies it: Metadata or split-request merge, deny-merge and throttle, address rewrite.
//!
//! Invariants the caller keeps: every request that gets `Respond` or `Forward` (with a response expected) gets
//! exactly one response, in request order; `Close` ends the connection after the responses already due.

pub mod request;
pub mod response;
pub mod route;
pub mod sasl;

use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;
use kproxy_policy::Merge;
use kproxy_policy::quota::Kind;

pub use request::decide;
pub use response::finish;

use crate::protocol::request::Request;

/// What happens to one request.
pub enum Step {
    /// Answer without the broker: a response body encoded at `version` (the connection adds the header).
    Respond { version: i16, body: BytesMut, owed: Owed },
    /// Send it upstream.
    Forward(Forward),
    /// Drop the client connection. `reason` is logged; `label`, when set, counts it in
    /// `kproxy_frames_rejected_total`.
    Close { reason: String, label: Option<&'static str> },
}

impl Step {
    fn close(reason: impl Into<String>) -> Step {
        Step::Close { reason: reason.into(), label: None }
    }
}

/// A request to send upstream.
pub struct Forward {
    /// Another cluster than the connection's own (a coordinator that lives elsewhere); `None`: its own.
    pub cluster: Option<String>,
    pub request: Request,
    /// Metadata asked of the other routed clusters, merged into the answer.
    pub fanout: Vec<route::Copy>,
    pub owed: Owed,
}

/// What the response path owes a request: denied entries to merge, throttling to apply, ids to learn.
#[derive(Debug, Default)]
pub struct Owed {
    /// Boxed: rare, and large.
    pub(crate) merge: Option<Box<Merge>>,
    /// Throttle the request already earned (request rate, produce bytes), and the quota that earned it.
    pub(crate) throttle: Duration,
    pub(crate) throttle_kind: Option<Kind>,
    /// Client id whose fetched bytes count against the consumer quota.
    pub(crate) fetch_client: Option<String>,
    /// Learn topic ids from this Metadata response (newer Fetch/Produce name topics by id only).
    pub(crate) learn_ids: bool,
    /// The request was split across clusters: how to merge the parts' answers (boxed: rare).
    pub(crate) split: Option<Box<route::Split>>,
    /// (group, member id) of a KIP-848 heartbeat with routes: its answer says which cluster granted the epoch.
    pub(crate) member: Option<Box<(String, String)>>,
    /// The body the client gets whatever the broker answers (a fenced KIP-848 heartbeat sent on as its leave).
    pub(crate) answer: Option<Box<BytesMut>>,
    /// A request frame sent first on the same upstream connection, its answer dropped (the leave of classic
    /// members a route switch left behind, ahead of their group's join).
    pub(crate) before: Option<Box<BytesMut>>,
    /// The group of a routed JoinGroup: its answer says which cluster gave the member its id.
    pub(crate) joined: Option<Box<str>>,
    /// How long a locally answered failed authentication waits before it is written; the connection is not read
    /// meanwhile (as a broker's `connection.failed.authentication.delay.ms`).
    pub delay: Duration,
}

impl Owed {
    /// The throttle a request without a response (acks=0 produce) earned: the connection's next read is held
    /// that long, as a broker mutes the channel.
    pub fn throttle(&self) -> Duration {
        self.throttle
    }
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

#[cfg(test)]
mod tests;
