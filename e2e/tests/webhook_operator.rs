//! The webhook as users run it: inside the operator process, next to the controller that renders the policy's
//! ConfigMap the injected sidecar mounts. The operator generates its certificate, publishes the CA into a webhook
//! configuration it did not create (as the chart installs it), and counts reviews on its metrics endpoint.

#[path = "webhook/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kproxy_e2e::{Env, binary, env, free_port, run_with_timeout, wait_for};
use serde_json::Value;
use support::*;

/// The operator process for one namespace; killed on drop.
struct Operator {
    child: Child,
    admin_port: u16,
    log: PathBuf,
}

impl Operator {
    fn start(env: &Env, ns: &str, webhook_port: u16, configuration: &str) -> Operator {
        let admin_port = free_port();
        let log = PathBuf::from(env.log_dir()).join(format!("{ns}-operator.log"));
        let file = std::fs::File::create(&log).unwrap();
        let (admin, webhook) = (format!("127.0.0.1:{admin_port}"), format!("127.0.0.1:{webhook_port}"));
        let child = env
            .command(binary("kproxy-operator").to_str().unwrap())
            .args(["--admin-addr", &admin, "--namespace", ns, "--lease-namespace", ns])
            .args(["--webhook-addr", &webhook, "--webhook-namespace", ns, "--webhook-san", "127.0.0.1"])
            .args(["--webhook-configuration", configuration, "--sidecar-image", IMAGE])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Operator { child, admin_port, log }
    }

    fn metrics(&self, env: &Env) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin_port);
        let out = env.run(env.command("curl").args(["-sf", &url]), Duration::from_secs(20)).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Value of an unlabelled sample or of one with exactly `labels`, e.g. `{result="injected"}`.
fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{labels} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

#[test]
fn the_operator_renders_the_policy_and_injects_pods_that_mount_it() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "wh-operator");
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: payments-kafka, namespace: {}}}\n\
         stringData: {{username: app, password: secret}}\n",
        ns.name
    );
    env.kubectl_apply(&secret).unwrap();
    let configuration = format!("{}-kproxy", ns.name);
    let port = free_port();
    env.kubectl_apply(&webhook_configuration(&configuration, &ns.name, port, "Fail", None)).unwrap();
    let _cleanup = DeleteOnDrop(env, configuration.clone());

    let operator = Operator::start(env, &ns.name, port, &configuration);
    wait_for(&format!("policy payments Ready (log: {})", operator.log.display()), Duration::from_secs(60), || {
        let path = r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#;
        let ready = env.kubectl(&["get", "kafkaproxypolicy", "payments", "-n", &ns.name, "-o", path])?;
        Ok((ready.trim() == "True").then_some(()))
    })
    .unwrap();
    wait_for(&format!("the operator's webhook (log: {})", operator.log.display()), Duration::from_secs(60), || {
        Ok(dry_run_injects(env, &ns.name)?.then_some(()))
    })
    .unwrap();

    let warnings = ns.apply_pod(&pod_manifest("payments-0", &[("kproxy.dev/inject", "true")])).unwrap();
    assert!(!warnings.contains("KafkaProxyPolicy"), "a Ready policy needs no warning: {warnings}");
    let pod = ns.get("pod", "payments-0");
    assert_injected(&pod, "payments");
    // What the sidecar mounts is what the operator rendered.
    let config_map = ns.get("configmap", "payments-kproxy");
    assert!(config_map["data"]["config.yaml"].as_str().is_some_and(|c| c.contains("payments-kafka")), "{config_map:#}");

    let err =
        ns.apply_pod(&pod_manifest("bad", &[("kproxy.dev/inject", "true"), ("kproxy.dev/cpu", "x")])).unwrap_err();
    assert!(err.contains("kproxy.dev/cpu"), "{err}");
    let metrics = operator.metrics(env);
    let reviews = "kproxy_webhook_admission_reviews_total";
    assert!(sample(&metrics, reviews, r#"{result="injected"}"#).is_some_and(|v| v >= 1.0), "{metrics}");
    assert!(sample(&metrics, reviews, r#"{result="refused"}"#).is_some_and(|v| v >= 1.0), "{metrics}");
    let expiry = sample(&metrics, "kproxy_webhook_certificate_expiry_timestamp_seconds", "").unwrap_or(0.0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(expiry > now + 300.0 * 24.0 * 3600.0, "a fresh certificate lives about a year: {expiry}");
}

/// Deletes the cluster-scoped webhook configuration when the test ends, whatever its outcome.
struct DeleteOnDrop<'a>(&'a Env, String);

impl Drop for DeleteOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kubectl(&["delete", "mutatingwebhookconfiguration", &self.1, "--wait=false"]);
    }
}

/// Runs the sidecar exactly as the stored pod describes it (args, mounts, probes), with kubelet's part played by
/// the harness: each mounted ConfigMap and Secret projected under `root`, paths and the admin address moved there.
fn run_as_kubelet_would(env: &Env, ns: &str, pod: &Value, root: &Path) -> (Child, u16) {
    let sidecar = &pod["spec"]["initContainers"][0];
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    for mount in sidecar["volumeMounts"].as_array().unwrap() {
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).unwrap();
        // The API server's own service-account token volume is kubelet's business, not the sidecar's.
        if volume["projected"].is_object() {
            continue;
        }
        let files: BTreeMap<String, String> = if let Some(name) = volume["configMap"]["name"].as_str() {
            let cm: Value =
                serde_json::from_str(&env.kubectl(&["get", "configmap", name, "-n", ns, "-o", "json"]).unwrap())
                    .unwrap();
            cm["data"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect()
        } else {
            let name = volume["secret"]["secretName"].as_str().unwrap();
            let secret: Value =
                serde_json::from_str(&env.kubectl(&["get", "secret", name, "-n", ns, "-o", "json"]).unwrap()).unwrap();
            let decode = |v: &Value| String::from_utf8(STANDARD.decode(v.as_str().unwrap()).unwrap()).unwrap();
            secret["data"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), decode(v))).collect()
        };
        let dir = root.join(mount["mountPath"].as_str().unwrap().trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        kproxy_e2e::kubelet::project(&dir, &files).unwrap();
    }
    let admin_port = free_port();
    let mut args: Vec<String> = serde_json::from_value(sidecar["args"].clone()).unwrap();
    for i in 1..args.len() {
        match args[i - 1].as_str() {
            "--config" | "--secrets-dir" => args[i] = root.join(args[i].trim_start_matches('/')).display().to_string(),
            // Loopback only in tests; in a pod it is every address of the pod.
            "--admin-addr" => args[i] = format!("127.0.0.1:{admin_port}"),
            "--metrics-addr" => args[i] = format!("127.0.0.1:{}", free_port()),
            _ => {}
        }
    }
    let log = std::fs::File::create(PathBuf::from(env.log_dir()).join(format!("{ns}-sidecar.log"))).unwrap();
    let child = env
        .command(kproxy_e2e::sidecar::binary().unwrap().to_str().unwrap())
        .args(&args)
        .args(["--listen-addr", &format!("127.0.0.1:{}", free_port())])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    (child, admin_port)
}

