//! The policy controller: renders each `KafkaProxyPolicy` into its ConfigMap, repairs the ConfigMap when it
//! drifts, notices Secrets appearing or vanishing (when allowed to), counts injected pods that need a restart, and
//! reports the outcome in the policy's status.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kproxy_api::config::{SidecarConfig, config_hash};
use kproxy_api::crd::{KafkaProxyPolicy, KafkaProxyPolicyStatus, referenced_secrets};
use kproxy_webhook::policies::PolicyCache;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{Span, debug, info, instrument, warn};

use crate::metrics::{Metrics, Outcome, Write};
use crate::status::{Desired, Reason};
use crate::written::{Ledger, StatusStep};
use crate::{Error, Result, access, configmap, events, pods, render, status};

/// How often a ready policy is re-checked even without events (a safety net, not the repair path).
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a policy waiting for a Secret is re-checked, in case a Secret event was missed.
const SECRET_RETRY: Duration = Duration::from_secs(30);
/// Policies reconciled at once per watched scope (each reconcile makes two or three API calls).
const CONCURRENCY: u16 = 16;
/// Backoff after an API error.
const ERROR_RETRY: Duration = Duration::from_secs(5);
/// How soon a status decision is taken again when the cache had not caught up with the last status write.
const CACHE_RETRY: Duration = Duration::from_secs(1);

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// Publishes Events on policies whose readiness changes.
    pub events: events::Publisher,
    /// Metadata of the injected pods in the controller's scope, for `PodsNeedRestart`.
    pub pods: Store<PartialObjectMeta<Pod>>,
    /// Whether the operator may read Secrets to check the ones a policy names (off by default: least privilege).
    pub check_secrets: bool,
    /// The policies the controller sees, for the namespace's sidecar access Role.
    pub policies: Store<KafkaProxyPolicy>,
    /// Keeps sidecars' read access to their ConfigMaps (`None`: sidecars read only their volume).
    pub access: Option<access::Applied>,
    /// The owned ConfigMaps' metadata as the watch cache holds it, to tell whether one changed since it was applied.
    pub configmaps: Store<PartialObjectMeta<ConfigMap>>,
    /// What was last written per policy: unchanged content keeps its render time, and writes the API server already
    /// holds are skipped.
    pub written: Arc<Ledger>,
}

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The process's policy cache: its scopes (namespaces, or the whole cluster) are the ones reconciled, and its
    /// changes trigger the reconciles.
    pub policies: Arc<PolicyCache>,
    /// Check that the Secrets a policy names exist and hold its keys (needs Secret read access).
    pub check_secrets: bool,
    /// This replica's name on the Events it publishes.
    pub identity: String,
    /// Maintain the per-namespace Role letting sidecars watch their ConfigMaps through the API.
    pub sidecar_access: bool,
}

