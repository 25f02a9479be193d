//! The policy controller: renders each `KafkaProxyPolicy` into its ConfigMap, repairs the ConfigMap when it
//! drifts, notices Secrets appearing or vanishing, and reports the outcome in the policy's status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kproxy_api::config::config_hash;
use kproxy_api::crd::{KafkaProxyPolicy, referenced_secrets};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{Span, debug, info, instrument, warn};

use crate::metrics::{Metrics, Outcome};
use crate::status::{Desired, Reason};
use crate::{Error, Result, configmap, events, render, status};

/// How often a ready policy is re-checked even without events (a safety net, not the repair path).
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a policy waiting for a Secret is re-checked, in case a Secret event was missed.
const SECRET_RETRY: Duration = Duration::from_secs(30);
/// Backoff after an API error.
const ERROR_RETRY: Duration = Duration::from_secs(5);

/// What every reconcile needs.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// Publishes Events on policies whose readiness changes.
    pub recorder: Recorder,
}

/// Runs the controller until `shutdown` completes, then lets in-flight reconciles finish.
///
/// `namespace` limits it to one namespace; `None` watches them all.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    identity: String,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (policies, configmaps, secrets) = match &namespace {
        Some(ns) => (
            Api::<KafkaProxyPolicy>::namespaced(client.clone(), ns),
            Api::<ConfigMap>::namespaced(client.clone(), ns),
            Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone())),
    };
    let owned = watcher::Config::default().labels(&format!("{}={}", configmap::MANAGED_BY.0, configmap::MANAGED_BY.1));
    let controller = Controller::new(policies, watcher::Config::default()).owns(configmaps, owned);
    let store = controller.store();
    metrics.set_policies_store(Some(store.clone()));
    let reporter = Reporter { controller: crate::FIELD_MANAGER.into(), instance: Some(identity) };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context { client, metrics: metrics.clone(), recorder });
    controller
        // Only Secret metadata is watched (a metadata-only API): the operator needs to know that a Secret appeared
        // or vanished, not what it holds.
        .watches(secrets, watcher::Config::default(), move |secret| {
            let (ns, name) = (secret.namespace(), secret.name_any());
            store
                .state()
                .into_iter()
                .filter(|p| p.namespace() == ns && referenced_secrets(&p.spec).contains(&name))
                .map(|p| ObjectRef::from(p.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "controller event");
            }
        })
        .await;
    metrics.set_policies_store(None);
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
                config_map_name: previous.config_map_name,
                config_hash: previous.config_hash,
            };
            let new = status::build(policy, &desired);
            events::announce(&ctx.recorder, policy, &new).await;
            status::write(&policies, policy, new).await?;
            return Ok((Outcome::Invalid, Action::await_change()));
        }
    };
    let yaml = config.to_yaml()?;
    let hash = config_hash(&yaml);
    let cm = configmap::build(policy, &yaml, &hash)?;
    let cm_name = configmap::name(&policy.name_any());
    configmap::apply(&Api::namespaced(ctx.client.clone(), &ns), &cm).await?;
    let secrets = configmap::check_secrets(&Api::namespaced(ctx.client.clone(), &ns), policy).await?;
    let (outcome, action, reason, message) = match secrets {
        None => (
            Outcome::Ready,
            Action::requeue(RESYNC),
            Reason::Rendered,
            format!("ConfigMap {cm_name} holds generation {} ({hash})", config.generation),
        ),
        Some((reason, message)) => (Outcome::NotReady, Action::requeue(SECRET_RETRY), reason, message),
    };
    if previous.config_hash.as_deref() != Some(hash.as_str()) {
        info!(configmap = %cm_name, %hash, "rendered");
    }
    let desired = Desired { reason, message, config_map_name: Some(cm_name), config_hash: Some(hash) };
    let new = status::build(policy, &desired);
    events::announce(&ctx.recorder, policy, &new).await;
    status::write(&policies, policy, new).await?;
    Ok((outcome, action))
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
