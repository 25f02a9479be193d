//! The API server side of the operator benchmark: a namespace of its own, many policies created in parallel, and a
//! watch counting how many of them are Ready.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kproxy_api::crd::{KafkaProxyPolicy, READY};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher;
use kube::runtime::watcher::Event;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

/// Creates namespace `name`; [`delete_namespace`] removes it with everything in it.
pub async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    Ok(())
}

/// Starts deleting the namespace; the API server's namespace controller removes its objects in the background.
pub async fn delete_namespace(client: &Client, name: &str) -> Result<()> {
    Api::<Namespace>::all(client.clone()).delete(name, &DeleteParams::background()).await?;
    Ok(())
}

/// Policy `p<i>`: one cluster, selecting pods labelled `app=p<i>` (as a team with one policy per app would write).
pub fn policy(namespace: &str, i: usize) -> Result<KafkaProxyPolicy> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "kproxy.dev/v1alpha1", "kind": "KafkaProxyPolicy",
        "metadata": {"name": format!("p{i}"), "namespace": namespace},
        "spec": {"podSelector": {"matchLabels": {"app": format!("p{i}")}},
                 "clusters": [{"name": "east", "bootstrapServers": ["127.0.0.1:9093"]}]},
    }))?)
}

/// Creates policies `p<first>…p<last-1>`, `concurrency` requests at a time (a burst like `kubectl apply` of a large
/// manifest from several clients, without a process per object).
pub async fn create_policies(
    client: &Client,
    namespace: &str,
    ids: std::ops::Range<usize>,
    concurrency: usize,
) -> Result<()> {
    let api: Api<KafkaProxyPolicy> = Api::namespaced(client.clone(), namespace);
    futures::stream::iter(ids)
        .map(|i| {
            let api = api.clone();
            async move {
                let p = policy(namespace, i)?;
                api.create(&PostParams::default(), &p).await.with_context(|| format!("creating policy p{i}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

/// Whether a policy's `Ready` condition is `True` for its current generation.
pub fn is_ready(policy: &KafkaProxyPolicy) -> bool {
    let Some(status) = &policy.status else { return false };
    status.observed_generation == policy.metadata.generation
        && status.conditions.iter().any(|c| c.type_ == READY && c.status == "True")
}

/// Follows the namespace's policies and publishes how many are Ready, until the returned task is aborted.
pub fn count_ready(client: &Client, namespace: &str) -> (watch::Receiver<usize>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(0);
    let api: Api<KafkaProxyPolicy> = Api::namespaced(client.clone(), namespace);
    let task = tokio::spawn(async move {
        let mut ready = HashSet::new();
        let mut listing = HashSet::new();
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(p)) => {
                    match is_ready(&p) {
                        true => ready.insert(p.name_any()),
                        false => ready.remove(&p.name_any()),
                    };
                }
                Ok(Event::Delete(p)) => {
                    ready.remove(&p.name_any());
                }
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(p)) => {
                    if is_ready(&p) {
                        listing.insert(p.name_any());
                    }
                }
                Ok(Event::InitDone) => ready = std::mem::take(&mut listing),
                Err(e) => {
                    eprintln!("watching policies: {e}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            tx.send_replace(ready.len());
        }
    });
    (rx, task)
}

/// Waits until at least `count` policies are Ready; returns how long that took from `since`.
pub async fn wait_ready(
    ready: &mut watch::Receiver<usize>,
    count: usize,
    since: Instant,
    timeout: Duration,
) -> Result<Duration> {
    let waited = tokio::time::timeout_at((since + timeout).into(), ready.wait_for(|n| *n >= count)).await;
    match waited.map(|r| r.is_ok()) {
        Ok(true) => Ok(since.elapsed()),
        Ok(false) => bail!("the policy watch ended"),
        Err(_) => bail!("only {} of {count} policies were Ready after {timeout:?}", *ready.borrow()),
    }
}

/// The CA of the webhook's generated certificate, from the Secret the operator shares it through (PEM).
pub async fn webhook_ca(client: &Client, namespace: &str, secret: &str, timeout: Duration) -> Result<String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + timeout;
    loop {
        let ca = api.get_opt(secret).await?.and_then(|s| s.data).and_then(|mut d| d.remove("ca.crt"));
        if let Some(ca) = ca {
            return String::from_utf8(ca.0).context("the webhook CA is not text");
        }
        if Instant::now() > deadline {
            bail!("Secret {namespace}/{secret} with the webhook's CA did not appear in {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;
    use kproxy_api::crd::KafkaProxyPolicyStatus;

    use super::*;

    fn with_status(generation: i64, observed: i64, ready: &str) -> KafkaProxyPolicy {
        let mut p = policy("ns", 7).unwrap();
        p.metadata.generation = Some(generation);
        let condition = Condition {
            type_: READY.into(),
            status: ready.into(),
            reason: "Rendered".into(),
            message: String::new(),
            observed_generation: Some(observed),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        };
        p.status = Some(KafkaProxyPolicyStatus {
            observed_generation: Some(observed),
            conditions: vec![condition],
            ..Default::default()
        });
        p
    }

    #[test]
    fn ready_means_ready_for_the_current_generation() {
        assert!(is_ready(&with_status(2, 2, "True")));
        assert!(!is_ready(&with_status(3, 2, "True")), "a status of an older generation");
        assert!(!is_ready(&with_status(2, 2, "False")));
        assert!(!is_ready(&policy("ns", 1).unwrap()), "no status yet");
        assert_eq!(policy("ns", 7).unwrap().spec.clusters[0].name, "east");
    }
}
