//! What this process last wrote for each policy (by uid): the rendering, the resourceVersion its ConfigMap got, and
//! the status. It lets a repeat reconcile skip a ConfigMap apply the API server already holds, and lets the watch
//! streams drop the events that only bring the operator's own writes back (a written status, an applied
//! ConfigMap), so each policy costs one reconcile and no repeated writes.
//!
//! Every rule here errs towards doing the work: an entry is trusted only while the object in the watch cache is the
//! exact version (resourceVersion, or status and generation) this process wrote, so a hand edit, a deletion or a
//! spec edit still reaches the reconcile and is repaired.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ConfigMap;
use kproxy_api::crd::{KafkaProxyPolicy, KafkaProxyPolicyStatus};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;

/// What was last written for one policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Hash of the rendering in the ConfigMap.
    pub hash: String,
    /// Its render time, in milliseconds since the Unix epoch (kept while the content is unchanged).
    pub at: u64,
    /// The ConfigMap's resourceVersion the apply returned: while the watch cache shows this version, the ConfigMap
    /// is exactly what was applied.
    configmap: Option<String>,
    status: Option<StatusMark>,
}

/// A status this process wrote (or found already in place).
#[derive(Clone, Debug, PartialEq, Eq)]
struct StatusMark {
    generation: Option<i64>,
    digest: u64,
    /// The policy's resourceVersion the status was written over: while the cache still shows that version, it has
    /// not seen the write yet and its status is stale.
    over: Option<String>,
}

/// What to do with the status a reconcile computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusStep {
    /// The API server already holds it.
    Skip,
    /// Write it (and announce the change).
    Write,
    /// The cache has not caught up with this process's last status write and the outcome changed since: decide again
    /// shortly, from a current cache (announcing from a stale status could repeat or miss an Event).
    Defer,
}

/// The entries by policy uid, pruned to the policies the cache still holds.
#[derive(Default)]
pub struct Ledger(Mutex<Entries>);

#[derive(Default)]
struct Entries {
    by_uid: HashMap<String, Entry>,
    /// Size at which the entries of deleted policies are pruned (grows with the live policies, so pruning, which
    /// walks the policy cache, stays rare).
    limit: usize,
}

/// A status as the API server returns it, hashed (its JSON: what the cache will hold after the write).
pub fn digest(status: Option<&KafkaProxyPolicyStatus>) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(&serde_json::to_vec(&status).unwrap_or_default());
    hasher.finish()
}

/// Whether the ConfigMap for a rendering with `hash` need not be applied: this process applied exactly that
/// rendering, and the watch cache (`seen`: the ConfigMap's resourceVersion there, `None` when absent) still holds
/// the version the apply returned. A hand edit, a deletion or an apply never made all fail it.
pub fn configmap_current(written: Option<&Entry>, hash: &str, seen: Option<&str>) -> bool {
    written.is_some_and(|w| w.hash == hash && w.configmap.is_some() && w.configmap.as_deref() == seen)
}

/// What to do with `new`, the status computed for `policy` as the cache holds it.
pub fn status_step(written: Option<&Entry>, policy: &KafkaProxyPolicy, new: &KafkaProxyPolicyStatus) -> StatusStep {
    if policy.status.as_ref() == Some(new) {
        return StatusStep::Skip;
    }
    let pending = written.and_then(|w| w.status.as_ref()).filter(|mark| {
        mark.over.is_some()
            && mark.over == policy.metadata.resource_version
            && mark.generation == policy.metadata.generation
    });
    match pending {
        Some(mark) if mark.digest == digest(Some(new)) => StatusStep::Skip,
        Some(_) => StatusStep::Defer,
        None => StatusStep::Write,
    }
}

/// Whether a watch event of `policy` only brings back a status this process wrote: same generation (no spec edit),
/// not being deleted, and exactly the status written.
pub fn own_status(written: Option<&Entry>, policy: &KafkaProxyPolicy) -> bool {
    let Some(mark) = written.and_then(|w| w.status.as_ref()) else { return false };
    policy.metadata.deletion_timestamp.is_none()
        && mark.generation == policy.metadata.generation
        && mark.digest == digest(policy.status.as_ref())
}

