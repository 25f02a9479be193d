//! The webhook as users run it: inside the operator process, next to the controller that renders the policy's
//! ConfigMap the injected sidecar mounts. The operator generates its certificate, publishes the CA into a webhook
//! configuration it did not create (as the chart installs it), and counts reviews on its metrics endpoint.

#[path = "webhook/support.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use kproxy_e2e::{Env, binary, env, free_port, wait_for};
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
