//! Sidecar injection end to end: the real kube-apiserver calls the webhook the operator serves over HTTPS
//! (generated CA published into the webhook configuration's caBundle), and what kubectl stores is checked.
//!
//! Each test has its own namespace and its own operator process; the webhook configuration covers that namespace only.

#[path = "webhook/support.rs"]
mod support;

use std::time::Duration;

use kproxy_e2e::{env, wait_for};
use serde_json::Value;
use support::*;

#[test]
fn annotated_pods_get_the_sidecar() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "wh-inject");
    let _webhook = Webhook::start(env, &ns.name, "Fail").unwrap();

    let warnings = ns.apply_pod(&pod_manifest("payments-0", &[("kproxy.dev/inject", "true")])).unwrap();
    assert_injected(&ns.get("pod", "payments-0"), "payments");
    // No operator renders the policy in this test, and kubectl tells the user so.
    assert!(warnings.contains("Warning:") && warnings.contains("KafkaProxyPolicy payments"), "{warnings}");

    // A Deployment's pod template: the controller manager creates the pod, the webhook injects it.
    let deployment = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: payments, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: payments, from: deployment}}}}
  template:
    metadata:
      labels: {{app: payments, from: deployment}}
      annotations: {{kproxy.dev/inject: "true"}}
    spec:
      containers: [{{name: app, image: "app:1", env: [{{name: APP_MODE, value: e2e}}]}}]
"#,
        ns = ns.name
    );
    env.kubectl_apply(&deployment).unwrap();
    let pod = wait_for("the Deployment's pod", Duration::from_secs(60), || {
        let out = env.kubectl(&["get", "pods", "-n", &ns.name, "-l", "from=deployment", "-o", "json"])?;
        let list: Value = serde_json::from_str(&out)?;
        Ok(list["items"].as_array().and_then(|items| items.first().cloned()))
    })
    .unwrap();
    assert_injected(&pod, "payments");
}

#[test]
fn pods_without_the_annotation_are_stored_as_sent() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "wh-plain");
    let _webhook = Webhook::start(env, &ns.name, "Fail").unwrap();

    for (name, annotations) in [("plain", vec![]), ("opted-out", vec![("kproxy.dev/inject", "false")])] {
        ns.apply_pod(&pod_manifest(name, &annotations)).unwrap();
        let pod = ns.get("pod", name);
        assert_eq!(kproxy_count(&pod), 0, "{pod:#}");
        assert!(pod["spec"]["initContainers"].is_null(), "{pod:#}");
        let annotations = pod["metadata"]["annotations"].as_object().unwrap();
        assert!(
            annotations.keys().all(|k| !k.starts_with("kproxy.dev/") || k == "kproxy.dev/inject"),
            "{annotations:?}"
        );
        // Only the API server's own token volume, nothing of ours.
        assert!(volume_names(&pod).iter().all(|v| v.starts_with("kube-api-access-")), "{pod:#}");
        assert_eq!(pod["spec"]["containers"][0]["env"], serde_json::json!([{"name": "APP_MODE", "value": "e2e"}]));
    }
}

#[test]
fn applying_the_same_pod_again_keeps_one_sidecar() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "wh-again");
    let _webhook = Webhook::start(env, &ns.name, "Fail").unwrap();
    let manifest = pod_manifest("payments-0", &[("kproxy.dev/inject", "true")]);
    ns.apply_pod(&manifest).unwrap();
    ns.apply_pod(&manifest).unwrap();
    let stored = ns.get("pod", "payments-0");
    assert_eq!(kproxy_count(&stored), 1, "{stored:#}");

    // Re-creating the pod from what the cluster stored (sidecar and marker included) adds no second sidecar.
    env.kubectl(&["delete", "pod", "payments-0", "-n", &ns.name, "--wait=false", "--grace-period=0", "--force"])
        .unwrap();
    wait_for("the pod to be gone", Duration::from_secs(30), || {
        Ok(env.kubectl(&["get", "pod", "payments-0", "-n", &ns.name]).is_err().then_some(()))
    })
    .unwrap();
    let mut again = stored.clone();
    let meta = again["metadata"].as_object_mut().unwrap();
    for field in ["resourceVersion", "uid", "creationTimestamp", "managedFields"] {
        meta.remove(field);
    }
    again.as_object_mut().unwrap().remove("status");
    let out = kubectl_stdin(env, &["create", "-n", &ns.name, "-f", "-"], &again.to_string()).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recreated = ns.get("pod", "payments-0");
    assert_eq!(kproxy_count(&recreated), 1, "{recreated:#}");
    assert_eq!(volume_names(&recreated).iter().filter(|v| *v == "kproxy-config").count(), 1);
}

