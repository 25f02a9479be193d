//! The product as users meet it: chart CRD applied → operator → `kubectl apply` a policy → its ConfigMap mounted
//! into a sidecar the way kubelet does → a real client produces → the policy is edited to deny the topic → the
//! same client connection is refused with TOPIC_AUTHORIZATION_FAILED → the sidecar shows the status's config hash.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kproxy_e2e::sidecar::Sidecar;
use kproxy_e2e::{Env, binary, env, free_port, unique, wait_for, workspace_root};

/// The operator as a process, watching one namespace; killed when dropped.
struct Operator(Child);

impl Operator {
    fn start(env: &Env, ns: &str) -> Operator {
        let log = Path::new(env.log_dir()).join(format!("{ns}-operator.log"));
        let log = std::fs::File::create(&log).unwrap();
        let child = env
            .command(binary("kproxy-operator").to_str().unwrap())
            .args(["--admin-addr", &format!("127.0.0.1:{}", free_port()), "--namespace", ns])
            .args(["--lease-namespace", ns, "--lease-name", "kproxy-operator"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Operator(child)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn policy(ns: &str, brokers: &str, topic: &str, effect: &str) -> String {
    kproxy_e2e::topic_write_policy(ns, "shop", "shop", brokers, topic, effect)
}

/// Waits until the policy's status describes its current generation and is Ready; returns its config hash.
fn ready_hash(env: &Env, ns: &str) -> String {
    wait_for("policy Ready for its generation", Duration::from_secs(60), || {
        let out = env.kubectl(&[
            "get",
            "kpp",
            "shop",
            "-n",
            ns,
            "-o",
            "jsonpath={.metadata.generation} {.status.observedGeneration} {.status.conditions[?(@.type==\"Ready\")].status} {.status.configHash}",
        ])?;
        let f: Vec<&str> = out.split_whitespace().collect();
        Ok((f.len() == 4 && f[0] == f[1] && f[2] == "True").then(|| f[3].to_string()))
    })
    .unwrap()
}

fn configmap(env: &Env, ns: &str) -> String {
    env.kubectl(&["get", "configmap", "shop-kproxy", "-n", ns, "-o", "jsonpath={.data.config\\.yaml}"]).unwrap()
}

/// A librdkafka producer (confluent-kafka) holding one connection, fed one record per line; it prints one
/// outcome line per record (`ok <value>` / `error <value> <code name>`).
struct Producer {
    child: Child,
    stdin: ChildStdin,
    outcomes: Arc<Mutex<Vec<String>>>,
}

impl Producer {
    fn start(env: &Env, brokers: &str, topic: &str) -> Producer {
        let script = workspace_root().join("e2e/clients/line_producer.py");
        let mut child = env
            .command(env.var("KPROXY_PYTHON"))
            .arg(script)
            .args([brokers, topic])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let sink = outcomes.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Producer { child, stdin, outcomes }
    }

    /// Sends one record and waits for its outcome line.
    fn send(&mut self, value: &str) -> String {
        writeln!(self.stdin, "{value}").unwrap();
        self.stdin.flush().unwrap();
        let outcomes = self.outcomes.clone();
        wait_for(&format!("the outcome of {value}"), Duration::from_secs(30), || {
            let seen = outcomes.lock().unwrap();
            Ok(seen.iter().find(|l| l.split_whitespace().nth(1) == Some(value)).cloned())
        })
        .unwrap()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn policy_edit_reaches_a_running_sidecar_and_the_same_connection() {
    let Some(env) = env() else { return };
    let ns = unique("flow");
    let topic = unique("flow-orders");
    let crds = workspace_root().join("charts/kproxy/crds");
    env.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crds.to_str().unwrap()]).unwrap();
    env.wait_crds_established(&["kafkaproxypolicies.kproxy.dev"]).unwrap();
    env.kubectl(&["create", "namespace", &ns]).unwrap();
    let _operator = Operator::start(env, &ns);

    env.kubectl_apply(&policy(&ns, env.kafka_east(), &topic, "Allow")).unwrap();
    let first_hash = ready_hash(env, &ns);
    let sidecar = Sidecar::start(env, &configmap(env, &ns), &[]).unwrap();

    // Plays kubelet from here on: every ConfigMap change is projected into the sidecar's volume.
    let stop = Arc::new(Mutex::new(false));
    let kubelet = {
        let (stop, ns) = (stop.clone(), ns.clone());
        let config_dir = sidecar.config_dir.clone();
        std::thread::spawn(move || {
            let mut last = String::new();
            while !*stop.lock().unwrap() {
                let now = configmap(env, &ns);
                if now != last && !now.is_empty() {
                    kproxy_e2e::kubelet::project_one(&config_dir, "config.yaml", &now).unwrap();
                    last = now;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };

    let mut producer = Producer::start(env, &sidecar.listen, &topic);
    for i in 0..3 {
        assert_eq!(producer.send(&format!("allowed-{i}")), format!("ok allowed-{i}"));
    }
    let got = env.kcat_consume(&sidecar.listen, &topic, 3, &[]).unwrap();
    assert_eq!(got, ["allowed-0", "allowed-1", "allowed-2"]);
    wait_for("the sidecar to serve the first hash", Duration::from_secs(10), || {
        Ok(sidecar.metrics()?.contains(&first_hash).then_some(()))
    })
    .unwrap();
    let accepted = sidecar.metric("kproxy_client_connections_accepted_total", &[]).unwrap();

    let edited = Instant::now();
    env.kubectl_apply(&policy(&ns, env.kafka_east(), &topic, "Deny")).unwrap();
    let denied_hash = ready_hash(env, &ns);
    assert_ne!(denied_hash, first_hash, "the edit changes the rendered config");
    wait_for("the sidecar to serve the edited policy's hash", Duration::from_secs(30), || {
        Ok(sidecar.metrics()?.contains(&denied_hash).then_some(()))
    })
    .unwrap();
    let reload_took = edited.elapsed();

    assert_eq!(producer.send("denied-0"), "error denied-0 TOPIC_AUTHORIZATION_FAILED");
    assert_eq!(
        sidecar.metric("kproxy_client_connections_accepted_total", &[]).unwrap(),
        accepted,
        "the client did not reconnect: the denial came on its open connection"
    );
    let direct = env.kcat_consume(env.kafka_east(), &topic, 3, &[]).unwrap();
    assert_eq!(direct.len(), 3, "nothing denied reached the broker");
    eprintln!("policy edit to sidecar serving it: {reload_took:?}");

    *stop.lock().unwrap() = true;
    kubelet.join().unwrap();
    env.kubectl(&["delete", "namespace", &ns, "--wait=false"]).unwrap();
}
