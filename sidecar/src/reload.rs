//! Hot config: the snapshot every request reads, and reloading it when the mounted ConfigMap changes.
//!
//! kubelet publishes a ConfigMap volume by writing a new timestamped folder and then renaming a fresh `..data`
//! symlink over the old one. Reacting only to that rename (not to each file write) means a config is never
//! read half-written. SIGHUP forces a reload too. A config is parsed and validated completely before anything
//! changes; an invalid one is logged (naming each bad field), counted and ignored.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kproxy_api::config::{SidecarConfig, config_hash};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::Result;
use crate::proxy::App;

/// kubelet's atomically swapped symlink inside a mounted volume.
const DATA_LINK: &str = "..data";
/// Events closer together than this are one change (a swap emits create + rename + remove).
const SETTLE: Duration = Duration::from_millis(5);

/// One validated config, as served. Requests take an `Arc` of it once and keep it until they finish.
#[derive(Debug)]
pub struct Snapshot {
    pub config: SidecarConfig,
    /// `sha256:<hex>` of the config text.
    pub hash: String,
    /// How many configs this process has applied, the first being 1.
    pub generation: u64,
}

impl Snapshot {
    pub fn new(config: SidecarConfig, text: &str, generation: u64) -> Self {
        Snapshot { config, hash: config_hash(text), generation }
    }
}

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied { generation: u64, hash: String },
    Unchanged,
    Rejected(String),
}

impl Outcome {
    /// The `result` label of `kproxy_config_reloads_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Rejected(_) => "rejected",
        }
    }
}

