//! Failover against the real clusters: east's brokers are killed, and later hung (processes stopped), under a
//! running producer on a route that fails over to west; each time sends continue to west with no failed send, and
//! when east is back the route returns and the same producer sends to east again. The gaps are measured and
//! printed, and so is what the switches did to the records: every acknowledged record is stored, duplicates (in
//! one cluster, or in both) are counted.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kproxy_e2e::sidecar::{Sidecar, east_west, java};
use kproxy_e2e::{Env, env, unique};

fn config(env: &Env, run: &str) -> String {
    east_west(
        env,
        "west",
        &[format!(r#"{{match: {{topicPrefix: "{run}-orders."}}, cluster: east, failover: [west]}}"#)],
    )
}

fn create_topic(env: &Env, bootstrap: &str, topic: &str) {
    let mut cmd = java(env, "org.apache.kafka.tools.TopicCommand");
    cmd.args(["--bootstrap-server", bootstrap, "--create", "--topic", topic, "--partitions", "1"]);
    cmd.args(["--replication-factor", "1"]);
    env.run(&mut cmd, Duration::from_secs(120)).unwrap();
}

/// A librdkafka producer sending one numbered record every 20 ms until its stdin closes, then printing one JSON
/// line: records sent, failed sends, and every acknowledgement as [record number, ack time (Unix seconds)].
const PRODUCER: &str = r#"
import sys, time, json, os, threading
from confluent_kafka import Producer
bootstrap, topic = sys.argv[1], sys.argv[2]
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
acks, failed = [], []
def done(err, msg):
    if err: failed.append(str(err))
    else: acks.append([int(msg.value()), time.time()])
conf = {"bootstrap.servers": bootstrap, "message.timeout.ms": 300000, "linger.ms": 5,
        "retry.backoff.ms": 200, "reconnect.backoff.max.ms": 1000}
if os.environ.get("KPROXY_RDKAFKA_DEBUG"): conf["debug"] = os.environ["KPROXY_RDKAFKA_DEBUG"]
p = Producer(conf)
n = 0
while not stop.is_set():
    p.produce(topic, str(n).encode(), callback=done)
    n += 1
    p.poll(0)
    time.sleep(0.02)
left = p.flush(300)
print(json.dumps({"sent": n, "unflushed": left, "failed": len(failed), "errors": failed[:3], "acks": acks}))
"#;

fn kafka_script(env: &Env, action: &str) {
    let mut cmd = Command::new(env.var("KPROXY_KAFKA_SCRIPT"));
    cmd.args([action, "east"]);
    let out = env.run(&mut cmd, Duration::from_secs(180)).unwrap();
    assert!(out.status.success(), "kafka.sh {action} east: {}", String::from_utf8_lossy(&out.stderr));
}

/// How many times each record number is stored in `topic`, read directly from one cluster.
fn records(env: &Env, bootstrap: &str, topic: &str) -> BTreeMap<u64, u32> {
    let mut cmd = env.command("kcat");
    cmd.args(["-b", bootstrap, "-t", topic, "-C", "-o", "beginning", "-e", "-q"]);
    let out = env.run(&mut cmd, Duration::from_secs(60)).unwrap();
    let mut counts = BTreeMap::new();
    for n in String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()) {
        *counts.entry(n).or_insert(0) += 1;
    }
    counts
}

/// Copies beyond the first of every record in one cluster.
fn repeats(stored: &BTreeMap<u64, u32>) -> u32 {
    stored.values().map(|n| n - 1).sum()
}

/// Every broker process of east stopped (SIGSTOP) until dropped, when they continue (SIGCONT), even if the test
/// fails. One hung broker of three is not a failover: all of them are.
struct Hung(Vec<String>);

impl Hung {
    fn stop(env: &Env) -> Hung {
        let dir = std::path::Path::new(env.var("KPROXY_ENV_DIR")).join("kafka/east");
        let brokers = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.path().join("kafka.pid"));
        let pids: Vec<String> = std::iter::once(dir.join("kafka.pid"))
            .chain(brokers)
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .map(|p| p.trim().to_string())
            .collect();
        assert!(!pids.is_empty(), "no east broker runs");
        let hung = Hung(pids);
        assert!(Command::new("kill").arg("-STOP").args(&hung.0).status().unwrap().success());
        hung
    }
}

