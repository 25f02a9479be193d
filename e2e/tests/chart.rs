//! The Helm chart as a platform team meets it: `helm lint` is clean, the values schema refuses bad values, the real
//! kube-apiserver accepts every object the chart renders (with the Prometheus Operator's and cert-manager's CRDs
//! installed from their Go modules), and the webhook it registers is only ever called for opted-in pods.

#[path = "chart/examples.rs"]
mod examples;
#[path = "chart/operator.rs"]
mod operator;
#[path = "chart/packaging.rs"]
mod packaging;
#[path = "chart/rbac.rs"]
mod rbac;
#[path = "chart/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use kproxy_e2e::{env, unique, wait_for, workspace_root};
use support::*;

#[test]
fn helm_lint_is_clean() {
    let Some(env) = env() else { return };
    let monitors: Vec<String> = MONITORS.iter().flat_map(|s| ["--set".to_string(), s.to_string()]).collect();
    let cert_manager = ["--set".to_string(), "webhook.certificate.mode=cert-manager".to_string()];
    let sidecar: Vec<String> = SIDECAR_VALUES.iter().flat_map(|s| ["--set".to_string(), s.to_string()]).collect();
    for extra in [vec![], monitors.clone(), [monitors, cert_manager.to_vec()].concat(), sidecar] {
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
        ("sidecar.logFormat=xml", "logFormat"),
        ("sidecar.memoryBudget=lots", "memoryBudget"),
        ("sidecar.timeouts.idleSeconds=0", "idleSeconds"),
        ("sidecar.upstreamConnections.perBroker=0", "perBroker"),
        ("sidecar.extraArgs={verbose}", "extraArgs"),
        ("sidecar.extraEnv.1X=a", "1X"),
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
        "NetworkPolicy",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert!(kinds.contains(kind), "the default chart has no {kind}: {kinds:?}");
    }
    let deployment = find(&accepted, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--lease-name="), "no leader-election Lease: {args}");
    let webhook = &find(&accepted, "MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert_eq!(webhook["timeoutSeconds"], 5);
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
    assert_eq!(pods["spec"]["selector"]["matchLabels"]["kproxy.dev/injected"], "true", "{pods}");
    assert_eq!(pods["spec"]["podTargetLabels"], serde_json::json!(["app", "app.kubernetes.io/name"]), "{pods}");
    if sets.contains(&"webhook.certificate.mode=cert-manager") {
        let certificate = find(&accepted, "Certificate");
        let webhook = find(&accepted, "MutatingWebhookConfiguration");
        let inject_from = webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str().unwrap();
        let expected = format!("{}/{}", ns.name, certificate["metadata"]["name"].as_str().unwrap());
        assert_eq!(inject_from, expected, "the CA is injected from another Certificate");
        find(&accepted, "Issuer");
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

/// In namespaced mode the webhook is only called for the watched namespaces (the operator has no policies, and
/// no RBAC, anywhere else), on top of the configured namespaceSelector; the API server accepts the result.
#[test]
fn namespaced_mode_limits_the_webhook_to_the_watched_namespaces() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "chart-nsmode");
    let sets = ["operator.watchNamespaces={shop,billing}"];
    let extra = ["--show-only", "templates/mutatingwebhook.yaml"];
    let accepted = apply(env, &render(env, &unique("kpm"), &ns.name, &sets, &extra).unwrap(), true).unwrap();
    let selector = &find(&accepted, "MutatingWebhookConfiguration")["webhooks"][0]["namespaceSelector"];
    let expressions = selector["matchExpressions"].as_array().unwrap();
    let watched = expressions.iter().find(|e| e["operator"] == "In").unwrap_or_else(|| panic!("{selector}"));
    assert_eq!(watched["values"], serde_json::json!(["shop", "billing"]), "{selector}");
    assert!(expressions.iter().any(|e| e["operator"] == "NotIn"), "the configured selector was dropped: {selector}");
}
