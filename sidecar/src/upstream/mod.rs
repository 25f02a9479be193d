//! The upstream side: every configured cluster ([`Upstream`]), its brokers' connection pools ([`pool`]), and the
//! registry that swaps clusters on reload ([`Clusters`]). Configuration is handed in; nothing here points back
//! at its owner.

pub mod cluster;
pub mod credentials;
pub mod pool;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use kproxy_api::config::SidecarConfig;
use prometheus::IntCounter;
use tokio_util::sync::CancellationToken;

pub use cluster::{Endpoint, Upstream};

use crate::broker_map::BrokerMap;
use crate::buffer::Pool;
use crate::metrics::Metrics;
use crate::protocol::versions::Book;
use crate::settings::Limits;
use crate::state::Snapshot;

/// Upstream clusters by name, swapped as a whole on reload, and those a reload removed that still serve the
/// clients holding old metadata.
pub struct Clusters {
    current: ArcSwap<HashMap<String, Arc<Upstream>>>,
    /// Clusters removed by a reload that still serve their broker listeners until clients have refreshed their
    /// metadata (which no longer lists them).
    leaving: Mutex<HashMap<String, Arc<Upstream>>>,
    /// Every broker's ApiVersions answer across clusters; clients are offered their intersection.
    pub versions: Arc<Book>,
    limits: Limits,
    metrics: Arc<Metrics>,
    buffers: Arc<Pool>,
    secrets_dir: PathBuf,
    brokers: Arc<BrokerMap>,
    shutdown: CancellationToken,
    /// Configs refused because a credential file they name is not mounted.
    missing_credentials: IntCounter,
}

impl Clusters {
    pub fn new(
        limits: Limits,
        metrics: Arc<Metrics>,
        buffers: Arc<Pool>,
        secrets_dir: PathBuf,
        brokers: Arc<BrokerMap>,
        shutdown: CancellationToken,
    ) -> Arc<Clusters> {
        let missing_credentials = IntCounter::new(
            "kproxy_config_missing_credentials_total",
            "Configs refused because a credential file they name is not mounted (the pod must be restarted)",
        )
        .expect("the metric name is valid");
        if let Err(e) = metrics.registry.register(Box::new(missing_credentials.clone())) {
            tracing::warn!(error = %e, "cannot register kproxy_config_missing_credentials_total");
        }
        Arc::new(Clusters {
            current: ArcSwap::default(),
            leaving: Mutex::default(),
            versions: Arc::default(),
            limits,
            metrics,
            buffers,
            secrets_dir,
            brokers,
            shutdown,
            missing_credentials,
        })
    }

    /// Refuses a config naming credential files that are not there (the reason, which is also logged and
    /// counted): Secret volumes are fixed when a pod starts, so only a restart brings them, and until then the
    /// last good config keeps serving.
    pub fn credentials_mounted(&self, config: &SidecarConfig) -> Result<(), String> {
        let missing = credentials::missing(config, &self.secrets_dir);
        if missing.is_empty() {
            return Ok(());
        }
        self.missing_credentials.inc();
        let secrets: std::collections::BTreeSet<_> = missing.iter().filter_map(|m| m.secret.as_deref()).collect();
        let files: Vec<String> = missing.iter().map(ToString::to_string).collect();
        tracing::error!(
            secrets = ?secrets,
            files = ?files,
            "config names credential files this pod does not have; the previous config keeps serving. Secret \
             volumes are fixed when a pod starts: restart the pod to mount them"
        );
        Err(format!("credential files not mounted (restart the pod): {}", files.join("; ")))
    }

    fn leaving(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Upstream>>> {
        self.leaving.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cluster of that name in the current config (or leaving it).
    pub fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        self.current.load().get(name).cloned().or_else(|| self.leaving().get(name).cloned())
    }

    /// The clusters of `snapshot` other than `own`, in config order: the ones Metadata is asked of besides.
    pub fn others(&self, snapshot: &Snapshot, own: &str) -> Vec<Arc<Upstream>> {
        snapshot.config.clusters.iter().filter(|c| c.name != own).filter_map(|c| self.get(&c.name)).collect()
    }

    /// Swaps in the clusters of a new snapshot: unchanged connection settings keep their pools, changed ones get
    /// new pools (the old ones drain), removed ones drain and lose their listeners after the grace period.
    pub fn apply(self: &Arc<Self>, snapshot: &Snapshot) {
        let old = self.current.load_full();
        let mut next = HashMap::new();
        for cluster in &snapshot.config.clusters {
            let returning = self.leaving().remove(&cluster.name);
            let kept =
                old.get(&cluster.name).or(returning.as_ref()).filter(|u| u.cluster.same_connection(cluster)).cloned();
            let up = kept.unwrap_or_else(|| {
                Upstream::new(
                    cluster.clone(),
                    self.limits.clone(),
                    self.metrics.clone(),
                    self.buffers.clone(),
                    self.secrets_dir.clone(),
                    self.versions.clone(),
                )
            });
            next.insert(cluster.name.clone(), up);
        }
        self.current.store(Arc::new(next.clone()));
        for (name, up) in old.iter() {
            match next.get(name) {
                Some(now) if Arc::ptr_eq(now, up) => {}
                Some(_) => {
                    let up = up.clone();
                    tokio::spawn(async move { up.retire().await });
                }
                None => self.remove_later(name, up.clone()),
            }
        }
    }

    /// A removed cluster keeps serving its broker listeners for the grace period (clients still holding old
    /// metadata reach it), then its listeners close and its pools drain, unless a reload brought it back.
    fn remove_later(self: &Arc<Self>, name: &str, up: Arc<Upstream>) {
        self.leaving().insert(name.to_string(), up.clone());
        let (clusters, name) = (self.clone(), name.to_string());
        let grace = self.limits.removed_cluster_grace;
        tracing::info!(cluster = %name, ?grace, "cluster removed; its broker listeners close after the grace period");
        tokio::spawn(async move {
            tokio::select! {
                _ = clusters.shutdown.cancelled() => return,
                _ = tokio::time::sleep(grace) => {}
            }
            {
                let mut leaving = clusters.leaving();
                if leaving.get(&name).is_some_and(|l| Arc::ptr_eq(l, &up)) {
                    leaving.remove(&name);
                }
            }
            let current = clusters.current.load().get(&name).cloned();
            if current.is_none() {
                let n = clusters.brokers.remove_cluster(&name);
                clusters.metrics.broker_listeners.set(clusters.brokers.listeners() as i64);
                tracing::info!(cluster = %name, brokers = n, "removed cluster's broker listeners closed");
            }
            // A reload that brought the cluster back with the same settings took this very pool over.
            if !current.is_some_and(|c| Arc::ptr_eq(&c, &up)) {
                up.retire().await;
            }
        });
    }
}
