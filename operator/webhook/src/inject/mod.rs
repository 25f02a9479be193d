//! The pod mutation: a pure function of (pod, policy, operator config) that adds the kproxy native sidecar.

mod api;
mod container;
mod settings;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use kproxy_api::crd::KafkaProxyPolicy;
use kube::ResourceExt;

pub use settings::Settings;

use crate::{Refusal, Result, annotation, quantity};

/// Name of the injected container; also how an injected pod is recognised.
pub const CONTAINER_NAME: &str = "kproxy";
/// Name of the sidecar's admin port (metrics, health), which the PodMonitor selects.
pub const ADMIN_PORT_NAME: &str = "kproxy-admin";
/// Where the application finds Kafka: the sidecar's listener.
pub const BOOTSTRAP_ENV: &str = "KAFKA_BOOTSTRAP_SERVERS";
pub const BOOTSTRAP_ADDR: &str = "127.0.0.1:9092";
const KAFKA_PORT: i32 = 9092;

/// What the operator decides for every injected sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectConfig {
    /// The sidecar image, normally the same release as the operator.
    pub image: String,
    pub image_pull_policy: Option<String>,
    /// Port of `/healthz` and `/readyz` on the pod IP (and of `/metrics` with `metrics_on_pod_ip`).
    pub admin_port: u16,
    /// Serve `/metrics` on the pod IP, for a PodMonitor; otherwise on loopback at [`InjectConfig::metrics_port`].
    pub metrics_on_pod_ip: bool,
    /// Defaults; each can be overridden per pod by its annotation.
    pub resources: Resources,
    /// Sidecars also watch their ConfigMap through the API server (a pod overrides it with `kproxy.dev/config-watch`).
    pub config_watch: bool,
    /// The sidecar's flags and environment (logging can be overridden per pod by its annotations).
    pub sidecar: Settings,
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            image: crate::cli::DEFAULT_SIDECAR_IMAGE.into(),
            image_pull_policy: None,
            admin_port: 9102,
            metrics_on_pod_ip: false,
            resources: Resources::default(),
            config_watch: true,
            sidecar: Settings::default(),
        }
    }
}

/// Sidecar resource requests and limits as Kubernetes quantity strings; `None` leaves one unset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

impl Default for Resources {
    /// No CPU limit by default: CFS throttling a proxy adds latency to every request of the app behind it.
    fn default() -> Self {
        Resources {
            cpu: Some("50m".into()),
            memory: Some("64Mi".into()),
            cpu_limit: None,
            memory_limit: Some("256Mi".into()),
        }
    }
}

impl InjectConfig {
    /// The loopback port of `/metrics` when it is not on the pod IP: the port after the admin port.
    pub fn metrics_port(&self) -> u16 {
        self.admin_port.saturating_add(1)
    }

    /// Every problem with the operator's own settings, so a bad flag fails at startup, not at the first pod.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.image.trim().is_empty() {
            problems.push("sidecar image is empty".to_string());
        }
        if self.admin_port == 0 || i32::from(self.admin_port) == KAFKA_PORT {
            problems.push(format!("sidecar admin port {} is not usable", self.admin_port));
        }
        if !self.metrics_on_pod_ip && (self.admin_port == u16::MAX || i32::from(self.metrics_port()) == KAFKA_PORT) {
            problems.push(format!("sidecar admin port {}: the next port serves /metrics on loopback", self.admin_port));
        }
        let r = &self.resources;
        for (what, value) in
            [("cpu", &r.cpu), ("memory", &r.memory), ("cpu limit", &r.cpu_limit), ("memory limit", &r.memory_limit)]
        {
            if let Some(Err(e)) = value.as_deref().map(quantity::parse_resource) {
                problems.push(format!("sidecar {what}: {e}"));
            }
        }
        problems.extend(self.sidecar.validate());
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