#[test]
fn ambiguous_missing_and_invalid_choices_are_refused_with_a_message() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "wh-refuse");
    ns.apply_policy("payments-eu", "app: payments");
    let _webhook = Webhook::start(env, &ns.name, "Fail").unwrap();
    let inject = ("kproxy.dev/inject", "true");

    let err = ns.apply_pod(&pod_manifest("ambiguous", &[inject])).unwrap_err();
    assert!(err.contains("denied the request"), "{err}");
    assert!(err.contains("2 KafkaProxyPolicies") && err.contains("kproxy.dev/policy"), "{err}");
    // The pod's author may not read policies: their names are not revealed.
    assert!(!err.contains("payments-eu"), "{err}");
    // Naming one resolves it.
    ns.apply_pod(&pod_manifest("chosen", &[inject, ("kproxy.dev/policy", "payments-eu")])).unwrap();
    assert_injected(&ns.get("pod", "chosen"), "payments-eu");

    let err = ns.apply_pod(&pod_manifest_labelled("unmatched", "web", &[inject])).unwrap_err();
    assert!(err.contains("no KafkaProxyPolicy") && err.contains("app=web"), "{err}");
    let err = ns.apply_pod(&pod_manifest("unknown", &[inject, ("kproxy.dev/policy", "nope")])).unwrap_err();
    assert!(err.contains("\"nope\"") && !err.contains("payments-eu"), "{err}");

    for (annotation, value) in
        [("kproxy.dev/memory", "lots"), ("kproxy.dev/cpu-limit", "1 core"), ("kproxy.dev/inject", "yes")]
    {
        let mut annotations = vec![("kproxy.dev/policy", "payments"), (annotation, value)];
        if annotation != "kproxy.dev/inject" {
            annotations.push(inject);
        }
        let err = ns.apply_pod(&pod_manifest("bad-value", &annotations)).unwrap_err();
        assert!(err.contains(annotation) && err.contains(value), "{annotation}: {err}");
    }
    let pods = env.kubectl(&["get", "pods", "-n", &ns.name, "-o", "name"]).unwrap();
    assert_eq!(pods.trim(), "pod/chosen", "refused pods must not exist");
}

#[test]
fn failure_policy_decides_while_the_webhook_is_down() {
    let Some(env) = env() else { return };
    for (policy, annotated_admitted) in [("Fail", false), ("Ignore", true)] {
        let ns = Namespace::create(env, &format!("wh-{}", policy.to_lowercase()));
        let mut webhook = Webhook::start(env, &ns.name, policy).unwrap();
        webhook.stop();

        let result = ns.apply_pod(&pod_manifest("annotated", &[("kproxy.dev/inject", "true")]));
        match (annotated_admitted, result) {
            (false, Err(err)) => assert!(err.contains("failed calling webhook"), "{policy}: {err}"),
            (true, Ok(_)) => assert_eq!(kproxy_count(&ns.get("pod", "annotated")), 0),
            (_, other) => panic!("failurePolicy {policy}: unexpected outcome {other:?}"),
        }
        // Pods that did not opt in never wait on the webhook, whatever the failure policy.
        ns.apply_pod(&pod_manifest("plain", &[])).unwrap();
    }
}

#[test]
fn the_sidecar_meets_the_restricted_pod_security_standard() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "wh-restricted");
    // Pod Security admission validates after the webhook mutated the pod, so it judges the sidecar too.
    env.kubectl(&["label", "namespace", &ns.name, "pod-security.kubernetes.io/enforce=restricted"]).unwrap();
    let _webhook = Webhook::start(env, &ns.name, "Fail").unwrap();
    let manifest = pod_manifest("hardened", &[("kproxy.dev/inject", "true")]);
    let warnings = ns.apply_pod(&manifest).unwrap();
    assert!(!warnings.contains("violate"), "{warnings}");
    assert_injected(&ns.get("pod", "hardened"), "payments");
    // The standard is really enforced here: the same pod with one setting relaxed is refused.
    let relaxed = pod_manifest("relaxed", &[("kproxy.dev/inject", "true")])
        .replace("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true");
    let err = ns.apply_pod(&relaxed).unwrap_err();
    assert!(err.contains("violates PodSecurity") && err.contains("allowPrivilegeEscalation"), "{err}");
    assert!(!err.contains("\"kproxy\""), "the sidecar must not be among the violators: {err}");
}
