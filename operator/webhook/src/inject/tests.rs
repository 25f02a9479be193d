//! Unit tests of the pure injection: what a user's pod looks like after admission, and what is refused.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, EnvVar, Pod, PodSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use kproxy_api::crd::KafkaProxyPolicy;

use super::*;
use crate::{Error, Refusal, select};

pub(crate) fn policy(name: &str, selector: LabelSelector, secrets: &[&str]) -> KafkaProxyPolicy {
    let clusters: Vec<serde_json::Value> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({
                "name": format!("dc{i}"),
                "bootstrapServers": ["127.0.0.1:9093"],
                "sasl": {"mechanism": "SCRAM-SHA-512", "secretRef": {"name": s}},
            })
        })
        .collect();
    let clusters = if clusters.is_empty() {
        vec![serde_json::json!({"name": "dc0", "bootstrapServers": ["127.0.0.1:9093"]})]
    } else {
        clusters
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kproxy.dev/v1alpha1",
        "kind": "KafkaProxyPolicy",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"podSelector": selector, "clusters": clusters},
    }))
    .unwrap()
}

fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..Default::default()
    }
}

fn pod(annotations: &[(&str, &str)], labels: &[(&str, &str)]) -> Pod {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some("payments-0".into()),
            namespace: Some("shop".into()),
            annotations: Some(map(annotations)),
            labels: Some(map(labels)),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container { name: "app".into(), image: Some("app:1".into()), ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn annotated() -> Pod {
    pod(&[(annotation::INJECT, "true")], &[("app", "payments")])
}

fn sidecar_of(pod: &Pod) -> &Container {
    &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0]
}

fn refusal(result: Result<Option<Pod>>) -> Refusal {
    match result {
        Err(Error::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn annotated_pod_gets_a_native_sidecar_with_everything() {
    let p = policy("payments", match_labels(&[("app", "payments")]), &["payments-kafka"]);
    let out = inject(&annotated(), &p, &InjectConfig::default()).unwrap().unwrap();
    let sidecar = sidecar_of(&out);
    assert_eq!(sidecar.name, "kproxy");
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        sidecar.args.as_deref().unwrap(),
        [
            "--config",
            "/etc/kproxy/config",
            "--secrets-dir",
            "/etc/kproxy/secrets",
            "--admin-addr",
            "0.0.0.0:9102",
            "--metrics-addr",
            "127.0.0.1:9103",
            "--worker-threads=1",
            "--config-map",
            "payments-kproxy"
        ]
    );
    let monitored = InjectConfig { metrics_on_pod_ip: true, ..InjectConfig::default() };
    let scraped = inject(&annotated(), &p, &monitored).unwrap().unwrap();
    assert!(!sidecar_of(&scraped).args.iter().flatten().any(|a| a == "--metrics-addr"), "metrics on the admin address");
    let port = &sidecar.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.container_port), (Some("kproxy-admin"), 9102));
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| p.as_ref().unwrap().http_get.clone().unwrap().path;
    assert_eq!(path(&sidecar.startup_probe).as_deref(), Some("/readyz"));
    assert_eq!(path(&sidecar.readiness_probe).as_deref(), Some("/readyz"));
    assert_eq!(path(&sidecar.liveness_probe).as_deref(), Some("/healthz"));

    let sc = sidecar.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65532));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");

    let mounts: Vec<(&str, &str, Option<bool>)> =
        sidecar.volume_mounts.iter().flatten().map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only)).collect();
    assert_eq!(
        mounts,
        [
            ("kproxy-config", "/etc/kproxy/config", Some(true)),
            ("kproxy-secret-payments-kafka", "/etc/kproxy/secrets/payments-kafka", Some(true)),
            ("kproxy-api-token", "/var/run/secrets/kproxy.dev/api", Some(true)),
        ]
    );
    let volumes = out.spec.as_ref().unwrap().volumes.as_ref().unwrap();
    assert_eq!(volumes[0].config_map.as_ref().unwrap().name, "payments-kproxy");
    assert_eq!(volumes[1].secret.as_ref().unwrap().secret_name.as_deref(), Some("payments-kafka"));

    let env = out.spec.as_ref().unwrap().containers[0].env.as_ref().unwrap();
    assert_eq!(env, &[EnvVar { name: BOOTSTRAP_ENV.into(), value: Some(BOOTSTRAP_ADDR.into()), ..Default::default() }]);
    assert_eq!(out.metadata.annotations.as_ref().unwrap()[annotation::INJECTED], "payments");
}

