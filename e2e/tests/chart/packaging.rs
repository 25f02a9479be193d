//! Checks of the packaging that need no cluster: the chart carries the generated CRD, the dashboard queries real
//! metrics, and the images build what CI builds.

use std::collections::BTreeSet;
use std::path::Path;

use kproxy_e2e::workspace_root;
use serde_json::Value;

use super::support::CHART;

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

/// Every metric the dashboard queries is one the sidecar or the operator exports, so no panel stays empty after a
/// rename.
#[test]
fn dashboard_queries_only_metrics_kproxy_exports() {
    let root = workspace_root();
    let dashboard = std::fs::read_to_string(root.join(CHART).join("dashboards/kproxy.json")).unwrap();
    let _: Value = serde_json::from_str(&dashboard).expect("the dashboard is valid JSON");
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
    let metrics: BTreeSet<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("kproxy_"))
        .map(|w| w.trim_end_matches("_bucket").trim_end_matches("_count").trim_end_matches("_sum"))
        .collect();
    let missing: Vec<&&str> = metrics.iter().filter(|m| !sources.contains(&format!("\"{m}\""))).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics kproxy does not export: {missing:?}");
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
        assert!(
            text.contains(&format!("KPROXY_GIT_COMMIT=${{KPROXY_GIT_COMMIT}} {build}")),
            "{dockerfile} does not pass the commit kproxy_build_info reports"
        );
    }
    assert!(
        ci.contains("export KPROXY_GIT_COMMIT"),
        "scripts/test.sh does not set the commit kproxy_build_info reports"
    );
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
