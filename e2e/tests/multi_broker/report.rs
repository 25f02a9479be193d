//! The exact accounting of one multi-broker run: what the producer sent and had acknowledged, what the brokers
//! stored (read back directly, each record counted), what the consumer group read and committed, what the client
//! on the bootstrap address saw, and the sidecar's upstream connections; printed, then checked.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use kproxy_e2e::Env;
use kproxy_e2e::sidecar::java;

use super::east;
use super::workload::{POOL_BOUND, Samples, Watch};

#[derive(Default, Debug)]
pub struct Report {
    pub sent: u64,
    pub unflushed: u64,
    pub failed: Vec<String>,
    /// Errors librdkafka reported to the application besides failed deliveries (e.g. a broker disconnected).
    pub errors: Vec<String>,
    /// Acknowledged record -> (ack time, partition, offset).
    pub acks: BTreeMap<u64, (f64, i32, i64)>,
    /// Acknowledgements of the same record more than once (never expected).
    pub acked_twice: u64,
    /// Per partition, the log end once the producer is done: one past the highest acknowledged offset, or the
    /// records acknowledged there when more (offsets of a fresh topic written without transactions run from 0
    /// without gaps, and an acknowledgement may come without its offset).
    pub log_end: BTreeMap<i32, i64>,
    /// Acknowledgements that came without an offset.
    pub acks_without_offset: u64,
    /// librdkafka's brokers: name -> (node id, connects, disconnects).
    pub client_brokers: BTreeMap<String, (i64, u64, u64)>,
    /// Record -> times stored, read directly from the brokers.
    pub stored: BTreeMap<u64, u32>,
    /// Record -> times the group delivered it.
    pub read_by_group: BTreeMap<u64, u32>,
    /// Per partition, (committed, log end) as Kafka's consumer-groups tool reports them.
    pub committed: BTreeMap<i32, (i64, i64)>,
    pub commit_failures: u64,
    pub watch: Watch,
    pub samples: Samples,
    /// Upstream connections to east opened during the run; route switches to the fallback.
    pub opened: f64,
    pub failovers: f64,
    pub seconds: f64,
}

fn lines(outputs: &[PathBuf]) -> Vec<serde_json::Value> {
    let text: String = outputs.iter().map(|o| std::fs::read_to_string(o).unwrap_or_default()).collect();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Record -> times delivered to the group's members, from their record_data events.
pub fn read_by_group(outputs: &[PathBuf]) -> BTreeMap<u64, u32> {
    let mut read = BTreeMap::new();
    for event in lines(outputs).iter().filter(|e| e["name"] == "record_data") {
        if let Some(n) = event["value"].as_str().and_then(|v| v.parse().ok()) {
            *read.entry(n).or_insert(0) += 1;
        }
    }
    read
}

/// Per partition, the highest offset committed successfully by any member.
pub fn committed_by_group(outputs: &[PathBuf]) -> BTreeMap<i32, i64> {
    let mut committed = BTreeMap::new();
    for event in lines(outputs).iter().filter(|e| e["name"] == "offsets_committed" && e["success"] == true) {
        for o in event["offsets"].as_array().into_iter().flatten() {
            let (Some(p), Some(offset)) = (o["partition"].as_i64(), o["offset"].as_i64()) else { continue };
            let at = committed.entry(p as i32).or_insert(offset);
            *at = (*at).max(offset);
        }
    }
    committed
}

pub fn commit_failures(outputs: &[PathBuf]) -> u64 {
    lines(outputs).iter().filter(|e| e["name"] == "offsets_committed" && e["success"] == false).count() as u64
}

/// Record -> times stored in `topic`, read from east's brokers directly.
pub fn stored(env: &Env, topic: &str) -> BTreeMap<u64, u32> {
    let mut cmd = env.command("kcat");
    cmd.args(["-b", east::bootstrap(env), "-t", topic, "-C", "-o", "beginning", "-e", "-q", "-f", "%s\\n"]);
    let out = env.run(&mut cmd, Duration::from_secs(120)).unwrap();
    let mut stored = BTreeMap::new();
    for n in String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()) {
        *stored.entry(n).or_insert(0) += 1;
    }
    stored
}