#[test]
fn pods_without_the_annotation_or_with_false_are_untouched() {
    let p = policy("payments", LabelSelector::default(), &[]);
    let cfg = InjectConfig::default();
    assert_eq!(inject(&pod(&[], &[("app", "payments")]), &p, &cfg).unwrap(), None);
    assert_eq!(inject(&pod(&[(annotation::INJECT, "false")], &[]), &p, &cfg).unwrap(), None);
}

#[test]
fn injection_is_idempotent() {
    let p = policy("payments", LabelSelector::default(), &[]);
    let cfg = InjectConfig::default();
    let once = inject(&annotated(), &p, &cfg).unwrap().unwrap();
    assert_eq!(inject(&once, &p, &cfg).unwrap(), None);
    assert!(!requested(&once).unwrap());
    // A manifest read back from the cluster and stripped of the marker still has the sidecar.
    let mut stripped = once.clone();
    stripped.metadata.annotations.as_mut().unwrap().remove(annotation::INJECTED);
    assert_eq!(inject(&stripped, &p, &cfg).unwrap(), None);
}

#[test]
fn sidecar_goes_first_and_existing_env_and_init_containers_are_kept() {
    let mut input = annotated();
    let spec = input.spec.as_mut().unwrap();
    spec.init_containers = Some(vec![Container { name: "migrate".into(), ..Default::default() }]);
    spec.containers[0].env = Some(vec![EnvVar {
        name: BOOTSTRAP_ENV.into(),
        value: Some("kafka.example:9092".into()),
        ..Default::default()
    }]);
    spec.containers.push(Container { name: "worker".into(), ..Default::default() });
    let p = policy("payments", LabelSelector::default(), &[]);
    let out = inject(&input, &p, &InjectConfig::default()).unwrap().unwrap();
    let spec = out.spec.as_ref().unwrap();
    let names: Vec<&str> = spec.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["kproxy", "migrate"]);
    assert!(spec.init_containers.as_ref().unwrap()[1].env.is_none());
    assert_eq!(spec.containers[0].env.as_ref().unwrap()[0].value.as_deref(), Some("kafka.example:9092"));
    assert_eq!(spec.containers[0].env.as_ref().unwrap().len(), 1);
    assert_eq!(spec.containers[1].env.as_ref().unwrap()[0].value.as_deref(), Some(BOOTSTRAP_ADDR));
}

#[test]
fn resources_come_from_config_and_annotations() {
    let p = policy("payments", LabelSelector::default(), &[]);
    let cfg = InjectConfig::default();
    let quantities = |pod: &Pod| {
        let r = sidecar_of(pod).resources.clone().unwrap();
        let get = |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, k| {
            m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
        };
        [get(&r.requests, "cpu"), get(&r.requests, "memory"), get(&r.limits, "cpu"), get(&r.limits, "memory")]
    };
    let defaults = inject(&annotated(), &p, &cfg).unwrap().unwrap();
    assert_eq!(quantities(&defaults), [Some("50m".into()), Some("64Mi".into()), None, Some("256Mi".into())]);

    let overridden = pod(
        &[
            (annotation::INJECT, "true"),
            (annotation::CPU, "200m"),
            (annotation::MEMORY, "128Mi"),
            (annotation::CPU_LIMIT, "1"),
            (annotation::MEMORY_LIMIT, "1Gi"),
        ],
        &[],
    );
    let out = inject(&overridden, &p, &cfg).unwrap().unwrap();
    assert_eq!(quantities(&out), [Some("200m".into()), Some("128Mi".into()), Some("1".into()), Some("1Gi".into())]);
}

