//! Injection asked for by the namespace (`kproxy.dev/injection: enabled`) with a per-pod opt-out, and the sidecar's
//! log settings from pod annotations, through the real kube-apiserver and the webhook the operator serves.

#[path = "webhook/support.rs"]
mod support;

use kproxy_e2e::env;
use serde_json::Value;
use support::*;

/// The chart's second webhook entry, as the chart renders it: pods of labelled namespaces without the annotation.
fn namespace_entry(ns: &str, port: u16) -> String {
    format!(
        r#"  - name: inject-namespace.kproxy.dev
    admissionReviewVersions: [v1]
    sideEffects: None
    failurePolicy: Fail
    clientConfig: {{url: "https://127.0.0.1:{port}/mutate-namespace"}}
    rules:
      - {{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods], scope: Namespaced}}
    namespaceSelector:
      matchLabels: {{kproxy.dev/injection: enabled}}
      matchExpressions: [{{key: kubernetes.io/metadata.name, operator: In, values: [{ns}]}}]
    matchConditions:
      - name: no-inject-annotation
        expression: "!has(object.metadata.annotations) || !('kproxy.dev/inject' in object.metadata.annotations)"
      - name: not-yet-injected
        expression: "!has(object.metadata.annotations) || !('kproxy.dev/injected' in object.metadata.annotations)"
"#
    )
}

fn sidecar(pod: &Value) -> Value {
    init_containers(pod).into_iter().find(|c| c["name"] == "kproxy").unwrap_or(Value::Null)
}

#[test]
fn a_labelled_namespace_injects_every_pod_but_those_opting_out() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "wh-nsopt");
    let webhook = Webhook::spawn(env, &ns.name, Launch { register: false, ..Launch::default() }).unwrap();
    let configuration = webhook_configuration(&webhook.configuration, &ns.name, webhook.port, "Fail", None)
        + &namespace_entry(&ns.name, webhook.port);
    env.kubectl_apply(&configuration).unwrap();
    webhook.wait_injecting(&ns.name).unwrap();

    // Before the namespace opts in, a pod without the annotation is left alone.
    ns.apply_pod(&pod_manifest("before-label", &[])).unwrap();
    assert!(!has_sidecar(&ns.get("pod", "before-label")));
    env.kubectl(&["label", "namespace", &ns.name, "kproxy.dev/injection=enabled"]).unwrap();
    let injected = kproxy_e2e::wait_for("the namespace label to apply", std::time::Duration::from_secs(30), || {
        let name = format!("labelled-{}", kproxy_e2e::unique("p"));
        ns.apply_pod(&pod_manifest(&name, &[])).map_err(anyhow::Error::msg)?;
        let pod = ns.get("pod", &name);
        Ok(has_sidecar(&pod).then_some(pod))
    })
    .unwrap();
    assert_injected(&injected, "payments");
    assert_eq!(injected["metadata"]["annotations"]["kproxy.dev/inject"], "true", "the patch records the opt-in");

    ns.apply_pod(&pod_manifest("opted-out", &[("kproxy.dev/inject", "false")])).unwrap();
    assert!(!has_sidecar(&ns.get("pod", "opted-out")), "a pod that opts out got the sidecar");

    // Log settings per pod, validated.
    ns.apply_pod(&pod_manifest("verbose", &[("kproxy.dev/log-level", "debug"), ("kproxy.dev/log-format", "json")]))
        .unwrap();
    let verbose = sidecar(&ns.get("pod", "verbose"));
    assert!(verbose["args"].as_array().unwrap().iter().any(|a| a == "--log-json"), "{verbose:#}");
    let rust_log = verbose["env"].as_array().unwrap().iter().find(|e| e["name"] == "RUST_LOG").cloned();
    assert_eq!(rust_log.map(|e| e["value"].clone()), Some(Value::from("debug")), "{verbose:#}");
    for (annotation, value) in [("kproxy.dev/log-level", "kproxy=chatty"), ("kproxy.dev/log-format", "xml")] {
        let err = ns.apply_pod(&pod_manifest("bad-log", &[(annotation, value)])).unwrap_err();
        assert!(err.contains(annotation) && err.contains(value), "{err}");
    }
}
