//! Every file in `examples/` against the real API server: Secrets and the Deployment are stored as written, each
//! policy is rendered by a real operator into its ConfigMap with Ready=True and then deleted (its ConfigMap goes
//! with it), and the cert-manager values render a chart the API server accepts with cert-manager's own CRDs.

use std::collections::BTreeSet;
use std::time::Duration;

use kproxy_e2e::operator::{Operator, OperatorOptions, install_crd};
use kproxy_e2e::{env, unique, wait_for, workspace_root};

use super::support::*;

/// The policies the examples define, by name.
const POLICIES: &[&str] = &["billing", "checkout", "orders", "payments", "payments-mtls", "reporting"];

fn example_files() -> Vec<std::path::PathBuf> {
    let dir = workspace_root().join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_is_stored_and_every_example_policy_is_rendered() {
    let Some(env) = env() else { return };
    install_crd(env).unwrap();
    let ns = Namespace::create(env, "examples");
    let _operator = Operator::start(env, &OperatorOptions::new(&ns.name, &unique("examples-op"))).unwrap();
    // The Secrets the examples expect to exist already (made from the user's own files; see each example's
    // comments): the policies are Ready only when every Secret and key they name is there.
    let secrets = [
        ("kafka-ca", "generic", &["--from-literal=ca.crt=ca"][..]),
        ("east-ca", "generic", &["--from-literal=ca.crt=ca"][..]),
        ("payments-kafka", "generic", &["--from-literal=username=payments", "--from-literal=password=p"][..]),
        (
            "payments-kafka-client",
            "generic",
            &["--type=kubernetes.io/tls", "--from-literal=tls.crt=c", "--from-literal=tls.key=k"][..],
        ),
    ];
    for (name, kind, data) in secrets {
        let mut args = vec!["create", "secret", kind, name, "-n", &ns.name];
        args.extend(data);
        env.kubectl(&args).unwrap();
    }
    let mut policies = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    for file in example_files().iter().filter(|f| !f.to_string_lossy().ends_with("-values.yaml")) {
        let text =
            std::fs::read_to_string(file).unwrap().replace("namespace: shop", &format!("namespace: {}", ns.name));
        let objects = apply(env, &text, false).unwrap_or_else(|e| panic!("{}: {e:#}", file.display()));
        for o in &objects {
            let (kind, name) =
                (o["kind"].as_str().unwrap_or_default(), o["metadata"]["name"].as_str().unwrap_or_default());
            kinds.insert(kind.to_string());
            if kind == "KafkaProxyPolicy" {
                policies.insert(name.to_string());
            }
        }
    }
    assert_eq!(kinds, ["Deployment", "KafkaProxyPolicy", "Secret"].map(String::from).into());
    assert_eq!(policies, POLICIES.iter().map(|p| p.to_string()).collect(), "the examples' policies");
    for policy in &policies {
        let status = wait_for(&format!("policy {policy} rendered and Ready"), Duration::from_secs(90), || {
            let out = env.kubectl(&[
                "get", "kpp", policy, "-n", &ns.name, "-o",
                "jsonpath={.metadata.generation} {.status.observedGeneration} {.status.conditions[?(@.type==\"Ready\")].status} {.status.configMapName}",
            ])?;
            let f: Vec<&str> = out.split_whitespace().collect();
            Ok((f.len() == 4 && f[0] == f[1] && f[2] == "True").then(|| f[3].to_string()))
        })
        .unwrap();
        let rendered = env
            .kubectl(&["get", "configmap", &status, "-n", &ns.name, "-o", "jsonpath={.data.config\\.yaml}"])
            .unwrap();
        assert!(
            rendered.starts_with("schemaVersion: '1.0'") && rendered.contains(&format!("policy: {}/{policy}", ns.name)),
            "{policy}'s ConfigMap {status}:\n{rendered}"
        );
        env.kubectl(&["delete", "kpp", policy, "-n", &ns.name]).unwrap();
        wait_for(&format!("{status} collected with its policy"), Duration::from_secs(60), || {
            let left =
                env.kubectl(&["get", "configmap", &status, "-n", &ns.name, "--ignore-not-found", "-o", "name"])?;
            Ok(left.trim().is_empty().then_some(()))
        })
        .unwrap();
    }
    eprintln!("examples: {} files, policies rendered and deleted: {policies:?}", example_files().len());
}

#[test]
fn cert_manager_values_example_renders_a_chart_the_api_server_accepts() {
    let Some(env) = env() else { return };
    let values = workspace_root().join("examples/cert-manager-values.yaml");
    let values = values.to_str().unwrap();
    let ns = Namespace::create(env, "examples-cm");
    let manifest = render(env, "kproxy", &ns.name, &[], &["-f", values]).unwrap();
    let objects = rendered_objects(&manifest);
    assert!(objects.iter().any(|(kind, _)| kind == "Certificate"), "no Certificate in {objects:?}");
    assert!(manifest.contains("name: platform-ca") && manifest.contains("--webhook-cert-dir="), "{manifest}");
    install_prometheus_crds(env);
    match install_cert_manager_crds(env) {
        Ok(()) => {
            let accepted = apply(env, &manifest, true).unwrap();
            assert!(accepted.iter().any(|o| o["kind"] == "Certificate"));
        }
        Err(e) => panic!("cert-manager's CRDs are needed to check the example against the API server: {e:#}"),
    }
}
