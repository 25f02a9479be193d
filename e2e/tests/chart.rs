//! The Helm chart as a platform team meets it: `helm lint` is clean, the values schema refuses bad values, the real
//! kube-apiserver accepts every object the chart renders (with the Prometheus Operator's and cert-manager's CRDs
//! installed from their Go modules), and the webhook it registers is only ever called for opted-in pods.

#[path = "chart/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use kproxy_e2e::{binary, env, free_port, run_with_timeout, unique, wait_for, workspace_root};
use serde_json::Value;
use support::*;

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

/// `helm upgrade` re-renders the webhook configuration; it carries the caBundle the operator wrote, so even an
/// upgrade that replaces the object (`--force`) does not refuse opted-in pods until the operator writes it again.
#[test]
fn upgrade_keeps_the_ca_bundle_the_operator_wrote() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "chart-upgrade");
    let release = unique("kpu");
    let scope = format!("webhook.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={}", ns.name);
    let sets = [scope.as_str(), "webhook.namespaceSelector.matchExpressions=null", "webhook.failurePolicy=Ignore"];
    // --dry-run=server lets the chart look up the live object, as `helm upgrade` does.
    let extra = ["--show-only", "templates/mutatingwebhook.yaml", "--dry-run=server"];
    let first = apply(env, &render(env, &release, &ns.name, &sets, &extra).unwrap(), false).unwrap();
    let name = find(&first, "MutatingWebhookConfiguration")["metadata"]["name"].as_str().unwrap().to_string();
    let _registered = WebhookConfiguration { env, name: name.clone() };
    assert!(first[0]["webhooks"][0]["clientConfig"]["caBundle"].is_null(), "a fresh install has no caBundle yet");

    // What the operator does once its CA exists (any real PEM CA serves the purpose).
    let bundle = env.run(env.command("base64").args(["-w0", env.var("KPROXY_KAFKA_CA")]), Duration::from_secs(10));
    let bundle = String::from_utf8(bundle.unwrap().stdout).unwrap();
    let patch = format!(r#"[{{"op":"add","path":"/webhooks/0/clientConfig/caBundle","value":"{bundle}"}}]"#);
    env.kubectl(&["patch", "mutatingwebhookconfiguration", &name, "--type=json", "-p", &patch]).unwrap();

    let upgraded = render(env, &release, &ns.name, &sets, &extra).unwrap();
    assert!(
        upgraded.contains(&format!("caBundle: {bundle}")),
        "the re-rendered configuration has no caBundle:\n{upgraded}"
    );
    let after = apply(env, &upgraded, false).unwrap();
    assert_eq!(
        after[0]["webhooks"][0]["clientConfig"]["caBundle"],
        bundle.as_str(),
        "the upgrade dropped the caBundle"
    );
}

