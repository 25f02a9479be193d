//! A Prometheus on the node, made by prometheus-operator from a `Prometheus` object: its scrape configuration is
//! what the operator generates from the chart's PodMonitor and ServiceMonitor; the test asks its HTTP API.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use kproxy_e2e::{Env, wait_for};
use serde_json::Value;

use crate::cluster::{apply_in, wait_running};

/// Creates the Prometheus object (and the ServiceAccount and RBAC its pods need for discovery) in `ns`, selecting
/// every PodMonitor and ServiceMonitor in every namespace; waits for its pod; returns the pod's address.
pub fn start(env: &Env, ns: &str, image: &str) -> Result<String> {
    let version = image.rsplit_once(':').map(|(_, v)| v).context("the Prometheus image has no tag")?;
    let manifest = format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: prometheus}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {ns}-prometheus}}
rules:
  - apiGroups: [""]
    resources: [pods, services, endpoints]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {ns}-prometheus}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {ns}-prometheus}}
subjects: [{{kind: ServiceAccount, name: prometheus, namespace: {ns}}}]
---
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata: {{name: kproxy}}
spec:
  image: {image}
  version: {version}
  replicas: 1
  serviceAccountName: prometheus
  podMonitorSelector: {{}}
  podMonitorNamespaceSelector: {{}}
  serviceMonitorSelector: {{}}
  serviceMonitorNamespaceSelector: {{}}
  scrapeInterval: 5s
  evaluationInterval: 30s
  resources: {{requests: {{cpu: 50m, memory: 128Mi}}}}
"#
    );
    apply_in(env, ns, &manifest)?;
    let pods = wait_running(
        env,
        ns,
        "app.kubernetes.io/name=prometheus,operator.prometheus.io/name=kproxy",
        1,
        Duration::from_secs(180),
    )?;
    Ok(format!("{}:9090", pods[0].ip))
}

/// An instant query; the result vector.
pub fn query(env: &Env, address: &str, promql: &str) -> Result<Vec<Value>> {
    let out = env.run(
        env.command("curl").args([
            "-sf",
            "--max-time",
            "10",
            "--get",
            &format!("http://{address}/api/v1/query"),
            "--data-urlencode",
            &format!("query={promql}"),
        ]),
        Duration::from_secs(15),
    )?;
    let body: Value = serde_json::from_slice(&out.stdout)?;
    if body["status"] != "success" {
        bail!("query {promql} failed: {body}");
    }
    Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Waits until `promql` returns at least one series; returns them.
pub fn wait_series(env: &Env, address: &str, promql: &str) -> Result<Vec<Value>> {
    wait_for(&format!("Prometheus to have {promql}"), Duration::from_secs(120), || {
        let series = query(env, address, promql)?;
        Ok((!series.is_empty()).then_some(series))
    })
}
