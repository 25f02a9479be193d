//! Certificates supplied as files (a mounted cert-manager Secret): loaded at start and re-read when they change.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::{Resolver, certified_key};
use crate::{Error, Result};

/// Re-read this often even without a file event: events can be lost (inotify overflow, remounts).
const POLL: Duration = Duration::from_secs(60);

/// Loads `dir/tls.crt` and `dir/tls.key` into `resolver`; an unchanged certificate is not reinstalled.
pub fn load_dir(dir: &Path, resolver: &Resolver) -> Result<bool> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
    };
    let key = certified_key(&read("tls.crt")?, &read("tls.key")?)?;
    let changed = resolver.current_der().as_deref() != key.cert.first().map(|c| c.as_ref());
    if changed {
        resolver.set(key);
    }
    Ok(changed)
}

/// Watches `dir` and reloads the certificate on every change until `shutdown`.
///
/// Kubelet updates a mounted Secret by swapping a `..data` symlink, and cert-manager may write the two files a
/// moment apart: a load that fails (key not matching the certificate yet) keeps the old pair and is retried on the
/// next event or poll.
pub async fn watch_dir(dir: PathBuf, resolver: Arc<Resolver>, shutdown: impl Future<Output = ()>) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |_event| {
        let _ = tx.send(());
    })
    .map_err(|e| Error::Config(format!("watching {}: {e}", dir.display())))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| Error::Config(format!("watching {}: {e}", dir.display())))?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = rx.recv() => {
                // Let a burst of events (several files, the symlink swap) settle into one reload.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(POLL) => {}
        }
        match load_dir(&dir, &resolver) {
            Ok(true) => tracing::info!(dir = %dir.display(), "reloaded webhook certificate"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "webhook certificate reload failed; keeping the current one"),
        }
    }
}