/// The uid of the policy controlling a ConfigMap.
fn controller_uid(cm: &PartialObjectMeta<ConfigMap>) -> Option<&str> {
    cm.owner_references().iter().find(|o| o.controller == Some(true)).map(|o| o.uid.as_str())
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry of policy `uid`, if this process wrote for it.
    pub fn get(&self, uid: &str) -> Option<Entry> {
        self.lock().by_uid.get(uid).cloned()
    }

    /// Whether the ConfigMap need not be applied (see [`configmap_current`]).
    pub fn configmap_current(&self, uid: &str, hash: &str, seen: Option<&str>) -> bool {
        configmap_current(self.lock().by_uid.get(uid), hash, seen)
    }

    /// What to do with a computed status (see [`status_step`]).
    pub fn status_step(&self, policy: &KafkaProxyPolicy, new: &KafkaProxyPolicyStatus) -> StatusStep {
        status_step(self.lock().by_uid.get(&policy.uid().unwrap_or_default()), policy, new)
    }

    /// Whether a policy event only brings back this process's own status write (see [`own_status`]).
    pub fn own_status(&self, policy: &KafkaProxyPolicy) -> bool {
        own_status(self.lock().by_uid.get(&policy.uid().unwrap_or_default()), policy)
    }

    /// Whether a ConfigMap event only brings back this process's own apply: the version the apply returned.
    pub fn own_configmap(&self, cm: &PartialObjectMeta<ConfigMap>) -> bool {
        let Some(uid) = controller_uid(cm) else { return false };
        let entries = self.lock();
        let written = entries.by_uid.get(uid).and_then(|w| w.configmap.as_deref());
        written.is_some() && written == cm.metadata.resource_version.as_deref()
    }

    /// Records the rendering in place for `uid` and, when it was just applied, the resourceVersion it got.
    pub fn rendered(
        &self,
        uid: &str,
        hash: &str,
        at: u64,
        applied: Option<Option<String>>,
        live: &Store<KafkaProxyPolicy>,
    ) {
        let mut entries = self.lock();
        let entry = entries.by_uid.entry(uid.to_string()).or_default();
        if entry.hash != hash {
            entry.configmap = None;
        }
        entry.hash = hash.to_string();
        entry.at = at;
        if let Some(version) = applied {
            entry.configmap = version;
        }
        entries.prune(live);
    }

    /// Records `status` as the one the API server holds for `policy` (`written`: this process is writing it now, over
    /// the version the cache shows; otherwise it was found in place). Call before the write so the event bringing
    /// it back is recognized however soon it comes; [`Ledger::forget_status`] if the write fails.
    pub fn status(&self, policy: &KafkaProxyPolicy, status: &KafkaProxyPolicyStatus, written: bool) {
        let mark = StatusMark {
            generation: policy.metadata.generation,
            digest: digest(Some(status)),
            over: written.then(|| policy.metadata.resource_version.clone()).flatten(),
        };
        let mut entries = self.lock();
        entries.by_uid.entry(policy.uid().unwrap_or_default()).or_default().status = Some(mark);
    }

    /// Forgets the status of `uid` (its write failed: nothing is known of what the API server holds).
    pub fn forget_status(&self, uid: &str) {
        if let Some(entry) = self.lock().by_uid.get_mut(uid) {
            entry.status = None;
        }
    }
}

impl Entries {
    fn prune(&mut self, live: &Store<KafkaProxyPolicy>) {
        if self.by_uid.len() <= self.limit {
            return;
        }
        let uids: std::collections::HashSet<String> = live.state().iter().filter_map(|p| p.uid()).collect();
        self.by_uid.retain(|uid, _| uids.contains(uid));
        self.limit = 2 * self.by_uid.len() + 16;
    }
}

#[cfg(test)]
mod tests;
