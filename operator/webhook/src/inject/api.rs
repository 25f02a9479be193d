//! The sidecar's own way to its config through the API server: a projected ServiceAccount token (default
//! audience, short-lived, refreshed in place by kubelet) and the cluster CA, in a volume only the sidecar mounts,
//! and the flags naming the ConfigMap to watch. The application containers see no token they did not have.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, Container, EnvVar, EnvVarSource, KeyToPath, ObjectFieldSelector, ProjectedVolumeSource,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};

use crate::{Refusal, annotation};

/// The projected token volume.
pub(crate) const TOKEN_VOLUME: &str = "kproxy-api-token";
/// Where the sidecar reads it (its `--api-token-dir` default).
const TOKEN_DIR: &str = "/var/run/secrets/kproxy.dev/api";
/// The shortest lifetime the API server accepts; kubelet rewrites the file at 80% of it.
const TOKEN_SECONDS: i64 = 600;
/// The CA bundle every namespace gets from kube-controller-manager.
const ROOT_CA: &str = "kube-root-ca.crt";

/// Whether this pod's sidecar watches its ConfigMap through the API: the operator's default, or the pod's
/// `kproxy.dev/config-watch` annotation.
pub(crate) fn wanted(annotations: &BTreeMap<String, String>, default: bool) -> Result<bool, Refusal> {
    match annotations.get(annotation::CONFIG_WATCH).map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(Refusal::InvalidAnnotation {
            annotation: annotation::CONFIG_WATCH,
            value: other.into(),
            reason: "expected \"true\" or \"false\"".into(),
        }),
    }
}

/// The token and CA volume.
pub(crate) fn volume() -> Volume {
    let token = VolumeProjection {
        service_account_token: Some(ServiceAccountTokenProjection {
            path: "token".into(),
            expiration_seconds: Some(TOKEN_SECONDS),
            audience: None,
        }),
        ..Default::default()
    };
    let ca = VolumeProjection {
        config_map: Some(ConfigMapProjection {
            name: ROOT_CA.into(),
            items: Some(vec![KeyToPath { key: "ca.crt".into(), path: "ca.crt".into(), mode: None }]),
            optional: None,
        }),
        ..Default::default()
    };
    Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource { sources: Some(vec![token, ca]), default_mode: Some(0o444) }),
        ..Default::default()
    }
}

/// Points the sidecar at `config_map` in its own namespace, with the token mounted.
pub(crate) fn wire(sidecar: &mut Container, config_map: &str) {
    sidecar.args.get_or_insert_with(Vec::new).extend(["--config-map".to_string(), config_map.to_string()]);
    sidecar.env.get_or_insert_with(Vec::new).push(EnvVar {
        name: "KPROXY_NAMESPACE".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: "metadata.namespace".into(), api_version: None }),
            ..Default::default()
        }),
        ..Default::default()
    });
    sidecar.volume_mounts.get_or_insert_with(Vec::new).push(VolumeMount {
        name: TOKEN_VOLUME.into(),
        mount_path: TOKEN_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    });
}

#[cfg(test)]
mod tests {
    use super::super::tests::policy;
    use super::super::{InjectConfig, inject};
    use super::*;

    fn pod(annotations: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "shop", "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        }))
        .unwrap()
    }

    #[test]
    fn only_the_sidecar_gets_a_short_lived_token_and_the_configmap_to_watch() {
        let policy = policy("payments", Default::default(), &[]);
        let pod = inject(&pod(serde_json::json!({"kproxy.dev/inject": "true"})), &policy, &InjectConfig::default())
            .unwrap()
            .unwrap();
        let spec = pod.spec.unwrap();
        let volume = spec.volumes.iter().flatten().find(|v| v.name == TOKEN_VOLUME).unwrap();
        let sources = volume.projected.as_ref().unwrap().sources.as_ref().unwrap();
        let token = sources[0].service_account_token.as_ref().unwrap();
        assert_eq!((token.audience.as_deref(), token.expiration_seconds), (None, Some(600)), "default audience");
        assert_eq!(sources[1].config_map.as_ref().unwrap().name, ROOT_CA);
        let sidecar = &spec.init_containers.as_ref().unwrap()[0];
        let args = sidecar.args.as_ref().unwrap();
        assert!(args.windows(2).any(|w| w == ["--config-map", "payments-kproxy"]), "{args:?}");
        let env = sidecar.env.as_ref().unwrap();
        let ns = env.iter().find(|e| e.name == "KPROXY_NAMESPACE").unwrap();
        assert_eq!(ns.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path, "metadata.namespace");
        let mounts = |c: &Container| c.volume_mounts.iter().flatten().filter(|m| m.name == TOKEN_VOLUME).count();
        assert_eq!(mounts(sidecar), 1);
        assert!(spec.containers.iter().all(|c| mounts(c) == 0), "the application does not see the token");
    }

    #[test]
    fn a_pod_or_the_operator_can_keep_the_sidecar_on_its_volume() {
        let policy = policy("payments", Default::default(), &[]);
        let off = serde_json::json!({"kproxy.dev/inject": "true", "kproxy.dev/config-watch": "false"});
        let opted_out = inject(&pod(off), &policy, &InjectConfig::default()).unwrap().unwrap();
        let operator_off = InjectConfig { config_watch: false, ..InjectConfig::default() };
        let on = serde_json::json!({"kproxy.dev/inject": "true", "kproxy.dev/config-watch": "true"});
        let opted_in = inject(&pod(on), &policy, &operator_off).unwrap().unwrap();
        let watches = |pod: &k8s_openapi::api::core::v1::Pod| {
            pod.spec.as_ref().unwrap().volumes.iter().flatten().any(|v| v.name == TOKEN_VOLUME)
        };
        assert!(!watches(&opted_out) && watches(&opted_in));
        let bad = serde_json::json!({"kproxy.dev/inject": "true", "kproxy.dev/config-watch": "yes"});
        let err = inject(&pod(bad), &policy, &InjectConfig::default()).unwrap_err();
        assert!(err.to_string().contains("kproxy.dev/config-watch"), "{err}");
    }
}
