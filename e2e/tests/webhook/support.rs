//! Shared harness of the webhook e2e tests: a webhook process registered for one namespace, a namespace with a
//! policy, pod manifests and what to look for in stored pods.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kproxy_e2e::{Env, free_port, run_with_timeout, unique, wait_for, workspace_root};
use serde_json::Value;

pub const IMAGE: &str = "kproxy-sidecar:e2e";

/// How a webhook process is started.
pub struct Launch {
    /// Run the operator (the product, which serves the webhook next to its controller) rather than the standalone
    /// `kproxy-webhook` binary (which can also register itself).
    pub operator: bool,
    pub failure_policy: &'static str,
    /// Point the namespace's webhook configuration at this process.
    pub register: bool,
    /// PEM caBundle to register (for mounted certificates; generated ones publish their own CA).
    pub ca_bundle: Option<String>,
    /// More flags for the process.
    pub extra: Vec<String>,
}

impl Default for Launch {
    fn default() -> Self {
        Launch { operator: true, failure_policy: "Fail", register: true, ca_bundle: None, extra: Vec::new() }
    }
}

/// One webhook process and (when it registered one) its MutatingWebhookConfiguration; both go away on drop.
pub struct Webhook<'a> {
    env: &'a Env,
    child: Option<Child>,
    pub port: u16,
    pub configuration: String,
    pub log: PathBuf,
}

impl<'a> Webhook<'a> {
    /// Starts the operator serving the webhook for `namespace` with generated certificates, registered with
    /// `failure_policy`, and waits until the API server actually calls it.
    pub fn start(env: &'a Env, namespace: &str, failure_policy: &'static str) -> Result<Webhook<'a>> {
        let webhook = Webhook::spawn(env, namespace, Launch { failure_policy, ..Launch::default() })?;
        webhook.wait_injecting(namespace)?;
        Ok(webhook)
    }

    /// Starts a webhook process as `launch` says. Does not wait for it.
    pub fn spawn(env: &'a Env, namespace: &str, launch: Launch) -> Result<Webhook<'a>> {
        let port = free_port();
        let configuration = format!("{namespace}-kproxy");
        let program = if launch.operator { "kproxy-operator" } else { "kproxy-webhook" };
        let log = PathBuf::from(env.log_dir()).join(format!("{namespace}-{program}-{port}.log"));
        let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let listen = format!("127.0.0.1:{port}");
        let url = format!("https://127.0.0.1:{port}/mutate");
        let mut cmd = env.command(&kproxy_e2e::binary(program).to_string_lossy());
        cmd.args(["--webhook-addr", &listen, "--sidecar-image", IMAGE, "--webhook-namespace", namespace])
            .args(["--webhook-san", "127.0.0.1", "--webhook-configuration", &configuration])
            .args(&launch.extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        if launch.operator {
            let admin = format!("127.0.0.1:{}", free_port());
            cmd.args(["--admin-addr", &admin, "--namespace", namespace, "--lease-namespace", namespace]);
            // Run as the admin, the operator may check the Secrets policies name (the chart leaves this off).
            cmd.arg("--check-secrets");
            if launch.register {
                let yaml =
                    webhook_configuration(&configuration, namespace, port, launch.failure_policy, launch.ca_bundle);
                env.kubectl_apply(&yaml)?;
            }
        } else {
            cmd.args(["--only-namespace", namespace, "--failure-policy", launch.failure_policy]);
            if let Some(pem) = &launch.ca_bundle {
                let path = log.with_extension("ca.pem");
                std::fs::write(&path, pem)?;
                cmd.arg("--ca-bundle-file").arg(path);
            }
            if launch.register {
                cmd.args(["--register-url", &url]);
            }
        }
        let child = cmd.spawn().with_context(|| format!("starting {program}"))?;
        Ok(Webhook { env, child: Some(child), port, configuration, log })
    }

    /// Waits until the API server injects pods of `namespace` (it picks up webhook configurations asynchronously).
    pub fn wait_injecting(&self, namespace: &str) -> Result<()> {
        wait_for(&format!("the webhook to inject (log: {})", self.log.display()), Duration::from_secs(60), || {
            Ok(dry_run_injects(self.env, namespace)?.then_some(()))
        })
    }

    /// The process id, to read its memory use.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process still runs (a certificate change must not need a restart).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the process (as a crash or rollout would) but leaves the registration in place.
    pub fn stop(&mut self) {
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

/// The webhook configuration as the chart installs it, limited to one namespace: only opted-in pods reach the
/// webhook; without `ca_bundle` the operator publishes its generated CA into it.
pub fn webhook_configuration(
    name: &str,
    ns: &str,
    port: u16,
    failure_policy: &str,
    ca_bundle: Option<String>,
) -> String {
    let ca_bundle = ca_bundle.map(|pem| format!(", caBundle: {}", STANDARD.encode(pem))).unwrap_or_default();
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: {name}}}
webhooks:
  - name: inject.kproxy.dev
    admissionReviewVersions: [v1]
    sideEffects: None
    failurePolicy: {failure_policy}
    clientConfig: {{url: "https://127.0.0.1:{port}/mutate"{ca_bundle}}}
    rules:
      - {{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods], scope: Namespaced}}
    namespaceSelector:
      matchExpressions: [{{key: kubernetes.io/metadata.name, operator: In, values: [{ns}]}}]
    matchConditions:
      - name: asks-for-kproxy
        expression: >-
          has(object.metadata.annotations) && 'kproxy.dev/inject' in object.metadata.annotations &&
          object.metadata.annotations['kproxy.dev/inject'] != 'false'
      - name: not-yet-injected
        expression: "!has(object.metadata.annotations) || !('kproxy.dev/injected' in object.metadata.annotations)"
"#
    )
}

