//! The traffic the multi-broker tests keep running through one sidecar while east's brokers come and go: an
//! idempotent acks=all librdkafka producer (Python confluent-kafka) sending numbered records, a consumer group of
//! two Java consumers (Kafka's VerifiableConsumer, committing after every batch), a client that keeps its one
//! connection to the sidecar's bootstrap address and asks it for Metadata four times a second, and a sampler of
//! the sidecar's metrics. The sidecar routes the test's topics to east with west as their failover, so a failover
//! it should not make shows too.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use kproxy_e2e::sidecar::{Sidecar, java};
use kproxy_e2e::{Env, wait_for, wire};

use super::east;
use super::report::{self, Report};

/// Per-broker pool bounds the sidecar runs with: ordinary and long-poll connections.
const ORDINARY: usize = 2;
const LONG_POLL: usize = 4;
pub const POOL_BOUND: usize = ORDINARY + LONG_POLL;

/// Sends a numbered record every 10 ms until stdin closes, then prints one JSON line: records sent, failed
/// deliveries, errors reported to the application, every acknowledgement as [record, time, partition, offset]
/// (-1: delivered, offset unknown),
/// and the connection counts of each broker librdkafka knows.
const PRODUCER: &str = r#"
import sys, time, json, threading
from confluent_kafka import Producer
bootstrap, topic = sys.argv[1], sys.argv[2]
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
acks, failed, errors, stats = [], [], [], {}
def done(err, msg):
    if err: failed.append(str(err))
    else:
        # A delivery librdkafka could not learn the offset of (e.g. confirmed by a retry) has none: -1.
        offset = msg.offset()
        acks.append([int(msg.value()), time.time(), msg.partition(), -1 if offset is None else offset])
p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
              "message.timeout.ms": 300000, "retry.backoff.ms": 100, "reconnect.backoff.max.ms": 1000,
              "statistics.interval.ms": 1000, "error_cb": lambda e: errors.append(str(e)),
              "stats_cb": lambda s: stats.update(last=s)})
n = 0
while not stop.is_set():
    p.produce(topic, str(n).encode(), callback=done)
    n += 1
    p.poll(0)
    time.sleep(0.01)
left = p.flush(300)
# flush() can return before the last delivery reports were served (librdkafka counts its queues, not the
# reports): wait for one per record sent, or a minute.
deadline = time.time() + 60
while len(acks) + len(failed) < n and time.time() < deadline:
    p.poll(0.5)
p.poll(1.5)
brokers = {name: [b["nodeid"], b["connects"], b["disconnects"]]
           for name, b in json.loads(stats.get("last", '{"brokers": {}}'))["brokers"].items()}
print(json.dumps({"sent": n, "unflushed": left, "failed": failed, "errors": errors, "acks": acks,
                  "brokers": brokers}))
"#;

fn config(env: &Env, run: &str) -> String {
    let bootstrap: Vec<String> = east::bootstrap(env).split(',').map(|b| format!("\"{b}\"")).collect();
    format!(
        r#"clusters:
- name: east
  bootstrapServers: [{east}]
- name: west
  bootstrapServers: ["{west}"]
defaultCluster: east
routes:
- {{match: {{topicPrefix: "{run}"}}, cluster: east, failover: [west]}}
failover:
  unreachableAfterMs: 2000
  probeIntervalMs: 250
"#,
        east = bootstrap.join(", "),
        west = env.kafka_west(),
    )
}

/// What the bootstrap client saw.
#[derive(Default, Debug)]
pub struct Watch {
    pub answers: u64,
    /// Times the sidecar closed the connection (the client never does), with the first reasons.
    pub dropped: u64,
    pub reasons: Vec<String>,
    /// The brokers of the latest answer: (node id, host, port).
    pub brokers: Vec<(i32, String, i32)>,
}

/// Each broker's largest number of open upstream connections, by the sidecar's own gauge.
#[derive(Default, Debug)]
pub struct Samples {
    pub samples: u64,
    pub max_per_broker: BTreeMap<String, f64>,
    pub min_east_reachable: Option<f64>,
}