/// Reads, validates and (if valid and different) swaps in the config at the app's config path.
pub fn reload(app: &Arc<App>) -> Outcome {
    let started = Instant::now();
    let path = &app.settings.config;
    let outcome = match SidecarConfig::load(path) {
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "config rejected; the previous config keeps serving");
            Outcome::Rejected(e.to_string())
        }
        Ok((config, text)) => {
            let current = app.config.load_full();
            let hash = config_hash(&text);
            if hash == current.hash {
                tracing::debug!(%hash, "config unchanged");
                Outcome::Unchanged
            } else {
                let generation = current.generation + 1;
                app.apply(Snapshot { config, hash: hash.clone(), generation });
                tracing::info!(generation, %hash, previous = %current.hash, elapsed = ?started.elapsed(), "config reloaded");
                Outcome::Applied { generation, hash }
            }
        }
    };
    app.metrics.config_reloads.with_label_values(&[outcome.label()]).inc();
    app.metrics.reload_seconds.observe(started.elapsed().as_secs_f64());
    outcome
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
pub fn spawn(app: Arc<App>) -> Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<&'static str>();
    let (dir, names) = watch_target(&app.settings.config);
    let fs_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) => {
            // Reading the config (ours included) raises access events; only changes count.
            if !matches!(event.kind, notify::EventKind::Access(_))
                && event.paths.iter().any(|p| p.file_name().is_some_and(|n| names.iter().any(|w| w == n)))
            {
                let _ = fs_tx.send("watch");
            }
        }
        Err(e) => tracing::warn!(error = %e, "config watch error"),
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tracing::info!(dir = %dir.display(), "watching config");
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            if hup.recv().await.is_none() || tx.send("sighup").is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        loop {
            let trigger = tokio::select! {
                _ = app.shutdown.cancelled() => return,
                t = rx.recv() => match t { Some(t) => t, None => return },
            };
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            tracing::debug!(trigger, "config change noticed");
            reload(&app);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn publish(dir: &Path, n: u32, text: &str) {
        let stamp = format!("..2026_{n}");
        std::fs::create_dir_all(dir.join(&stamp)).unwrap();
        std::fs::write(dir.join(&stamp).join("config.yaml"), text).unwrap();
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(&stamp, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(DATA_LINK)).unwrap();
        let link = dir.join("config.yaml");
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("..data/config.yaml", &link).unwrap();
        }
    }

    const ONE: &str = "clusters:\n- name: east\n  bootstrapServers: [\"127.0.0.1:1\"]\n";
    const TWO: &str = "clusters:\n- name: east\n  bootstrapServers: [\"127.0.0.1:1\"]\nquotas: {requestRate: 5}\n";
    const MOVED: &str = "clusters:\n- name: east\n  bootstrapServers: [\"127.0.0.1:2\"]\n";
    const BAD: &str = "clusters:\n- name: east\n  bootstrapServers: [\"nohost\"]\n";

    fn app(dir: &Path) -> Arc<App> {
        publish(dir, 0, ONE);
        let (config, text) = SidecarConfig::load(dir).unwrap();
        App::new(Settings::local(dir.to_path_buf()), Snapshot::new(config, &text, 1)).unwrap()
    }

    #[tokio::test]
    async fn invalid_configs_are_rejected_and_valid_ones_swapped_keeping_unchanged_clusters() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let east = app.upstream("east").unwrap();
        publish(dir.path(), 1, BAD);
        let Outcome::Rejected(why) = reload(&app) else { panic!("expected rejection") };
        assert!(why.contains("clusters[0].bootstrapServers[0]"), "{why}");
        assert_eq!(app.config.load().generation, 1);
        assert_eq!(reload(&app), Outcome::Rejected(why));
        publish(dir.path(), 2, TWO);
        assert!(matches!(reload(&app), Outcome::Applied { generation: 2, .. }));
        assert!(Arc::ptr_eq(&east, &app.upstream("east").unwrap()), "same connection settings keep the pool");
        assert_eq!(reload(&app), Outcome::Unchanged);
        publish(dir.path(), 3, MOVED);
        assert!(matches!(reload(&app), Outcome::Applied { generation: 3, .. }));
        assert!(!Arc::ptr_eq(&east, &app.upstream("east").unwrap()), "a moved cluster gets a new pool");
        let text = app.metrics.render();
        assert!(text.contains("kproxy_config_reloads_total{result=\"rejected\"} 2"), "{text}");
        assert!(text.contains("kproxy_config_generation 3"), "{text}");
        assert!(text.contains(&format!("hash=\"{}\"", config_hash(MOVED))), "{text}");
    }

    #[tokio::test]
    async fn a_removed_cluster_serves_its_listeners_until_the_grace_period_ends() {
        let dir = tempfile::tempdir().unwrap();
        let two = format!("{ONE}- name: west\n  bootstrapServers: [\"127.0.0.1:3\"]\n");
        publish(dir.path(), 0, &two);
        let (config, text) = SidecarConfig::load(dir.path()).unwrap();
        let mut settings = Settings::local(dir.path().to_path_buf());
        settings.limits.removed_cluster_grace = Duration::from_millis(200);
        let app = App::new(settings, Snapshot::new(config, &text, 1)).unwrap();
        let west = app.upstream("west").unwrap();
        publish(dir.path(), 1, ONE);
        assert!(matches!(reload(&app), Outcome::Applied { .. }));
        assert!(Arc::ptr_eq(&west, &app.upstream("west").unwrap()), "still served right after removal");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(app.upstream("west").is_none());
        assert!(west.is_retired());
    }

    #[tokio::test]
    async fn a_plain_config_file_is_watched_without_reacting_to_its_own_reads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kproxy.yaml");
        std::fs::write(&file, ONE).unwrap();
        let (config, text) = SidecarConfig::load(&file).unwrap();
        let app = App::new(Settings::local(file.clone()), Snapshot::new(config, &text, 1)).unwrap();
        spawn(app.clone()).unwrap();
        std::fs::write(dir.path().join(".tmp"), TWO).unwrap();
        std::fs::rename(dir.path().join(".tmp"), &file).unwrap();
        for _ in 0..200 {
            if app.config.load().generation == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(app.config.load().generation, 2);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let unchanged = app.metrics.config_reloads.with_label_values(&["unchanged"]).get();
        assert!(unchanged <= 1, "reading the config must not trigger reloads ({unchanged})");
    }

    #[tokio::test]
    async fn a_data_swap_is_noticed_by_the_watcher() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        spawn(app.clone()).unwrap();
        publish(dir.path(), 1, TWO);
        for _ in 0..200 {
            if app.config.load().generation == 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the swap was not noticed");
    }
}
