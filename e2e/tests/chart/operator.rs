//! The chart and the real operator binary together: every flag the chart passes is one it knows, and the operator
//! runs under the chart's ServiceAccount with exactly the chart's RBAC.

use std::collections::BTreeSet;
use std::time::Duration;

use kproxy_e2e::{binary, env, free_port, unique, wait_for, workspace_root};
use serde_json::Value;

use super::support::*;

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

/// The real operator, run with the chart's flags as the chart's ServiceAccount (a token, not the admin): its
/// RBAC is enough to generate and share the webhook certificate, publish the CA into the chart's webhook
/// configuration, hold the Lease, and render a policy into its ConfigMap with a Ready status (past the chart's
/// ConfigMap admission policy), without reading the Secret the policy names.
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
    for template in ["rbac", "admissionpolicy", "serviceaccount", "mutatingwebhook", "deployment"] {
        extra.extend(["--show-only".to_string(), format!("templates/{template}.yaml")]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let manifest = render(env, &release, &ns.name, &sets, &extra).unwrap();
    let (objects, deployment): (Vec<&str>, Vec<&str>) =
        manifest.split("\n---").partition(|doc| !doc.contains("\nkind: Deployment"));
    let applied = apply(env, &objects.join("\n---"), false).unwrap();
    let webhook = find(&applied, "MutatingWebhookConfiguration")["metadata"]["name"].as_str().unwrap().to_string();
    let _cleanup = ClusterScoped { env, objects: cluster_scoped(&applied) };
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

    // The policy names a Secret: the operator may not read it, and says so in the Ready message.
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
    let policy_status = wait_for("the policy to be Ready", Duration::from_secs(60), || {
        let policy: Value =
            serde_json::from_str(&env.kubectl(&["-n", &ns.name, "get", "kpp", "payments", "-o", "json"])?)?;
        let ready = policy["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        Ok(ready.then_some(policy))
    })
    .unwrap_or_else(|e| panic!("{e:#}\noperator log:\n{}", log_text()));
    let ready =
        policy_status["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(message.contains("Secrets not checked"), "{message}");
    let config_map = policy_status["status"]["configMapName"].as_str().unwrap_or_default().to_string();
    env.kubectl(&["-n", &ns.name, "get", "configmap", &config_map]).unwrap();
    let _ = std::fs::remove_file(&kubeconfig);
    let forbidden: Vec<String> = log_text().lines().filter(|l| l.contains("forbidden")).map(str::to_owned).collect();
    assert!(forbidden.is_empty(), "the operator was refused by the chart's RBAC:\n{}", forbidden.join("\n"));
}

/// The chart's sidecar defaults as the operator takes them (its own flag parser, from the rendered Deployment) and
/// injects them into a pod, run by the real sidecar against the real broker: the budget it reports, its JSON log
/// lines and every flag accepted. Values the schema lets through but the sidecar could not use stop the operator
/// at start, naming the flag and the value.
#[test]
fn chart_sidecar_defaults_reach_the_injected_sidecar() {
    use clap::Parser;
    use kproxy_webhook::cli::WebhookArgs;

    /// The webhook's part of the operator's flags; the operator's own (lease, namespaces...) are left out.
    #[derive(Parser)]
    struct Operator {
        #[command(flatten)]
        webhook: WebhookArgs,
    }
    let Some(env) = env() else { return };
    let manifest =
        render(env, "kproxy", "kproxy-system", SIDECAR_VALUES, &["--show-only", "templates/deployment.yaml"]).unwrap();
    let flags: Vec<String> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|f| f.trim_matches('"').to_string())
        .filter(|f| {
            let name = f.trim_start_matches('-').split('=').next().unwrap_or_default();
            <Operator as clap::CommandFactory>::command().get_arguments().any(|a| a.get_long() == Some(name))
        })
        .collect();
    assert!(flags.iter().any(|f| f.starts_with("--sidecar-log-level=")), "{flags:?}");
    let parse = |flags: &[String]| {
        let args = std::iter::once("kproxy-operator".to_string()).chain(flags.iter().cloned());
        Operator::try_parse_from(args).unwrap().webhook.config("kproxy-system", None)
    };
    let inject = parse(&flags).unwrap().unwrap().inject;
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "app", "annotations": {"kproxy.dev/inject": "true"}},
        "spec": {"containers": [{"name": "app", "image": "app"}]}
    }))
    .unwrap();
    let policy: kproxy_api::crd::KafkaProxyPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "kproxy.dev/v1alpha1", "kind": "KafkaProxyPolicy",
        "metadata": {"name": "shop", "namespace": "shop"},
        "spec": {"podSelector": {}, "clusters": [{"name": "east", "bootstrapServers": ["127.0.0.1:9093"]}]}
    }))
    .unwrap();
    let injected = kproxy_webhook::inject::inject(&pod, &policy, &inject).unwrap().unwrap();
    let sidecar = injected.spec.unwrap().init_containers.unwrap().remove(0);
    let args = sidecar.args.unwrap_or_default();
    let env_of = |name: &str| sidecar.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(env_of("RUST_LOG").as_deref(), Some("kproxy=debug,info"));
    assert_eq!(env_of("TZ").as_deref(), Some("UTC"));
    // The pod's wiring (config, Secrets, admin and metrics addresses) is the test's own; the rest is the chart's.
    let wiring = ["--config", "--secrets-dir", "--admin-addr", "--metrics-addr", "--config-map"];
    let mut chart_args = Vec::new();
    let mut skip = false;
    for a in &args {
        if std::mem::take(&mut skip) {
            continue;
        }
        skip = wiring.contains(&a.as_str());
        if !skip {
            chart_args.push(a.as_str());
        }
    }
    assert_eq!(
        chart_args,
        [
            "--log-json",
            "--memory-budget-bytes=100663296",
            "--connection-memory-bytes=8388608",
            "--idle-timeout-seconds=120",
            "--frame-timeout-seconds=15",
            "--request-timeout-seconds=90",
            "--upstream-connections=2",
            "--upstream-long-poll-connections=4",
            "--max-in-flight=32",
            // From the CPU request (50m, no limit): one thread.
            "--worker-threads=1",
        ]
    );
    let config = kproxy_e2e::sidecar::config("east", env.kafka_east());
    let started = std::time::Instant::now();
    let running = kproxy_e2e::sidecar::Sidecar::start(env, &config, &chart_args).unwrap();
    eprintln!("sidecar ready in {:.1?}", started.elapsed());
    assert_eq!(running.metric("kproxy_memory_budget_bytes", &[]).unwrap(), 100663296.0);
    let log = running.log_text();
    let first = log.lines().next().unwrap_or_default();
    assert!(first.starts_with('{') && first.contains("\"level\""), "JSON log lines: {first}");
    eprintln!("a sidecar run with the chart's defaults: {} args, first log line {first}", chart_args.len());

    for (bad, named) in [
        ("--sidecar-log-level=kproxy=loud", "--sidecar-log-level=kproxy=loud"),
        ("--sidecar-extra-arg=--admin-addr=0.0.0.0:1", "--admin-addr is set by the webhook"),
        ("--sidecar-connection-memory=1Gi", "--sidecar-connection-memory=1Gi: more than the memory budget"),
    ] {
        let name = bad.split('=').next().unwrap_or_default();
        let mut with_bad: Vec<String> =
            flags.iter().filter(|f| f.split('=').next() != Some(name) || name.ends_with("-arg")).cloned().collect();
        with_bad.push(bad.to_string());
        let err = parse(&with_bad).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(named), "{bad}: {err}");
    }
}
