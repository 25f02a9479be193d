//! The product as users run it, on the environment's real node: `helm install` the chart (the operator from its
//! image, its webhook behind its Service) → `kubectl apply` a policy → a Deployment asking for injection → the pod
//! runs the native sidecar next to the app → the app's real Kafka client produces and consumes through
//! localhost:9092 → a policy edit reaches the running pod (its API watch; see propagation.rs) → Prometheus,
//! configured by prometheus-operator from the chart's monitors, scrapes the sidecar and the operator.

#[path = "node/cluster.rs"]
mod cluster;
#[path = "node/dashboard.rs"]
mod dashboard;
#[path = "node/prometheus.rs"]
mod prometheus;
#[path = "node/propagation.rs"]
mod propagation;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cluster::*;
use kproxy_e2e::{env, unique, wait_for};

const MONITORS: &[&str] = &[
    "--set",
    "podMonitor.enabled=true",
    "--set",
    "serviceMonitor.enabled=true",
    "--set",
    "podMonitor.interval=5s",
    "--set",
    "podMonitor.scrapeTimeout=4s",
    "--set",
    "serviceMonitor.interval=5s",
    "--set",
    "serviceMonitor.scrapeTimeout=4s",
];

/// Waits until the pod's app has reported at least `n` outcomes; returns them.
fn wait_outcomes(
    env: &kproxy_e2e::Env,
    ns: &str,
    pod: &str,
    what: &str,
    check: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    wait_for(what, Duration::from_secs(120), || {
        let outcomes = app_outcomes(env, ns, pod)?;
        Ok(check(&outcomes).then_some(outcomes))
    })
    .unwrap()
}

fn consume_in_pod(env: &kproxy_e2e::Env, ns: &str, pod: &str, topic: &str, n: usize) -> BTreeSet<String> {
    let out = env
        .kubectl(&[
            "exec",
            "-n",
            ns,
            pod,
            "-c",
            "app",
            "--",
            "/usr/local/bin/python3",
            "/usr/local/bin/kafka_app.py",
            "consume",
            topic,
            &n.to_string(),
            "60",
        ])
        .unwrap();
    out.lines().map(str::to_string).collect()
}

