//! Helpers of the node tests: the chart installed with helm into a namespace of its own, the locally built images,
//! pods and their containers' readiness as kubectl reports them, the demo application's output.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kproxy_e2e::{Env, unique, wait_for, workspace_root};
use serde_json::Value;

/// The environment's node, or `None` (the test is skipped) when env-up ran without one.
pub fn node(env: &Env) -> Option<String> {
    match env.var_opt("KPROXY_NODE") {
        Some(n) => Some(n.to_string()),
        None if std::env::var("KPROXY_E2E_REQUIRED").is_ok_and(|v| v == "1") => {
            panic!("KPROXY_E2E_REQUIRED=1 but the environment has no node (KPROXY_NODE unset in .cache/env.sh)")
        }
        None => None,
    }
}

/// The images scripts/images.sh built and imported, by name (kproxy-sidecar, kafka-client, prometheus, ...).
pub fn images(env: &Env) -> BTreeMap<String, String> {
    let list = std::fs::read_to_string(env.var("KPROXY_IMAGES")).unwrap_or_default();
    list.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, reference)| (name.to_string(), reference.to_string()))
        .collect()
}

/// One helm release of the chart, with its operator watching (and its webhook injecting in) one application
/// namespace only, so releases of concurrent tests never act on each other's pods. Uninstalled when dropped.
pub struct Release<'a> {
    env: &'a Env,
    /// Where the operator, its Service and Secrets run.
    pub ns: String,
    /// The application namespace the operator and webhook serve.
    pub app_ns: String,
    pub name: String,
}

impl<'a> Release<'a> {
    pub fn install(env: &'a Env, prefix: &str, extra: &[&str]) -> Result<Release<'a>> {
        let ns = unique(&format!("{prefix}-sys"));
        let app_ns = unique(prefix);
        // Cluster-scoped objects (webhook configuration, ClusterRoles) are named after the release.
        let name = unique("kproxy");
        // The CRD first, server-side: concurrent installs would race on creating it.
        let crds = workspace_root().join("charts/kproxy/crds");
        env.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crds.to_str().context("path")?])?;
        env.wait_crds_established(&["kafkaproxypolicies.kproxy.dev"])?;
        env.kubectl(&["create", "namespace", &app_ns])?;
        let release = Release { env, ns, app_ns, name };
        let mut args = vec![
            "install".to_string(),
            release.name.clone(),
            workspace_root().join("charts/kproxy").display().to_string(),
            "--namespace".into(),
            release.ns.clone(),
            "--create-namespace".into(),
            "--wait".into(),
            "--timeout".into(),
            "180s".into(),
        ];
        for set in [
            "operator.replicas=1".to_string(),
            "operator.image.pullPolicy=Never".into(),
            "sidecar.image.pullPolicy=Never".into(),
            format!("operator.watchNamespace={}", release.app_ns),
            "webhook.namespaceSelector.matchExpressions=null".into(),
            format!("webhook.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={}", release.app_ns),
        ] {
            args.extend(["--set".to_string(), set]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        env.run(env.command("helm").args(&args), Duration::from_secs(240))?;
        eprintln!("helm install {} -n {}: {:.1?}", release.name, release.ns, started.elapsed());
        Ok(release)
    }
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let _ = self.env.kubectl(&["delete", "namespace", &self.app_ns, "--wait=false", "--ignore-not-found"]);
        let _ = self.env.run(
            self.env.command("helm").args(["uninstall", &self.name, "-n", &self.ns, "--wait=false"]),
            Duration::from_secs(60),
        );
        let _ = self.env.kubectl(&["delete", "namespace", &self.ns, "--wait=false", "--ignore-not-found"]);
    }
}

/// A pod as `kubectl get pods` shows it: name, phase, ready containers (init sidecars included) of all.
#[derive(Debug, Clone)]
pub struct PodView {
    pub name: String,
    pub phase: String,
    pub ready: usize,
    pub containers: usize,
    pub restarts: i64,
    pub deleting: bool,
    pub ip: String,
}

