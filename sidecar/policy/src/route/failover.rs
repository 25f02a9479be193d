//! Cluster health and route switches, with injected time.
//!
//! A cluster is unreachable once every connection and metadata attempt has failed for `unreachable_after`; one
//! success makes it reachable again. Routes follow: [`Switches::observe`] reports every route whose active cluster
//! changed, so the data path logs and counts each switch and steers clients with the errors they already handle.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Routes;

/// A cluster became unreachable or reachable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub cluster: String,
    pub reachable: bool,
}

#[derive(Clone, Debug, Default)]
struct State {
    /// When the current run of failures began; `None` after a success.
    failing_since: Option<Instant>,
    unreachable: bool,
}

/// Reachability of every cluster.
#[derive(Clone, Debug)]
pub struct Health {
    unreachable_after: Duration,
    clusters: HashMap<String, State>,
}

impl Health {
    pub fn new(unreachable_after: Duration) -> Self {
        Self { unreachable_after, clusters: HashMap::new() }
    }

    /// Applies a new setting, keeping what is known.
    pub fn set_unreachable_after(&mut self, after: Duration) {
        self.unreachable_after = after;
    }

    /// A connection or metadata request to `cluster` failed.
    pub fn failure(&mut self, cluster: &str, now: Instant) -> Option<Transition> {
        self.failure_since(cluster, now, now)
    }

    /// A connection or metadata request to `cluster` begun at `started` failed at `now`: a request that timed
    /// out says the cluster has not been answering since it was sent, not only since the timeout.
    pub fn failure_since(&mut self, cluster: &str, started: Instant, now: Instant) -> Option<Transition> {
        let state = self.clusters.entry(cluster.to_string()).or_default();
        let since = *state.failing_since.get_or_insert(started.min(now));
        if !state.unreachable && now.saturating_duration_since(since) >= self.unreachable_after {
            state.unreachable = true;
            return Some(Transition { cluster: cluster.to_string(), reachable: false });
        }
        None
    }

    /// A connection or request to `cluster` succeeded.
    pub fn success(&mut self, cluster: &str) -> Option<Transition> {
        let state = self.clusters.entry(cluster.to_string()).or_default();
        state.failing_since = None;
        if state.unreachable {
            state.unreachable = false;
            return Some(Transition { cluster: cluster.to_string(), reachable: true });
        }
        None
    }

    /// Re-evaluates time-based unreachability (a cluster failing with nobody retrying still times out).
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let after = self.unreachable_after;
        let mut out = Vec::new();
        for (name, state) in &mut self.clusters {
            if let Some(since) = state.failing_since
                && !state.unreachable
                && now.saturating_duration_since(since) >= after
            {
                state.unreachable = true;
                out.push(Transition { cluster: name.clone(), reachable: false });
            }
        }
        out
    }

    pub fn reachable(&self, cluster: &str) -> bool {
        self.clusters.get(cluster).is_none_or(|s| !s.unreachable)
    }
}

/// A route moved from one cluster to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    pub route: usize,
    pub from: String,
    pub to: String,
    /// True when the route moved back to its primary cluster.
    pub back_to_primary: bool,
}

impl Switch {
    /// The `direction` label of `kproxy_route_switches_total`.
    pub fn direction(&self) -> &'static str {
        if self.back_to_primary { "primary" } else { "fallback" }
    }
}

/// The cluster each route used last time it was observed.
#[derive(Clone, Debug, Default)]
pub struct Switches {
    active: Vec<String>,
}

impl Switches {
    /// Compares every route's active cluster with the last observation and reports the changes.
    pub fn observe(&mut self, routes: &Routes, health: &Health) -> Vec<Switch> {
        let mut out = Vec::new();
        let now: Vec<String> = (0..routes.routes().len()).map(|i| routes.active(i, health).to_string()).collect();
        if self.active.len() == now.len() {
            for (i, (before, after)) in self.active.iter().zip(&now).enumerate() {
                if before != after {
                    let back_to_primary = routes.routes()[i].clusters[0] == *after;
                    out.push(Switch { route: i, from: before.clone(), to: after.clone(), back_to_primary });
                }
            }
        }
        self.active = now;
        out
    }
}
