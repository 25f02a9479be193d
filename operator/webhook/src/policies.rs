//! The webhook's view of the policies: a watch cache (kube-runtime reflector) per watched namespace, or one for
//! the whole cluster, so an admission review reads memory instead of listing policies from the API server.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kproxy_api::crd::KafkaProxyPolicy;
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::{Error, Result};

/// How long a review waits for the first list of a cache that is still filling (the API server gives the whole
/// review 5 s by default).
const READY_WAIT: Duration = Duration::from_secs(3);

/// Policies by namespace, kept current by watches that run until the cache is dropped.
pub struct PolicyCache {
    client: Client,
    /// `None`: one cache for every namespace.
    stores: Vec<(Option<String>, Store<KafkaProxyPolicy>)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl PolicyCache {
    /// Starts one watch per namespace of `namespaces`, or one cluster-wide watch when it is empty.
    pub fn start(client: Client, namespaces: &[String]) -> PolicyCache {
        let scopes: Vec<Option<String>> =
            if namespaces.is_empty() { vec![None] } else { namespaces.iter().cloned().map(Some).collect() };
        let mut stores = Vec::new();
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
            tasks.push(tokio::spawn(async move {
                // The watcher retries with backoff on its own; errors are only logged.
                stream
                    .for_each(|event| async move {
                        if let Err(e) = event {
                            tracing::warn!(error = %e, "watching KafkaProxyPolicies failed; retrying");
                        }
                    })
                    .await;
            }));
            stores.push((scope, reader));
        }
        PolicyCache { client, stores, tasks }
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

impl Drop for PolicyCache {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
