//! The Helm chart as a platform team meets it: `helm lint` is clean, the values schema refuses bad values, the real
//! kube-apiserver accepts every object the chart renders (with the Prometheus Operator's and cert-manager's CRDs
//! installed from their Go modules), and the webhook it registers is only ever called for opted-in pods.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kproxy_e2e::{Env, binary, env, run_with_timeout, unique, wait_for, workspace_root};
use serde_json::Value;

const CHART: &str = "charts/kproxy";
/// cert-manager's CRDs, read from its Go module (the module ships them as plain YAML under deploy/crds).
const CERT_MANAGER_MODULE: &str = "github.com/cert-manager/cert-manager@v1.21.2";
const MONITORS: &[&str] = &[
    "serviceMonitor.enabled=true",
    "serviceMonitor.labels.release=kube-prometheus-stack",
    "podMonitor.enabled=true",
    "podMonitor.labels.release=kube-prometheus-stack",
];

/// (kind, name) of an object, the way both the chart output and the API server's answer are compared.
type ObjectId = (String, String);

fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn helm(env: &Env, args: &[&str]) -> Result<Output> {
    let mut cmd = env.command("helm");
    cmd.args(args).current_dir(workspace_root());
    run_with_timeout(&mut cmd, None, Duration::from_secs(120))
}

fn kubectl_stdin(env: &Env, args: &[&str], input: &str) -> Result<Output> {
    run_with_timeout(env.command("kubectl").args(args), Some(input.as_bytes()), Duration::from_secs(120))
}

/// The API server's version, so the chart is rendered for the cluster it is applied to.
fn server_version(env: &Env) -> Result<String> {
    let v: Value = serde_json::from_str(&env.kubectl(&["version", "-o", "json"])?)?;
    v["serverVersion"]["gitVersion"].as_str().map(str::to_owned).context("kubectl version has no serverVersion")
}