#[test]
fn the_proxy_runs_a_thread_per_core_of_its_cpu_limit_else_of_its_request() {
    let p = policy("payments", LabelSelector::default(), &[]);
    let threads = |annotations: &[(&str, &str)], cfg: &InjectConfig| -> Vec<String> {
        let mut all = vec![(annotation::INJECT, "true")];
        all.extend_from_slice(annotations);
        let out = inject(&pod(&all, &[]), &p, cfg).unwrap().unwrap();
        let args = sidecar_of(&out).args.clone().unwrap_or_default();
        args.into_iter().filter(|a| a.starts_with("--worker-threads")).collect()
    };
    let cfg = InjectConfig::default();
    assert_eq!(threads(&[], &cfg), ["--worker-threads=1"], "50m requested, no limit: one thread");
    assert_eq!(threads(&[(annotation::CPU, "1500m")], &cfg), ["--worker-threads=2"]);
    assert_eq!(threads(&[(annotation::CPU, "200m"), (annotation::CPU_LIMIT, "3")], &cfg), ["--worker-threads=3"]);
    // The operator's extra arguments or environment name the count: theirs alone (the flag may appear once).
    let mut own = cfg.clone();
    own.sidecar.extra_args = vec!["--worker-threads=4".into()];
    assert_eq!(threads(&[(annotation::CPU, "1500m")], &own), ["--worker-threads=4"]);
    let mut by_env = cfg.clone();
    by_env.sidecar.extra_env = vec!["KPROXY_WORKER_THREADS=4".into()];
    assert!(threads(&[], &by_env).is_empty());
    // No CPU request and no limit: the sidecar's own default, a thread per CPU it may use.
    let mut unset = cfg.clone();
    unset.resources.cpu = None;
    assert!(threads(&[], &unset).is_empty());
}

#[test]
fn bad_annotation_values_are_refused_naming_the_annotation() {
    let p = policy("payments", LabelSelector::default(), &[]);
    let cfg = InjectConfig::default();
    for (key, value) in [
        (annotation::INJECT, "yes"),
        (annotation::CPU, "lots"),
        (annotation::MEMORY, "64MB"),
        (annotation::CPU_LIMIT, "-1"),
        (annotation::MEMORY_LIMIT, "1 Gi"),
    ] {
        let mut annotations = vec![(annotation::INJECT, "true")];
        annotations.retain(|(k, _)| *k != key);
        annotations.push((key, value));
        let r = refusal(inject(&pod(&annotations, &[]), &p, &cfg));
        let message = r.to_string();
        assert!(message.contains(key) && message.contains(value), "{message}");
    }
    // A request above the limit names the annotation the user set.
    let r = refusal(inject(&pod(&[(annotation::INJECT, "true"), (annotation::MEMORY, "1Gi")], &[]), &p, &cfg));
    assert!(matches!(r, Refusal::InvalidAnnotation { annotation: a, .. } if a == annotation::MEMORY), "{r}");
    assert!(r.to_string().contains(annotation::MEMORY_LIMIT), "{r}");
}

#[test]
fn clashing_volumes_and_ports_are_refused() {
    let p = policy("payments", LabelSelector::default(), &[]);
    let cfg = InjectConfig::default();
    let mut clash = annotated();
    clash.spec.as_mut().unwrap().volumes = Some(vec![Volume { name: "kproxy-config".into(), ..Default::default() }]);
    assert!(matches!(refusal(inject(&clash, &p, &cfg)), Refusal::Conflict(m) if m.contains("kproxy-config")));
    let mut port = annotated();
    port.spec.as_mut().unwrap().containers[0].ports =
        Some(vec![ContainerPort { container_port: 9102, ..Default::default() }]);
    assert!(matches!(refusal(inject(&port, &p, &cfg)), Refusal::Conflict(m) if m.contains("9102")));
}

#[test]
fn long_or_dotted_secret_names_get_valid_volume_names() {
    let long = "a".repeat(100);
    let p = policy("payments", LabelSelector::default(), &["tls.example.com", &long]);
    let out = inject(&annotated(), &p, &InjectConfig::default()).unwrap().unwrap();
    for v in out.spec.as_ref().unwrap().volumes.iter().flatten() {
        assert!(v.name.len() <= 63 && !v.name.contains('.'), "{}", v.name);
    }
    let mounts: Vec<String> = sidecar_of(&out).volume_mounts.iter().flatten().map(|m| m.mount_path.clone()).collect();
    assert!(mounts.contains(&"/etc/kproxy/secrets/tls.example.com".to_string()));
}

