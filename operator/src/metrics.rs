//! The operator's Prometheus metrics, registered on one registry and served on the admin port.

use std::sync::Mutex;

use kproxy_api::crd::{KafkaProxyPolicy, READY};
use kube::runtime::reflector::Store;
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Outcome of one reconcile, the fixed label set of `kproxy_operator_reconciles_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// ConfigMap written and every referenced Secret found.
    Ready,
    /// ConfigMap written, but something the policy needs (a Secret) is missing.
    NotReady,
    /// The policy cannot be rendered; the last good ConfigMap stays.
    Invalid,
    /// The API server refused or failed a call; retried with backoff.
    Error,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ready => "ready",
            Outcome::NotReady => "not_ready",
            Outcome::Invalid => "invalid",
            Outcome::Error => "error",
        }
    }
}

/// A kind of API write, the fixed label set of `kproxy_operator_api_writes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// A policy's ConfigMap applied.
    ConfigMap,
    /// A policy's status written.
    Status,
    /// An Event published on a policy.
    Event,
    /// A namespace's sidecar access Role and RoleBinding applied.
    Access,
}

impl Write {
    pub fn label(self) -> &'static str {
        match self {
            Write::ConfigMap => "configmap",
            Write::Status => "status",
            Write::Event => "event",
            Write::Access => "access",
        }
    }
}

/// Every metric the operator exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_duration: Histogram,
    /// Writes to the API server by kind, so a reconcile that only confirms what is in place shows as costing none.
    pub writes: IntCounterVec,
    pub policies: IntGaugeVec,
    pub leader: IntGauge,
    pub leader_changes: IntCounter,
    /// The controller's cache while this replica leads, so `kproxy_operator_policies` is counted at scrape time
    /// and deleted policies drop out without a reconcile.
    policies_stores: Mutex<Vec<Store<KafkaProxyPolicy>>>,
}

impl Metrics {
    pub fn new() -> crate::Result<Self> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("kproxy_operator_reconciles_total", "Policy reconciles by result."),
            &["result"],
        )?;
        let writes = IntCounterVec::new(
            Opts::new("kproxy_operator_api_writes_total", "Writes the reconciles made to the API server, by object."),
            &["object"],
        )?;
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new("kproxy_operator_reconcile_duration_seconds", "Time to reconcile one policy.")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let policies = IntGaugeVec::new(
            Opts::new("kproxy_operator_policies", "Policies known to the leading replica, by Ready condition."),
            &["ready"],
        )?;
        let leader = IntGauge::new("kproxy_operator_leader", "1 while this replica holds the leader Lease.")?;
        let leader_changes =
            IntCounter::new("kproxy_operator_leader_changes_total", "Times this replica gained or lost leadership.")?;
        // Which build runs where: 1 with the version and commit as labels (the commit is set at build time through
        // KPROXY_GIT_COMMIT, "unknown" otherwise).
        let build_info = IntGaugeVec::new(
            Opts::new("kproxy_build_info", "1, labelled with the running build's version and commit."),
            &["version", "commit"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), option_env!("KPROXY_GIT_COMMIT").unwrap_or("unknown")])
            .set(1);
        registry.register(Box::new(build_info))?;
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds and the rest.
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(writes.clone()))?;
        registry.register(Box::new(policies.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(leader_changes.clone()))?;
        for outcome in [Outcome::Ready, Outcome::NotReady, Outcome::Invalid, Outcome::Error] {
            reconciles.with_label_values(&[outcome.label()]);
        }
        for write in [Write::ConfigMap, Write::Status, Write::Event, Write::Access] {
            writes.with_label_values(&[write.label()]);
        }
        Ok(Self {
            registry,
            reconciles,
            reconcile_duration,
            writes,
            policies,
            leader,
            leader_changes,
            policies_stores: Mutex::new(Vec::new()),
        })
    }

    pub fn reconciled(&self, outcome: Outcome, seconds: f64) {
        self.reconciles.with_label_values(&[outcome.label()]).inc();
        self.reconcile_duration.observe(seconds);
    }

    pub fn wrote(&self, write: Write) {
        self.writes.with_label_values(&[write.label()]).inc();
    }

    /// Points the policy gauge at the running controllers' caches (one per watched namespace), or at nothing
    /// while not leading.
    pub fn set_policies_stores(&self, stores: Vec<Store<KafkaProxyPolicy>>) {
        if let Ok(mut slot) = self.policies_stores.lock() {
            *slot = stores;
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.count_policies();
        let mut out = Vec::new();
        if prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }

    fn count_policies(&self) {
        let (mut ready, mut not_ready) = (0, 0);
        if let Ok(slot) = self.policies_stores.lock() {
            for policy in slot.iter().flat_map(Store::state) {
                let is_ready = policy
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
                    .is_some_and(|c| c.status == "True");
                if is_ready { ready += 1 } else { not_ready += 1 }
            }
        }
        self.policies.with_label_values(&["true"]).set(ready);
        self.policies.with_label_values(&["false"]).set(not_ready);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_and_process_metrics_are_exported() {
        let text = Metrics::new().unwrap().render();
        let version = format!(
            "kproxy_build_info{{commit=\"{}\",version=\"{}\"}} 1",
            option_env!("KPROXY_GIT_COMMIT").unwrap_or("unknown"),
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&version), "{text}");
        for name in ["process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"] {
            assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing:\n{text}");
        }
    }
}
