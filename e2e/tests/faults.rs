//! Upstream faults under a real sidecar: the west broker crashed (SIGKILL) and restarted under an idempotent
//! acks=all producer, every record accounted for by id; and an upstream that accepts connections but falls
//! silent, whose requests time out into closed client connections while memory stays bounded.
//!
//! The crash test uses the west cluster, which no other e2e test stops; it always starts west again.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use kproxy_e2e::hostile::{Relay, RssWatch, closed_within, count_lines, metadata, read_response};
use kproxy_e2e::sidecar::{Sidecar, config, java};
use kproxy_e2e::{Env, env, run_with_timeout, unique, wait_for};

/// Resident memory the sidecar (a debug build) must stay under while its upstream is silent.
const RSS_CAP_KIB: u64 = 128 * 1024;

fn kafka_script(env: &Env, action: &str, cluster: &str) {
    let mut cmd = Command::new(env.var("KPROXY_KAFKA_SCRIPT"));
    cmd.args([action, cluster]);
    env.run(&mut cmd, Duration::from_secs(180)).unwrap_or_else(|e| panic!("kafka.sh {action} {cluster}: {e:#}"));
}

/// Starts the cluster again when dropped, so a failing test never leaves it down for the others.
struct Restart<'a> {
    env: &'a Env,
    cluster: &'static str,
    done: bool,
}

impl Restart<'_> {
    fn now(&mut self) {
        kafka_script(self.env, "start", self.cluster);
        self.done = true;
    }
}

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.env.run(
                Command::new(self.env.var("KPROXY_KAFKA_SCRIPT")).args(["start", self.cluster]),
                Duration::from_secs(180),
            );
        }
    }
}

/// A librdkafka producer (acks=all, idempotence) sending numbered records every 10 ms until `stop` exists;
/// counts the acknowledgements that arrive after `restarted` exists, and prints a JSON summary.
const PRODUCER: &str = r#"
import sys, os, time, json
from confluent_kafka import Producer
bootstrap, topic, restarted, stop = sys.argv[1:5]
state = {"acked": 0, "acked_after_restart": 0, "failed": 0, "errors": []}
def done(err, msg):
    if err:
        state["failed"] += 1
        if len(state["errors"]) < 3: state["errors"].append(str(err))
    else:
        state["acked"] += 1
        if os.path.exists(restarted): state["acked_after_restart"] += 1
p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
              "message.timeout.ms": 150000, "linger.ms": 5, "retry.backoff.ms": 200,
              "reconnect.backoff.max.ms": 1000})
n = 0
while not os.path.exists(stop):
    p.produce(topic, str(n).encode(), callback=done)
    n += 1
    p.poll(0.01)
left = p.flush(160)
state.update(sent=n, unflushed=left)
print(json.dumps(state))
"#;

fn field(summary: &str, key: &str) -> u64 {
    let at = summary.find(&format!("\"{key}\": ")).unwrap_or_else(|| panic!("no {key} in {summary:?}"));
    summary[at + key.len() + 4..].split([',', '}']).next().unwrap().trim().parse().unwrap()
}