/// Runs the controller (one per watched namespace, or one for the cluster) until `shutdown` is cancelled, then
/// lets in-flight reconciles finish.
pub async fn run(client: Client, settings: Settings, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut stores = Vec::new();
    let mut runs = Vec::new();
    for (index, (scope, store)) in settings.policies.scopes().iter().enumerate() {
        let followed = settings.policies.follow(index);
        let policies = Policies { store: store.clone(), changed: followed };
        stores.push(store.clone());
        runs.push(scope_controller(
            client.clone(),
            scope.clone(),
            policies,
            &settings,
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    metrics.set_policies_stores(stores);
    futures::future::join_all(runs).await;
    metrics.set_policies_stores(Vec::new());
}

/// One scope's policies as the process-wide cache holds them, and the policies it sees change from now on.
struct Policies<S> {
    store: Store<KafkaProxyPolicy>,
    changed: S,
}

/// One controller over `scope` (a namespace, or `None` for all), as a future that runs it.
fn scope_controller(
    client: Client,
    scope: Option<String>,
    policies: Policies<impl Stream<Item = Arc<KafkaProxyPolicy>> + Send + 'static>,
    settings: &Settings,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    fn api<K>(client: &Client, scope: &Option<String>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned = watcher::Config::default().labels(&format!("{}={}", configmap::MANAGED_BY.0, configmap::MANAGED_BY.1));
    let Policies { store, changed } = policies;
    let written = Arc::new(Ledger::default());
    // A policy event that only brings back the status this process wrote has nothing new to reconcile.
    let echoes = written.clone();
    let changed = changed.filter(move |p| futures::future::ready(!echoes.own_status(p)));
    // Every policy the cache holds is reconciled once it has synced (a new term of leadership starts from what is
    // there, not only from changes); after that, changes trigger. Fed through the same stream as the changes: with
    // `reconcile_all_on`, no bulk reconcile was ever seen to run, and the policies the cache listed before this
    // controller started following it (the first list page of a cold start) then waited for the resync.
    let synced = store.clone();
    let everything = futures::stream::once(async move {
        let _ = synced.wait_until_ready().await;
        futures::stream::iter(synced.state())
    })
    .flatten();
    let changed = futures::stream::select(everything, changed);
    // Reconciles in flight at once: unbounded, 10,000 policies at start-up would mean 10,000 concurrent requests
    // (the API server slows to a crawl and every one holds memory here).
    let config = controller::Config::default().concurrency(CONCURRENCY);
    // Owned ConfigMaps as metadata only: a change only has to name its owner and show its resourceVersion, and with
    // thousands of policies their rendered configs would otherwise be decoded (and held) for nothing. The events
    // that only bring back an apply of this process are dropped; deletions always pass.
    let (configmaps, writer) = reflector::store();
    let echoes = written.clone();
    let configmap_events = reflector::reflector(
        writer,
        watcher(api::<PartialObjectMeta<ConfigMap>>(&client, &scope), owned).default_backoff().modify(keep_identity),
    )
    .filter(move |event| {
        let own =
            matches!(event, Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) if echoes.own_configmap(cm));
        futures::future::ready(!own)
    })
    .touched_objects();
    let mut controller =
        Controller::for_shared_stream(changed, store.clone()).with_config(config).owns_stream(configmap_events);

    // Injected pods, metadata only: which Secrets each mounts (set by the webhook) and which policy it uses.
    let (pods, writer) = reflector::store();
    let pod_events = reflector::reflector(
        writer,
        watcher(
            api::<PartialObjectMeta<Pod>>(&client, &scope),
            watcher::Config::default().labels(pods::INJECTED_SELECTOR),
        )
        .default_backoff()
        .modify(|pod: &mut PartialObjectMeta<Pod>| pod.managed_fields_mut().clear()),
    )
    .touched_objects();
    controller = controller.watches_stream(pod_events, |pod: PartialObjectMeta<Pod>| {
        let policy = pod.annotations().get(pods::POLICY_ANNOTATION).cloned();
        policy.zip(pod.namespace()).map(|(name, ns)| ObjectRef::<KafkaProxyPolicy>::new(&name).within(&ns))
    });
    if settings.check_secrets {
        // Only Secret metadata is watched (a metadata-only API): the operator needs to know that a Secret appeared
        // or vanished, not what it holds.
        let policies = store.clone();
        controller = controller.watches(
            api::<PartialObjectMeta<Secret>>(&client, &scope),
            watcher::Config::default(),
            move |secret| {
                let (ns, name) = (secret.namespace(), secret.name_any());
                policies
                    .state()
                    .into_iter()
                    .filter(|p| p.namespace() == ns && referenced_secrets(&p.spec).contains(&name))
                    .map(|p| ObjectRef::from(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        );
    }
    let events = events::Publisher::new(client.clone(), crate::FIELD_MANAGER, &settings.identity);
    let ctx = Arc::new(Context {
        client,
        metrics,
        events,
        pods,
        check_secrets: settings.check_secrets,
        policies: store.clone(),
        access: settings.sidecar_access.then(access::Applied::default),
        configmaps,
        written,
    });
    controller.graceful_shutdown_on(shutdown.cancelled_owned()).run(reconcile, error_policy, ctx).for_each(
        |result| async move {
            if let Err(e) = result {
                debug!(error = %e, "controller event");
            }
        },
    )
}

/// Keeps of an owned ConfigMap's metadata only what the controller reads (its name, owner and version): with
/// thousands of policies, labels, annotations and managed fields would be most of what the cache holds.
fn keep_identity(cm: &mut PartialObjectMeta<ConfigMap>) {
    let meta = std::mem::take(&mut cm.metadata);
    cm.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        owner_references: meta.owner_references,
        deletion_timestamp: meta.deletion_timestamp,
        ..ObjectMeta::default()
    };
}

/// Brings one policy's ConfigMap and status in line with its spec.
#[instrument(skip_all, fields(namespace = %policy.namespace().unwrap_or_default(), name = %policy.name_any(), generation))]
pub async fn reconcile(policy: Arc<KafkaProxyPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    Span::current().record("generation", policy.metadata.generation.unwrap_or_default());
    let result = reconcile_inner(&policy, &ctx).await;
    let outcome = match &result {
        Ok((outcome, _)) => *outcome,
        Err(_) => Outcome::Error,
    };
    ctx.metrics.reconciled(outcome, started.elapsed().as_secs_f64());
    result.map(|(_, action)| action)
}

async fn reconcile_inner(policy: &KafkaProxyPolicy, ctx: &Context) -> Result<(Outcome, Action)> {
    if policy.metadata.deletion_timestamp.is_some() {
        // The ConfigMap is garbage-collected through its owner reference.
        return Ok((Outcome::Ready, Action::await_change()));
    }
    let ns = policy.namespace().ok_or(Error::Missing("metadata.namespace"))?;
    let policies: Api<KafkaProxyPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    let previous = policy.status.clone().unwrap_or_default();
    let config = match render::render(policy) {
        Ok(config) => config,
        Err(problems) => {
            let kept = match &previous.config_map_name {
                Some(cm) => format!(
                    "ConfigMap {cm} keeps the last good config ({})",
                    previous.config_hash.as_deref().unwrap_or("unknown hash")
                ),
                None => "no ConfigMap was written".to_string(),
            };
            let message = format!("the policy cannot be rendered: {}. Fix the spec; {kept}", problems.join("; "));
            warn!(%message, "invalid policy");
            let desired = Desired {
                reason: Reason::InvalidPolicy,
                message,
                rendered_at_ms: status::rendered_at_ms(&previous),
                config_map_name: previous.config_map_name,
                config_hash: previous.config_hash,
                stale: pods::stale(&ctx.pods, policy),
            };
            let new = status::build(policy, &desired);
            let action = publish(ctx, &policies, policy, &new).await?.unwrap_or_else(Action::await_change);
            return Ok((Outcome::Invalid, action));
        }
    };
    let uid = policy.uid().unwrap_or_default();
    let last = ctx.written.get(&uid).map(|w| (w.hash, w.at));
    let Stamp { yaml, hash, at: rendered_at_ms } = stamp(config.clone(), &previous, last)?;
    let cm_name = configmap::name(&policy.name_any());
    if let Some(access) = &ctx.access
        && access.ensure(&ctx.client, policy, &ctx.policies).await?
    {
        ctx.metrics.wrote(Write::Access);
    }
    // Applied again only when the ConfigMap is not the version this process last applied for this content: a
    // repeat reconcile costs no write, a hand edit or a deletion is still repaired.
    let seen = ctx.configmaps.get(&ObjectRef::new(&cm_name).within(&ns));
    let seen = seen.as_ref().and_then(|cm| cm.metadata.resource_version.as_deref());
    let applied = match ctx.written.configmap_current(&uid, &hash, seen) {
        true => None,
        false => {
            let cm = configmap::build(policy, &yaml, &hash)?;
            let version = configmap::apply(&Api::namespaced(ctx.client.clone(), &ns), &cm).await?;
            ctx.metrics.wrote(Write::ConfigMap);
            Some(version)
        }
    };
    ctx.written.rendered(&uid, &hash, rendered_at_ms, applied, &ctx.policies);
    let secrets = match ctx.check_secrets {
        true => configmap::check_secrets(&Api::namespaced(ctx.client.clone(), &ns), policy).await?,
        false => None,
    };
    let (outcome, action, reason, message) = match secrets {
        None => {
            let mut message = format!("ConfigMap {cm_name} holds generation {} ({hash})", config.generation);
            if !ctx.check_secrets && !referenced_secrets(&policy.spec).is_empty() {
                message.push_str(
                    "; Secrets not checked (the operator may not read Secrets: a missing Secret or key fails the \
                     pod's volume mount, see kubectl describe pod)",
                );
            }
            (Outcome::Ready, Action::requeue(RESYNC), Reason::Rendered, message)
        }
        Some((reason, message)) => (Outcome::NotReady, Action::requeue(SECRET_RETRY), reason, message),
    };
    if previous.config_hash.as_deref() != Some(hash.as_str()) {
        info!(configmap = %cm_name, %hash, "rendered");
    }
    let stale = pods::stale(&ctx.pods, policy);
    let desired = Desired {
        reason,
        message,
        config_map_name: Some(cm_name),
        config_hash: Some(hash),
        rendered_at_ms: Some(rendered_at_ms),
        stale,
    };
    let new = status::build(policy, &desired);
    let action = publish(ctx, &policies, policy, &new).await?.unwrap_or(action);
    Ok((outcome, action))
}

/// Writes `new` unless the API server already holds it, then announces the change in an Event (after the write, so
/// the status users wait for is not held up, and a failed write announces nothing). `Some(action)`: the decision
/// waits for the cache to catch up.
async fn publish(
    ctx: &Context,
    api: &Api<KafkaProxyPolicy>,
    policy: &KafkaProxyPolicy,
    new: &KafkaProxyPolicyStatus,
) -> Result<Option<Action>> {
    match ctx.written.status_step(policy, new) {
        StatusStep::Skip => {
            if policy.status.as_ref() == Some(new) {
                ctx.written.status(policy, new, false);
            }
            Ok(None)
        }
        StatusStep::Defer => Ok(Some(Action::requeue(CACHE_RETRY))),
        StatusStep::Write => {
            // Recorded first: the watch may bring the write back before this task runs again.
            ctx.written.status(policy, new, true);
            if let Err(e) = status::write(api, policy, new).await {
                ctx.written.forget_status(&policy.uid().unwrap_or_default());
                return Err(e);
            }
            ctx.metrics.wrote(Write::Status);
            if ctx.events.announce(policy, new).await {
                ctx.metrics.wrote(Write::Event);
            }
            Ok(None)
        }
    }
}

/// The config as its ConfigMap holds it, with its hash and render time. Content already rendered keeps its time, so
/// a re-render of an unchanged policy is byte-identical and wakes no sidecar. The time is found in what this
/// process last wrote for the policy (the cached status can lag behind the ConfigMap's own event), else in the
/// status (after a restart).
fn stamp(config: SidecarConfig, previous: &KafkaProxyPolicyStatus, last: Option<(String, u64)>) -> Result<Stamp> {
    let from_status = previous.config_hash.clone().zip(status::rendered_at_ms(previous));
    for (hash, at) in last.into_iter().chain(from_status) {
        let yaml = SidecarConfig { rendered_at_ms: at, ..config.clone() }.to_yaml()?;
        if config_hash(&yaml) == hash {
            return Ok(Stamp { yaml, hash, at });
        }
    }
    let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let yaml = SidecarConfig { rendered_at_ms: at, ..config }.to_yaml()?;
    Ok(Stamp { hash: config_hash(&yaml), yaml, at })
}

/// A rendering as written: its text, hash and render time.
#[derive(Clone, Debug, Default)]
struct Stamp {
    yaml: String,
    hash: String,
    at: u64,
}

fn error_policy(policy: Arc<KafkaProxyPolicy>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(
        namespace = %policy.namespace().unwrap_or_default(),
        name = %policy.name_any(),
        error = %error,
        kind = error.metric_label(),
        "reconcile failed; retrying"
    );
    Action::requeue(ERROR_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(stamp: &Stamp) -> Option<(String, u64)> {
        Some((stamp.hash.clone(), stamp.at))
    }

    #[test]
    fn unchanged_content_keeps_its_render_time_and_changed_content_gets_a_new_one() {
        let config = SidecarConfig::parse("clusters:\n- name: east\n  bootstrapServers: [\"h:1\"]\n").unwrap();
        let first = stamp(config.clone(), &KafkaProxyPolicyStatus::default(), None).unwrap();
        assert!(first.at > 0 && first.yaml.contains(&format!("renderedAtMs: {}", first.at)));
        let again = stamp(config.clone(), &KafkaProxyPolicyStatus::default(), last(&first)).unwrap();
        assert_eq!((again.at, &again.hash), (first.at, &first.hash), "from what was last written");
        let status = KafkaProxyPolicyStatus { config_hash: Some(first.hash.clone()), ..Default::default() };
        let status = KafkaProxyPolicyStatus { rendered_at: status::micro_time(first.at), ..status };
        let restarted = stamp(config.clone(), &status, None).unwrap();
        assert_eq!(restarted.hash, first.hash, "from the status after a restart");
        std::thread::sleep(Duration::from_millis(2));
        let edited = SidecarConfig { generation: 2, ..config };
        let changed = stamp(edited, &status, last(&first)).unwrap();
        assert!(changed.at > first.at && changed.hash != first.hash);
    }
}
