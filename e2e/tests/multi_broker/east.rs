//! The three-broker east cluster as the multi-broker tests drive it: one broker stopped, killed or started with
//! kafka.sh, a topic's replicas, leaders and in-sync replicas read directly from the brokers, and its partitions
//! reassigned and their leaders elected with Kafka's own tools.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kproxy_e2e::sidecar::java;
use kproxy_e2e::{Env, wait_for};

/// The broker a test may add: its ports are reserved, it runs only while a test needs it.
pub const SPARE: u32 = 4;

/// Every default east broker, as clients bootstrap to them.
pub fn bootstrap(env: &Env) -> &str {
    env.var("KPROXY_KAFKA_EAST_BROKERS")
}

/// One of east's brokers: `kafka.sh ACTION east ID` (start waits until it answers); returns how long it took.
pub fn broker(env: &Env, action: &str, id: u32) -> Duration {
    let started = Instant::now();
    let mut cmd = Command::new(env.var("KPROXY_KAFKA_SCRIPT"));
    cmd.args([action, "east", &id.to_string()]);
    env.run(&mut cmd, Duration::from_secs(180)).unwrap_or_else(|e| panic!("kafka.sh {action} east {id}: {e:#}"));
    started.elapsed()
}

/// Puts east back as the other tests expect it when dropped (also when a test fails half-way): brokers 1-3
/// running, the spare stopped.
pub struct Restore<'a>(pub &'a Env);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let script = self.0.var("KPROXY_KAFKA_SCRIPT");
        let _ = self.0.run(Command::new(script).args(["start", "east"]), Duration::from_secs(180));
        let _ = self.0.run(Command::new(script).args(["stop", "east", &SPARE.to_string()]), Duration::from_secs(60));
    }
}

/// A partition as the brokers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

fn ids(list: &str) -> Vec<i32> {
    list.split(',').filter_map(|n| n.trim().parse().ok()).collect()
}

/// The partitions of `topic` from kcat's metadata listing (directly from the brokers, not through a sidecar).
pub fn partitions(env: &Env, topic: &str) -> Result<BTreeMap<i32, Partition>> {
    let mut cmd = env.command("kcat");
    cmd.args(["-L", "-m", "10", "-b", bootstrap(env), "-t", topic]);
    let out = env.run(&mut cmd, Duration::from_secs(30))?;
    let mut found = BTreeMap::new();
    // "    partition 0, leader 2, replicas: 2,3,1, isrs: 2,3,1"
    for line in String::from_utf8_lossy(&out.stdout).lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("partition ") else { continue };
        let fields: Vec<&str> = rest.split(", ").collect();
        let field = |name: &str| fields.iter().find_map(|f| f.strip_prefix(name)).unwrap_or_default();
        let id: i32 = fields.first().and_then(|f| f.parse().ok()).context(line.to_string())?;
        let leader = field("leader ").parse().with_context(|| line.to_string())?;
        found.insert(id, Partition { leader, replicas: ids(field("replicas: ")), isr: ids(field("isrs: ")) });
    }
    if found.is_empty() {
        bail!("no partitions of {topic} listed");
    }
    Ok(found)
}

/// Waits until every replica of every partition of `topic` is in sync: a broker that came back has caught up.
pub fn wait_in_sync(env: &Env, topic: &str) -> Duration {
    let started = Instant::now();
    wait_for(&format!("{topic} fully in sync"), Duration::from_secs(120), || {
        let parts = partitions(env, topic)?;
        Ok(parts.values().all(|p| p.isr.len() == p.replicas.len() && p.leader >= 0).then_some(()))
    })
    .unwrap();
    started.elapsed()
}

/// Creates `topic` on east: three partitions (one led by each broker), three replicas, two of which must have a
/// record before it is acknowledged.
pub fn create_topic(env: &Env, topic: &str) {
    let mut cmd = java(env, "org.apache.kafka.tools.TopicCommand");
    cmd.args(["--bootstrap-server", bootstrap(env), "--create", "--topic", topic, "--partitions", "3"]);
    cmd.args(["--replication-factor", "3", "--config", "min.insync.replicas=2"]);
    env.run(&mut cmd, Duration::from_secs(120)).unwrap();
    wait_in_sync(env, topic);
}

/// A JSON file for Kafka's partition tools, removed with the value.
fn json_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    file
}

/// Moves `topic`'s partitions onto `replicas` (first replica preferred) with kafka-reassign-partitions and waits
/// until the reassignment is complete.
pub fn reassign(env: &Env, topic: &str, replicas: &BTreeMap<i32, Vec<i32>>) {
    let parts: Vec<String> =
        replicas.iter().map(|(p, r)| format!(r#"{{"topic":"{topic}","partition":{p},"replicas":{r:?}}}"#)).collect();
    let plan = json_file(&format!(r#"{{"version":1,"partitions":[{}]}}"#, parts.join(",")));
    let tool = |action: &str| {
        let mut cmd = java(env, "org.apache.kafka.tools.reassign.ReassignPartitionsCommand");
        cmd.args(["--bootstrap-server", bootstrap(env), "--reassignment-json-file"]).arg(plan.path()).arg(action);
        env.run(&mut cmd, Duration::from_secs(120)).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    tool("--execute").unwrap();
    wait_for(&format!("reassignment of {topic}"), Duration::from_secs(120), || {
        let done = tool("--verify")?;
        Ok((done.matches("is completed").count() == replicas.len()).then_some(()))
    })
    .unwrap();
    wait_in_sync(env, topic);
}

/// Elects every partition's preferred (first) replica its leader with kafka-leader-election.
pub fn elect_preferred(env: &Env, topic: &str, partitions: impl Iterator<Item = i32>) {
    let parts: Vec<String> = partitions.map(|p| format!(r#"{{"topic":"{topic}","partition":{p}}}"#)).collect();
    let file = json_file(&format!(r#"{{"partitions":[{}]}}"#, parts.join(",")));
    let mut cmd = java(env, "org.apache.kafka.tools.LeaderElectionCommand");
    cmd.args(["--bootstrap-server", bootstrap(env), "--election-type", "PREFERRED", "--path-to-json-file"]);
    env.run(cmd.arg(file.path()), Duration::from_secs(120)).unwrap();
}

/// Waits until every partition of `topic` is led by its preferred replica; returns the leaders.
pub fn wait_preferred_leaders(env: &Env, topic: &str) -> BTreeMap<i32, i32> {
    wait_for(&format!("{topic} led by its preferred replicas"), Duration::from_secs(60), || {
        let parts = partitions(env, topic)?;
        let led = parts.values().all(|p| p.replicas.first() == Some(&p.leader));
        Ok(led.then(|| parts.iter().map(|(id, p)| (*id, p.leader)).collect()))
    })
    .unwrap()
}
