//! The injected kproxy container and the volumes it mounts, built from the operator's config and the pod's overrides.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kproxy_api::config::{CONFIG_MOUNT_DIR, SECRETS_MOUNT_DIR};
use sha2::{Digest, Sha256};

use super::{ADMIN_PORT_NAME, CONTAINER_NAME, InjectConfig, Resources, Settings};

/// The volume holding the policy's rendered ConfigMap.
pub(crate) const CONFIG_VOLUME: &str = "kproxy-config";
/// Prefix of the volumes holding the Secrets the policy references.
pub(crate) const SECRET_VOLUME_PREFIX: &str = "kproxy-secret-";
/// The distroless "nonroot" user, so the image needs no user of its own.
const NONROOT_UID: i64 = 65532;

/// The name of the ConfigMap the operator renders for `policy`.
pub(crate) fn config_map_name(policy: &str) -> String {
    format!("{policy}-kproxy")
}

/// The volume name for a Secret: readable when the Secret name is a valid DNS label, hashed when it is not
/// (Secret names may contain dots and be up to 253 characters; volume names may not).
pub(crate) fn secret_volume_name(secret: &str) -> String {
    let readable = format!("{SECRET_VOLUME_PREFIX}{secret}");
    if readable.len() <= 63 && !secret.contains('.') {
        readable
    } else {
        let digest = hex::encode(Sha256::digest(secret.as_bytes()));
        format!("{SECRET_VOLUME_PREFIX}{}", &digest[..16])
    }
}

/// The volumes the sidecar needs: the ConfigMap and each referenced Secret, all read-only to the pod.
pub(crate) fn volumes(policy: &str, secrets: &[String]) -> Vec<Volume> {
    let config = Volume {
        name: CONFIG_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource { name: config_map_name(policy), ..Default::default() }),
        ..Default::default()
    };
    let secret_volumes = secrets.iter().map(|secret| Volume {
        name: secret_volume_name(secret),
        secret: Some(SecretVolumeSource { secret_name: Some(secret.clone()), ..Default::default() }),
        ..Default::default()
    });
    std::iter::once(config).chain(secret_volumes).collect()
}

/// The native sidecar: an init container with `restartPolicy: Always`, so it is up before the app and its init
/// containers start and is stopped only after the app has exited.
pub(crate) fn sidecar(cfg: &InjectConfig, resources: &Resources, secrets: &[String], settings: &Settings) -> Container {
    let mut mounts = vec![VolumeMount {
        name: CONFIG_VOLUME.into(),
        mount_path: CONFIG_MOUNT_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    mounts.extend(secrets.iter().map(|secret| VolumeMount {
        name: secret_volume_name(secret),
        mount_path: format!("{SECRETS_MOUNT_DIR}/{secret}"),
        read_only: Some(true),
        ..Default::default()
    }));
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(cfg.image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        restart_policy: Some("Always".into()),
        args: Some(args(cfg, resources, settings)),
        // No allocator tuning here: the sidecar fixes glibc's mmap threshold itself at start (an operator can
        // still set MALLOC_MMAP_THRESHOLD_ through --sidecar-extra-env).
        env: Some(settings.env()),
        ports: Some(vec![ContainerPort {
            name: Some(ADMIN_PORT_NAME.into()),
            container_port: i32::from(cfg.admin_port),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // Kubelet holds the app's containers until the startup probe passes, so the app never sees a
        // connection refused on 127.0.0.1:9092 while the sidecar loads its config.
        startup_probe: Some(probe("/readyz", 1, 120)),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        resources: Some(requirements(resources)),
        security_context: Some(security_context()),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// The admin address listens on every address of the pod: kubelet's probes come from the node to the pod IP.
/// `/metrics` joins it there only when monitoring scrapes the pods; otherwise it stays on loopback (reachable
/// with `kubectl port-forward`), so the pod's traffic figures are not open to the whole cluster network.
fn args(cfg: &InjectConfig, resources: &Resources, settings: &Settings) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--config".into(),
        CONFIG_MOUNT_DIR.into(),
        "--secrets-dir".into(),
        SECRETS_MOUNT_DIR.into(),
        "--admin-addr".into(),
        format!("0.0.0.0:{}", cfg.admin_port),
    ];
    if !cfg.metrics_on_pod_ip {
        args.extend(["--metrics-addr".into(), format!("127.0.0.1:{}", cfg.metrics_port())]);
    }
    args.extend(settings.args());
    if let Some(threads) = worker_threads(resources).filter(|_| !settings.sets_worker_threads()) {
        args.push(format!("--worker-threads={threads}"));
    }
    args
}

/// The proxy's threads: the cores its CPU limit allows, else those it requests, rounded up. Without a CPU limit
/// the process sees every CPU of the node and would run a thread per CPU; a sidecar requesting a fraction of a
/// core runs best on one (no cross-thread wake-ups; answers ready together leave in one write).
fn worker_threads(resources: &Resources) -> Option<u64> {
    let cores = resources.cpu_limit.as_deref().or(resources.cpu.as_deref())?;
    let cores = crate::quantity::parse_resource(cores).ok().filter(|c| *c > 0.0)?;
    Some((cores.ceil() as u64).max(1))
}

fn probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(ADMIN_PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

fn requirements(resources: &Resources) -> ResourceRequirements {
    let pick = |cpu: &Option<String>, memory: &Option<String>| {
        let mut map = BTreeMap::new();
        if let Some(cpu) = cpu {
            map.insert("cpu".to_string(), Quantity(cpu.clone()));
        }
        if let Some(memory) = memory {
            map.insert("memory".to_string(), Quantity(memory.clone()));
        }
        (!map.is_empty()).then_some(map)
    };
    ResourceRequirements {
        requests: pick(&resources.cpu, &resources.memory),
        limits: pick(&resources.cpu_limit, &resources.memory_limit),
        ..Default::default()
    }
}

fn security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NONROOT_UID),
        run_as_group: Some(NONROOT_UID),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}