/// Per partition, (committed offset, log end offset) of `group` on `topic`, from kafka-consumer-groups.
pub fn committed_offsets(env: &Env, group: &str, topic: &str) -> BTreeMap<i32, (i64, i64)> {
    let mut cmd = java(env, "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand");
    cmd.args(["--bootstrap-server", east::bootstrap(env), "--describe", "--offsets", "--group", group]);
    let out = env.run(&mut cmd, Duration::from_secs(120)).unwrap();
    // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 5 && f[1] == topic)
        .filter_map(|f| Some((f[2].parse().ok()?, (f[3].parse().ok()?, f[4].parse().ok()?))))
        .collect()
}

/// A GET on an admin endpoint: the body of a 200 answer.
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") => Ok(body.into()),
        _ => anyhow::bail!("GET {path}: {}", text.lines().next().unwrap_or_default()),
    }
}

/// `broker` label -> value of every series of `metric` in Prometheus text.
pub fn per_broker(text: &str, metric: &str) -> Vec<(String, f64)> {
    let prefix = format!("{metric}{{");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once(' ')?;
            let broker = labels.split("broker=\"").nth(1)?.split('"').next()?;
            Some((broker.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The value of one exact series, if present.
pub fn gauge(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

impl Report {
    pub fn from_producer(summary: &serde_json::Value) -> Report {
        let strings = |key: &str| -> Vec<String> {
            summary[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect()
        };
        let mut report = Report {
            sent: summary["sent"].as_u64().unwrap_or_default(),
            unflushed: summary["unflushed"].as_u64().unwrap_or_default(),
            failed: strings("failed"),
            errors: strings("errors"),
            ..Report::default()
        };
        let mut per_partition: BTreeMap<i32, i64> = BTreeMap::new();
        for a in summary["acks"].as_array().into_iter().flatten() {
            let (Some(n), Some(t), Some(p), Some(o)) = (a[0].as_u64(), a[1].as_f64(), a[2].as_i64(), a[3].as_i64())
            else {
                panic!("an acknowledgement the producer printed is not [record, time, partition, offset]: {a}");
            };
            if report.acks.insert(n, (t, p as i32, o)).is_some() {
                report.acked_twice += 1;
            }
            if o < 0 {
                report.acks_without_offset += 1;
            }
            *per_partition.entry(p as i32).or_insert(0) += 1;
            let end = report.log_end.entry(p as i32).or_insert(0);
            *end = (*end).max(o + 1);
        }
        for (p, count) in per_partition {
            let end = report.log_end.entry(p).or_insert(0);
            *end = (*end).max(count);
        }
        for (name, b) in summary["brokers"].as_object().into_iter().flatten() {
            let field = |i: usize| b[i].as_u64().unwrap_or_default();
            report.client_brokers.insert(name.clone(), (b[0].as_i64().unwrap_or_default(), field(1), field(2)));
        }
        report
    }

    /// The longest time without any acknowledgement, in seconds.
    pub fn longest_ack_pause(&self) -> f64 {
        let mut times: Vec<f64> = self.acks.values().map(|(t, _, _)| *t).collect();
        times.sort_by(f64::total_cmp);
        times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
    }

    fn acked(&self) -> BTreeSet<u64> {
        self.acks.keys().copied().collect()
    }

    /// Prints every figure of the run.
    pub fn print(&self, scenario: &str) {
        let stored_total: u32 = self.stored.values().sum();
        let duplicated = stored_total as usize - self.stored.len();
        let group_total: u32 = self.read_by_group.values().sum();
        let client: Vec<String> =
            self.client_brokers.iter().map(|(n, (id, c, d))| format!("{n} (node {id}): {c}/{d}")).collect();
        eprintln!(
            "{scenario}: {:.0} s; records sent {}, acked {} ({} without an offset), failed {}, stored {} ({} \
             distinct, {duplicated} duplicated); longest pause in acks {:.2} s; errors reported to the producer {} {:?}; the \
             producer's connections (connects/disconnects) {client:?}",
            self.seconds,
            self.sent,
            self.acks.len(),
            self.acks_without_offset,
            self.failed.len(),
            stored_total,
            self.stored.len(),
            self.longest_ack_pause(),
            self.errors.len(),
            self.errors.iter().take(3).collect::<Vec<_>>(),
        );
        eprintln!(
            "{scenario}: consumer group read {group_total} records ({} distinct, {} redelivered), {} failed commits; \
             committed/log end per partition {:?}",
            self.read_by_group.len(),
            group_total as usize - self.read_by_group.len(),
            self.commit_failures,
            self.committed,
        );
        eprintln!(
            "{scenario}: bootstrap client {} answers, {} connections dropped by the sidecar {:?}; upstream connections opened {}, most open per broker {:?} (bound \
             {POOL_BOUND}, {} samples); route switches to the fallback {}, east reachable throughout: {}",
            self.watch.answers,
            self.watch.dropped,
            self.watch.reasons,
            self.opened,
            self.samples.max_per_broker,
            self.samples.samples,
            self.failovers,
            self.samples.min_east_reachable == Some(1.0),
        );
    }

    /// What every run must show: no failed send, every acknowledged record stored exactly once and read by the
    /// group, the group's commits at the log end, the bootstrap connection never dropped, the pools within their
    /// bounds, and no failover for a cluster that kept brokers answering.
    pub fn check(&self) {
        let acked = self.acked();
        assert!(self.failed.is_empty(), "failed sends: {:?}", &self.failed[..self.failed.len().min(3)]);
        assert_eq!((self.unflushed, self.acked_twice), (0, 0), "unflushed, acknowledged twice");
        assert_eq!(self.acks.len() as u64, self.sent, "every record sent is acknowledged");
        let stored: BTreeSet<u64> = self.stored.keys().copied().collect();
        let missing: Vec<_> = acked.difference(&stored).take(10).collect();
        assert!(missing.is_empty(), "acknowledged records not stored: {missing:?}");
        let stray: Vec<_> = stored.difference(&acked).take(10).collect();
        assert!(stray.is_empty(), "records stored that were never acknowledged: {stray:?}");
        let twice: Vec<_> = self.stored.iter().filter(|(_, n)| **n > 1).take(10).collect();
        assert!(twice.is_empty(), "records stored more than once (record, copies): {twice:?}");
        let unread: Vec<_> = acked.iter().filter(|n| !self.read_by_group.contains_key(n)).take(10).collect();
        assert!(unread.is_empty(), "acknowledged records the group never read: {unread:?}");
        let at_end: BTreeMap<i32, (i64, i64)> = self.log_end.iter().map(|(p, end)| (*p, (*end, *end))).collect();
        assert_eq!(self.committed, at_end, "the group's committed offsets (committed, log end) are at the log end");
        assert_eq!(self.watch.dropped, 0, "the sidecar dropped the bootstrap connection: {:?}", self.watch.reasons);
        assert!(self.watch.answers > 0, "the bootstrap client got answers");
        assert!(self.samples.samples > 0 && !self.samples.max_per_broker.is_empty(), "the metrics were sampled");
        let over: Vec<_> = self.samples.max_per_broker.iter().filter(|(_, n)| **n > POOL_BOUND as f64).collect();
        assert!(over.is_empty(), "upstream connections over the pool bound {POOL_BOUND}: {over:?}");
        assert_eq!(self.failovers, 0.0, "east kept answering brokers: its route must not fail over");
        assert_eq!(self.samples.min_east_reachable, Some(1.0), "east was found unreachable");
    }
}
