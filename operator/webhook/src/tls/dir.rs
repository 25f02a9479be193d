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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::time::Instant;

    use super::*;
    use crate::cert::{Lifetimes, Material};

    /// Writes `m` the way kubelet projects a Secret: files in a fresh directory, `..data` swapped atomically to it,
    /// and `tls.crt`/`tls.key` as links through `..data`.
    fn project(dir: &Path, m: &Material, generation: u32) {
        let data = dir.join(format!("..{generation}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("tls.crt"), &m.cert).unwrap();
        std::fs::write(data.join("tls.key"), &m.key).unwrap();
        let tmp = dir.join("..data_tmp");
        symlink(data.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        for file in ["tls.crt", "tls.key"] {
            if !dir.join(file).exists() {
                symlink(Path::new("..data").join(file), dir.join(file)).unwrap();
            }
        }
    }

    fn der(m: &Material) -> Vec<u8> {
        certified_key(m.cert.as_bytes(), m.key.as_bytes()).unwrap().cert[0].as_ref().to_vec()
    }

    #[tokio::test]
    async fn a_rotated_secret_is_served_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::now_utc();
        let first = Material::generate(&["127.0.0.1".into()], Lifetimes::default(), now).unwrap();
        let second = first.renew_cert(&["127.0.0.1".into()], Lifetimes::default(), now).unwrap();
        project(dir.path(), &first, 1);
        let resolver = Arc::new(Resolver::default());
        assert!(load_dir(dir.path(), &resolver).unwrap());
        assert!(!load_dir(dir.path(), &resolver).unwrap(), "an unchanged certificate is not reinstalled");
        assert_eq!(resolver.current_der(), Some(der(&first)));

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn(watch_dir(dir.path().to_path_buf(), resolver.clone(), async {
            let _ = stop_rx.await;
        }));
        // Give the watch a moment to be established before the swap.
        tokio::time::sleep(Duration::from_millis(200)).await;
        project(dir.path(), &second, 2);
        let deadline = Instant::now() + Duration::from_secs(20);
        while resolver.current_der() != Some(der(&second)) {
            assert!(Instant::now() < deadline, "the new certificate was not picked up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop_tx.send(());
        watcher.await.unwrap().unwrap();
    }

    #[test]
    fn a_key_not_matching_the_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::now_utc();
        let a = Material::generate(&["x".into()], Lifetimes::default(), now).unwrap();
        let b = Material::generate(&["x".into()], Lifetimes::default(), now).unwrap();
        std::fs::write(dir.path().join("tls.crt"), &a.cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), &b.key).unwrap();
        assert!(load_dir(dir.path(), &Resolver::default()).is_err());
    }
}