pub fn pods(env: &Env, ns: &str, selector: &str) -> Result<Vec<PodView>> {
    let out = env.kubectl(&["get", "pods", "-n", ns, "-l", selector, "-o", "json"])?;
    let list: Value = serde_json::from_str(&out)?;
    let mut views = Vec::new();
    for p in list["items"].as_array().into_iter().flatten() {
        // Native sidecars are init containers that keep running; kubectl counts them among the containers.
        let sidecars = p["spec"]["initContainers"]
            .as_array()
            .map(|c| c.iter().filter(|c| c["restartPolicy"] == "Always").count())
            .unwrap_or(0);
        let mut statuses: Vec<&Value> = p["status"]["containerStatuses"].as_array().into_iter().flatten().collect();
        statuses.extend(
            p["status"]["initContainerStatuses"].as_array().into_iter().flatten().filter(|s| s["started"] == true),
        );
        views.push(PodView {
            name: p["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            phase: p["status"]["phase"].as_str().unwrap_or_default().to_string(),
            ready: statuses.iter().filter(|s| s["ready"] == true).count(),
            containers: p["spec"]["containers"].as_array().map_or(0, Vec::len) + sidecars,
            restarts: statuses.iter().map(|s| s["restartCount"].as_i64().unwrap_or(0)).sum(),
            deleting: !p["metadata"]["deletionTimestamp"].is_null(),
            ip: p["status"]["podIP"].as_str().unwrap_or_default().to_string(),
        });
    }
    Ok(views)
}

/// Waits until exactly `count` pods match `selector`, all Running with every container ready; returns them.
pub fn wait_running(env: &Env, ns: &str, selector: &str, count: usize, timeout: Duration) -> Result<Vec<PodView>> {
    wait_for(&format!("{count} pod(s) {selector} in {ns} Running and ready"), timeout, || {
        let live: Vec<PodView> = pods(env, ns, selector)?.into_iter().filter(|p| !p.deleting).collect();
        let ok = live.len() == count
            && live.iter().all(|p| p.phase == "Running" && p.ready == p.containers && p.containers > 0);
        Ok(ok.then_some(live))
    })
}

/// `kubectl get pods -o wide` of a namespace, for the test log.
pub fn show_pods(env: &Env, ns: &str) {
    match env.kubectl(&["get", "pods", "-n", ns, "-o", "wide"]) {
        Ok(out) => eprintln!("$ kubectl get pods -n {ns} -o wide\n{out}"),
        Err(e) => eprintln!("kubectl get pods -n {ns} failed: {e:#}"),
    }
}

/// The demo application's outcome lines (`ok <value>` / `error <value> <name>`) of one pod's app container.
pub fn app_outcomes(env: &Env, ns: &str, pod: &str) -> Result<Vec<String>> {
    let out = env.kubectl(&["logs", "-n", ns, pod, "-c", "app"])?;
    Ok(out.lines().filter(|l| l.starts_with("ok ") || l.starts_with("error ")).map(str::to_string).collect())
}

/// The values the app produced successfully, in order.
pub fn ok_values(outcomes: &[String]) -> Vec<String> {
    outcomes.iter().filter_map(|l| l.strip_prefix("ok ")).map(str::to_string).collect()
}

/// An application Deployment running the kafka-client image's producer against localhost:9092 (the sidecar).
pub fn app_deployment(name: &str, labels: &str, image: &str, topic: &str, inject: bool) -> String {
    let annotations = if inject { r#"{kproxy.dev/inject: "true"}"# } else { "{}" };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {labels}}}
  template:
    metadata:
      labels: {labels}
      annotations: {annotations}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: app
          image: {image}
          imagePullPolicy: Never
          args: ["produce", "{topic}", "0.5"]
          env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
          securityContext:
            runAsNonRoot: true
            runAsUser: 65532
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {{drop: ["ALL"]}}
          resources: {{requests: {{cpu: 10m, memory: 32Mi}}, limits: {{memory: 128Mi}}}}
"#
    )
}

/// A policy (in `ns`) sending everything to the east cluster's pod listener for pods labelled `app: <app>`;
/// `effect` is the verdict on writing `topic`.
pub fn policy(ns: &str, app: &str, brokers: &str, topic: &str, effect: &str) -> String {
    kproxy_e2e::topic_write_policy(ns, app, app, brokers, topic, effect)
}

/// `kubectl apply -f -` into a namespace.
pub fn apply_in(env: &Env, ns: &str, manifest: &str) -> Result<()> {
    env.kubectl_apply_in(ns, manifest).map(drop)
}

/// Waits until the policy's status is Ready for its current generation.
pub fn wait_policy_ready(env: &Env, ns: &str, name: &str) -> Result<()> {
    wait_for(&format!("policy {ns}/{name} Ready"), Duration::from_secs(90), || {
        let out = env.kubectl(&[
            "get",
            "kpp",
            name,
            "-n",
            ns,
            "-o",
            "jsonpath={.metadata.generation} {.status.observedGeneration} {.status.conditions[?(@.type==\"Ready\")].status}",
        ])?;
        let f: Vec<&str> = out.split_whitespace().collect();
        Ok((f.len() == 3 && f[0] == f[1] && f[2] == "True").then_some(()))
    })
}