#[test]
fn chart_policy_and_injected_pod_on_a_real_node() {
    let Some(env) = env() else { return };
    let Some(node) = node(env) else { return };
    let images = images(env);
    let app_image = images["kafka-client"].clone();
    let release = Release::install(env, "node", MONITORS).unwrap();
    let ns = release.app_ns.clone();
    show_pods(env, &release.ns);
    let topic = unique("node-orders");

    apply_in(env, &ns, &routed_policy(env, &ns, &topic, "Allow")).unwrap();
    wait_policy_ready(env, &ns, "shop").unwrap();

    // A pod that does not ask for the sidecar starts as it was written.
    apply_in(env, &ns, &app_deployment("plain", "{app: plain}", &app_image, &unique("plain"), false)).unwrap();
    let plain = wait_running(env, &ns, "app=plain", 1, Duration::from_secs(120)).unwrap();
    let spec =
        env.kubectl(&["get", "pod", "-n", &ns, &plain[0].name, "-o", "jsonpath={.spec.initContainers}"]).unwrap();
    assert!(spec.is_empty() && plain[0].containers == 1, "an unannotated pod was changed: {spec}");

    let applied = Instant::now();
    apply_in(env, &ns, &app_deployment("shop", "{app: shop}", &app_image, &topic, true)).unwrap();
    let pods = wait_running(env, &ns, "app=shop", 1, Duration::from_secs(180)).unwrap();
    eprintln!(
        "Deployment applied -> pod Running {}/{} on {node}: {:.1?}",
        pods[0].ready,
        pods[0].containers,
        applied.elapsed()
    );
    show_pods(env, &ns);
    let pod = pods[0].name.clone();
    assert_eq!((pods[0].ready, pods[0].containers), (2, 2), "the app and its native sidecar");
    let started = env
        .kubectl(&[
            "get", "pod", "-n", &ns, &pod, "-o",
            "jsonpath={.spec.initContainers[0].restartPolicy} {.status.initContainerStatuses[0].state.running.startedAt} {.status.containerStatuses[0].state.running.startedAt}",
        ])
        .unwrap();
    let f: Vec<&str> = started.split_whitespace().collect();
    assert!(f.len() == 3 && f[0] == "Always" && f[1] <= f[2], "a native sidecar started before the app: {started}");

    // The app's records went through the sidecar to the broker: read back directly and through the sidecar.
    let outcomes = wait_outcomes(env, &ns, &pod, "5 records produced", |o| ok_values(o).len() >= 5);
    let produced: BTreeSet<String> = ok_values(&outcomes).into_iter().take(5).collect();
    let direct: BTreeSet<String> = env.kcat_consume(env.kafka_east(), &topic, 5, &[]).unwrap().into_iter().collect();
    assert_eq!(direct, produced, "the broker holds what the app produced through the sidecar");
    assert_eq!(consume_in_pod(env, &ns, &pod, &topic, 5), produced, "the app reads them back through the sidecar");

    // Prometheus from prometheus-operator, scraping the sidecar (PodMonitor) and the operator (ServiceMonitor).
    let prom = prometheus::start(env, &release.ns, &images["prometheus"]).unwrap();
    let series =
        prometheus::wait_series(env, &prom, &format!("kproxy_requests_total{{namespace=\"{ns}\",pod=\"{pod}\"}}"))
            .unwrap();
    eprintln!("Prometheus at {prom} has {} kproxy_requests_total series for {ns}/{pod}", series.len());
    let operator =
        prometheus::wait_series(env, &prom, &format!("kproxy_operator_leader{{namespace=\"{}\"}}", release.ns))
            .unwrap();
    assert_eq!(operator[0]["value"][1], "1", "the operator's metrics, scraped through its Service: {operator:?}");

    // Without the operator, running sidecars keep serving.
    let before = ok_values(&app_outcomes(env, &ns, &pod).unwrap()).len();
    env.kubectl(&[
        "delete",
        "pod",
        "-n",
        &release.ns,
        "-l",
        "app.kubernetes.io/name=kproxy",
        "--grace-period=0",
        "--force",
    ])
    .unwrap();
    wait_outcomes(env, &ns, &pod, "records produced with the operator pod gone", |o| ok_values(o).len() >= before + 4);
    assert_eq!(consume_in_pod(env, &ns, &pod, &topic, 5), produced);
    wait_running(env, &release.ns, "app.kubernetes.io/name=kproxy", 1, Duration::from_secs(120)).unwrap();

    // The edit reaches the running app (through its API watch; the volume is the fallback), without a restart.
    let edited = Instant::now();
    apply_in(env, &ns, &routed_policy(env, &ns, &topic, "Deny")).unwrap();
    wait_for("the running app to be refused", Duration::from_secs(240), || {
        let o = app_outcomes(env, &ns, &pod)?;
        Ok(o.iter().any(|l| l.starts_with("error ") && l.ends_with(" TOPIC_AUTHORIZATION_FAILED")).then_some(()))
    })
    .unwrap();
    eprintln!("policy edit -> enforced in the running pod: {:.1?}", edited.elapsed());
    let now = pods_of(env, &ns, "app=shop");
    assert_eq!((now[0].name.as_str(), now[0].restarts), (pod.as_str(), 0), "same pod, no restart");

    // The shipped dashboard against this Prometheus, while the pod has traffic, denials, a reload and a rejected
    // frame behind it (a length prefix of 2 GiB, sent from the app's container).
    let garbage = "import socket; s = socket.create_connection(('127.0.0.1', 9092)); s.sendall(b'\\x7f\\xff\\xff\\xff'); print(s.recv(1))";
    let closed = env.kubectl(&["exec", "-n", &ns, &pod, "-c", "app", "--", "/usr/local/bin/python3", "-c", garbage]);
    assert_eq!(closed.unwrap().trim(), "b''", "the sidecar closes a connection sending an oversized frame");
    let checked = Instant::now();
    dashboard::check(env, &prom, &ns, &pod, Duration::from_secs(90)).unwrap();
    eprintln!("dashboard checked in {:.1?}", checked.elapsed());

    // A rollout restart replaces the pod; the new one is injected and enforces the policy from its start.
    env.kubectl(&["rollout", "restart", "deployment/shop", "-n", &ns]).unwrap();
    env.run(
        env.command("kubectl").args(["rollout", "status", "deployment/shop", "-n", &ns, "--timeout=180s"]),
        Duration::from_secs(200),
    )
    .unwrap();
    let pods = wait_running(env, &ns, "app=shop", 1, Duration::from_secs(120)).unwrap();
    assert_ne!(pods[0].name, pod, "a new pod");
    show_pods(env, &ns);
    let pod = pods[0].name.clone();
    wait_outcomes(env, &ns, &pod, "the new pod refused", |o| {
        o.iter().any(|l| l.ends_with(" TOPIC_AUTHORIZATION_FAILED"))
    });

    // Deleting the policy (README "Deleting a policy"): the ConfigMap goes with it, running pods keep the
    // configuration kubelet last projected, and a new pod asking for injection is refused at admission.
    env.kubectl(&["delete", "kpp", "shop", "-n", &ns]).unwrap();
    wait_for("the policy's ConfigMap to be collected", Duration::from_secs(60), || {
        Ok(env
            .kubectl(&["get", "configmap", "-n", &ns, "-o", "name"])?
            .lines()
            .all(|l| l != "configmap/shop-kproxy")
            .then_some(()))
    })
    .unwrap();
    let refused = app_outcomes(env, &ns, &pod).unwrap().len();
    wait_outcomes(env, &ns, &pod, "the pod still enforcing the last policy", |o| {
        o.len() >= refused + 4 && o[refused..].iter().all(|l| l.ends_with(" TOPIC_AUTHORIZATION_FAILED"))
    });
    assert_eq!(pods_of(env, &ns, "app=shop")[0].restarts, 0);
    let bare = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: late, labels: {{app: shop}}, annotations: {{kproxy.dev/inject: \"true\"}}}}\nspec: {{containers: [{{name: app, image: {app_image}, imagePullPolicy: Never}}]}}\n"
    );
    let err = apply_in(env, &ns, &bare).expect_err("a pod matching no policy is refused");
    eprintln!("a new injected pod without a policy: {err:#}");
    show_pods(env, &ns);
}

/// The flow's policy with a route, so the sidecar probes both clusters (the dashboard's reachability panel): the
/// app's topic stays on east, with west as its fallback.
fn routed_policy(env: &kproxy_e2e::Env, ns: &str, topic: &str, effect: &str) -> String {
    let east = env.var("KPROXY_KAFKA_EAST_POD");
    let west = env.var("KPROXY_KAFKA_WEST_POD");
    let base = policy(ns, "shop", east, topic, effect);
    format!(
        "{base}  routes:\n    - match: {{topicPrefix: \"{topic}\"}}\n      cluster: east\n      failover: [west]\n",
    )
    .replace(
        &format!("      bootstrapServers: [\"{east}\"]\n"),
        &format!("      bootstrapServers: [\"{east}\"]\n    - name: west\n      bootstrapServers: [\"{west}\"]\n"),
    )
}

fn pods_of(env: &kproxy_e2e::Env, ns: &str, selector: &str) -> Vec<PodView> {
    pods(env, ns, selector).unwrap().into_iter().filter(|p| !p.deleting).collect()
}
