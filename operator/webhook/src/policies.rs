//! The webhook's view of the policies: a watch cache (kube-runtime reflector) per watched namespace, or one for
//! the whole cluster, so an admission review reads memory instead of listing policies from the API server.
//!
//! In the operator the same cache also drives the controller ([`PolicyCache::follow`]), so each policy is decoded
//! and held once per process rather than once for the webhook and again for the controller.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use kproxy_api::crd::KafkaProxyPolicy;
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::{Error, Result};

/// How long a review waits for the first list of a cache that is still filling (the API server gives the whole
/// review 5 s by default).
const READY_WAIT: Duration = Duration::from_secs(3);
/// Changed policies waiting for a follower; when it lags this far behind, the watch waits for it.
const FOLLOW_BUFFER: usize = 1024;

/// Where one scope's watch sends the policies it sees change, while someone follows them.
type Follower = Arc<Mutex<Option<mpsc::Sender<Arc<KafkaProxyPolicy>>>>>;

/// Policies by namespace, kept current by watches that run until the cache is dropped.
pub struct PolicyCache {
    client: Client,
    /// `None`: one cache for every namespace.
    stores: Vec<(Option<String>, Store<KafkaProxyPolicy>)>,
    /// Per scope, in the order of `stores`.
    followers: Vec<Follower>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for PolicyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scopes: Vec<_> = self.stores.iter().map(|(scope, _)| scope).collect();
        f.debug_struct("PolicyCache").field("scopes", &scopes).finish()
    }
}

impl PolicyCache {
    /// Starts one watch per namespace of `namespaces`, or one cluster-wide watch when it is empty.
    pub fn start(client: Client, namespaces: &[String]) -> PolicyCache {
        let scopes: Vec<Option<String>> =
            if namespaces.is_empty() { vec![None] } else { namespaces.iter().cloned().map(Some).collect() };
        let mut stores = Vec::new();
        let mut followers = Vec::new();
        let mut tasks = Vec::new();
        for scope in scopes {
            let api: Api<KafkaProxyPolicy> = match &scope {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            let (reader, writer) = reflector::store();
            // managedFields are never read here and can be the larger part of each object: not kept in memory.
            let events = watcher(api, watcher::Config::default())
                .default_backoff()
                .modify(|p: &mut KafkaProxyPolicy| p.managed_fields_mut().clear());
            let stream = reflector::reflector(writer, events);
            let follower = Follower::default();
            let sink = follower.clone();
            tasks.push(tokio::spawn(async move {
                // The watcher retries with backoff on its own; errors are only logged.
                stream
                    .for_each(|event| {
                        let sink = sink.clone();
                        async move {
                            match event {
                                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                                    tell(&sink, Arc::new(p)).await
                                }
                                Ok(_) => {}
                                Err(e) => tracing::warn!(error = %e, "watching KafkaProxyPolicies failed; retrying"),
                            }
                        }
                    })
                    .await;
            }));
            stores.push((scope, reader));
            followers.push(follower);
        }
        PolicyCache { client, stores, followers, tasks }
    }

    /// The watched scopes (a namespace, or `None` for all) and their caches.
    pub fn scopes(&self) -> &[(Option<String>, Store<KafkaProxyPolicy>)] {
        &self.stores
    }

    /// From now on, every policy of scope `index` (of [`PolicyCache::scopes`]) that the watch sees created or
    /// changed, until the stream is dropped. One follower per scope at a time: a new one replaces the last.
    pub fn follow(&self, index: usize) -> impl Stream<Item = Arc<KafkaProxyPolicy>> + Send + 'static + use<> {
        let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
        if let Some(slot) = self.followers.get(index) {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        }
        rx
    }

    /// The policies of `namespace`, from the cache. `Ok(None)` when the namespace is not watched (the webhook
    /// configuration sent a pod from outside the operator's namespaces).
    pub async fn in_namespace(&self, namespace: &str) -> Result<Option<Vec<Arc<KafkaProxyPolicy>>>> {
        let Some((_, store)) = self.stores.iter().find(|(scope, _)| scope.as_deref().is_none_or(|s| s == namespace))
        else {
            return Ok(None);
        };
        match tokio::time::timeout(READY_WAIT, store.wait_until_ready()).await {
            Ok(Ok(())) => {}
            _ => return Err(Error::Config("the policy cache has not synced with the API server yet".into())),
        }
        Ok(Some(store.state_filter(|p| p.namespace().as_deref() == Some(namespace))))
    }

    /// The policies of `namespace` read from the API server. Used only to confirm a refusal, so a policy applied
    /// a moment before its pods (not yet in the cache) does not refuse them.
    pub async fn list(&self, namespace: &str) -> Result<Vec<Arc<KafkaProxyPolicy>>> {
        let api: Api<KafkaProxyPolicy> = Api::namespaced(self.client.clone(), namespace);
        Ok(api.list(&ListParams::default()).await?.items.into_iter().map(Arc::new).collect())
    }
}

/// Hands a changed policy to the scope's follower, if any, waiting while it is behind; a follower that went away
/// is forgotten.
async fn tell(follower: &Follower, policy: Arc<KafkaProxyPolicy>) {
    let sender = follower.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(mut sender) = sender else { return };
    if sender.send(policy).await.is_err() {
        let mut slot = follower.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|current| current.same_receiver(&sender)) {
            *slot = None;
        }
    }
}

impl Drop for PolicyCache {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str) -> Arc<KafkaProxyPolicy> {
        let spec =
            serde_json::from_value(serde_json::json!({"clusters": [{"name": "e", "bootstrapServers": ["h:1"]}]}))
                .unwrap();
        Arc::new(KafkaProxyPolicy::new(name, spec))
    }

    #[tokio::test]
    async fn changes_reach_the_follower_and_a_follower_that_left_is_forgotten() {
        let follower = Follower::default();
        tell(&follower, policy("before")).await;
        let (tx, mut rx) = mpsc::channel(4);
        *follower.lock().unwrap() = Some(tx);
        tell(&follower, policy("a")).await;
        tell(&follower, policy("b")).await;
        let names: Vec<String> = vec![rx.next().await.unwrap().name_any(), rx.next().await.unwrap().name_any()];
        assert_eq!(names, ["a", "b"], "only what changed after it started following, in order");
        drop(rx);
        tell(&follower, policy("c")).await;
        assert!(follower.lock().unwrap().is_none());
    }
}