impl Drop for Hung {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-CONT").args(&self.0).status();
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

#[test]
fn a_route_fails_over_to_west_while_east_is_down_and_returns() {
    let Some(env) = env() else { return };
    let run = unique("fo");
    let topic = format!("{run}-orders.live");
    // The fallback already holds the same topic (kproxy routes, it does not replicate).
    create_topic(env, env.kafka_east(), &topic);
    create_topic(env, env.kafka_west(), &topic);
    let sidecar = Sidecar::start(env, &config(env, &run), &[]).unwrap();

    let mut producer = env.command(env.var("KPROXY_PYTHON"));
    // The client's own log (librdkafka debug with KPROXY_RDKAFKA_DEBUG=broker,topic,msg) sits beside the sidecar's.
    let client_log = std::path::Path::new(env.log_dir()).join(format!("{run}-producer.log"));
    producer.args(["-c", PRODUCER, &sidecar.listen, &topic]).stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut producer = producer.stderr(std::fs::File::create(&client_log).unwrap()).spawn().unwrap();
    eprintln!("failover: sidecar log {}, client log {}", sidecar.log.display(), client_log.display());
    std::thread::sleep(Duration::from_secs(8));

    let (stopped, stopped_at) = (Instant::now(), unix_now());
    kafka_script(env, "kill");
    sidecar.wait_switches("fallback", 1, Duration::from_secs(90)).unwrap();
    let switched_after = stopped.elapsed();
    std::thread::sleep(Duration::from_secs(10));
    let restarted_at = unix_now();
    kafka_script(env, "start");
    sidecar.wait_switches("primary", 1, Duration::from_secs(180)).unwrap();
    let returned_at = unix_now();
    // Long enough for the running producer to be steered back and send on in east.
    std::thread::sleep(Duration::from_secs(15));

    // A hung east (its process stopped: connections stay open, nothing is answered) fails over the same way.
    let hung = Hung::stop(env);
    let (hung_since, hung_at) = (Instant::now(), unix_now());
    sidecar.wait_switches("fallback", 2, Duration::from_secs(90)).unwrap();
    let hung_switched_after = hung_since.elapsed();
    std::thread::sleep(Duration::from_secs(10));
    let resumed_at = unix_now();
    drop(hung);
    sidecar.wait_switches("primary", 2, Duration::from_secs(120)).unwrap();
    let returned_again_at = unix_now();
    std::thread::sleep(Duration::from_secs(15));
    drop(producer.stdin.take());
    let out = producer.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("producer printed no summary ({e}): {stdout}; see {}", client_log.display()));
    let sent = summary["sent"].as_u64().unwrap();
    let acks: Vec<(u64, f64)> =
        summary["acks"].as_array().unwrap().iter().map(|a| (a[0].as_u64().unwrap(), a[1].as_f64().unwrap())).collect();
    assert_eq!(summary["failed"], 0, "no send may fail: {}", summary["errors"]);
    assert_eq!(acks.len() as u64, sent, "every record is acknowledged");

    let (east, west) = (records(env, env.kafka_east(), &topic), records(env, env.kafka_west(), &topic));
    let lost: Vec<_> = acks.iter().filter(|(n, _)| !east.contains_key(n) && !west.contains_key(n)).take(5).collect();
    assert!(lost.is_empty(), "acknowledged records in neither cluster: {lost:?}");
    // What the route switches did to the records: retried sends may be stored twice in one cluster (the producer
    // is not idempotent) or once in each (a send east answered too late for, retried to west).
    let in_both = east.keys().filter(|n| west.contains_key(n)).count();
    let (repeated_east, repeated_west) = (repeats(&east), repeats(&west));
    let mut times: Vec<f64> = acks.iter().map(|(_, t)| *t).collect();
    times.sort_by(f64::total_cmp);
    let longest_pause = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    let first = |set: &BTreeMap<u64, u32>, after: f64| {
        let times = acks.iter().filter(|(n, t)| *t > after && set.contains_key(n)).map(|(_, t)| *t);
        times.fold(f64::INFINITY, f64::min)
    };
    let (first_west, first_east_again) = (first(&west, stopped_at), first(&east, returned_at));
    let (first_west_hung, first_east_resumed) = (first(&west, hung_at), first(&east, returned_again_at));
    eprintln!(
        "failover (killed): route switched {:.1} s after the kill; first ack in west {:.1} s after it; first ack in \
         east {:.1} s after the route returned",
        switched_after.as_secs_f64(),
        first_west - stopped_at,
        first_east_again - returned_at,
    );
    eprintln!(
        "failover (hung): route switched {:.1} s after east hung; first ack in west {:.1} s after it; first ack in \
         east {:.1} s after the route returned",
        hung_switched_after.as_secs_f64(),
        first_west_hung - hung_at,
        first_east_resumed - returned_again_at,
    );
    eprintln!(
        "failover: longest pause between acks {longest_pause:.1} s; {sent} sent, {} acked, {} distinct stored in \
         east, {} in west; duplicated: {in_both} in both clusters, {repeated_east} repeated in east, \
         {repeated_west} in west; 0 acknowledged records lost",
        acks.len(),
        east.len(),
        west.len()
    );
    // Sends went on in west while east was down or hung...
    assert!(first_west < restarted_at, "nothing reached west while east was down");
    assert!(first_west_hung < resumed_at, "nothing reached west while east was hung");
    // ...and the running producer came back to east once it returned: its last record is there.
    assert!(east.contains_key(&(sent - 1)), "the last record did not land in east after the route returned");
}
