//! Hot config: reloading the snapshot when the mounted ConfigMap changes.
//!
//! kubelet publishes a ConfigMap volume by writing a new timestamped folder and then renaming a fresh `..data`
//! symlink over the old one. Reacting only to that rename (not to each file write) means a config is never
//! read half-written. SIGHUP forces a reload too. A config is parsed, validated and compiled completely before
//! anything changes ([`Snapshot::new`] compiles the policy, never the request path); an invalid one is logged
//! (naming each bad field), counted and ignored. A valid one swaps the clusters ([`Clusters::apply`]) and is
//! published to requests ([`Store::publish`]).
//!
//! A config may also arrive through the API server ([`api`]): both paths hand their text to [`Reloader::offer`],
//! which validates it the same way and takes it only if it supersedes the one served
//! ([`SidecarConfig::supersedes`]), so a volume lagging behind the API never rolls a pod back. Offers are
//! serialized: the check and the swap happen as one step.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kproxy_api::config::{SidecarConfig, config_hash};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::metrics::Metrics;
use crate::state::{Snapshot, Store};
use crate::upstream::Clusters;

pub mod api;
pub mod source;

pub use source::{Source, Sources};

/// kubelet's atomically swapped symlink inside a mounted volume.
const DATA_LINK: &str = "..data";
/// Events closer together than this are one change (a swap emits create + rename + remove).
const SETTLE: Duration = Duration::from_millis(5);

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied {
        generation: u64,
        hash: String,
    },
    Unchanged,
    Rejected(String),
    /// Valid, but older than the config served (the other path already delivered a newer one).
    Stale,
}

impl Outcome {
    /// The `result` label of `kproxy_config_reloads_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Rejected(_) => "rejected",
            Outcome::Stale => "stale",
        }
    }
}

/// Puts a snapshot in force: clusters first (so requests of the new snapshot find theirs), then the snapshot.
pub fn apply(store: &Store, clusters: &Arc<Clusters>, metrics: &Metrics, snapshot: Snapshot) {
    clusters.apply(&snapshot);
    metrics.config_generation.set(snapshot.generation as i64);
    metrics.config_info.reset();
    metrics
        .config_info
        .with_label_values(&[&snapshot.hash, &snapshot.config.policy, &snapshot.config.generation.to_string()])
        .set(1);
    store.publish(snapshot);
}

/// Reloads the config at `path`, or takes one the API delivered, into the store and clusters it feeds.
pub struct Reloader {
    pub path: PathBuf,
    pub store: Arc<Store>,
    pub clusters: Arc<Clusters>,
    pub metrics: Arc<Metrics>,
    /// Where the served config came from and how long it took.
    pub sources: Sources,
    /// Held while an offer is checked and applied, so two paths cannot interleave.
    serial: Mutex<()>,
}

impl Reloader {
    /// A reloader for the config at `path`; the served config (already in the store) came from the volume.
    pub fn new(path: PathBuf, store: Arc<Store>, clusters: Arc<Clusters>, metrics: Arc<Metrics>) -> Result<Self> {
        let sources = Sources::new(&metrics.registry)?;
        sources.initial(Source::Volume, store.snapshot().config.rendered_at_ms);
        Ok(Reloader { path, store, clusters, metrics, sources, serial: Mutex::new(()) })
    }

    /// Reads, validates, compiles and (if valid, different and not older) swaps in the mounted config.
    pub fn reload(&self) -> Outcome {
        self.consider(Source::Volume, SidecarConfig::load(&self.path))
    }

    /// Validates, compiles and (if different and not older) swaps in a config text from `source`.
    pub fn offer(&self, source: Source, text: String) -> Outcome {
        self.consider(source, SidecarConfig::parse(&text).map(|config| (config, text)))
    }

    fn consider(&self, source: Source, loaded: kproxy_api::Result<(SidecarConfig, String)>) -> Outcome {
        let _serial = self.serial.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let started = Instant::now();
        let outcome = match loaded {
            Err(e) => {
                tracing::error!(source = source.label(), path = %self.path.display(), error = %e, "config rejected; the previous config keeps serving");
                Outcome::Rejected(e.to_string())
            }
            // Valid, but naming Secret files the pod does not mount: only a restart can bring them.
            Ok((config, _)) if let Err(reason) = self.clusters.credentials_mounted(&config) => {
                Outcome::Rejected(reason)
            }
            Ok((config, text)) => {
                let current = self.store.snapshot();
                let hash = config_hash(&text);
                if hash == current.hash {
                    tracing::debug!(source = source.label(), %hash, "config unchanged");
                    Outcome::Unchanged
                } else if !config.supersedes(&current.config) {
                    tracing::info!(
                        source = source.label(),
                        offered = config.generation,
                        served = current.config.generation,
                        "config older than the one served; ignored"
                    );
                    Outcome::Stale
                } else {
                    let generation = current.generation + 1;
                    let rendered_at_ms = config.rendered_at_ms;
                    let policy_generation = config.generation;
                    let snapshot = Snapshot::compiled(config, hash.clone(), generation);
                    apply(&self.store, &self.clusters, &self.metrics, snapshot);
                    self.metrics.unknown_fields.report(&text);
                    self.sources.served(source, rendered_at_ms);
                    tracing::info!(
                        source = source.label(),
                        generation,
                        policy_generation,
                        %hash,
                        previous = %current.hash,
                        elapsed = ?started.elapsed(),
                        "config reloaded"
                    );
                    Outcome::Applied { generation, hash }
                }
            }
        };
        self.metrics.config_reloads.with_label_values(&[outcome.label()]).inc();
        self.metrics.reload_seconds.observe(started.elapsed().as_secs_f64());
        outcome
    }
}

/// The directory to watch and the names in it whose change means a new config.
fn watch_target(config: &Path) -> (PathBuf, Vec<std::ffi::OsString>) {
    if config.is_dir() {
        return (config.to_path_buf(), vec![DATA_LINK.into()]);
    }
    let dir = config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let mut names = vec![DATA_LINK.into()];
    names.extend(config.file_name().map(|n| n.to_os_string()));
    (dir, names)
}

/// Starts the watcher and the SIGHUP handler; both feed one reload task, which stops at shutdown.
pub fn spawn(reloader: Arc<Reloader>, shutdown: CancellationToken) -> Result<()> {
    // One pending trigger is enough: the reload that follows reads the newest files, so further events while one
    // waits are dropped (try_send on a full channel) instead of queued without bound.
    let (tx, mut rx) = mpsc::channel::<&'static str>(1);
    let (dir, names) = watch_target(&reloader.path);
    let fs_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) => {
            // Reading the config (ours included) raises access events; only changes count.
            if !matches!(event.kind, notify::EventKind::Access(_))
                && event.paths.iter().any(|p| p.file_name().is_some_and(|n| names.iter().any(|w| w == n)))
            {
                let _ = fs_tx.try_send("watch");
            }
        }
        Err(e) => tracing::warn!(error = %e, "config watch error"),
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tracing::info!(dir = %dir.display(), "watching config");
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            if hup.recv().await.is_none() || tx.send("sighup").await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        loop {
            let trigger = tokio::select! {
                _ = shutdown.cancelled() => return,
                t = rx.recv() => match t { Some(t) => t, None => return },
            };
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            tracing::debug!(trigger, "config change noticed");
            reloader.reload();
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests;
