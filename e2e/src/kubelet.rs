//! Plays kubelet's part for a ConfigMap or Secret volume: files in a timestamped folder, published by swapping
//! the `..data` symlink atomically, with top-level symlinks through it — exactly what a mounted volume looks like.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

/// Publishes `files` into the volume directory `dir`, replacing what was there in one atomic rename.
pub fn project(dir: &Path, files: &BTreeMap<String, String>) -> Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = format!("..{}_{}.{}", chrono_like_stamp(), std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    let payload = dir.join(&stamp);
    std::fs::create_dir(&payload).with_context(|| format!("creating {}", payload.display()))?;
    for (name, content) in files {
        std::fs::write(payload.join(name), content).with_context(|| format!("writing {name}"))?;
    }
    // The swap: a new symlink under a temporary name, renamed over `..data` (rename is atomic).
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).context("creating ..data_tmp")?;
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::fs::rename(&tmp, dir.join("..data")).context("swapping ..data")?;
    for name in files.keys() {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)
                .with_context(|| format!("linking {name}"))?;
        }
    }
    // kubelet removes the previous payload after the swap.
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

/// Convenience for the common case of one file.
pub fn project_one(dir: &Path, name: &str, content: &str) -> Result<()> {
    project(dir, &BTreeMap::from([(name.to_string(), content.to_string())]))
}

fn chrono_like_stamp() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_data_and_keeps_links_stable() {
        let dir = std::env::temp_dir().join(format!("kubelet-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        project_one(&dir, "config.yaml", "one").unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("config.yaml")).unwrap(), "one");
        let first = std::fs::read_link(dir.join("..data")).unwrap();
        project_one(&dir, "config.yaml", "two").unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("config.yaml")).unwrap(), "two");
        assert_ne!(std::fs::read_link(dir.join("..data")).unwrap(), first);
        assert!(!dir.join(first).exists(), "the old payload is removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
