//! What requests read: the config snapshot in force (compiled when it was loaded, never on the request path),
//! the measurements that outlive reloads (quota rates, topic ids), and the health view (which clusters the probes
//! found reachable).
//!
//! A request takes the snapshot once ([`Store::snapshot`]) and keeps that `Arc` until its response is written,
//! so one request never sees two configs. Nothing here does I/O.

mod health;
mod live;

use std::sync::Arc;

use arc_swap::ArcSwap;
use kproxy_api::config::{SidecarConfig, config_hash};
use kproxy_policy::Policy;
use prometheus::Registry;

pub use health::Health;

/// The health view of a config without routes: nobody is probed, everything is reachable.
pub fn no_routes() -> &'static kproxy_policy::route::Health {
    static EMPTY: std::sync::LazyLock<kproxy_policy::route::Health> =
        std::sync::LazyLock::new(|| kproxy_policy::route::Health::new(std::time::Duration::from_secs(5)));
    &EMPTY
}
pub use live::Live;

use crate::Result;

/// One validated config, compiled, as served.
#[derive(Debug)]
pub struct Snapshot {
    pub config: SidecarConfig,
    /// `sha256:<hex>` of the config text.
    pub hash: String,
    /// How many configs this process has applied, the first being 1.
    pub generation: u64,
    /// ACLs and routes, compiled from `config` when the snapshot was made.
    pub policy: Policy,
    /// More than one cluster in play: Metadata is fanned out and merged, health is probed.
    pub routed: bool,
    /// Some route has fallbacks: Produce and Fetch are checked for having been routed away.
    pub failover: bool,
    /// Some quota is configured: requests are measured.
    pub quotas: bool,
}

impl Snapshot {
    /// Compiles a validated config.
    pub fn new(config: SidecarConfig, text: &str, generation: u64) -> Self {
        Snapshot::compiled(config, config_hash(text), generation)
    }

    pub fn compiled(config: SidecarConfig, hash: String, generation: u64) -> Self {
        let policy = Policy::from_config(&config);
        let routed = !config.routes.is_empty() && config.clusters.len() > 1;
        let failover = routed && config.routes.iter().any(|r| !r.failover.is_empty());
        let limits = kproxy_policy::quota::Quotas::new(&config.quotas);
        let quotas = kproxy_policy::quota::Kind::ALL.iter().any(|k| limits.limits(*k));
        Snapshot { config, hash, generation, policy, routed, failover, quotas }
    }

    /// The cluster that serves the bootstrap listener (and everything unrouted).
    pub fn default_cluster(&self) -> &str {
        self.config.default_cluster_name()
    }
}

/// The snapshot in force and the state requests share across snapshots.
pub struct Store {
    snapshot: ArcSwap<Snapshot>,
    /// Quota measurements, topic ids, policy counters.
    pub live: Live,
    /// Cluster reachability as the probes see it.
    pub health: Health,
}

impl Store {
    pub fn new(snapshot: Snapshot, registry: &Registry) -> Result<Store> {
        let live = Live::new(registry)?;
        live.update(&snapshot);
        Ok(Store { snapshot: ArcSwap::from_pointee(snapshot), live, health: Health::new(registry)? })
    }

    /// The snapshot in force; a request takes it once.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Puts a snapshot in force (quota limits follow it; measurements stay).
    pub fn publish(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        self.live.update(&snapshot);
        let snapshot = Arc::new(snapshot);
        self.snapshot.store(snapshot.clone());
        snapshot
    }
}
