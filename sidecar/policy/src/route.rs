//! Routes: which cluster serves a topic, group or transactional id (exact name or prefix, first match wins, else
//! the default cluster), and failover: a route whose cluster is unreachable moves to its first reachable fallback
//! and back when the cluster returns.
//!
//! kproxy routes, it does not replicate: a fallback must already hold the same topics and group offsets.

mod failover;
pub mod members;
mod merge;
pub mod split;

use std::collections::HashMap;

use kproxy_api::config::SidecarConfig;

pub use failover::{Health, Switch, Switches, Transition};
pub use members::Epochs;
pub use merge::{NOT_LEADER_OR_FOLLOWER, cross_cluster, merge_metadata, steer};
pub use split::{Order, Plan, plan};

/// Metric names the data path registers.
pub const METRIC_SWITCHES: &str = "kproxy_route_switches_total";
pub const METRIC_CLUSTER_REACHABLE: &str = "kproxy_cluster_reachable";

/// What is being routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Topic,
    Group,
    TransactionalId,
}

/// One compiled route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Primary cluster, then fallbacks in order.
    pub clusters: Vec<String>,
}

/// Exact names in a map and prefixes in a list, per kind; the lowest route index wins.
#[derive(Clone, Debug, Default)]
struct Matchers {
    exact: HashMap<String, usize>,
    prefixes: Vec<(String, usize)>,
}

impl Matchers {
    fn find(&self, name: &str) -> Option<usize> {
        let exact = self.exact.get(name).copied();
        let prefix = self.prefixes.iter().filter(|(p, _)| name.starts_with(p.as_str())).map(|(_, i)| *i).min();
        match (exact, prefix) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The compiled routes of a policy.
#[derive(Clone, Debug)]
pub struct Routes {
    routes: Vec<Route>,
    matchers: [Matchers; 3],
    default: String,
}

impl Routes {
    pub fn compile(config: &SidecarConfig) -> Self {
        let mut matchers: [Matchers; 3] = Default::default();
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let m = &route.matches;
            let entries = [
                (Kind::Topic, &m.topic, false),
                (Kind::Topic, &m.topic_prefix, true),
                (Kind::Group, &m.group, false),
                (Kind::Group, &m.group_prefix, true),
                (Kind::TransactionalId, &m.transactional_id, false),
                (Kind::TransactionalId, &m.transactional_id_prefix, true),
            ];
            for (kind, value, prefix) in entries {
                let Some(value) = value else { continue };
                let target = &mut matchers[kind as usize];
                if prefix {
                    target.prefixes.push((value.clone(), i));
                } else {
                    target.exact.entry(value.clone()).or_insert(i);
                }
            }
            let mut clusters = vec![route.cluster.clone()];
            clusters.extend(route.failover.iter().cloned());
            routes.push(Route { clusters });
        }
        Self { routes, matchers, default: config.default_cluster_name().to_string() }
    }

    /// The index of the first route matching `name`, if any.
    pub fn route(&self, kind: Kind, name: &str) -> Option<usize> {
        self.matchers[kind as usize].find(name)
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn default_cluster(&self) -> &str {
        &self.default
    }

    /// The cluster a route uses now: its primary while reachable, else the first reachable fallback, else the
    /// primary (nothing better is known, and its errors are what the client should see).
    pub fn active(&self, route: usize, health: &Health) -> &str {
        let Some(r) = self.routes.get(route) else { return &self.default };
        r.clusters.iter().find(|c| health.reachable(c)).unwrap_or(&r.clusters[0])
    }

    /// The cluster serving `name` now.
    pub fn cluster(&self, kind: Kind, name: &str, health: &Health) -> &str {
        match self.route(kind, name) {
            Some(i) => self.active(i, health),
            None => &self.default,
        }
    }

    /// The cluster serving `name` when every cluster is reachable.
    pub fn primary(&self, kind: Kind, name: &str) -> &str {
        match self.route(kind, name) {
            Some(i) => &self.routes[i].clusters[0],
            None => &self.default,
        }
    }

    /// Every cluster some route or the default may use.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.default.as_str())
            .chain(self.routes.iter().flat_map(|r| r.clusters.iter().map(String::as_str)))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cross_cluster_tests;
