//! The chart's alerting rules: the PrometheusRule renders only when enabled, the real kube-apiserver (with the
//! Prometheus Operator's CRDs) accepts it, promtool finds its rules valid and its unit tests
//! (`charts/kproxy/tests/alerts.test.yaml`) pass, and every metric a rule reads is one kproxy exports.

#[allow(dead_code)]
#[path = "chart/support.rs"]
mod support;

use std::collections::BTreeSet;

use kproxy_e2e::{env, run_with_timeout, workspace_root};
use support::*;

const RULE: &str = "templates/prometheusrule.yaml";
const TESTS: &str = "tests/alerts.test.yaml";

/// The alerts the rules must carry, one for each condition the on-call engineer is paged for.
const ALERTS: &[&str] = &[
    "KproxyWebhookCertificateExpiringSoon",
    "KproxyOperatorReconcileErrors",
    "KproxyConfigReloadRejected",
    "KproxyUpstreamClusterUnreachable",
    "KproxyRouteFailedOver",
    "KproxyConfigDrift",
    "KproxyClientsPausedOnMemoryBudget",
];

/// Every `.rs` file under the sidecar and operator, where metric names are registered as string literals.
fn metric_sources() -> String {
    let root = workspace_root();
    let mut sources = String::new();
    let mut dirs = vec![root.join("sidecar"), root.join("operator")];
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
    sources
}

fn promtool(env: &kproxy_e2e::Env, args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let mut cmd = env.command("promtool");
    cmd.args(args).current_dir(dir);
    let out = run_with_timeout(&mut cmd, None, std::time::Duration::from_secs(120)).unwrap();
    (out.status.success(), output_text(&out))
}

#[test]
fn prometheus_rule_is_off_by_default() {
    let Some(env) = env() else { return };
    let manifest = render(env, "kp", "kproxy", &[], &[]).unwrap();
    assert!(!manifest.contains("kind: PrometheusRule"), "a PrometheusRule renders without prometheusRule.enabled");
}

#[test]
fn alerting_rules_are_accepted_valid_and_unit_tested() {
    let Some(env) = env() else { return };
    install_crds(env, env.var("KPROXY_PROM_CRDS"), &["prometheusrules.monitoring.coreos.com"]).unwrap();
    let ns = Namespace::create(env, "chart-alerts");
    let sets = ["prometheusRule.enabled=true", "prometheusRule.additionalLabels.release=kube-prometheus-stack"];
    let manifest = render(env, "kp", &ns.name, &sets, &["--show-only", RULE]).unwrap();

    // Stored for real, so the API server validates it against the PrometheusRule schema.
    let accepted = apply(env, &manifest, false).unwrap();
    let rule = find(&accepted, "PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "kube-prometheus-stack", "additionalLabels: {rule}");
    assert_eq!(rule["metadata"]["namespace"], ns.name.as_str());

    // What Prometheus loads: the spec's groups, as the API server stored them (JSON is YAML to promtool).
    let groups = &rule["spec"]["groups"];
    let alerts: BTreeSet<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    assert_eq!(alerts, ALERTS.iter().copied().collect(), "the alerts the chart ships");

    let sources = metric_sources();
    let exprs: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["expr"].as_str().unwrap())
        .collect();
    let metrics: BTreeSet<&str> = exprs
        .iter()
        .flat_map(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("kproxy_"))
        .collect();
    let missing: Vec<&&str> = metrics.iter().filter(|m| !sources.contains(&format!("\"{m}\""))).collect();
    assert!(missing.is_empty(), "the rules read metrics kproxy does not export: {missing:?}");

    let dir = tempfile::tempdir().unwrap();
    let rules = serde_json::json!({ "groups": groups });
    std::fs::write(dir.path().join("rules.yaml"), serde_json::to_string_pretty(&rules).unwrap()).unwrap();
    std::fs::copy(workspace_root().join(CHART).join(TESTS), dir.path().join("alerts.test.yaml")).unwrap();

    let (ok, text) = promtool(env, &["check", "rules", "rules.yaml"], dir.path());
    assert!(ok, "promtool check rules failed:\n{text}");
    assert!(text.contains(&format!("SUCCESS: {} rules found", ALERTS.len())), "promtool check rules:\n{text}");
    let (ok, text) = promtool(env, &["test", "rules", "alerts.test.yaml"], dir.path());
    assert!(ok, "promtool test rules failed:\n{text}");
    assert!(text.contains("SUCCESS"), "promtool test rules:\n{text}");

    // Each alert has a unit test of its own, firing and silent.
    let tests = std::fs::read_to_string(workspace_root().join(CHART).join(TESTS)).unwrap();
    for alert in ALERTS {
        let evals = tests.matches(&format!("alertname: {alert}\n")).count();
        assert!(evals >= 2, "{alert} is evaluated {evals} times in {TESTS}; it needs a firing and a silent case");
    }
}
