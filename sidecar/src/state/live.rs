//! Policy state that outlives requests and reloads: quota measurements, the topic ids learnt from Metadata
//! answers and the cluster that granted each KIP-848 member its epoch, with the policy's counters.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ConsumerGroupHeartbeatResponse, RequestKind};
use kproxy_policy::quota::{self, Kind, Quotas};
use kproxy_policy::route::Epochs;
use kproxy_policy::route::members::Classic;
use kproxy_policy::{TopicIds, TopicNames};
use prometheus::{CounterVec, Gauge, GaugeVec, IntCounterVec, Opts, Registry};

use super::Snapshot;
use crate::Result;

/// Measured state shared by every connection.
pub struct Live {
    quotas: Mutex<Quotas>,
    topic_ids: RwLock<TopicIds>,
    /// Which cluster granted each KIP-848 member its epoch (epochs of two clusters are unrelated).
    epochs: Mutex<Epochs>,
    /// The classic members each cluster gave ids to through this sidecar (their leave follows a route back).
    classic: Mutex<Classic>,
    /// Entities (partitions, groups, requests) denied by ACLs, by api.
    pub acl_denied: IntCounterVec,
    /// Requests refused because their group or transaction and topics are routed to different clusters, by api.
    pub refused: IntCounterVec,
    /// Group requests answered by the sidecar because a route switch left them at the wrong cluster, by api and
    /// reason.
    pub group_steered: IntCounterVec,
    throttle_seconds: CounterVec,
    /// The pod-wide rate gauge of each kind, in `Kind::ALL` order (bytes/s and requests/s are separate metrics).
    rates: [Gauge; 3],
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Live {
    /// Registers the policy metrics on the sidecar's registry.
    pub fn new(registry: &Registry) -> Result<Self> {
        let acl_denied = IntCounterVec::new(
            Opts::new("kproxy_acl_denied_total", "Entities (partitions, groups, requests) denied by ACLs, by api"),
            &["api"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "kproxy_route_refused_total",
                "Requests refused because their group or transaction and topics are routed to different clusters",
            ),
            &["api"],
        )?;
        let group_steered = IntCounterVec::new(
            Opts::new(
                "kproxy_route_group_steered_total",
                "Group requests answered by the sidecar because a route switch left them at another cluster than \
                 their group's (not_coordinator) or with a member epoch another cluster granted \
                 (fenced_member_epoch); and classic members a route switch left behind, left by the sidecar \
                 (api LeaveGroup, stale_member)",
            ),
            &["api", "reason"],
        )?;
        let throttle_seconds = CounterVec::new(
            Opts::new(quota::METRIC_THROTTLE_SECONDS, "Throttle time handed to clients by quotas, by kind"),
            &["kind"],
        )?;
        let byte_rate = GaugeVec::new(
            Opts::new(quota::METRIC_BYTE_RATE, "Pod-wide measured byte rate (bytes/s) of Produce and Fetch, by kind"),
            &["kind"],
        )?;
        let request_rate = Gauge::new(quota::METRIC_REQUEST_RATE, "Pod-wide measured request rate (requests/s)")?;
        registry.register(Box::new(acl_denied.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(group_steered.clone()))?;
        registry.register(Box::new(throttle_seconds.clone()))?;
        registry.register(Box::new(byte_rate.clone()))?;
        registry.register(Box::new(request_rate.clone()))?;
        for kind in Kind::ALL {
            throttle_seconds.with_label_values(&[kind.label()]);
        }
        let rates = Kind::ALL.map(|kind| match kind.is_bytes() {
            true => byte_rate.with_label_values(&[kind.label()]),
            false => request_rate.clone(),
        });
        Ok(Live {
            quotas: Mutex::new(Quotas::default()),
            topic_ids: RwLock::new(TopicIds::default()),
            epochs: Mutex::new(Epochs::default()),
            classic: Mutex::new(Classic::default()),
            acl_denied,
            refused,
            group_steered,
            throttle_seconds,
            rates,
        })
    }

    /// Quota limits follow a new snapshot; the measurements stay.
    pub fn update(&self, snapshot: &Snapshot) {
        lock(&self.quotas).update(&snapshot.config.quotas);
    }

    /// Records `amount` against `kind` for `client_id` and returns the throttle it earned.
    pub fn record(&self, kind: Kind, client_id: &str, amount: u64, now: Instant) -> Duration {
        let mut quotas = lock(&self.quotas);
        if !quotas.limits(kind) {
            return Duration::ZERO;
        }
        let throttle = quotas.record(kind, client_id, amount, now);
        if let Some(gauge) = Kind::ALL.iter().position(|k| *k == kind).map(|at| &self.rates[at]) {
            gauge.set(quotas.pod_rate(kind, now));
        }
        throttle
    }

    /// Counts a throttle handed out.
    pub fn throttled(&self, kind: Kind, throttle: Duration) {
        self.throttle_seconds.with_label_values(&[kind.label()]).inc_by(throttle.as_secs_f64());
    }

    /// Reads the topic ids learnt so far.
    pub fn with_topic_ids<R>(&self, f: impl FnOnce(&TopicIds) -> R) -> R {
        f(&self.topic_ids.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Learns the topic ids of a Metadata answer (newer Fetch/Produce name topics by id only).
    pub fn learn_topic_ids(&self, metadata: &kafka_protocol::messages::MetadataResponse) {
        self.topic_ids.write().unwrap_or_else(|p| p.into_inner()).learn(metadata);
    }

    /// A topic's name from its id.
    pub fn topic_name(&self, id: uuid::Uuid) -> Option<String> {
        self.with_topic_ids(|ids| ids.topic_name(id).map(|n| n.as_str().to_string()))
    }

    /// The error a KIP-848 heartbeat or commit gets instead of reaching `own` when another cluster granted its
    /// member epoch (see `kproxy_policy::route::members`).
    pub fn foreign_epoch(&self, request: &RequestKind, own: &str) -> Option<(i16, String)> {
        lock(&self.epochs).foreign(request, own)
    }

    /// `cluster` gave a classic member of `group` its id.
    pub fn classic_joined(&self, group: &str, member: &str, cluster: &str) {
        lock(&self.classic).joined(group, member, cluster);
    }

    /// A classic member left `group`.
    pub fn classic_left(&self, group: &str, member: &str) {
        lock(&self.classic).left(group, member);
    }

    /// The classic members of `group` that `cluster` still lists from before a route switch (see
    /// `kproxy_policy::route::members::Classic`); each is returned once.
    pub fn classic_stale(&self, group: &str, cluster: &str) -> Vec<String> {
        lock(&self.classic).take_stale(group, cluster)
    }

    /// Learns which cluster granted a member its epoch (or that it left) from a heartbeat's answer.
    pub fn learn_epoch(&self, group: &str, member: &str, answer: &ConsumerGroupHeartbeatResponse, cluster: &str) {
        lock(&self.epochs).learn(group, member, answer, cluster);
    }
}
