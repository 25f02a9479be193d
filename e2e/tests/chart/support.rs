//! Helpers of the chart tests: rendering with helm, applying to the API server, and the objects they clean up.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kproxy_e2e::{Env, run_with_timeout, unique, workspace_root};
use serde_json::Value;

pub const CHART: &str = "charts/kproxy";
/// cert-manager's CRDs, read from its Go module (the module ships them as plain YAML under deploy/crds).
pub const CERT_MANAGER_MODULE: &str = "github.com/cert-manager/cert-manager@v1.21.2";
pub const MONITORS: &[&str] = &[
    "serviceMonitor.enabled=true",
    "serviceMonitor.labels.release=kube-prometheus-stack",
    "podMonitor.enabled=true",
    "podMonitor.labels.release=kube-prometheus-stack",
];

/// Every sidecar default the chart has, set (helm `--set` syntax).
pub const SIDECAR_VALUES: &[&str] = &[
    "sidecar.logLevel=kproxy=debug\\,info",
    "sidecar.logFormat=json",
    "sidecar.memoryBudget=96Mi",
    "sidecar.connectionMemory=8Mi",
    "sidecar.timeouts.idleSeconds=120",
    "sidecar.timeouts.frameSeconds=15",
    "sidecar.timeouts.requestSeconds=90",
    "sidecar.upstreamConnections.perBroker=2",
    "sidecar.upstreamConnections.longPoll=4",
    "sidecar.extraArgs={--max-in-flight=32}",
    "sidecar.extraEnv.TZ=UTC",
];

/// (kind, name) of an object, the way both the chart output and the API server's answer are compared.
pub type ObjectId = (String, String);

pub fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub fn helm(env: &Env, args: &[&str]) -> Result<Output> {
    let mut cmd = env.command("helm");
    cmd.args(args).current_dir(workspace_root());
    run_with_timeout(&mut cmd, None, Duration::from_secs(120))
}

pub fn kubectl_stdin(env: &Env, args: &[&str], input: &str) -> Result<Output> {
    run_with_timeout(env.command("kubectl").args(args), Some(input.as_bytes()), Duration::from_secs(120))
}

/// The API server's version, so the chart is rendered for the cluster it is applied to.
pub fn server_version(env: &Env) -> Result<String> {
    let v: Value = serde_json::from_str(&env.kubectl(&["version", "-o", "json"])?)?;
    v["serverVersion"]["gitVersion"].as_str().map(str::to_owned).context("kubectl version has no serverVersion")
}