/// Whether a server-side dry run of an annotated pod comes back with the sidecar.
pub fn dry_run_injects(env: &Env, namespace: &str) -> Result<bool> {
    let pod = pod_manifest("probe", &[("kproxy.dev/inject", "true"), ("kproxy.dev/policy", "payments")]);
    let out = kubectl_stdin(env, &["create", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-"], &pod)?;
    if !out.status.success() {
        return Ok(false);
    }
    let pod: Value = serde_json::from_slice(&out.stdout)?;
    Ok(has_sidecar(&pod))
}

/// A namespace with the CRD installed, its default ServiceAccount present (pods are refused without it) and a
/// policy `payments` selecting `app=payments`; deleted on drop.
pub struct Namespace<'a> {
    env: &'a Env,
    pub name: String,
}

impl<'a> Namespace<'a> {
    pub fn create(env: &'a Env, prefix: &str) -> Namespace<'a> {
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

    pub fn apply_policy(&self, name: &str, match_labels: &str) {
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

    /// `kubectl apply` of a pod: Ok carries kubectl's warnings, Err its error (what a user sees either way).
    pub fn apply_pod(&self, manifest: &str) -> Result<String, String> {
        let out =
            kubectl_stdin(self.env, &["apply", "-n", &self.name, "-f", "-"], manifest).map_err(|e| e.to_string())?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() { Ok(stderr) } else { Err(stderr) }
    }

    pub fn get(&self, kind: &str, name: &str) -> Value {
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
pub fn install_crd(env: &Env) -> Result<()> {
    let path = workspace_root().join("crds/kafkaproxypolicies.yaml");
    let path = path.to_string_lossy();
    env.kubectl(&["apply", "--server-side", "--force-conflicts", "--field-manager", "kproxy-e2e", "-f", &path])?;
    env.kubectl(&["wait", "--for", "condition=established", "--timeout=60s", "crd/kafkaproxypolicies.kproxy.dev"])?;
    Ok(())
}

pub fn kubectl_stdin(env: &Env, args: &[&str], input: &str) -> Result<std::process::Output> {
    run_with_timeout(env.command("kubectl").args(args), Some(input.as_bytes()), Duration::from_secs(60))
}

pub fn pod_manifest(name: &str, annotations: &[(&str, &str)]) -> String {
    pod_manifest_labelled(name, "payments", annotations)
}

/// A pod that meets the restricted Pod Security Standard on its own, so any violation would be the sidecar's.
pub fn pod_manifest_labelled(name: &str, app: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: Vec<String> = annotations.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
  annotations: {{{}}}
spec:
  securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
  containers:
    - name: app
      image: app:1
      env: [{{name: APP_MODE, value: e2e}}]
      securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
"#,
        annotations.join(", ")
    )
}

pub fn init_containers(pod: &Value) -> Vec<Value> {
    pod["spec"]["initContainers"].as_array().cloned().unwrap_or_default()
}

pub fn has_sidecar(pod: &Value) -> bool {
    init_containers(pod).iter().any(|c| c["name"] == "kproxy")
}

pub fn kproxy_count(pod: &Value) -> usize {
    let init = init_containers(pod);
    let containers = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    init.iter().chain(containers.iter()).filter(|c| c["name"] == "kproxy").count()
}

pub fn volume_names(pod: &Value) -> Vec<String> {
    let volumes = pod["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    volumes.iter().filter_map(|v| v["name"].as_str().map(String::from)).collect()
}

/// Everything a user expects of an injected pod, checked on what the API server stored.
pub fn assert_injected(pod: &Value, policy: &str) {
    assert_eq!(pod["metadata"]["annotations"]["kproxy.dev/injected"], policy, "{pod:#}");
    let init = init_containers(pod);
    let sidecar = &init[0];
    assert_eq!(sidecar["name"], "kproxy", "the sidecar must be the first init container: {pod:#}");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["image"], IMAGE);
    assert_eq!(
        sidecar["args"],
        serde_json::json!([
            "--config",
            "/etc/kproxy/config",
            "--secrets-dir",
            "/etc/kproxy/secrets",
            "--admin-addr",
            "0.0.0.0:9102",
            "--metrics-addr",
            "127.0.0.1:9103",
            // One thread: the sidecar requests 50m and has no CPU limit.
            "--worker-threads=1",
            // The operator's default: the sidecar also follows its ConfigMap through the API server.
            "--config-map",
            format!("{policy}-kproxy")
        ])
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