/// The chart's RBAC, applied for real and asked through impersonation: the operator's ServiceAccount may do what
/// the controller, the leader election and the webhook certificate need, and nothing else.
#[test]
fn operator_rbac_is_least_privilege() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "chart-rbac");
    let release = unique("kpr");
    let extra = ["--show-only", "templates/rbac.yaml", "--show-only", "templates/serviceaccount.yaml"];
    let applied = apply(env, &render(env, &release, &ns.name, &[], &extra).unwrap(), false).unwrap();
    let cluster_role = find(&applied, "ClusterRole")["metadata"]["name"].as_str().unwrap().to_string();
    let _cleanup = ClusterScoped {
        env,
        objects: vec![format!("clusterrole/{cluster_role}"), format!("clusterrolebinding/{cluster_role}")],
    };
    let sa = find(&applied, "ServiceAccount")["metadata"]["name"].as_str().unwrap().to_string();
    let user = format!("system:serviceaccount:{}:{sa}", ns.name);
    let webhook = format!("mutatingwebhookconfigurations/{release}-kproxy-injector");
    let lease = format!("leases.coordination.k8s.io/{release}-kproxy-leader");
    let secret = format!("secrets/{release}-kproxy-webhook-tls");
    let can = |args: &[&str]| -> bool {
        let mut cmd = env.command("kubectl");
        cmd.args(["auth", "can-i", "--as", &user]).args(args);
        let out = run_with_timeout(&mut cmd, None, Duration::from_secs(30)).unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    let other = "default";
    let allowed: Vec<Vec<&str>> = vec![
        vec!["watch", "kafkaproxypolicies.kproxy.dev", "--all-namespaces"],
        vec!["patch", "kafkaproxypolicies.kproxy.dev", "--subresource=status", "-n", other],
        vec!["create", "configmaps", "-n", other],
        vec!["patch", "configmaps", "-n", other],
        vec!["delete", "configmaps", "-n", other],
        vec!["create", "events.events.k8s.io", "-n", other],
        vec!["update", &webhook],
        vec!["create", "leases.coordination.k8s.io", "-n", &ns.name],
        vec!["update", &lease, "-n", &ns.name],
        vec!["get", "secrets", "-n", other],
        vec!["watch", "secrets", "--all-namespaces"],
        vec!["create", "secrets", "-n", &ns.name],
        vec!["update", &secret, "-n", &ns.name],
    ];
    let refused: Vec<Vec<&str>> = vec![
        vec!["update", "kafkaproxypolicies.kproxy.dev", "-n", other],
        vec!["create", "secrets", "-n", other],
        vec!["update", "secrets", "-n", other],
        vec!["delete", "secrets", "-n", other],
        vec!["update", "secrets/some-application-secret", "-n", &ns.name],
        vec!["delete", &secret, "-n", &ns.name],
        vec!["update", "mutatingwebhookconfigurations/someone-elses-webhook"],
        vec!["delete", &webhook],
        vec!["create", "mutatingwebhookconfigurations"],
        vec!["update", &lease, "-n", other],
        vec!["create", "pods", "-n", other],
        vec!["update", "configmaps", "-n", other],
        vec!["get", "nodes"],
    ];
    let too_little: Vec<String> = allowed.iter().filter(|a| !can(a)).map(|a| a.join(" ")).collect();
    let too_much: Vec<String> = refused.iter().filter(|a| can(a)).map(|a| a.join(" ")).collect();
    assert!(too_little.is_empty(), "the operator may not: {too_little:?}");
    assert!(too_much.is_empty(), "the operator may, but should not: {too_much:?}");
}