#[test]
fn patch_applied_to_the_original_gives_the_injected_pod() {
    let p = policy("payments", LabelSelector::default(), &["payments-kafka"]);
    for init in [None, Some(vec![Container { name: "migrate".into(), ..Default::default() }])] {
        let mut before = annotated();
        before.spec.as_mut().unwrap().init_containers = init;
        let after = inject(&before, &p, &InjectConfig::default()).unwrap().unwrap();
        let patch = patch(&before, &after).unwrap();
        let mut doc = serde_json::to_value(&before).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc, serde_json::to_value(&after).unwrap());
        // The sidecar is one insertion, never a rewrite of the user's init containers.
        let text = serde_json::to_string(&patch).unwrap();
        assert!(!text.contains("/spec/initContainers/1"), "{text}");
    }
}

#[test]
fn policy_by_annotation_wins_over_selectors() {
    let policies = [
        policy("a", match_labels(&[("app", "payments")]), &[]),
        policy("b", match_labels(&[("app", "payments")]), &[]),
    ];
    let chosen = pod(&[(annotation::INJECT, "true"), (annotation::POLICY, "b")], &[("app", "payments")]);
    assert_eq!(select::policy_for(&chosen, "shop", &policies).unwrap().metadata.name.as_deref(), Some("b"));
    let unknown = pod(&[(annotation::INJECT, "true"), (annotation::POLICY, "zzz")], &[]);
    let r = select::policy_for(&unknown, "shop", &policies).unwrap_err();
    assert_eq!(r.to_string().matches("zzz").count(), 1, "{r}");
    assert!(r.to_string().contains(annotation::POLICY), "{r}");
    // The pod's author may not be allowed to read policies: other policies' names are not revealed.
    assert!(!r.to_string().contains("\"a\"") && !r.to_string().contains("\"b\""), "{r}");
}

#[test]
fn policy_by_selector_must_be_unique() {
    let env_prod = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "env".into(),
            operator: "In".into(),
            values: Some(vec!["prod".into()]),
        }]),
        ..Default::default()
    };
    let policies = [
        policy("payments", match_labels(&[("app", "payments")]), &[]),
        policy("orders", match_labels(&[("app", "orders")]), &[]),
        policy("prod", env_prod, &[]),
    ];
    let one = pod(&[(annotation::INJECT, "true")], &[("app", "orders")]);
    assert_eq!(select::policy_for(&one, "shop", &policies).unwrap().metadata.name.as_deref(), Some("orders"));

    let two = pod(&[(annotation::INJECT, "true")], &[("app", "payments"), ("env", "prod")]);
    let r = select::policy_for(&two, "shop", &policies).unwrap_err();
    assert_eq!(r, Refusal::AmbiguousPolicy { namespace: "shop".into(), count: 2 });
    assert!(r.to_string().contains("2 KafkaProxyPolicies") && r.to_string().contains(annotation::POLICY), "{r}");
    assert!(!r.to_string().contains("payments") && !r.to_string().contains("prod"), "{r}");

    let none = pod(&[(annotation::INJECT, "true")], &[("app", "web")]);
    let r = select::policy_for(&none, "shop", &policies).unwrap_err();
    assert!(matches!(r, Refusal::NoPolicy { .. }), "{r}");
    assert!(r.to_string().contains("app=web") && r.to_string().contains(annotation::POLICY), "{r}");
    assert!(matches!(select::policy_for(&none, "shop", &[]), Err(Refusal::NoPolicy { .. })));
}

#[test]
fn a_malformed_selector_selects_nothing_and_blocks_no_one() {
    let bad = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "app".into(),
            operator: "Equals".into(),
            values: Some(vec!["x".into()]),
        }]),
        ..Default::default()
    };
    let policies = [policy("broken", bad, &[]), policy("good", LabelSelector::default(), &[])];
    let chosen = select::policy_for(&annotated(), "shop", &policies).unwrap();
    assert_eq!(chosen.metadata.name.as_deref(), Some("good"));
}

#[test]
fn host_network_pods_are_refused_with_the_reason() {
    let mut input = annotated();
    input.spec.as_mut().unwrap().host_network = Some(true);
    let r = requested(&input).unwrap_err();
    assert_eq!(r, Refusal::HostNetwork);
    assert!(r.to_string().contains("hostNetwork") && r.to_string().contains("node"), "{r}");
    let p = policy("payments", LabelSelector::default(), &[]);
    assert!(matches!(inject(&input, &p, &InjectConfig::default()), Err(Error::Refused(Refusal::HostNetwork))));
    // Not asking for the sidecar, a host-network pod is none of the webhook's business.
    let mut plain = pod(&[], &[]);
    plain.spec.as_mut().unwrap().host_network = Some(true);
    assert!(!requested(&plain).unwrap());
}

