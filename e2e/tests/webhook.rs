//! Sidecar injection end to end: the real kube-apiserver calls the kproxy webhook over HTTPS (generated CA published
//! into the webhook configuration's caBundle), and what kubectl stores is checked.
//!
//! Each test has its own namespace and its own webhook process, registered for that namespace only.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use kproxy_e2e::{Env, env, free_port, run_with_timeout, unique, wait_for, workspace_root};
use serde_json::Value;

const IMAGE: &str = "kproxy-sidecar:e2e";

/// One webhook process and the MutatingWebhookConfiguration it registered; both go away on drop.
struct Webhook<'a> {
    env: &'a Env,
    child: Option<Child>,
    configuration: String,
}

impl<'a> Webhook<'a> {
    /// Starts the webhook for `namespace` and waits until the API server actually calls it.
    fn start(env: &'a Env, namespace: &str, failure_policy: &str) -> Result<Webhook<'a>> {
        let port = free_port();
        let configuration = format!("{namespace}-kproxy");
        let log = PathBuf::from(env.log_dir()).join(format!("webhook-{namespace}.log"));
        let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let listen = format!("127.0.0.1:{port}");
        let url = format!("https://127.0.0.1:{port}/mutate");
        let mut cmd = env.command(&webhook_binary().to_string_lossy());
        cmd.args(["--listen", &listen, "--image", IMAGE, "--namespace", namespace, "--secret", "kproxy-webhook-tls"])
            .args(["--san", "127.0.0.1", "--webhook-configuration", &configuration, "--register-url", &url])
            .args(["--failure-policy", failure_policy, "--only-namespace", namespace])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = cmd.spawn().context("starting kproxy-webhook")?;
        let webhook = Webhook { env, child: Some(child), configuration };
        // The API server picks up a new webhook configuration asynchronously: wait until a dry-run pod shows it.
        wait_for(&format!("the webhook to inject (log: {})", log.display()), Duration::from_secs(60), || {
            let pod = pod_manifest("probe", &[("kproxy.dev/inject", "true"), ("kproxy.dev/policy", "payments")]);
            let out =
                kubectl_stdin(env, &["create", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-"], &pod)?;
            if !out.status.success() {
                return Ok(None);
            }
            let pod: Value = serde_json::from_slice(&out.stdout)?;
            Ok(has_sidecar(&pod).then_some(()))
        })?;
        Ok(webhook)
    }

    /// Stops the process (as a crash or rollout would) but leaves the registration in place.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Webhook<'_> {
    fn drop(&mut self) {
        self.stop();
        let _ = self.env.kubectl(&["delete", "mutatingwebhookconfiguration", &self.configuration, "--wait=false"]);
    }
}

/// The webhook binary; `make test` builds every binary before the e2e tests.
fn webhook_binary() -> PathBuf {
    kproxy_e2e::binary("kproxy-webhook")
}

/// A namespace with the CRD installed, its default ServiceAccount present (pods are refused without it) and a
/// policy `payments` selecting `app=payments`; deleted on drop.
struct Namespace<'a> {
    env: &'a Env,
    name: String,
}

impl<'a> Namespace<'a> {
    fn create(env: &'a Env, prefix: &str) -> Namespace<'a> {
        install_crd(env).unwrap();
        let name = unique(prefix);
        env.kubectl(&["create", "namespace", &name]).unwrap();
        let ns = Namespace { env, name };
        wait_for("the default ServiceAccount", Duration::from_secs(60), || {
            Ok(env.kubectl(&["get", "serviceaccount", "default", "-n", &ns.name]).ok())
        })
        .unwrap();
        ns.apply_policy("payments", "app: payments");
        ns
    }

    fn apply_policy(&self, name: &str, match_labels: &str) {
        let manifest = format!(
            r#"apiVersion: kproxy.dev/v1alpha1
kind: KafkaProxyPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec:
  podSelector: {{matchLabels: {{{match_labels}}}}}
  clusters:
    - name: east
      bootstrapServers: ["127.0.0.1:9093"]
      sasl: {{mechanism: SCRAM-SHA-512, secretRef: {{name: {name}-kafka}}}}
"#,
            ns = self.name
        );
        self.env.kubectl_apply(&manifest).unwrap();
    }

    /// `kubectl apply` of a pod; Err carries kubectl's message (what a user sees).
    fn apply_pod(&self, manifest: &str) -> Result<(), String> {
        let out =
            kubectl_stdin(self.env, &["apply", "-n", &self.name, "-f", "-"], manifest).map_err(|e| e.to_string())?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
    }

    fn get(&self, kind: &str, name: &str) -> Value {
        let out = self.env.kubectl(&["get", kind, name, "-n", &self.name, "-o", "json"]).unwrap();
        serde_json::from_str(&out).unwrap()
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let _ = self.env.kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// Applies the generated CRD (the same YAML the chart ships) server-side, so concurrent tests do not conflict.
fn install_crd(env: &Env) -> Result<()> {
    let path = workspace_root().join("crds/kafkaproxypolicies.yaml");
    let path = path.to_string_lossy();
    env.kubectl(&["apply", "--server-side", "--force-conflicts", "--field-manager", "kproxy-e2e", "-f", &path])?;
    env.kubectl(&["wait", "--for", "condition=established", "--timeout=60s", "crd/kafkaproxypolicies.kproxy.dev"])?;
    Ok(())
}

fn kubectl_stdin(env: &Env, args: &[&str], input: &str) -> Result<std::process::Output> {
    run_with_timeout(env.command("kubectl").args(args), Some(input.as_bytes()), Duration::from_secs(60))
}

fn pod_manifest(name: &str, annotations: &[(&str, &str)]) -> String {
    pod_manifest_labelled(name, "payments", annotations)
}

fn pod_manifest_labelled(name: &str, app: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: Vec<String> = annotations.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
  annotations: {{{}}}
spec:
  containers:
    - name: app
      image: app:1
      env: [{{name: APP_MODE, value: e2e}}]
"#,
        annotations.join(", ")
    )
}

fn init_containers(pod: &Value) -> Vec<Value> {
    pod["spec"]["initContainers"].as_array().cloned().unwrap_or_default()
}

fn has_sidecar(pod: &Value) -> bool {
    init_containers(pod).iter().any(|c| c["name"] == "kproxy")
}

fn kproxy_count(pod: &Value) -> usize {
    let init = init_containers(pod);
    let containers = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    init.iter().chain(containers.iter()).filter(|c| c["name"] == "kproxy").count()
}

fn volume_names(pod: &Value) -> Vec<String> {
    let volumes = pod["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    volumes.iter().filter_map(|v| v["name"].as_str().map(String::from)).collect()
}

/// Everything a user expects of an injected pod, checked on what the API server stored.
fn assert_injected(pod: &Value, policy: &str) {
    assert_eq!(pod["metadata"]["annotations"]["kproxy.dev/injected"], policy, "{pod:#}");
    let init = init_containers(pod);
    let sidecar = &init[0];
    assert_eq!(sidecar["name"], "kproxy", "the sidecar must be the first init container: {pod:#}");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["image"], IMAGE);
    assert_eq!(
        sidecar["args"],
        serde_json::json!(["--config", "/etc/kproxy/config", "--secrets-dir", "/etc/kproxy/secrets"])
    );
    assert_eq!(sidecar["ports"][0]["name"], "kproxy-admin");
    assert_eq!(sidecar["ports"][0]["containerPort"], 9102);
    assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(sidecar["livenessProbe"]["httpGet"]["path"], "/healthz");
    let sc = &sidecar["securityContext"];
    assert_eq!((sc["runAsNonRoot"].as_bool(), sc["readOnlyRootFilesystem"].as_bool()), (Some(true), Some(true)));
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sidecar["resources"]["requests"]["memory"], "64Mi");

    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    let config = volumes.iter().find(|v| v["name"] == "kproxy-config").expect("config volume");
    assert_eq!(config["configMap"]["name"], format!("{policy}-kproxy"));
    let secret = volumes.iter().find(|v| v["secret"]["secretName"] == format!("{policy}-kafka"));
    assert!(secret.is_some(), "the policy's Secret must be mounted: {volumes:#?}");
    let mounts = sidecar["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().all(|m| m["readOnly"] == true), "{mounts:#?}");
    assert!(mounts.iter().any(|m| m["mountPath"] == format!("/etc/kproxy/secrets/{policy}-kafka")));

    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "APP_MODE"), "the app's own env is kept: {env:#?}");
    assert!(env.iter().any(|e| e["name"] == "KAFKA_BOOTSTRAP_SERVERS" && e["value"] == "127.0.0.1:9092"), "{env:#?}");
}

#[test]
fn annotated_pods_get_the_sidecar() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "wh-inject");
    let _webhook = Webhook::start(env, &ns.name, "Fail").unwrap();

    ns.apply_pod(&pod_manifest("payments-0", &[("kproxy.dev/inject", "true")])).unwrap();
    assert_injected(&ns.get("pod", "payments-0"), "payments");

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
    assert!(err.contains("payments, payments-eu") && err.contains("kproxy.dev/policy"), "{err}");
    // Naming one resolves it.
    ns.apply_pod(&pod_manifest("chosen", &[inject, ("kproxy.dev/policy", "payments-eu")])).unwrap();
    assert_injected(&ns.get("pod", "chosen"), "payments-eu");

    let err = ns.apply_pod(&pod_manifest_labelled("unmatched", "web", &[inject])).unwrap_err();
    assert!(err.contains("no KafkaProxyPolicy") && err.contains("app=web"), "{err}");
    let err = ns.apply_pod(&pod_manifest("unknown", &[inject, ("kproxy.dev/policy", "nope")])).unwrap_err();
    assert!(err.contains("\"nope\"") && err.contains("payments, payments-eu"), "{err}");

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
            (true, Ok(())) => assert_eq!(kproxy_count(&ns.get("pod", "annotated")), 0),
            (_, other) => panic!("failurePolicy {policy}: unexpected outcome {other:?}"),
        }
        // Pods that did not opt in never wait on the webhook, whatever the failure policy.
        ns.apply_pod(&pod_manifest("plain", &[])).unwrap();
    }
}