pub struct Workload {
    pub sidecar: Sidecar,
    pub topic: String,
    pub group: String,
    producer: Option<Child>,
    consumers: Vec<Child>,
    outputs: Vec<PathBuf>,
    stop: Arc<AtomicBool>,
    watch: Arc<Mutex<Watch>>,
    samples: Arc<Mutex<Samples>>,
    threads: Vec<JoinHandle<()>>,
    pub opened_before: f64,
    started: Instant,
    _scratch: tempfile::TempDir,
}

impl Workload {
    /// Creates the run's topic (3 partitions, 3 replicas, min.insync.replicas=2) and starts everything; returns
    /// once records are acknowledged and consumed through the sidecar.
    pub fn start(env: &Env, run: &str) -> Workload {
        let begun = Instant::now();
        let topic = format!("{run}-records");
        east::create_topic(env, &topic);
        let created = begun.elapsed();
        let (ordinary, long_poll) = (ORDINARY.to_string(), LONG_POLL.to_string());
        // Broker addresses as metric labels: the tests find each broker's connections by its address.
        let args = ["--upstream-connections", &ordinary, "--upstream-long-poll-connections", &long_poll];
        let sidecar = Sidecar::start(env, &config(env, run), &[&args[..], &["--metrics-broker-addresses"]].concat());
        let sidecar = sidecar.unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let log = |name: &str| File::create(Path::new(env.log_dir()).join(format!("{run}-{name}.log"))).unwrap();
        let producer = env
            .command(env.var("KPROXY_PYTHON"))
            .args(["-c", PRODUCER, &sidecar.listen, &topic])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log("producer"))
            .spawn()
            .unwrap();
        let group = format!("{run}-group");
        let outputs: Vec<PathBuf> = (0..2).map(|i| scratch.path().join(format!("consumer-{i}.jsonl"))).collect();
        let consumers = outputs
            .iter()
            .enumerate()
            .map(|(i, out)| {
                let mut cmd = java(env, "org.apache.kafka.tools.VerifiableConsumer");
                cmd.args(["--bootstrap-server", &sidecar.listen, "--topic", &topic, "--group-id", &group]);
                cmd.args(["--verbose", "--reset-policy", "earliest"]);
                cmd.stdout(File::create(out).unwrap()).stderr(log(&format!("consumer-{i}"))).spawn().unwrap()
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (watch, samples) = (Arc::default(), Arc::default());
        let threads = vec![
            watch_bootstrap(sidecar.listen.clone(), stop.clone(), Arc::clone(&watch)),
            sample_metrics(sidecar.admin.clone(), stop.clone(), Arc::clone(&samples)),
        ];
        let opened_before = sidecar.metric("kproxy_upstream_connections_opened_total", &["cluster=\"east\""]).unwrap();
        let workload = Workload {
            sidecar,
            topic,
            group,
            producer: Some(producer),
            consumers,
            outputs,
            stop,
            watch,
            samples,
            threads,
            opened_before,
            started: Instant::now(),
            _scratch: scratch,
        };
        wait_for("records produced and consumed through the sidecar", Duration::from_secs(90), || {
            Ok((report::read_by_group(&workload.outputs).len() >= 100).then_some(()))
        })
        .unwrap();
        eprintln!(
            "{run}: topic created in {created:.1?}, traffic flowing after {:.1?}; sidecar log {}",
            begun.elapsed(),
            workload.sidecar.log.display()
        );
        workload
    }

    /// Lets the traffic run on for `d`.
    pub fn run_for(&self, d: Duration) {
        std::thread::sleep(d);
    }

    /// The sidecar's gauge of open connections to one upstream broker.
    pub fn upstream_connections(&self, addr: &str) -> f64 {
        self.sidecar.metric("kproxy_upstream_connections", &[&format!("broker=\"{addr}\"")]).unwrap_or(0.0)
    }

    /// The brokers the bootstrap client's latest Metadata answer named.
    pub fn brokers_seen(&self) -> Vec<(i32, String, i32)> {
        self.watch.lock().unwrap_or_else(|p| p.into_inner()).brokers.clone()
    }

    /// Stops the producer (it flushes), waits until the group committed every partition's log end, stops the
    /// consumers and the watchers, and reads back what the brokers stored.
    pub fn finish(mut self, env: &Env) -> Report {
        let mut producer = self.producer.take().expect("finished once");
        drop(producer.stdin.take());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(producer.wait_with_output()));
        let out = rx.recv_timeout(Duration::from_secs(330)).expect("the producer did not finish").unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("the producer printed no summary ({e}): {stdout}"));
        let mut report = Report::from_producer(&summary);
        // A group that never gets there fails the check below on what Kafka's own tool reports.
        let log_end = report.log_end.clone();
        let _ = wait_for("the group's commits at the log end", Duration::from_secs(120), || {
            Ok((report::committed_by_group(&self.outputs) == log_end).then_some(()))
        });
        for c in &mut self.consumers {
            // SIGTERM: the consumer leaves the group cleanly.
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        for c in &mut self.consumers {
            let _ = c.wait();
        }
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        report.seconds = self.started.elapsed().as_secs_f64();
        report.read_by_group = report::read_by_group(&self.outputs);
        report.commit_failures = report::commit_failures(&self.outputs);
        report.stored = report::stored(env, &self.topic);
        report.committed = report::committed_offsets(env, &self.group, &self.topic);
        let m = self.sidecar.metrics().unwrap();
        let sum = |name: &str, labels: &[&str]| kproxy_e2e::sidecar::sum_series(&m, name, labels);
        report.opened = sum("kproxy_upstream_connections_opened_total", &["cluster=\"east\""]) - self.opened_before;
        report.failovers = sum("kproxy_route_switches_total", &["direction=\"fallback\""]);
        report.watch = std::mem::take(&mut *self.watch.lock().unwrap_or_else(|p| p.into_inner()));
        report.samples = std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()));
        report
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.producer.iter_mut().chain(&mut self.consumers) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One connection to the sidecar's bootstrap address, asking Metadata every 250 ms; a closed connection is
/// counted and dialled again.
fn watch_bootstrap(listen: String, stop: Arc<AtomicBool>, watch: Arc<Mutex<Watch>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conn: Option<std::net::TcpStream> = None;
        let mut id = 0;
        while !stop.load(Ordering::Relaxed) {
            if conn.is_none() {
                conn = std::net::TcpStream::connect(&listen).ok();
                if let Some(s) = &conn {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                }
            }
            if let Some(s) = conn.as_mut() {
                id += 1;
                let request = MetadataRequest::default().with_topics(Some(vec![]));
                let answer: anyhow::Result<MetadataResponse> =
                    wire::call(s, ApiKey::Metadata, 12, id, "e2e-bootstrap-watch", &request);
                let mut w = watch.lock().unwrap_or_else(|p| p.into_inner());
                match answer {
                    Ok(r) => {
                        w.answers += 1;
                        w.brokers = r.brokers.iter().map(|b| (b.node_id.0, b.host.to_string(), b.port)).collect();
                    }
                    Err(e) => {
                        w.dropped += 1;
                        if w.reasons.len() < 5 {
                            w.reasons.push(format!("{e:#}"));
                        }
                        conn = None;
                        id = 0;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    })
}

/// Samples the sidecar's metrics every 500 ms.
fn sample_metrics(admin: String, stop: Arc<AtomicBool>, samples: Arc<Mutex<Samples>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(text) = report::http_get(&admin, "/metrics") {
                let mut s = samples.lock().unwrap_or_else(|p| p.into_inner());
                s.samples += 1;
                for (broker, open) in report::per_broker(&text, "kproxy_upstream_connections") {
                    let max = s.max_per_broker.entry(broker).or_insert(0.0);
                    *max = max.max(open);
                }
                // The gauge exists once east was probed.
                if let Some(reachable) = report::gauge(&text, "kproxy_cluster_reachable{cluster=\"east\"}") {
                    s.min_east_reachable = Some(s.min_east_reachable.map_or(reachable, |m: f64| m.min(reachable)));
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })
}
