//! The webhook and the operator hardened, against the real kube-apiserver: a host-network pod is refused with the
//! reason, `PodsNeedRestart` counts the injected pods that lack a Secret their policy now names, and admission keeps
//! working while 2,000 idle TLS connections and 200 slow-header connections are held against the webhook.

#[path = "webhook/load.rs"]
mod load;
#[path = "webhook/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Result;
use kproxy_e2e::{Env, env, wait_for};
use serde_json::Value;
use support::*;

#[test]
fn host_network_pods_are_refused_with_the_reason() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "wh-hostnet");
    let _webhook = Webhook::start(env, &ns.name, "Fail").unwrap();
    let manifest = pod_manifest("on-the-node", &[("kproxy.dev/inject", "true")])
        .replace("spec:\n", "spec:\n  hostNetwork: true\n");
    let err = ns.apply_pod(&manifest).unwrap_err();
    assert!(err.contains("denied the request") && err.contains("hostNetwork: true"), "{err}");
    assert!(err.contains("every process on it this policy's Kafka identity"), "{err}");
    // The same pod off the host network is injected.
    ns.apply_pod(&pod_manifest("in-its-own-network", &[("kproxy.dev/inject", "true")])).unwrap();
    assert_injected(&ns.get("pod", "in-its-own-network"), "payments");
}

/// The policy's condition of `type_`: (status, reason, message).
fn condition(env: &Env, ns: &str, policy: &str, type_: &str) -> Result<Option<(String, String, String)>> {
    let policy: Value = serde_json::from_str(&env.kubectl(&["-n", ns, "get", "kpp", policy, "-o", "json"])?)?;
    let conditions = policy["status"]["conditions"].as_array().cloned().unwrap_or_default();
    Ok(conditions.iter().find(|c| c["type"] == type_).map(|c| {
        let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        (text("status"), text("reason"), text("message"))
    }))
}

/// Pods created while the policy names one Secret mount only that one. Once the policy names a second Secret, the
/// operator reports exactly those pods as needing a restart (Secret volumes are fixed at creation); pods created
/// afterwards mount both and are not counted; deleting stale pods brings the count down to zero.
#[test]
fn pods_need_restart_when_the_policy_names_a_secret_they_lack() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "wh-restart");
    let _webhook = Webhook::start(env, &ns.name, "Fail").unwrap();
    let inject = [("kproxy.dev/inject", "true")];
    let old: Vec<String> = (0..3).map(|i| format!("before-{i}")).collect();
    for name in &old {
        ns.apply_pod(&pod_manifest(name, &inject)).unwrap();
        let pod = ns.get("pod", name);
        assert_eq!(pod["metadata"]["annotations"]["kproxy.dev/secrets"], "payments-kafka", "{pod:#}");
        assert_eq!(pod["metadata"]["labels"]["kproxy.dev/injected"], "true", "{pod:#}");
    }
    let current = wait_for("PodsNeedRestart=False", Duration::from_secs(60), || {
        Ok(condition(env, &ns.name, "payments", "PodsNeedRestart")?.filter(|(s, _, _)| s == "False"))
    })
    .unwrap();
    assert_eq!(current.1, "PodsCurrent");

    // The policy gains a second cluster whose credentials are in a new Secret.
    let edited = format!(
        r#"apiVersion: kproxy.dev/v1alpha1
kind: KafkaProxyPolicy
metadata: {{name: payments, namespace: {ns}}}
spec:
  podSelector: {{matchLabels: {{app: payments}}}}
  clusters:
    - name: east
      bootstrapServers: ["127.0.0.1:9093"]
      sasl: {{mechanism: SCRAM-SHA-512, secretRef: {{name: payments-kafka}}}}
    - name: west
      bootstrapServers: ["127.0.0.1:9094"]
      sasl: {{mechanism: SCRAM-SHA-512, secretRef: {{name: payments-west}}}}
"#,
        ns = ns.name
    );
    env.kubectl_apply(&edited).unwrap();
    let (_, reason, message) = wait_for("PodsNeedRestart=True", Duration::from_secs(60), || {
        Ok(condition(env, &ns.name, "payments", "PodsNeedRestart")?.filter(|(s, _, _)| s == "True"))
    })
    .unwrap();
    assert_eq!(reason, "SecretsNotMounted");
    assert!(message.starts_with("3 injected pods") && message.contains("payments-west"), "{message}");

    // A pod created now mounts both Secrets and needs nothing.
    ns.apply_pod(&pod_manifest("after", &inject)).unwrap();
    let after = ns.get("pod", "after");
    let mounted: BTreeSet<&str> =
        after["metadata"]["annotations"]["kproxy.dev/secrets"].as_str().unwrap_or_default().split(',').collect();
    assert_eq!(mounted, BTreeSet::from(["payments-kafka", "payments-west"]));
    env.kubectl(&["-n", &ns.name, "delete", "pod", &old[0], "--wait=false"]).unwrap();
    let (_, _, message) = wait_for("the count to follow a deleted pod", Duration::from_secs(60), || {
        Ok(condition(env, &ns.name, "payments", "PodsNeedRestart")?.filter(|(_, _, m)| m.starts_with("2 injected")))
    })
    .unwrap();
    assert!(message.contains("payments-west"), "{message}");
    for name in &old[1..] {
        env.kubectl(&["-n", &ns.name, "delete", "pod", name, "--wait=false"]).unwrap();
    }
    let (_, reason, _) = wait_for("PodsNeedRestart=False again", Duration::from_secs(60), || {
        Ok(condition(env, &ns.name, "payments", "PodsNeedRestart")?.filter(|(s, _, _)| s == "False"))
    })
    .unwrap();
    assert_eq!(reason, "PodsCurrent");
}

