//! Policy edits reaching a running injected pod on the real node: through the API watch (timed per edit, apply to
//! the first record decided by the new policy, from the container runtime's log timestamps), through the mounted
//! volume alone when the pod cannot reach the API server, and an invalid rendering refused by the sidecar while
//! the last good config keeps serving.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::jiff::Timestamp;
use kproxy_e2e::{Env, unique, wait_for};

use super::cluster::*;

const EDITS: usize = 20;

/// The sidecar's metrics, read from the app container (the pod's loopback, where /metrics listens).
fn metrics(env: &Env, ns: &str, pod: &str) -> Result<String> {
    let script =
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9103/metrics').read().decode())";
    env.kubectl(&["exec", "-n", ns, pod, "-c", "app", "--", "/usr/local/bin/python3", "-c", script])
}

/// One sample's value (`name{labels} value`), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

/// The first outcome logged after `since` that the verdict `effect` decided, with its log timestamp.
fn first_decided(env: &Env, ns: &str, pod: &str, since: Timestamp, effect: &str) -> Result<Option<Timestamp>> {
    let logs = env.kubectl(&["logs", "-n", ns, pod, "-c", "app", "--timestamps", "--tail=400"])?;
    for line in logs.lines() {
        let Some((at, outcome)) = line.split_once(' ') else { continue };
        let at: Timestamp = at.parse().with_context(|| format!("log timestamp {at:?}"))?;
        let decided = match effect {
            "Deny" => outcome.starts_with("error ") && outcome.ends_with(" TOPIC_AUTHORIZATION_FAILED"),
            _ => outcome.starts_with("ok "),
        };
        if at > since && decided {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

/// Applies the policy with `effect` and waits for the app's first record decided by it; seconds from the apply.
fn edit(env: &Env, ns: &str, pod: &str, topic: &str, effect: &str, timeout: Duration) -> Result<f64> {
    let brokers = env.var("KPROXY_KAFKA_EAST_POD");
    let applied = Timestamp::now();
    apply_in(env, ns, &policy(ns, "prop", brokers, topic, effect))?;
    let decided = wait_for(&format!("the app's records decided by {effect}"), timeout, || {
        first_decided(env, ns, pod, applied, effect)
    })?;
    Ok(decided.duration_since(applied).as_secs_f64())
}

/// Runs `iptables` in the pod's network namespace (found by its IP among the CNI's namespaces).
fn pod_iptables(env: &Env, ip: &str, rules: &[&[&str]]) -> Result<()> {
    let names = env.run(env.command("ip").args(["netns", "list"]), Duration::from_secs(10))?;
    for name in String::from_utf8_lossy(&names.stdout).lines().filter_map(|l| l.split_whitespace().next()) {
        let addrs = env.run(env.command("ip").args(["-n", name, "-4", "-o", "addr"]), Duration::from_secs(10))?;
        if String::from_utf8_lossy(&addrs.stdout).contains(&format!(" {ip}/")) {
            for rule in rules {
                env.run(
                    env.command("ip").args(["netns", "exec", name, "iptables"]).args(*rule),
                    Duration::from_secs(10),
                )?;
            }
            return Ok(());
        }
    }
    bail!("no network namespace holds the pod IP {ip}")
}

/// 20 edits under a running producer, each timed from `kubectl apply` to the first record the new policy decided;
/// then an invalid rendering written into the ConfigMap (refused, the last good config serves); then an edit while
/// the pod cannot reach the API server (it arrives through kubelet's projection of the volume).
#[test]
fn policy_edits_reach_a_running_pod_through_the_api_and_the_volume() {
    let Some(env) = kproxy_e2e::env() else { return };
    if node(env).is_none() {
        return;
    }
    let app_image = images(env)["kafka-client"].clone();
    let release = Release::install(env, "prop", &[]).unwrap();
    let ns = release.app_ns.clone();
    let topic = unique("prop");
    let brokers = env.var("KPROXY_KAFKA_EAST_POD");
    apply_in(env, &ns, &policy(&ns, "prop", brokers, &topic, "Allow")).unwrap();
    wait_policy_ready(env, &ns, "prop").unwrap();
    // One record every 50 ms, so a verdict change is seen within that of taking effect.
    let deployment = app_deployment("prop", "{app: prop}", &app_image, &topic, true).replace("\"0.5\"]", "\"0.05\"]");
    apply_in(env, &ns, &deployment).unwrap();
    let pods = wait_running(env, &ns, "app=prop", 1, Duration::from_secs(180)).unwrap();
    let (pod, ip) = (pods[0].name.clone(), pods[0].ip.clone());
    wait_for("the app producing", Duration::from_secs(120), || {
        Ok((ok_values(&app_outcomes(env, &ns, &pod)?).len() >= 5).then_some(()))
    })
    .unwrap();
    let before = metrics(env, &ns, &pod).unwrap();
    assert_eq!(sample(&before, "kproxy_config_api_watch_up"), 1.0, "the sidecar watches its ConfigMap:\n{before}");

    let mut took = Vec::new();
    for i in 0..EDITS {
        let effect = if i % 2 == 0 { "Deny" } else { "Allow" };
        took.push(edit(env, &ns, &pod, &topic, effect, Duration::from_secs(180)).unwrap());
    }
    let after = metrics(env, &ns, &pod).unwrap();
    let mut sorted = took.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| sorted[((p * EDITS as f64).ceil() as usize).clamp(1, EDITS) - 1];
    eprintln!(
        "policy edit -> first record decided by it, through the API watch, {EDITS} edits: p50 {:.2} s, p99 {:.2} s, \
         max {:.2} s, all: {:?}",
        pct(0.5),
        pct(0.99),
        sorted[EDITS - 1],
        took.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>()
    );
    let api_count = sample(&after, "kproxy_config_propagation_seconds_count{source=\"api\"}");
    let api_sum = sample(&after, "kproxy_config_propagation_seconds_sum{source=\"api\"}");
    eprintln!(
        "the sidecar's own view: {api_count} configs through the API, render -> in force {:.3} s on average",
        api_sum / api_count.max(1.0)
    );
    assert!(api_count >= EDITS as f64, "every edit came through the API watch:\n{after}");
    let accepted = "kproxy_client_connections_accepted_total";
    assert_eq!(sample(&after, accepted), sample(&before, accepted), "no client connection was dropped or reopened");
    assert_eq!(pods_of(env, &ns)[0].restarts, 0, "no restart");

    // An edit the sidecar cannot take (written straight into the ConfigMap; the operator repairs it): refused,
    // and the last good config (Allow, the 20th edit) keeps deciding.
    let rejected = "kproxy_config_reloads_total{result=\"rejected\"}";
    let rejected_before = sample(&after, rejected);
    let patch = r#"{"data":{"config.yaml":"clusters: []\n"}}"#;
    env.kubectl(&["patch", "configmap", "prop-kproxy", "-n", &ns, "--type", "merge", "-p", patch]).unwrap();
    wait_for("the sidecar to refuse the invalid config", Duration::from_secs(60), || {
        Ok((sample(&metrics(env, &ns, &pod)?, rejected) > rejected_before).then_some(()))
    })
    .unwrap();
    let seen = app_outcomes(env, &ns, &pod).unwrap().len();
    wait_for("records served under the last good config", Duration::from_secs(60), || {
        let outcomes = app_outcomes(env, &ns, &pod)?;
        Ok((outcomes.len() >= seen + 10).then_some(outcomes))
    })
    .map(|outcomes| assert!(outcomes[seen..].iter().all(|o| o.starts_with("ok ")), "{:?}", &outcomes[seen..]))
    .unwrap();

    // The pod cut off from the API server (both directions, in its own network namespace): the next edit still
    // arrives, through kubelet's projection of the mounted ConfigMap (kubelet's defaults: about a minute).
    let api =
        env.kubectl(&["get", "service", "kubernetes", "-n", "default", "-o", "jsonpath={.spec.clusterIP}"]).unwrap();
    pod_iptables(
        env,
        &ip,
        &[
            &["-I", "OUTPUT", "-d", &api, "-p", "tcp", "--dport", "443", "-j", "DROP"],
            &["-I", "INPUT", "-s", &api, "-p", "tcp", "--sport", "443", "-j", "DROP"],
        ],
    )
    .unwrap();
    let through_volume = edit(env, &ns, &pod, &topic, "Deny", Duration::from_secs(240)).unwrap();
    let last = metrics(env, &ns, &pod).unwrap();
    eprintln!(
        "policy edit -> enforced with the API unreachable from the pod (the volume, kubelet defaults): {through_volume:.1} s"
    );
    assert_eq!(sample(&last, "kproxy_config_source{source=\"volume\"}"), 1.0, "served from the volume:\n{last}");
    assert_eq!(sample(&last, accepted), sample(&before, accepted), "no client connection was dropped or reopened");
    assert_eq!(pods_of(env, &ns)[0].restarts, 0, "no restart");
}

fn pods_of(env: &Env, ns: &str) -> Vec<PodView> {
    pods(env, ns, "app=prop").unwrap().into_iter().filter(|p| !p.deleting).collect()
}