#[test]
fn injected_pods_are_labelled_and_record_the_secrets_they_mount() {
    let p = policy("payments", LabelSelector::default(), &["west-kafka", "east-kafka"]);
    let out = inject(&annotated(), &p, &InjectConfig::default()).unwrap().unwrap();
    assert_eq!(out.labels().get(annotation::INJECTED_LABEL).map(String::as_str), Some("true"));
    assert_eq!(out.annotations().get(annotation::SECRETS).map(String::as_str), Some("east-kafka,west-kafka"));
    let none = inject(&annotated(), &policy("plain", LabelSelector::default(), &[]), &InjectConfig::default());
    assert_eq!(none.unwrap().unwrap().annotations().get(annotation::SECRETS).map(String::as_str), Some(""));
}

#[test]
fn operator_config_is_validated() {
    assert!(InjectConfig::default().validate().is_ok());
    let bad = InjectConfig {
        image: " ".into(),
        resources: Resources { cpu: Some("many".into()), ..Resources::default() },
        ..InjectConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().len(), 2);
}

#[test]
fn warnings_name_what_bypasses_or_is_not_ready() {
    let mut p = policy("payments", LabelSelector::default(), &[]);
    let mut input = annotated();
    let spec = input.spec.as_mut().unwrap();
    spec.containers[0].env =
        Some(vec![EnvVar { name: BOOTSTRAP_ENV.into(), value: Some("kafka:9092".into()), ..Default::default() }]);
    spec.containers.push(Container {
        name: "from-configmap".into(),
        env_from: Some(vec![k8s_openapi::api::core::v1::EnvFromSource::default()]),
        ..Default::default()
    });
    let w = warnings(&input, &p);
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w[0].contains("has not been rendered"));
    assert!(w[1].contains("\"app\"") && w[1].contains("bypasses"));
    assert!(w[2].contains("from-configmap") && w[2].contains("envFrom"));

    let ready = |status: &str| {
        serde_json::from_value(serde_json::json!({"conditions": [{
            "type": "Ready", "status": status, "reason": "Rendered", "message": "Secret payments-kafka not found",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }]}))
        .unwrap()
    };
    p.status = Some(ready("True"));
    assert!(warnings(&annotated(), &p).is_empty());
    p.status = Some(ready("False"));
    assert!(warnings(&annotated(), &p)[0].contains("Secret payments-kafka not found"));
}

#[test]
fn log_annotations_set_the_sidecars_filter_and_format_or_are_refused() {
    let p = policy("payments", LabelSelector::default(), &[]);
    let with = |pairs: &[(&str, &str)]| {
        let mut annotations = vec![(annotation::INJECT, "true")];
        annotations.extend_from_slice(pairs);
        inject(&pod(&annotations, &[]), &p, &InjectConfig::default())
    };
    let out = with(&[(annotation::LOG_LEVEL, "kproxy=debug,info"), (annotation::LOG_FORMAT, "json")]).unwrap().unwrap();
    let sidecar = sidecar_of(&out);
    assert!(sidecar.args.iter().flatten().any(|a| a == "--log-json"), "{:?}", sidecar.args);
    let env = sidecar.env.clone().unwrap_or_default();
    assert_eq!(env.iter().find(|e| e.name == "RUST_LOG").and_then(|e| e.value.as_deref()), Some("kproxy=debug,info"));

    let plain = with(&[]).unwrap().unwrap();
    assert!(!sidecar_of(&plain).args.iter().flatten().any(|a| a == "--log-json"));
    let plain_env = sidecar_of(&plain).env.clone().unwrap_or_default();
    assert!(plain_env.iter().all(|e| e.name != "RUST_LOG"), "no filter: the sidecar's default");

    for (annotation, value) in [(annotation::LOG_LEVEL, "kproxy=loud"), (annotation::LOG_FORMAT, "yaml")] {
        let Err(Error::Refused(r)) = with(&[(annotation, value)]) else { panic!("{annotation}={value} accepted") };
        assert!(r.to_string().contains(annotation) && r.to_string().contains(value), "{r}");
    }
}