/// Returns the pod with the sidecar added, `None` when there is nothing to do (not asked for, or already injected),
/// or a [`Refusal`] saying what the user must change.
///
/// The application's containers get `KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092` only when they do not set it
/// themselves in `env`: an explicit value is the user's decision (for example a client that must bypass the proxy).
/// A value coming from `envFrom` cannot be seen here and is overridden, because `env` wins over `envFrom`; such
/// pods set it in `env` to keep their own. Init containers other than the sidecar are left unchanged.
pub fn inject(pod: &Pod, policy: &KafkaProxyPolicy, cfg: &InjectConfig) -> Result<Option<Pod>> {
    let annotations = pod.annotations();
    if !requested(pod)? {
        return Ok(None);
    }
    let resources = resources(&cfg.resources, annotations)?;
    let settings = cfg.sidecar.for_pod(annotations)?;
    let policy_name = policy.name_any();
    let secrets = referenced_secrets(policy);
    let watch = api::wanted(annotations, cfg.config_watch)?;
    let mut new_volumes = container::volumes(&policy_name, &secrets);
    new_volumes.extend(watch.then(api::volume));
    check_conflicts(pod, &new_volumes, cfg)?;

    let mut pod = pod.clone();
    pod.annotations_mut().insert(annotation::INJECTED.into(), policy_name);
    // What this pod can read for its whole life (Secret volumes are fixed at creation): the operator compares it
    // with what the policy names now and reports pods that need a restart.
    pod.annotations_mut().insert(annotation::SECRETS.into(), secrets.join(","));
    // A label, unlike the annotation, can be selected on: monitors and the operator's pod watch use it.
    pod.labels_mut().insert(annotation::INJECTED_LABEL.into(), "true".into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    let mut sidecar = container::sidecar(cfg, &resources, &secrets, &settings);
    if watch {
        api::wire(&mut sidecar, &container::config_map_name(&policy.name_any()));
    }
    spec.init_containers.get_or_insert_with(Vec::new).insert(0, sidecar);
    spec.volumes.get_or_insert_with(Vec::new).extend(new_volumes);
    for app in &mut spec.containers {
        let env = app.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|e| e.name == BOOTSTRAP_ENV) {
            env.push(EnvVar { name: BOOTSTRAP_ENV.into(), value: Some(BOOTSTRAP_ADDR.into()), ..Default::default() });
        }
    }
    Ok(Some(pod))
}

/// The JSON patch turning `before` into `after`, for the admission response.
///
/// The sidecar goes in with one `add` at `/spec/initContainers/0`; the rest comes from `json_patch::diff`. A plain
/// diff of the init containers would instead rewrite every existing one field by field into its neighbour, which
/// is correct only if the webhook knows every field the API server sent.
pub fn patch(before: &Pod, after: &Pod) -> Result<Patch> {
    let mut without_sidecar = after.clone();
    let mut sidecar = None;
    if let Some(spec) = without_sidecar.spec.as_mut() {
        let had_init = before.spec.as_ref().and_then(|s| s.init_containers.as_ref()).is_some();
        if let Some(init) = spec.init_containers.as_mut()
            && init.first().is_some_and(|c| c.name == CONTAINER_NAME)
        {
            sidecar = Some(init.remove(0));
            if init.is_empty() && !had_init {
                spec.init_containers = None;
            }
        }
    }
    let mut ops = json_patch::diff(&serde_json::to_value(before)?, &serde_json::to_value(&without_sidecar)?).0;
    if let Some(sidecar) = sidecar {
        let had_init = before.spec.as_ref().and_then(|s| s.init_containers.as_ref()).is_some();
        let (path, value) = if had_init {
            (PointerBuf::from_tokens(["spec", "initContainers", "0"]), serde_json::to_value(sidecar)?)
        } else {
            (PointerBuf::from_tokens(["spec", "initContainers"]), serde_json::to_value([sidecar])?)
        };
        ops.push(PatchOperation::Add(AddOperation { path, value }));
    }
    Ok(Patch(ops))
}

/// Things the user should know about an injected pod that do not stop it: returned as admission warnings, which
/// kubectl prints.
pub fn warnings(pod: &Pod, policy: &KafkaProxyPolicy) -> Vec<String> {
    let mut out = Vec::new();
    let name = policy.name_any();
    match policy.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == kproxy_api::crd::READY)) {
        Some(ready) if ready.status == "True" => {}
        Some(ready) => out.push(format!(
            "KafkaProxyPolicy {name} is not Ready ({}): the sidecar starts once its ConfigMap is rendered",
            ready.message
        )),
        None => out.push(format!("KafkaProxyPolicy {name} has not been rendered yet; the sidecar waits for it")),
    }
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let own = c.env.iter().flatten().find(|e| e.name == BOOTSTRAP_ENV);
        match own.and_then(|e| e.value.as_deref()) {
            Some(value) if value != BOOTSTRAP_ADDR => out.push(format!(
                "container {:?} sets {BOOTSTRAP_ENV}={value}, which bypasses the kproxy sidecar",
                c.name
            )),
            _ if own.is_none() && c.env_from.as_ref().is_some_and(|e| !e.is_empty()) => out.push(format!(
                "container {:?} gets {BOOTSTRAP_ENV}={BOOTSTRAP_ADDR}, overriding any value from envFrom",
                c.name
            )),
            _ => {}
        }
    }
    out
}