/// `helm template` of the chart into `namespace` with `--set` values; CRDs included.
pub fn render(env: &Env, release: &str, namespace: &str, sets: &[&str], extra: &[&str]) -> Result<String> {
    let version = server_version(env)?;
    let mut args = vec!["template", release, CHART, "--namespace", namespace, "--include-crds", "--kube-version"];
    args.push(&version);
    for set in sets {
        args.extend(["--set", set]);
    }
    args.extend(extra);
    let out = helm(env, &args)?;
    if !out.status.success() {
        bail!("helm {args:?} failed:\n{}", output_text(&out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The objects of a rendered manifest: each document's top-level `kind` and `metadata.name`.
pub fn rendered_objects(manifest: &str) -> BTreeSet<ObjectId> {
    manifest
        .split("\n---")
        .filter_map(|doc| {
            let kind = doc.lines().find_map(|l| l.strip_prefix("kind: "))?;
            let meta = doc.lines().skip_while(|l| *l != "metadata:").skip(1);
            let name = meta.take_while(|l| l.starts_with(' ')).find_map(|l| l.strip_prefix("  name: "))?;
            Some((kind.trim().to_string(), name.trim().trim_matches('"').to_string()))
        })
        .collect()
}

/// Server-side apply (optionally a server dry run, which runs validation and admission without storing anything);
/// returns the objects as the API server answered them.
pub fn apply(env: &Env, manifest: &str, dry_run: bool) -> Result<Vec<Value>> {
    let mut args =
        vec!["apply", "--server-side", "--force-conflicts", "--field-manager=kproxy-chart-e2e", "-o", "json"];
    if dry_run {
        args.push("--dry-run=server");
    }
    args.extend(["-f", "-"]);
    let out = kubectl_stdin(env, &args, manifest)?;
    if !out.status.success() {
        bail!("the API server refused the chart's objects:\n{}", output_text(&out));
    }
    let answer: Value = serde_json::from_slice(&out.stdout).context("kubectl apply -o json")?;
    Ok(match answer["kind"].as_str() {
        Some("List") => answer["items"].as_array().cloned().unwrap_or_default(),
        _ => vec![answer],
    })
}

pub fn ids(objects: &[Value]) -> BTreeSet<ObjectId> {
    objects
        .iter()
        .map(|o| {
            (o["kind"].as_str().unwrap_or("").to_string(), o["metadata"]["name"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

/// `kind/name` of every cluster-scoped object among `objects`, as `kubectl delete` takes them.
pub fn cluster_scoped(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .filter(|o| o["metadata"]["namespace"].is_null())
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("").to_lowercase(),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

pub fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects.iter().find(|o| o["kind"] == kind).unwrap_or_else(|| panic!("no {kind} among the applied objects"))
}

/// A namespace of this test's own, deleted (asynchronously) when the test ends however it ends.
pub struct Namespace<'a> {
    env: &'a Env,
    pub name: String,
}

impl<'a> Namespace<'a> {
    pub fn create(env: &'a Env, prefix: &str) -> Namespace<'a> {
        let name = unique(prefix);
        env.kubectl(&["create", "namespace", &name]).unwrap();
        Namespace { env, name }
    }
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        let _ = self.env.kubectl(&["delete", "namespace", &self.name, "--wait=false", "--ignore-not-found"]);
    }
}

/// Installs CRDs for real (server-side, so concurrent tests applying the same ones do not conflict).
pub fn install_crds(env: &Env, path: &str, names: &[&str]) -> Result<()> {
    env.kubectl(&["apply", "--server-side", "--force-conflicts", "--field-manager=kproxy-e2e", "-f", path])?;
    env.wait_crds_established(names)
}

/// The ServiceMonitor and PodMonitor CRDs from the prometheus-operator module.
pub fn install_prometheus_crds(env: &Env) {
    let names = ["servicemonitors.monitoring.coreos.com", "podmonitors.monitoring.coreos.com"];
    install_crds(env, env.var("KPROXY_PROM_CRDS"), &names).unwrap();
}

/// cert-manager's Issuer and Certificate CRDs from its Go module, installed for real; `Err` says why they are not
/// available (no Go toolchain or module proxy), in which case the cert-manager objects are left out.
pub fn install_cert_manager_crds(env: &Env) -> Result<()> {
    let root = workspace_root();
    let mut go = env.command("go");
    go.args(["mod", "download", "-json", CERT_MANAGER_MODULE])
        // Outside any go.mod, so the module is fetched by itself.
        .current_dir(std::env::temp_dir())
        .env("GOMODCACHE", root.join(".cache/go/mod"))
        .env("GOFLAGS", "-modcacherw")
        .env("GOTOOLCHAIN", "local");
    let out = run_with_timeout(&mut go, None, Duration::from_secs(300))?;
    if !out.status.success() {
        bail!("go mod download {CERT_MANAGER_MODULE} failed: {}", output_text(&out));
    }
    let info: Value = serde_json::from_slice(&out.stdout)?;
    let dir = PathBuf::from(info["Dir"].as_str().context("go mod download gave no Dir")?).join("deploy/crds");
    for (file, name) in [
        ("cert-manager.io_issuers.yaml", "issuers.cert-manager.io"),
        ("cert-manager.io_certificates.yaml", "certificates.cert-manager.io"),
    ] {
        install_crds(env, dir.join(file).to_str().context("module path is not UTF-8")?, &[name])?;
    }
    Ok(())
}

/// Renders, applies as a server dry run, and checks that every rendered object came back accepted.
pub fn assert_accepted(env: &Env, namespace: &str, sets: &[&str]) -> Vec<Value> {
    let release = unique("kp");
    let manifest = render(env, &release, namespace, sets, &[]).unwrap();
    let rendered = rendered_objects(&manifest);
    let accepted = apply(env, &manifest, true).unwrap();
    assert_eq!(ids(&accepted), rendered, "the API server's answer differs from what the chart rendered");
    accepted
}

pub fn pod_manifest(namespace: &str, name: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: serde_json::Map<String, Value> =
        annotations.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    })
    .to_string()
}

/// Creates a pod; `Ok(pod)` when admitted, `Err(message)` when refused.
pub fn create_pod(env: &Env, namespace: &str, annotations: &[(&str, &str)]) -> Result<Value, String> {
    let manifest = pod_manifest(namespace, &unique("pod"), annotations);
    let out = kubectl_stdin(env, &["create", "-o", "json", "-f", "-"], &manifest).map_err(|e| format!("{e:#}"))?;
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    } else {
        Err(output_text(&out))
    }
}

/// Deletes the test's MutatingWebhookConfiguration however the test ends.
pub struct WebhookConfiguration<'a> {
    pub env: &'a Env,
    pub name: String,
}

impl Drop for WebhookConfiguration<'_> {
    fn drop(&mut self) {
        let _ = self.env.kubectl(&["delete", "mutatingwebhookconfiguration", &self.name, "--ignore-not-found"]);
    }
}

/// Cluster-scoped objects a test created for real (`kind/name`), deleted however the test ends.
pub struct ClusterScoped<'a> {
    pub env: &'a Env,
    pub objects: Vec<String>,
}

impl Drop for ClusterScoped<'_> {
    fn drop(&mut self) {
        for object in &self.objects {
            let _ = self.env.kubectl(&["delete", object, "--ignore-not-found"]);
        }
    }
}

/// A kubeconfig that authenticates as a ServiceAccount (a fresh token for it), against the test API server.
pub fn service_account_kubeconfig(env: &Env, namespace: &str, sa: &str, path: &std::path::Path) -> Result<()> {
    let admin: Value = serde_json::from_str(&env.kubectl(&["config", "view", "--raw", "--minify", "-o", "json"])?)?;
    let cluster = &admin["clusters"][0]["cluster"];
    let token = env.kubectl(&["-n", namespace, "create", "token", sa, "--duration=1h"])?;
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "test", "user": sa, "namespace": namespace}}],
        "current-context": "sa",
    });
    std::fs::write(path, config.to_string()).with_context(|| format!("writing {}", path.display()))
}

/// The operator's command-line flags as the chart's Deployment passes them, with the `$(VAR)` references kubelet
/// would expand replaced from `vars`.
pub fn deployment_args(manifest: &str, vars: &[(&str, &str)]) -> Vec<String> {
    manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- --"))
        .map(|flag| {
            let flag = flag.trim_matches('"');
            vars.iter().fold(format!("--{flag}"), |arg, (name, value)| arg.replace(&format!("$({name})"), value))
        })
        .collect()
}

/// A child process killed when the test ends however it ends.
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
