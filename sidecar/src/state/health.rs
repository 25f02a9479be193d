//! The health view: which clusters the probes ([`crate::health`]) found reachable, the route switches that
//! caused, and a watch for requests waiting on a cluster that went unreachable.
//!
//! Requests read the view as an `Arc` swapped by the probe loop ([`Health::view`]); only the probe loop writes.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use kproxy_policy::route::{self, Switches};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::sync::watch;

use super::Snapshot;
use crate::Result;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Cluster health and the route switches it caused.
pub struct Health {
    /// The probes' bookkeeping; written by the probe loop only.
    health: Mutex<route::Health>,
    /// What requests read: a copy of `health` published after every change.
    view: ArcSwap<route::Health>,
    switches: Mutex<Switches>,
    switches_total: IntCounterVec,
    reachable: IntGaugeVec,
    /// The clusters found unreachable, for requests waiting on them to give up (a hung broker answers nothing).
    down: watch::Sender<Arc<BTreeSet<String>>>,
}

impl Health {
    pub fn new(registry: &Registry) -> Result<Self> {
        let switches_total = IntCounterVec::new(
            Opts::new(route::METRIC_SWITCHES, "Routes switched to a fallback or back to their primary cluster"),
            &["direction"],
        )?;
        let reachable = IntGaugeVec::new(
            Opts::new(route::METRIC_CLUSTER_REACHABLE, "1 while a cluster is reachable, 0 while it is not"),
            &["cluster"],
        )?;
        registry.register(Box::new(switches_total.clone()))?;
        registry.register(Box::new(reachable.clone()))?;
        for d in ["fallback", "primary"] {
            switches_total.with_label_values(&[d]);
        }
        let health = route::Health::new(Duration::from_secs(5));
        Ok(Health {
            view: ArcSwap::from_pointee(health.clone()),
            health: Mutex::new(health),
            switches: Mutex::new(Switches::default()),
            switches_total,
            reachable,
            down: watch::Sender::new(Arc::default()),
        })
    }

    /// The reachability requests route by.
    pub fn view(&self) -> Arc<route::Health> {
        self.view.load_full()
    }

    /// The view when `routed` (only routes read it), else a shared empty one: no reference count is touched on
    /// the common path.
    pub fn view_if(&self, routed: bool) -> Option<Arc<route::Health>> {
        routed.then(|| self.view.load_full())
    }

    /// Whether the probes found `cluster` unreachable (only ever with routes).
    pub fn is_down(&self, cluster: &str) -> bool {
        self.down.borrow().contains(cluster)
    }

    /// Resolves once `cluster` is found unreachable.
    pub async fn until_down(&self, cluster: &str) {
        if self.down.subscribe().wait_for(|down| down.contains(cluster)).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Records a probe result and logs and counts every route that switched because of it.
    /// `started`: when the probe was sent (a probe that timed out has seen no answer since then).
    pub fn observe(&self, snapshot: &Snapshot, cluster: &str, ok: bool, started: Instant) {
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
            self.view.store(Arc::new(health.clone()));
        }
        for s in lock(&self.switches).observe(&snapshot.policy.routes, &health) {
            self.switches_total.with_label_values(&[s.direction()]).inc();
            tracing::warn!(route = s.route, from = %s.from, to = %s.to, direction = s.direction(), "route switched");
        }
    }
}