/// Whether the pod asks for a sidecar it does not have yet: the cheap check done before any policy is looked up.
/// A pod on the host network is refused: the sidecar's loopback listeners would be the node's.
pub fn requested(pod: &Pod) -> Result<bool, Refusal> {
    let wanted = wants_injection(pod.annotations())? && !is_injected(pod);
    if wanted && pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Err(Refusal::HostNetwork);
    }
    Ok(wanted)
}

/// Whether the pod asks for injection; anything but "true"/"false" is refused rather than guessed.
fn wants_injection(annotations: &BTreeMap<String, String>) -> Result<bool, Refusal> {
    match annotations.get(annotation::INJECT).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(Refusal::InvalidAnnotation {
            annotation: annotation::INJECT,
            value: other.into(),
            reason: "expected \"true\" or \"false\"".into(),
        }),
    }
}

/// A pod already carrying the marker or a container named `kproxy` is left alone, so re-applying a manifest
/// that was read back from the cluster (sidecar included) never adds a second one.
fn is_injected(pod: &Pod) -> bool {
    let named_kproxy = pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().chain(s.init_containers.iter().flatten()).any(|c| c.name == CONTAINER_NAME)
    });
    named_kproxy || pod.annotations().contains_key(annotation::INJECTED)
}

/// The configured defaults with the pod's annotation overrides, each validated as a quantity.
fn resources(defaults: &Resources, annotations: &BTreeMap<String, String>) -> Result<Resources, Refusal> {
    let mut out = defaults.clone();
    let overrides = [
        (annotation::CPU, &mut out.cpu),
        (annotation::MEMORY, &mut out.memory),
        (annotation::CPU_LIMIT, &mut out.cpu_limit),
        (annotation::MEMORY_LIMIT, &mut out.memory_limit),
    ];
    for (name, slot) in overrides {
        if let Some(value) = annotations.get(name) {
            quantity::parse_resource(value).map_err(|reason| Refusal::InvalidAnnotation {
                annotation: name,
                value: value.clone(),
                reason,
            })?;
            *slot = Some(value.clone());
        }
    }
    check_request_within_limit(&out.cpu, &out.cpu_limit, annotation::CPU, annotation::CPU_LIMIT, annotations)?;
    check_request_within_limit(
        &out.memory,
        &out.memory_limit,
        annotation::MEMORY,
        annotation::MEMORY_LIMIT,
        annotations,
    )?;
    Ok(out)
}

/// The API server would reject a request above its limit with a message about a container the user never wrote;
/// this names the annotation instead.
fn check_request_within_limit(
    request: &Option<String>,
    limit: &Option<String>,
    request_annotation: &'static str,
    limit_annotation: &'static str,
    annotations: &BTreeMap<String, String>,
) -> Result<(), Refusal> {
    let (Some(request), Some(limit)) = (request, limit) else { return Ok(()) };
    let (Ok(r), Ok(l)) = (quantity::parse(request), quantity::parse(limit)) else { return Ok(()) };
    if r <= l {
        return Ok(());
    }
    // Blame the value the user set; if both came from annotations, the request.
    let (annotation, value) = if annotations.contains_key(request_annotation) {
        (request_annotation, request)
    } else {
        (limit_annotation, limit)
    };
    Err(Refusal::InvalidAnnotation {
        annotation,
        value: value.clone(),
        reason: format!(
            "the sidecar's request {request} would exceed its limit {limit}; set {request_annotation} and \
             {limit_annotation} together"
        ),
    })
}

fn check_conflicts(pod: &Pod, new_volumes: &[k8s_openapi::api::core::v1::Volume], cfg: &InjectConfig) -> Result<()> {
    let Some(spec) = pod.spec.as_ref() else { return Ok(()) };
    if let Some(clash) =
        spec.volumes.iter().flatten().find(|v| new_volumes.iter().any(|n| n.name == v.name)).map(|v| &v.name)
    {
        return Err(Refusal::Conflict(format!("the pod already has a volume named {clash:?}")).into());
    }
    let taken = [KAFKA_PORT, i32::from(cfg.admin_port)];
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        if let Some(port) = c.ports.iter().flatten().find(|p| taken.contains(&p.container_port)) {
            return Err(Refusal::Conflict(format!(
                "container {:?} declares port {}, which the sidecar listens on",
                c.name, port.container_port
            ))
            .into());
        }
    }
    Ok(())
}

/// The Secrets the sidecar must read, sorted and without duplicates so the pod spec is deterministic.
fn referenced_secrets(policy: &KafkaProxyPolicy) -> Vec<String> {
    let mut names: Vec<String> = kproxy_api::crd::referenced_secrets(&policy.spec).into_iter().collect();
    names.sort();
    names.dedup();
    names
}