/// `helm template` of the chart into `namespace` with `--set` values; CRDs included.
fn render(env: &Env, release: &str, namespace: &str, sets: &[&str], extra: &[&str]) -> Result<String> {
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
fn rendered_objects(manifest: &str) -> BTreeSet<ObjectId> {
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
fn apply(env: &Env, manifest: &str, dry_run: bool) -> Result<Vec<Value>> {
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

fn ids(objects: &[Value]) -> BTreeSet<ObjectId> {
    objects
        .iter()
        .map(|o| {
            (o["kind"].as_str().unwrap_or("").to_string(), o["metadata"]["name"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects.iter().find(|o| o["kind"] == kind).unwrap_or_else(|| panic!("no {kind} among the applied objects"))
}

/// A namespace of this test's own, deleted (asynchronously) when the test ends however it ends.
struct Namespace<'a> {
    env: &'a Env,
    name: String,
}

impl<'a> Namespace<'a> {
    fn create(env: &'a Env, prefix: &str) -> Namespace<'a> {
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
fn install_crds(env: &Env, path: &str, names: &[&str]) -> Result<()> {
    env.kubectl(&["apply", "--server-side", "--force-conflicts", "--field-manager=kproxy-e2e", "-f", path])?;
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    let names: Vec<String> = names.iter().map(|c| format!("crd/{c}")).collect();
    args.extend(names.iter().map(String::as_str));
    env.kubectl(&args)?;
    Ok(())
}

/// The ServiceMonitor and PodMonitor CRDs from the prometheus-operator module.
fn install_prometheus_crds(env: &Env) {
    let names = ["servicemonitors.monitoring.coreos.com", "podmonitors.monitoring.coreos.com"];
    install_crds(env, env.var("KPROXY_PROM_CRDS"), &names).unwrap();
}

/// cert-manager's Issuer and Certificate CRDs from its Go module, installed for real; `Err` says why they are not
/// available (no Go toolchain or module proxy), in which case the cert-manager objects are left out.
fn install_cert_manager_crds(env: &Env) -> Result<()> {
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
fn assert_accepted(env: &Env, namespace: &str, sets: &[&str]) -> Vec<Value> {
    let release = unique("kp");
    let manifest = render(env, &release, namespace, sets, &[]).unwrap();
    let rendered = rendered_objects(&manifest);
    let accepted = apply(env, &manifest, true).unwrap();
    assert_eq!(ids(&accepted), rendered, "the API server's answer differs from what the chart rendered");
    accepted
}

#[test]
fn helm_lint_is_clean() {
    let Some(env) = env() else { return };
    let monitors: Vec<String> = MONITORS.iter().flat_map(|s| ["--set".to_string(), s.to_string()]).collect();
    let cert_manager = ["--set".to_string(), "webhook.certificate.mode=cert-manager".to_string()];
    for extra in [vec![], monitors.clone(), [monitors, cert_manager.to_vec()].concat()] {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend(extra.iter().map(String::as_str));
        let out = helm(env, &args).unwrap();
        let text = output_text(&out);
        assert!(out.status.success(), "helm {args:?} failed:\n{text}");
        assert!(text.contains("0 chart(s) failed"), "helm {args:?}:\n{text}");
        assert!(!text.contains("[WARNING]"), "helm {args:?} warns:\n{text}");
    }
}

#[test]
fn values_schema_refuses_bad_values() {
    let Some(env) = env() else { return };
    let cases = [
        ("webhook.failurePolicy=Sometimes", "failurePolicy"),
        ("operator.replicas=0", "replicas"),
        ("operator.replica=2", "replica"),
        ("webhook.certificate.mode=manual", "mode"),
        ("sidecar.adminPort=70000", "adminPort"),
        ("sidecar.resources.requests.cpu=lots", "cpu"),
        ("operator.image.pullPolicy=Sometimes", "pullPolicy"),
    ];
    for (set, field) in cases {
        for command in ["template", "lint"] {
            let args = match command {
                "template" => vec!["template", "kproxy", CHART, "--set", set],
                _ => vec!["lint", CHART, "--set", set],
            };
            let out = helm(env, &args).unwrap();
            let text = output_text(&out);
            assert!(!out.status.success(), "helm {command} accepted --set {set}:\n{text}");
            assert!(
                text.contains("schema") && text.contains(field),
                "helm {command} --set {set} failed without naming the schema and {field}:\n{text}"
            );
        }
    }
}

#[test]
fn default_chart_is_accepted_by_the_api_server() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "chart-default");
    let accepted = assert_accepted(env, &ns.name, &[]);
    let kinds: BTreeSet<&str> = accepted.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "MutatingWebhookConfiguration",
        "PodDisruptionBudget",
        "ConfigMap",
    ] {
        assert!(kinds.contains(kind), "the default chart has no {kind}: {kinds:?}");
    }
    let deployment = find(&accepted, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--lease-name="), "no leader-election Lease: {args}");
    let webhook = &find(&accepted, "MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert!(webhook["matchConditions"].to_string().contains("kproxy.dev/inject"), "{webhook}");
    let dashboard = find(&accepted, "ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
}

#[test]
fn monitors_and_cert_manager_objects_are_accepted_by_the_api_server() {
    let Some(env) = env() else { return };
    install_prometheus_crds(env);
    let mut sets = MONITORS.to_vec();
    match install_cert_manager_crds(env) {
        Ok(()) => sets.push("webhook.certificate.mode=cert-manager"),
        Err(e) => eprintln!("cert-manager objects left out: its CRDs are not available here ({e:#})"),
    }
    let ns = Namespace::create(env, "chart-monitors");
    let accepted = assert_accepted(env, &ns.name, &sets);
    for kind in ["ServiceMonitor", "PodMonitor"] {
        let monitor = find(&accepted, kind);
        assert_eq!(monitor["metadata"]["labels"]["release"], "kube-prometheus-stack", "{kind} labels");
    }
    let pods = find(&accepted, "PodMonitor");
    assert_eq!(pods["spec"]["podMetricsEndpoints"][0]["port"], "kproxy-admin");
    if sets.contains(&"webhook.certificate.mode=cert-manager") {
        let certificate = find(&accepted, "Certificate");
        let webhook = find(&accepted, "MutatingWebhookConfiguration");
        let inject_from = webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str().unwrap();
        let expected = format!("{}/{}", ns.name, certificate["metadata"]["name"].as_str().unwrap());
        assert_eq!(inject_from, expected, "the CA is injected from another Certificate");
        find(&accepted, "Issuer");
    }
}

#[test]
fn chart_carries_the_generated_crd() {
    let root = workspace_root();
    let generated = root.join("crds/kafkaproxypolicies.yaml");
    let carried = root.join(CHART).join("crds/kafkaproxypolicies.yaml");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    assert!(
        read(&generated) == read(&carried),
        "{} differs from {}: run `make chart-crds`",
        carried.display(),
        generated.display()
    );
}

/// Every metric the dashboard queries is one the sidecar exports, so no panel stays empty after a rename.
#[test]
fn dashboard_queries_only_metrics_the_sidecar_exports() {
    let root = workspace_root();
    let dashboard = std::fs::read_to_string(root.join(CHART).join("dashboards/kproxy.json")).unwrap();
    let _: Value = serde_json::from_str(&dashboard).expect("the dashboard is valid JSON");
    let mut sources = String::new();
    let mut dirs = vec![root.join("sidecar")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let metrics: BTreeSet<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("kproxy_"))
        .map(|w| w.trim_end_matches("_bucket").trim_end_matches("_count").trim_end_matches("_sum"))
        .collect();
    let missing: Vec<&&str> = metrics.iter().filter(|m| !sources.contains(&format!("\"{m}\""))).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics the sidecar does not export: {missing:?}");
}

fn pod_manifest(namespace: &str, name: &str, annotations: &[(&str, &str)]) -> String {
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
fn create_pod(env: &Env, namespace: &str, annotations: &[(&str, &str)]) -> Result<Value, String> {
    let manifest = pod_manifest(namespace, &unique("pod"), annotations);
    let out = kubectl_stdin(env, &["create", "-o", "json", "-f", "-"], &manifest).map_err(|e| format!("{e:#}"))?;
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    } else {
        Err(output_text(&out))
    }
}

/// Deletes the test's MutatingWebhookConfiguration however the test ends.
struct WebhookConfiguration<'a> {
    env: &'a Env,
    name: String,
}

impl Drop for WebhookConfiguration<'_> {
    fn drop(&mut self) {
        let _ = self.env.kubectl(&["delete", "mutatingwebhookconfiguration", &self.name, "--ignore-not-found"]);
    }
}

/// The chart's webhook registered for real (scoped to one namespace, with no operator behind it): pods that did
/// not opt in are admitted without the webhook being called; opted-in pods follow the configured failurePolicy.
#[test]
fn only_opted_in_pods_reach_the_webhook() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "chart-webhook");
    // Pods need the namespace's default ServiceAccount, which only a running controller-manager would create.
    let _ = env.kubectl(&["-n", &ns.name, "create", "serviceaccount", "default"]);
    let release = unique("kpw");
    let scope = format!("webhook.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={}", ns.name);
    let register = |policy: &str| {
        let set = format!("webhook.failurePolicy={policy}");
        let extra = ["--show-only", "templates/mutatingwebhook.yaml"];
        let manifest =
            render(env, &release, &ns.name, &[&scope, "webhook.namespaceSelector.matchExpressions=null", &set], &extra)
                .unwrap();
        let applied = apply(env, &manifest, false).unwrap();
        find(&applied, "MutatingWebhookConfiguration")["metadata"]["name"].as_str().unwrap().to_string()
    };
    let _registered = WebhookConfiguration { env, name: register("Fail") };

    // The Service the webhook names does not exist, so every call fails without traffic leaving the API server.
    let opted_in = [("kproxy.dev/inject", "true")];
    let refusal =
        wait_for(
            "the webhook to be active",
            Duration::from_secs(30),
            || Ok(create_pod(env, &ns.name, &opted_in).err()),
        )
        .unwrap();
    assert!(refusal.contains("inject.kproxy.dev"), "refused, but not by the kproxy webhook: {refusal}");
    for annotations in
        [&[][..], &[("kproxy.dev/inject", "false")], &[("kproxy.dev/inject", "true"), ("kproxy.dev/injected", "p")]]
    {
        create_pod(env, &ns.name, annotations)
            .unwrap_or_else(|e| panic!("a pod with annotations {annotations:?} waited on the webhook: {e}"));
    }

    register("Ignore");
    let pod = wait_for("failurePolicy Ignore to apply", Duration::from_secs(30), || {
        Ok(create_pod(env, &ns.name, &opted_in).ok())
    })
    .unwrap();
    assert_eq!(pod["spec"]["containers"].as_array().map(Vec::len), Some(1), "the pod changed without a webhook: {pod}");
}

/// The policy NOTES.txt tells a new user to apply is one the CRD accepts.
#[test]
fn notes_example_policy_is_accepted() {
    let Some(env) = env() else { return };
    let crd = workspace_root().join("crds/kafkaproxypolicies.yaml");
    install_crds(env, crd.to_str().unwrap(), &["kafkaproxypolicies.kproxy.dev"]).unwrap();
    let ns = Namespace::create(env, "chart-notes");
    let out = helm(env, &["install", "kproxy", CHART, "--namespace", &ns.name, "--dry-run=client"]).unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "helm install --dry-run failed:\n{text}");
    let notes = &text[text.find("NOTES:").expect("helm printed no NOTES")..];
    let start =
        notes.find("kubectl apply -f -\n").expect("NOTES show no policy to apply") + "kubectl apply -f -\n".len();
    let len = notes[start..].find("\n  POLICY").expect("the NOTES policy has no end");
    let policy: String = notes[start..start + len]
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect::<String>()
        .replace("namespace: shop", &format!("namespace: {}", ns.name));
    let out = kubectl_stdin(env, &["apply", "--dry-run=server", "-f", "-"], &policy).unwrap();
    assert!(out.status.success(), "the NOTES policy is refused:\n{policy}\n{}", output_text(&out));
}

/// Every flag the chart's Deployment passes is one the operator binary accepts, in both certificate modes, so the
/// chart cannot ship a Deployment whose pods exit on an unknown flag.
#[test]
fn operator_accepts_every_flag_the_chart_passes() {
    let Some(env) = env() else { return };
    let help = env.run(std::process::Command::new(binary("kproxy-operator")).arg("--help"), Duration::from_secs(30));
    let help = String::from_utf8_lossy(&help.unwrap().stdout).into_owned();
    for sets in [&[][..], &["webhook.certificate.mode=cert-manager", "operator.watchNamespace=shop"]] {
        let manifest =
            render(env, "kproxy", "kproxy-system", sets, &["--show-only", "templates/deployment.yaml"]).unwrap();
        let flags: BTreeSet<&str> = manifest
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- --"))
            .map(|f| f.split('=').next().unwrap_or(f))
            .collect();
        assert!(flags.len() > 5, "no operator flags found in:\n{manifest}");
        let unknown: Vec<&&str> = flags
            .iter()
            .filter(|f| !help.contains(&format!("--{f} ")) && !help.contains(&format!("--{f}\n")))
            .collect();
        assert!(unknown.is_empty(), "the chart passes flags kproxy-operator does not know: {unknown:?}\n{help}");
    }
}
