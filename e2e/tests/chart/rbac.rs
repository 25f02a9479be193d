//! The chart's RBAC and ConfigMap admission policy, applied to the real API server and asked through
//! impersonation: the operator's ServiceAccount may do what it needs in each mode and nothing else, reads no
//! Secret anywhere (beyond its own certificate Secret, by name, when it generates it), and may write only the
//! ConfigMaps it labels as its own.

use std::time::Duration;

use kproxy_e2e::{Env, env, run_with_timeout, unique, wait_for};

use super::support::*;

/// Impersonated `kubectl auth can-i` as `user`.
fn can(env: &Env, user: &str, args: &[&str]) -> bool {
    let mut cmd = env.command("kubectl");
    cmd.args(["auth", "can-i", "--as", user]).args(args);
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(30)).unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

/// Asks every question of both lists and fails naming all the wrong answers at once.
fn assert_matrix(env: &Env, user: &str, allowed: &[Vec<&str>], refused: &[Vec<&str>]) {
    let too_little: Vec<String> = allowed.iter().filter(|a| !can(env, user, a)).map(|a| a.join(" ")).collect();
    let too_much: Vec<String> = refused.iter().filter(|a| can(env, user, a)).map(|a| a.join(" ")).collect();
    assert!(too_little.is_empty(), "the operator may not: {too_little:?}");
    assert!(too_much.is_empty(), "the operator may, but should not: {too_much:?}");
}

/// The chart's RBAC objects applied; the cluster-scoped ones are deleted on drop.
struct Installed<'a> {
    user: String,
    _cleanup: ClusterScoped<'a>,
}

fn install<'a>(env: &'a Env, release: &str, ns: &str, sets: &[&str], templates: &[&str]) -> Installed<'a> {
    let mut extra = vec![];
    for template in templates {
        extra.extend(["--show-only".to_string(), format!("templates/{template}.yaml")]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let applied = apply(env, &render(env, release, ns, sets, &extra).unwrap(), false).unwrap();
    let objects = cluster_scoped(&applied);
    let sa = find(&applied, "ServiceAccount")["metadata"]["name"].as_str().unwrap().to_string();
    Installed { user: format!("system:serviceaccount:{ns}:{sa}"), _cleanup: ClusterScoped { env, objects } }
}

/// Secret reads the operator never has, in any mode, anywhere.
fn secret_reads<'a>(namespaces: &[&'a str]) -> Vec<Vec<&'a str>> {
    let mut out = vec![vec!["watch", "secrets", "--all-namespaces"], vec!["list", "secrets", "--all-namespaces"]];
    for ns in namespaces {
        for verb in ["get", "list", "watch"] {
            out.push(vec![verb, "secrets", "-n", ns]);
        }
        out.push(vec!["get", "secrets/some-application-secret", "-n", ns]);
    }
    out
}

/// Cluster-wide mode with generated certificates (the defaults).
#[test]
fn cluster_wide_rbac_is_least_privilege() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "chart-rbac");
    let release = unique("kpr");
    let installed = install(env, &release, &ns.name, &[], &["rbac", "serviceaccount"]);
    let webhook = format!("mutatingwebhookconfigurations/{release}-kproxy-injector");
    let lease = format!("leases.coordination.k8s.io/{release}-kproxy-leader");
    let secret = format!("secrets/{release}-kproxy-webhook-tls");
    let other = "default";
    let allowed: Vec<Vec<&str>> = vec![
        vec!["watch", "kafkaproxypolicies.kproxy.dev", "--all-namespaces"],
        vec!["patch", "kafkaproxypolicies.kproxy.dev", "--subresource=status", "-n", other],
        vec!["create", "configmaps", "-n", other],
        vec!["patch", "configmaps", "-n", other],
        vec!["delete", "configmaps", "-n", other],
        vec!["watch", "pods", "--all-namespaces"],
        vec!["create", "events.events.k8s.io", "-n", other],
        vec!["update", &webhook],
        vec!["create", "leases.coordination.k8s.io", "-n", &ns.name],
        vec!["update", &lease, "-n", &ns.name],
        vec!["create", "secrets", "-n", &ns.name],
        vec!["get", &secret, "-n", &ns.name],
        vec!["update", &secret, "-n", &ns.name],
    ];
    let mut refused: Vec<Vec<&str>> = vec![
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
        vec!["patch", "pods", "-n", other],
        vec!["update", "configmaps", "-n", other],
        vec!["get", "nodes"],
    ];
    refused.extend(secret_reads(&[other, &ns.name]));
    assert_matrix(env, &installed.user, &allowed, &refused);
}