/// 1,000 policies in the namespace before the operator starts. While 2,000 idle TLS connections and 200
/// connections that send their headers a byte a second are held open (each reopened when the webhook closes it),
/// pods created through the API server are still injected, and the webhook closes every slow-header connection
/// itself. Printed, not asserted: the time until all 1,000 policies are Ready from a cold start, the operator's
/// RSS, and the review latency with and without the held connections.
#[test]
fn admission_keeps_working_under_idle_and_slow_connections() {
    let Some(env) = env() else { return };
    let ns = Namespace::create(env, "wh-load");
    const POLICIES: usize = 1_000;
    let started = Instant::now();
    load::apply_policies(env, &ns.name, POLICIES).unwrap();
    eprintln!("{POLICIES} policies applied in {:.1?}", started.elapsed());

    let started = Instant::now();
    let webhook = Webhook::start(env, &ns.name, "Fail").unwrap();
    // The harness's `payments` policy names a Secret that does not exist, so it stays not Ready: the others count.
    let ready = wait_for("every generated policy to be Ready", Duration::from_secs(300), || {
        let n = load::ready_policies(env, &ns.name)?;
        Ok((n >= POLICIES).then_some(n))
    })
    .unwrap();
    eprintln!(
        "FIGURE operator cold start: {ready} policies Ready {:.1?} after the operator started",
        started.elapsed()
    );
    if let Some(rss) = webhook.pid().and_then(load::rss_kib) {
        eprintln!("FIGURE operator RSS with {ready} policies: {:.1} MiB", rss as f64 / 1024.0);
    }

    let ca = load::published_ca(env, &webhook.configuration).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let quiet = runtime.block_on(load::review_latencies(webhook.port, &ca, &ns.name, 500)).unwrap();
    eprintln!("FIGURE webhook review latency, {POLICIES} policies, no load: {}", load::summary(&quiet));

    let pressure = runtime.block_on(load::Pressure::start(webhook.port, &ca, 2_000, 200)).unwrap();
    eprintln!("held: {} idle TLS connections, {} slow-header connections", pressure.idle(), pressure.slow());
    let busy = runtime.block_on(load::review_latencies(webhook.port, &ca, &ns.name, 500)).unwrap();
    eprintln!("FIGURE webhook review latency, {POLICIES} policies, under load: {}", load::summary(&busy));
    let names: Vec<String> = (0..10).map(|i| format!("under-load-{i}")).collect();
    for name in &names {
        ns.apply_pod(&pod_manifest(name, &[("kproxy.dev/inject", "true")]))
            .unwrap_or_else(|e| panic!("{name} was refused under load: {e}"));
    }
    let injected: BTreeSet<String> = names.iter().filter(|n| has_sidecar(&ns.get("pod", n))).cloned().collect();
    assert_eq!(injected, names.iter().cloned().collect(), "pods created under load were not all injected");
    // Every slow-header connection is closed by the webhook (header-read timeout), not left to hold a slot.
    let closed = wait_for("the webhook to close every slow-header connection", Duration::from_secs(120), || {
        Ok(pressure.slow_slots_closed_by_server().filter(|n| *n == 200))
    })
    .unwrap();
    let stats = runtime.block_on(pressure.stop());
    eprintln!(
        "slow-header slots closed by the webhook: {closed}/200; reconnects: idle {}, slow {}",
        stats.idle_reconnects, stats.slow_reconnects
    );
}