#[test]
fn the_injected_sidecar_starts_from_what_the_webhook_mounted() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "wh-sidecar");
    let ca = std::fs::read_to_string(env.var("KPROXY_KAFKA_CA")).unwrap();
    let indented: String = ca.lines().map(|l| format!("    {l}\n")).collect();
    let objects = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: kafka-ca, namespace: {ns}}}
stringData:
  ca.crt: |
{indented}---
apiVersion: v1
kind: Secret
metadata: {{name: kafka-user, namespace: {ns}}}
stringData: {{username: "{user}", password: "{password}"}}
---
apiVersion: kproxy.dev/v1alpha1
kind: KafkaProxyPolicy
metadata: {{name: real, namespace: {ns}}}
spec:
  podSelector: {{matchLabels: {{app: real}}}}
  clusters:
    - name: east
      bootstrapServers: ["{brokers}"]
      tls: {{caSecretRef: {{name: kafka-ca, key: ca.crt}}}}
      sasl: {{mechanism: SCRAM-SHA-512, secretRef: {{name: kafka-user}}}}
"#,
        ns = ns.name,
        user = env.var("KPROXY_KAFKA_USER"),
        password = env.var("KPROXY_KAFKA_PASSWORD"),
        brokers = env.var("KPROXY_KAFKA_EAST_SASL"),
    );
    env.kubectl_apply(&objects).unwrap();
    let configuration = format!("{}-kproxy", ns.name);
    let port = free_port();
    env.kubectl_apply(&webhook_configuration(&configuration, &ns.name, port, "Fail", None)).unwrap();
    let _cleanup = DeleteOnDrop(env, configuration.clone());
    let operator = Operator::start(env, &ns.name, port, &configuration);
    wait_for(&format!("policy real Ready (log: {})", operator.log.display()), Duration::from_secs(60), || {
        let path = r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#;
        let ready = env.kubectl(&["get", "kafkaproxypolicy", "real", "-n", &ns.name, "-o", path])?;
        Ok((ready.trim() == "True").then_some(()))
    })
    .unwrap();
    wait_for("the operator's webhook", Duration::from_secs(60), || Ok(dry_run_injects(env, &ns.name)?.then_some(())))
        .unwrap();
    ns.apply_pod(&pod_manifest_labelled("real-0", "real", &[("kproxy.dev/inject", "true")])).unwrap();
    let pod = ns.get("pod", "real-0");

    let root = tempfile::tempdir().unwrap();
    let (mut child, admin_port) = run_as_kubelet_would(env, &ns.name, &pod, root.path());
    let probe = |field: &str| {
        let path = pod["spec"]["initContainers"][0][field]["httpGet"]["path"].as_str().unwrap().to_string();
        format!("http://127.0.0.1:{admin_port}{path}")
    };
    let result = wait_for("the sidecar's startup probe to pass", Duration::from_secs(60), || {
        let out =
            run_with_timeout(env.command("curl").args(["-sf", &probe("startupProbe")]), None, Duration::from_secs(5))?;
        Ok(out.status.success().then_some(()))
    });
    let live =
        run_with_timeout(env.command("curl").args(["-sf", &probe("livenessProbe")]), None, Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    result.unwrap();
    assert!(live.unwrap().status.success());
}