/// Namespaced mode (two watched namespaces) with cert-manager: Roles in the watched namespaces only, no
/// ClusterRole for the operator, no webhook configuration write, and no Secret access at all.
#[test]
fn namespaced_cert_manager_rbac_is_least_privilege() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "chart-rbacns");
    let (w1, w2) = (Namespace::create(env, "chart-w1"), Namespace::create(env, "chart-w2"));
    let release = unique("kpn");
    let watched = format!("operator.watchNamespaces={{{},{}}}", w1.name, w2.name);
    let sets = ["webhook.certificate.mode=cert-manager", &watched];
    let installed = install(env, &release, &ns.name, &sets, &["rbac", "serviceaccount"]);
    let webhook = format!("mutatingwebhookconfigurations/{release}-kproxy-injector");
    let lease = format!("leases.coordination.k8s.io/{release}-kproxy-leader");
    let secret = format!("secrets/{release}-kproxy-webhook-tls");
    let other = "default";
    let mut allowed: Vec<Vec<&str>> =
        vec![vec!["create", "leases.coordination.k8s.io", "-n", &ns.name], vec!["update", &lease, "-n", &ns.name]];
    for w in [w1.name.as_str(), w2.name.as_str()] {
        allowed.extend([
            vec!["watch", "kafkaproxypolicies.kproxy.dev", "-n", w],
            vec!["patch", "kafkaproxypolicies.kproxy.dev", "--subresource=status", "-n", w],
            vec!["create", "configmaps", "-n", w],
            vec!["patch", "configmaps", "-n", w],
            vec!["list", "pods", "-n", w],
            vec!["create", "events.events.k8s.io", "-n", w],
        ]);
    }
    let mut refused: Vec<Vec<&str>> = vec![
        vec!["watch", "kafkaproxypolicies.kproxy.dev", "--all-namespaces"],
        vec!["list", "kafkaproxypolicies.kproxy.dev", "-n", other],
        vec!["create", "configmaps", "-n", other],
        vec!["list", "pods", "-n", other],
        vec!["watch", "pods", "--all-namespaces"],
        vec!["update", &webhook],
        vec!["patch", &webhook],
        vec!["create", "secrets", "-n", &ns.name],
        vec!["get", &secret, "-n", &ns.name],
        vec!["update", &secret, "-n", &ns.name],
        vec!["update", "configmaps", "-n", &w1.name],
        vec!["create", "pods", "-n", &w1.name],
    ];
    refused.extend(secret_reads(&[other, &ns.name, &w1.name, &w2.name]));
    assert_matrix(env, &installed.user, &allowed, &refused);

    // Application teams read policies through the built-in view role.
    let viewer = format!("system:serviceaccount:{}:someone", w1.name);
    let _binding = env
        .kubectl(&[
            "-n",
            &w1.name,
            "create",
            "rolebinding",
            "viewers",
            "--clusterrole=view",
            &format!("--user={viewer}"),
        ])
        .unwrap();
    wait_for("the view role to aggregate KafkaProxyPolicies", Duration::from_secs(30), || {
        Ok(can(env, &viewer, &["list", "kafkaproxypolicies.kproxy.dev", "-n", &w1.name]).then_some(()))
    })
    .unwrap();
    assert!(!can(env, &viewer, &["update", "kafkaproxypolicies.kproxy.dev", "-n", &w1.name]));
}

/// The chart's ValidatingAdmissionPolicy, enforced by the real API server: the operator's ServiceAccount (which
/// RBAC lets create and patch ConfigMaps) is refused, with the policy's message, any write to a ConfigMap that is
/// not labelled as the operator's, and cannot take one over by adding the label; labelled ones go through.
#[test]
fn the_operator_may_write_only_its_own_configmaps() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "chart-vap");
    let release = unique("kpv");
    let installed = install(env, &release, &ns.name, &[], &["rbac", "serviceaccount", "admissionpolicy"]);
    let as_operator = |args: &[&str], input: Option<&str>| {
        let mut cmd = env.command("kubectl");
        cmd.args(["--as", &installed.user, "-n", &ns.name]).args(args);
        let out = run_with_timeout(&mut cmd, input.map(str::as_bytes), Duration::from_secs(30)).unwrap();
        (out.status.success(), output_text(&out))
    };
    let configmap = |name: &str, labelled: bool| {
        let labels = if labelled { "\n  labels: {app.kubernetes.io/managed-by: kproxy-operator}" } else { "" };
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}{labels}\ndata: {{k: v}}\n")
    };
    let message = "the kproxy operator may only write ConfigMaps labelled app.kubernetes.io/managed-by=kproxy-operator";
    // The API server compiles a new policy asynchronously: wait until it refuses.
    let refusal = wait_for("the admission policy to refuse an unlabelled ConfigMap", Duration::from_secs(60), || {
        let (ok, text) = as_operator(&["create", "-f", "-"], Some(&configmap("app-settings", false)));
        if ok {
            env.kubectl(&["-n", &ns.name, "delete", "configmap", "app-settings"])?;
        }
        Ok((!ok).then_some(text))
    })
    .unwrap();
    assert!(refusal.contains(message) && refusal.contains("app-settings"), "{refusal}");

    let (ok, text) = as_operator(&["create", "-f", "-"], Some(&configmap("payments-kproxy", true)));
    assert!(ok, "a labelled ConfigMap was refused: {text}");
    let (ok, text) = as_operator(&["label", "configmap", "payments-kproxy", "app.kubernetes.io/managed-by-"], None);
    assert!(!ok && text.contains(message), "the operator removed its label: {text}");

    // Someone else's ConfigMap: no update, no label take-over, no delete.
    env.kubectl_apply(&format!(
        "{}\n",
        configmap("team-config", false)
            .replace("name: team-config", &format!("name: team-config\n  namespace: {}", ns.name))
    ))
    .unwrap();
    for args in [
        &["label", "configmap", "team-config", "app.kubernetes.io/managed-by=kproxy-operator"][..],
        &["patch", "configmap", "team-config", "-p", r#"{"data":{"k":"changed"}}"#],
        &["delete", "configmap", "team-config"],
    ] {
        let (ok, text) = as_operator(args, None);
        assert!(!ok && text.contains(message), "kubectl {args:?} as the operator: {text}");
    }
    // Other users are not concerned.
    env.kubectl(&["-n", &ns.name, "patch", "configmap", "team-config", "-p", r#"{"data":{"k":"mine"}}"#]).unwrap();
}