/// The real operator, run with the chart's flags as the chart's ServiceAccount (a token, not the admin): its
/// RBAC is enough to generate and share the webhook certificate, publish the CA into the chart's webhook
/// configuration, hold the Lease, and render a policy into its ConfigMap with a Ready status.
#[test]
fn operator_runs_under_the_charts_service_account() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "chart-sa");
    let release = unique("kpo");
    let scope = format!("webhook.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={}", ns.name);
    let watch = format!("operator.watchNamespace={}", ns.name);
    let sets =
        [scope.as_str(), "webhook.namespaceSelector.matchExpressions=null", "webhook.failurePolicy=Ignore", &watch];
    let mut extra = vec![];
    for template in ["rbac", "serviceaccount", "mutatingwebhook", "deployment"] {
        extra.extend(["--show-only".to_string(), format!("templates/{template}.yaml")]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let manifest = render(env, &release, &ns.name, &sets, &extra).unwrap();
    let (objects, deployment): (Vec<&str>, Vec<&str>) =
        manifest.split("\n---").partition(|doc| !doc.contains("\nkind: Deployment"));
    let applied = apply(env, &objects.join("\n---"), false).unwrap();
    let webhook = find(&applied, "MutatingWebhookConfiguration")["metadata"]["name"].as_str().unwrap().to_string();
    let role = find(&applied, "ClusterRole")["metadata"]["name"].as_str().unwrap().to_string();
    let _cleanup = ClusterScoped {
        env,
        objects: vec![
            format!("mutatingwebhookconfiguration/{webhook}"),
            format!("clusterrole/{role}"),
            format!("clusterrolebinding/{role}"),
        ],
    };
    let sa = find(&applied, "ServiceAccount")["metadata"]["name"].as_str().unwrap().to_string();
    let kubeconfig = std::env::temp_dir().join(format!("{}.kubeconfig", ns.name));
    service_account_kubeconfig(env, &ns.name, &sa, &kubeconfig).unwrap();

    let admin_port = free_port();
    let args: Vec<String> = deployment_args(deployment.concat().as_str(), &[("POD_NAMESPACE", &ns.name)])
        .into_iter()
        .map(|a| match a.split_once('=') {
            Some(("--admin-addr", _)) => format!("--admin-addr=127.0.0.1:{admin_port}"),
            Some(("--webhook-addr", _)) => format!("--webhook-addr=127.0.0.1:{}", free_port()),
            _ => a,
        })
        .collect();
    let log = std::path::PathBuf::from(env.log_dir()).join(format!("operator-{}.log", ns.name));
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = env.command(binary("kproxy-operator").to_str().unwrap());
    cmd.args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", &ns.name)
        .env("POD_NAME", format!("{release}-0"))
        .env("RUST_LOG", "info,kube=warn")
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let _operator = Process(cmd.spawn().unwrap());
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    let ca = wait_for("the operator to publish its CA", Duration::from_secs(60), || {
        let config: Value =
            serde_json::from_str(&env.kubectl(&["get", "mutatingwebhookconfiguration", &webhook, "-o", "json"])?)?;
        Ok(config["webhooks"][0]["clientConfig"]["caBundle"].as_str().filter(|b| !b.is_empty()).map(str::to_owned))
    })
    .unwrap_or_else(|e| panic!("{e:#}\noperator log:\n{}", log_text()));
    let secret = env
        .kubectl(&["-n", &ns.name, "get", "secret", &format!("{release}-kproxy-webhook-tls"), "-o", "json"])
        .unwrap();
    let secret: Value = serde_json::from_str(&secret).unwrap();
    assert_eq!(secret["data"]["ca.crt"].as_str(), Some(ca.as_str()), "the published CA is not the shared Secret's");

    // The policy names a Secret, so the operator has to read it before calling the policy Ready.
    env.kubectl(&[
        "-n",
        &ns.name,
        "create",
        "secret",
        "generic",
        "payments-kafka",
        "--from-literal=username=u",
        "--from-literal=password=p",
    ])
    .unwrap();
    let policy = format!(
        "apiVersion: kproxy.dev/v1alpha1\nkind: KafkaProxyPolicy\nmetadata: {{name: payments, namespace: {}}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: payments}}}}\n  clusters:\n    - name: dc-east\n      \
         bootstrapServers: [\"{}\"]\n      sasl: {{mechanism: SCRAM-SHA-512, secretRef: {{name: payments-kafka}}}}\n  \
         defaultCluster: dc-east\n",
        ns.name,
        env.var("KPROXY_KAFKA_EAST_SASL")
    );
    let crd = workspace_root().join("crds/kafkaproxypolicies.yaml");
    install_crds(env, crd.to_str().unwrap(), &["kafkaproxypolicies.kproxy.dev"]).unwrap();
    env.kubectl_apply(&policy).unwrap();
    let config_map = wait_for("the policy to be Ready", Duration::from_secs(60), || {
        let policy: Value =
            serde_json::from_str(&env.kubectl(&["-n", &ns.name, "get", "kpp", "payments", "-o", "json"])?)?;
        let ready = policy["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        Ok(ready.then(|| policy["status"]["configMapName"].as_str().unwrap_or_default().to_string()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\noperator log:\n{}", log_text()));
    env.kubectl(&["-n", &ns.name, "get", "configmap", &config_map]).unwrap();
    let _ = std::fs::remove_file(&kubeconfig);
    let forbidden: Vec<String> = log_text().lines().filter(|l| l.contains("forbidden")).map(str::to_owned).collect();
    assert!(forbidden.is_empty(), "the operator was refused by the chart's RBAC:\n{}", forbidden.join("\n"));
}

/// The images build what CI builds: each Dockerfile's `cargo build` is the one `make test` runs, and the build
/// context keeps every workspace member and the lock file (cargo needs them all even for one package).
#[test]
fn images_build_what_ci_builds() {
    let root = workspace_root();
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("reading {p}: {e}"));
    let ci = read("scripts/test.sh");
    for (dockerfile, package) in [("Dockerfile.sidecar", "kproxy-sidecar"), ("Dockerfile.operator", "kproxy-operator")]
    {
        let text = read(dockerfile);
        let build = format!("cargo build --release --locked -p {package}");
        assert!(text.contains(&build), "{dockerfile} does not run `{build}`");
        assert!(
            ci.lines().any(|l| l.starts_with("cargo build --release --locked") && l.contains(&format!("-p {package}"))),
            "scripts/test.sh does not run the release build of {package} that {dockerfile} runs"
        );
        assert!(text.contains("USER 65532:65532"), "{dockerfile} does not run as the unprivileged user");
    }
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    let manifest = read("Cargo.toml");
    let members = manifest.lines().find_map(|l| l.strip_prefix("members = ")).expect("workspace members");
    let members: Vec<&str> =
        members.trim_matches(|c| c == '[' || c == ']').split(',').map(|m| m.trim().trim_matches('"')).collect();
    for needed in members.iter().copied().chain(["Cargo.toml", "Cargo.lock"]) {
        let top = needed.split('/').next().unwrap_or(needed);
        assert!(
            !ignored.iter().any(|i| i == needed || i == top),
            ".dockerignore leaves {needed} out of the build context"
        );
    }
}
