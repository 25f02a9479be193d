//! Failover against the real clusters: east's broker is stopped under a running producer on a route that fails
//! over to west; sends continue to west, and when east is back the route returns. The gap is measured.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kproxy_e2e::sidecar::{Sidecar, java};
use kproxy_e2e::{Env, env, unique, wait_for};

fn config(env: &Env, run: &str) -> String {
    format!(
        r#"clusters:
- name: east
  bootstrapServers: ["{east}"]
- name: west
  bootstrapServers: ["{west}"]
defaultCluster: west
routes:
- {{match: {{topicPrefix: "{run}-orders."}}, cluster: east, failover: [west]}}
failover:
  unreachableAfterMs: 3000
  probeIntervalMs: 500
"#,
        east = env.kafka_east(),
        west = env.kafka_west(),
    )
}

fn create_topic(env: &Env, bootstrap: &str, topic: &str) {
    let mut cmd = java(env, "org.apache.kafka.tools.TopicCommand");
    cmd.args(["--bootstrap-server", bootstrap, "--create", "--topic", topic, "--partitions", "1"]);
    cmd.args(["--replication-factor", "1"]);
    env.run(&mut cmd, Duration::from_secs(120)).unwrap();
}

/// A librdkafka producer sending one numbered record every 20 ms for `seconds`, printing one line per delivery
/// ("ok <n> <ack time>" or "err <n> <error>") and a summary with the longest pause between acknowledgements.
const PRODUCER: &str = r#"
import sys, time, json
from confluent_kafka import Producer
bootstrap, topic, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
acks, failed = [], []
def done(err, msg):
    if err: failed.append(str(err))
    else: acks.append(time.time())
p = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 120000, "linger.ms": 5,
              "retry.backoff.ms": 200, "reconnect.backoff.max.ms": 1000})
start, n = time.time(), 0
while time.time() - start < seconds:
    p.produce(topic, str(n).encode(), callback=done)
    n += 1
    p.poll(0.02)
p.flush(120)
acks.sort()
gap = max([b - a for a, b in zip(acks, acks[1:])] or [0])
print(json.dumps({"sent": n, "acked": len(acks), "failed": len(failed), "errors": failed[:3], "max_gap": gap}))
"#;

fn kafka_script(env: &Env, action: &str) {
    let mut cmd = Command::new(env.var("KPROXY_KAFKA_SCRIPT"));
    cmd.args([action, "east"]);
    let out = env.run(&mut cmd, Duration::from_secs(180)).unwrap();
    assert!(out.status.success(), "kafka.sh {action} east: {}", String::from_utf8_lossy(&out.stderr));
}

fn count(env: &Env, bootstrap: &str, topic: &str) -> usize {
    let mut cmd = env.command("kcat");
    cmd.args(["-b", bootstrap, "-t", topic, "-C", "-o", "beginning", "-e", "-q"]);
    let out = env.run(&mut cmd, Duration::from_secs(60)).unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
#[ignore = "known gap: a request in flight on a broker connection of the failed cluster is held until that broker \
            closes it, so a running librdkafka producer only resumes when east returns (records stay in east)"]
fn a_route_fails_over_to_west_while_east_is_down_and_returns() {
    let Some(env) = env() else { return };
    let run = unique("fo");
    let topic = format!("{run}-orders.live");
    // The fallback already holds the same topic (kproxy routes, it does not replicate).
    create_topic(env, env.kafka_east(), &topic);
    create_topic(env, env.kafka_west(), &topic);
    let sidecar = Sidecar::start(env, &config(env, &run), &[]).unwrap();

    let mut producer = env.command(env.var("KPROXY_PYTHON"));
    producer.args(["-c", PRODUCER, &sidecar.listen, &topic, "40"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let producer = producer.spawn().unwrap();
    std::thread::sleep(Duration::from_secs(8));
    let stopped = Instant::now();
    kafka_script(env, "stop");
    wait_for("failover to west", Duration::from_secs(60), || {
        Ok((sidecar.metric("kproxy_route_switches_total", &["direction=\"fallback\""])? >= 1.0).then_some(()))
    })
    .unwrap();
    let switched_after = stopped.elapsed();
    std::thread::sleep(Duration::from_secs(8));
    kafka_script(env, "start");
    wait_for("route back to east", Duration::from_secs(120), || {
        Ok((sidecar.metric("kproxy_route_switches_total", &["direction=\"primary\""])? >= 1.0).then_some(()))
    })
    .unwrap();
    let out = producer.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().last().unwrap_or_default().to_string();
    eprintln!("failover: route switched {switched_after:?} after east stopped; producer {summary}");
    let json = |key: &str| -> f64 {
        let at = summary.find(&format!("\"{key}\": ")).unwrap_or_else(|| panic!("no {key} in {summary:?}"));
        summary[at + key.len() + 4..].split([',', '}']).next().unwrap().trim().parse().unwrap()
    };
    assert_eq!(json("failed"), 0.0, "no send may fail: {summary}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json("acked"), json("sent"), "{summary}");
    // Sends went on in west while east was down, and came back to east once it returned.
    let in_west = count(env, env.kafka_west(), &topic);
    let in_east = count(env, env.kafka_east(), &topic);
    eprintln!("failover: {in_east} records in east, {in_west} in west, longest pause {:.1} s", json("max_gap"));
    assert!(in_west > 0, "nothing reached west during the outage");
    assert!(in_east > 0);
    assert!((in_east + in_west) as f64 >= json("sent"), "every acknowledged record is in one of the clusters");
    // After the return, new records land in east again.
    let before = count(env, env.kafka_east(), &topic);
    env.kcat_produce(&sidecar.listen, &topic, &["after-return".to_string()], &[]).unwrap();
    assert_eq!(count(env, env.kafka_east(), &topic), before + 1);
}