#[test]
fn broker_crash_under_an_idempotent_producer_loses_no_record_and_traffic_resumes() {
    let Some(env) = env() else { return };
    let west = env.kafka_west();
    let topic = unique("faults-crash");
    let mut create = java(env, "org.apache.kafka.tools.TopicCommand");
    create.args(["--bootstrap-server", west, "--create", "--topic", &topic, "--partitions", "3"]);
    create.args(["--replication-factor", "1"]);
    env.run(&mut create, Duration::from_secs(120)).unwrap();
    let sidecar = Sidecar::start(env, &config("west", west), &[]).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let (restarted, stop) = (scratch.path().join("restarted"), scratch.path().join("stop"));
    let producer = {
        let mut cmd = env.command(env.var("KPROXY_PYTHON"));
        let args = [&sidecar.listen, &topic, restarted.to_str().unwrap(), stop.to_str().unwrap()].map(String::from);
        cmd.arg("-c").arg(PRODUCER).args(args);
        // The whole run is bounded: a client that hangs fails the test instead of blocking it.
        std::thread::spawn(move || run_with_timeout(&mut cmd, None, Duration::from_secs(400)))
    };
    wait_for("records flowing through the sidecar", Duration::from_secs(60), || {
        Ok((sidecar.metric("kproxy_requests_total", &["api=\"Produce\"", "result=\"forwarded\""])? >= 20.0)
            .then_some(()))
    })
    .unwrap();
    let opened_before = sidecar.metric("kproxy_upstream_connections_opened_total", &[]).unwrap();
    let mut guard = Restart { env, cluster: "west", done: false };
    kafka_script(env, "kill", "west");
    let killed = Instant::now();
    // The broker is gone for a while: requests in flight fail, reconnects are refused.
    std::thread::sleep(Duration::from_secs(8));
    let failures_while_down = count_lines(&sidecar.log_text(), "upstream connection failed");
    guard.now();
    let down = killed.elapsed();
    std::fs::write(&restarted, b"").unwrap();
    wait_for("produce requests after the restart", Duration::from_secs(120), || {
        let before = sidecar.metric("kproxy_requests_total", &["api=\"Produce\"", "result=\"forwarded\""])?;
        std::thread::sleep(Duration::from_secs(2));
        let after = sidecar.metric("kproxy_requests_total", &["api=\"Produce\"", "result=\"forwarded\""])?;
        Ok((after > before).then_some(()))
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    std::fs::write(&stop, b"").unwrap();
    let out = producer.join().unwrap().expect("the producer hung or could not run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().last().unwrap_or_default().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "producer failed: {summary}\n{stderr}");

    // Every acknowledged record is in the topic, by id; duplicates are counted apart.
    let mut consume = env.command("kcat");
    consume.args(["-b", west, "-t", &topic, "-C", "-o", "beginning", "-e", "-q", "-f", "%s\\n"]);
    let records = env.run(&mut consume, Duration::from_secs(120)).unwrap();
    let mut seen = BTreeMap::<u64, u32>::new();
    for id in String::from_utf8_lossy(&records.stdout).lines() {
        *seen.entry(id.parse().unwrap()).or_default() += 1;
    }
    let sent = field(&summary, "sent");
    let missing: Vec<u64> = (0..sent).filter(|id| !seen.contains_key(id)).collect();
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    let m = sidecar.metrics().unwrap();
    let sum = |name: &str, labels: &[&str]| kproxy_e2e::sidecar::sum_series(&m, name, labels);
    let opened_after = sum("kproxy_upstream_connections_opened_total", &[]);
    let errors = sum("kproxy_requests_total", &["result=\"error\""]);
    let log = sidecar.log_text();
    eprintln!(
        "crash: west down {down:?}; producer {summary}; {} distinct ids, {duplicates} duplicates, {} missing; \
         {failures_while_down} failed upstream dials logged while down; upstream connections opened {opened_before} \
         -> {opened_after}; {errors} requests answered by closing",
        seen.len(),
        missing.len()
    );
    assert_eq!(field(&summary, "failed"), 0, "no send failed for good: {summary}\n{stderr}");
    assert_eq!(field(&summary, "unflushed"), 0, "{summary}");
    assert_eq!(field(&summary, "acked"), sent, "{summary}");
    assert!(field(&summary, "acked_after_restart") > 0, "traffic resumed after the restart: {summary}");
    assert!(missing.is_empty(), "records lost: {:?}...", &missing[..missing.len().min(20)]);
    assert_eq!(duplicates, 0, "an idempotent producer writes no duplicates");
    // Reconnects back off: a bounded number of dials however often the client reconnected.
    assert!((1..=40).contains(&failures_while_down), "{failures_while_down} failed dials in 8 s");
    // The pool noticed the crash and dialled again once west was back (the sidecar was never restarted).
    assert!(opened_after > opened_before, "no upstream connection was opened after the restart");
    assert!(
        log.contains("upstream connection closed") || log.contains("upstream connection lost"),
        "the lost upstream connection is logged"
    );
}

#[test]
fn a_silent_upstream_times_requests_out_into_closed_connections_with_bounded_memory() {
    let Some(env) = env() else { return };
    let relay = Relay::start(env.kafka_east()).unwrap();
    let sidecar = Sidecar::start(env, &config("east", &relay.addr), &["--request-timeout-secs", "3"]).unwrap();
    let mut s = TcpStream::connect(&sidecar.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&metadata(1)).unwrap();
    assert_eq!(read_response(&mut s).unwrap().0, 1, "answers while the upstream talks");

    relay.set_silent(true);
    s.write_all(&metadata(2)).unwrap();
    let rss = RssWatch::start(sidecar.pid());
    // Clients with many requests in flight each: every one gets its connection closed, none waits forever.
    let clients: Vec<std::thread::JoinHandle<bool>> = (0..100)
        .map(|c| {
            let listen = sidecar.listen.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&listen).unwrap();
                let pipelined: Vec<u8> = (0..32).flat_map(|i| metadata(c * 100 + i)).collect();
                s.write_all(&pipelined).unwrap();
                closed_within(&mut s, Duration::from_secs(60))
            })
        })
        .collect();
    let closed = clients.into_iter().map(|t| t.join().unwrap()).filter(|c| *c).count();
    assert!(closed_within(&mut s, Duration::from_secs(60)), "the first connection, now waiting too, is closed");
    // A real client gives up with an error rather than hanging.
    let kcat = run_with_timeout(
        env.command("kcat").args(["-L", "-b", &sidecar.listen, "-m", "10"]),
        None,
        Duration::from_secs(120),
    )
    .expect("kcat hung against a silent upstream");
    let peak = rss.peak();
    let timeouts = sidecar.metric("kproxy_requests_total", &["api=\"Metadata\"", "result=\"error\""]).unwrap();
    let log = sidecar.log_text();
    eprintln!(
        "silent upstream: {closed}/100 clients closed, {timeouts} Metadata requests ended in an error, kcat exit {}, \
         peak RSS {} MiB, {} timeout log lines",
        kcat.status,
        peak / 1024,
        count_lines(&log, "upstream did not answer in time")
    );
    assert_eq!(closed, 100, "every client connection was closed after the request timeout");
    assert!(!kcat.status.success(), "kcat -L cannot succeed against a silent upstream");
    assert!(timeouts >= 100.0, "timed-out requests are counted as errors");
    assert!(log.contains("upstream did not answer in time"), "the timeout is logged");
    assert!(log.contains("closing the upstream connection"), "the hung upstream connection is given up");
    assert!(peak < RSS_CAP_KIB, "peak RSS {peak} KiB");

    // The upstream speaks again: new requests are answered without restarting the sidecar.
    relay.set_silent(false);
    wait_for("answers once the upstream speaks again", Duration::from_secs(90), || {
        let mut s = TcpStream::connect(&sidecar.listen)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(&metadata(7))?;
        Ok(read_response(&mut s).ok().filter(|(id, _)| *id == 7).map(|_| ()))
    })
    .unwrap();
}
