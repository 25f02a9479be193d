//! Hot config: the snapshot every request reads, and reloading it when the mounted ConfigMap changes.

use kproxy_api::config::{SidecarConfig, config_hash};

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

/// Starts watching for config changes. (Filled in by the reload implementation.)
pub fn spawn(app: std::sync::Arc<crate::proxy::App>) -> crate::Result<()> {
    let _ = app;
    Ok(())
}
