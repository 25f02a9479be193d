//! The policy controller: renders each `KafkaProxyPolicy` into its ConfigMap, repairs the ConfigMap when it
//! drifts, notices Secrets appearing or vanishing (when allowed to), counts injected pods that need a restart, and
//! reports the outcome in the policy's status.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kproxy_api::config::{SidecarConfig, config_hash};
use kproxy_api::crd::{KafkaProxyPolicy, KafkaProxyPolicyStatus, referenced_secrets};
use kproxy_webhook::policies::PolicyCache;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{Span, debug, info, instrument, warn};

use crate::metrics::{Metrics, Outcome};
use crate::status::{Desired, Reason};
use crate::{Error, Result, access, configmap, events, pods, render, status};

/// How often a ready policy is re-checked even without events (a safety net, not the repair path).
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a policy waiting for a Secret is re-checked, in case a Secret event was missed.
const SECRET_RETRY: Duration = Duration::from_secs(30);
/// Policies reconciled at once per watched scope (each reconcile makes two or three API calls).
const CONCURRENCY: u16 = 16;
/// Backoff after an API error.
const ERROR_RETRY: Duration = Duration::from_secs(5);

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// Publishes Events on policies whose readiness changes.
    pub recorder: Recorder,
    /// Metadata of the injected pods in the controller's scope, for `PodsNeedRestart`.
    pub pods: Store<PartialObjectMeta<Pod>>,
    /// Whether the operator may read Secrets to check the ones a policy names (off by default: least privilege).
    pub check_secrets: bool,
    /// The policies the controller sees, for the namespace's sidecar access Role.
    pub policies: Store<KafkaProxyPolicy>,
    /// Keeps sidecars' read access to their ConfigMaps (`None`: sidecars read only their volume).
    pub access: Option<access::Applied>,
    /// The render time of what was last written per policy, so unchanged content keeps it.
    pub stamps: Stamps,
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
    // Every policy the cache holds is reconciled once it has synced (a new term of leadership starts from what is
    // there, not only from changes); after that, changes trigger.
    let synced = store.clone();
    let start = futures::stream::once(async move {
        let _ = synced.wait_until_ready().await;
    });
    // Reconciles in flight at once: unbounded, 10,000 policies at start-up would mean 10,000 concurrent requests
    // (the API server slows to a crawl and every one holds memory here).
    let config = controller::Config::default().concurrency(CONCURRENCY);
    let mut controller = Controller::for_shared_stream(changed, store.clone())
        .reconcile_all_on(start)
        .with_config(config)
        // Owned ConfigMaps as metadata only: a change only has to name its owner, and with thousands of policies
        // their rendered configs would otherwise be decoded (and held, a list page at a time) for nothing.
        .owns_stream(
            watcher(api::<PartialObjectMeta<ConfigMap>>(&client, &scope), owned)
                .default_backoff()
                .modify(|cm: &mut PartialObjectMeta<ConfigMap>| cm.managed_fields_mut().clear())
                .touched_objects(),
        );

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
    let reporter = Reporter { controller: crate::FIELD_MANAGER.into(), instance: Some(settings.identity.clone()) };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context {
        client,
        metrics,
        recorder,
        pods,
        check_secrets: settings.check_secrets,
        policies: store.clone(),
        access: settings.sidecar_access.then(access::Applied::default),
        stamps: Stamps::default(),
    });
    controller.graceful_shutdown_on(shutdown.cancelled_owned()).run(reconcile, error_policy, ctx).for_each(
        |result| async move {
            if let Err(e) = result {
                debug!(error = %e, "controller event");
            }
        },
    )
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
            events::announce(&ctx.recorder, policy, &new).await;
            status::write(&policies, policy, new).await?;
            return Ok((Outcome::Invalid, Action::await_change()));
        }
    };
    let uid = policy.uid().unwrap_or_default();
    let Stamp { yaml, hash, at: rendered_at_ms } = stamp(config.clone(), &previous, ctx.stamps.get(&uid))?;
    let cm = configmap::build(policy, &yaml, &hash)?;
    let cm_name = configmap::name(&policy.name_any());
    if let Some(access) = &ctx.access {
        access.ensure(&ctx.client, &ns, &ctx.policies).await?;
    }
    configmap::apply(&Api::namespaced(ctx.client.clone(), &ns), &cm).await?;
    ctx.stamps.put(uid, &Stamp { yaml: String::new(), hash: hash.clone(), at: rendered_at_ms }, &ctx.policies);
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
    events::announce(&ctx.recorder, policy, &new).await;
    status::write(&policies, policy, new).await?;
    Ok((outcome, action))
}

/// The config as its ConfigMap holds it, with its hash and render time. Content already rendered keeps its time, so
/// a re-render of an unchanged policy is byte-identical and wakes no sidecar. The time is found in what this
/// process last wrote for the policy (the cached status can lag behind the ConfigMap's own event), else in the
/// status (after a restart).
fn stamp(config: SidecarConfig, previous: &KafkaProxyPolicyStatus, last: Option<Stamp>) -> Result<Stamp> {
    let from_status = previous.config_hash.clone().zip(status::rendered_at_ms(previous));
    for (hash, at) in last.map(|s| (s.hash, s.at)).into_iter().chain(from_status) {
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
pub struct Stamp {
    yaml: String,
    hash: String,
    at: u64,
}

/// The last rendering written per policy uid, pruned to the policies the cache still holds.
#[derive(Default)]
pub struct Stamps(std::sync::Mutex<std::collections::HashMap<String, Stamp>>);

impl Stamps {
    fn get(&self, uid: &str) -> Option<Stamp> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(uid).cloned()
    }

    fn put(&self, uid: String, stamp: &Stamp, policies: &Store<KafkaProxyPolicy>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(uid, Stamp { yaml: String::new(), ..stamp.clone() });
        let live = policies.state();
        if map.len() > 2 * live.len() + 16 {
            let uids: std::collections::HashSet<String> = live.iter().filter_map(|p| p.uid()).collect();
            map.retain(|uid, _| uids.contains(uid));
        }
    }
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

    #[test]
    fn unchanged_content_keeps_its_render_time_and_changed_content_gets_a_new_one() {
        let config = SidecarConfig::parse("clusters:\n- name: east\n  bootstrapServers: [\"h:1\"]\n").unwrap();
        let first = stamp(config.clone(), &KafkaProxyPolicyStatus::default(), None).unwrap();
        assert!(first.at > 0 && first.yaml.contains(&format!("renderedAtMs: {}", first.at)));
        let again = stamp(config.clone(), &KafkaProxyPolicyStatus::default(), Some(first.clone())).unwrap();
        assert_eq!((again.at, &again.hash), (first.at, &first.hash), "from what was last written");
        let status = KafkaProxyPolicyStatus { config_hash: Some(first.hash.clone()), ..Default::default() };
        let status = KafkaProxyPolicyStatus { rendered_at: status::micro_time(first.at), ..status };
        let restarted = stamp(config.clone(), &status, None).unwrap();
        assert_eq!(restarted.hash, first.hash, "from the status after a restart");
        std::thread::sleep(Duration::from_millis(2));
        let edited = SidecarConfig { generation: 2, ..config };
        let changed = stamp(edited, &status, Some(first.clone())).unwrap();
        assert!(changed.at > first.at && changed.hash != first.hash);
    }
}
