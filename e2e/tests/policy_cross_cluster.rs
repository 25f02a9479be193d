//! Requests that cannot work across clusters, against the real east and west clusters with a real client: a
//! group routed to east committing offsets of a west topic, and a transaction whose id is routed to west adding
//! a partition of an east topic, are refused with INVALID_REQUEST (and counted); the same group committing its own
//! cluster's offsets works.

use std::time::Duration;

use kproxy_e2e::sidecar::{Sidecar, java};
use kproxy_e2e::{Env, env, run_with_timeout, unique};

fn create_topic(env: &Env, bootstrap: &str, topic: &str) {
    let mut cmd = java(env, "org.apache.kafka.tools.TopicCommand");
    cmd.args(["--bootstrap-server", bootstrap, "--create", "--topic", topic, "--partitions", "1"]);
    cmd.args(["--replication-factor", "1"]);
    env.run(&mut cmd, Duration::from_secs(120)).unwrap();
}

fn config(env: &Env, run: &str) -> String {
    format!(
        r#"clusters:
- name: east
  bootstrapServers: ["{east}"]
- name: west
  bootstrapServers: ["{west}"]
defaultCluster: west
routes:
- {{match: {{topicPrefix: "{run}-orders."}}, cluster: east}}
- {{match: {{groupPrefix: "{run}-orders-"}}, cluster: east}}
"#,
        east = env.kafka_east(),
        west = env.kafka_west(),
    )
}

/// librdkafka: commits of a group (first its own cluster's topic, then one of each cluster), the committed offset
/// read back, and a transaction producing to `orders`; prints one line per step: "<step> ok|<error>".
const CLIENT: &str = r#"
import sys
from confluent_kafka import Consumer, Producer, TopicPartition, KafkaException
bootstrap, group, txn, orders, audit = sys.argv[1:6]
def step(name, f):
    try:
        out = f()
        errs = [str(p.error) for p in (out or []) if getattr(p, "error", None)]
        print(name, "ok" if not errs else " ".join(errs), flush=True)
    except KafkaException as e:
        print(name, str(e.args[0]), flush=True)
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
step("commit-own", lambda: c.commit(offsets=[TopicPartition(orders, 0, 1)], asynchronous=False))
step("commit-both", lambda: c.commit(offsets=[TopicPartition(orders, 0, 2), TopicPartition(audit, 0, 2)], asynchronous=False))
def committed_own():
    got = c.committed([TopicPartition(orders, 0)], timeout=30)[0]
    if got.error: raise KafkaException(got.error)
    if got.offset != 1: raise KafkaException("committed offset %d, not 1" % got.offset)
step("committed-own", committed_own)
c.close()
p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn, "transaction.timeout.ms": 60000})
p.init_transactions(60)
p.begin_transaction()
p.produce(orders, b"in-a-transaction")
step("txn-commit", lambda: p.commit_transaction(60))
"#;

#[test]
fn a_group_or_transaction_spanning_clusters_is_refused_with_invalid_request() {
    let Some(env) = env() else { return };
    let run = unique("xc");
    let (orders, audit) = (format!("{run}-orders.a"), format!("{run}-audit"));
    create_topic(env, env.kafka_east(), &orders);
    create_topic(env, env.kafka_west(), &audit);
    let sidecar = Sidecar::start(env, &config(env, &run), &[]).unwrap();

    let group = format!("{run}-orders-app");
    let txn = format!("{run}-tx");
    let mut cmd = env.command(env.var("KPROXY_PYTHON"));
    cmd.args(["-c", CLIENT, &sidecar.listen, &group, &txn, &orders, &audit]);
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(240)).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let step = |name: &str| -> String {
        let line = stdout.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).map(str::to_owned);
        line.unwrap_or_else(|| panic!("no {name} step: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
    };
    eprintln!("cross-cluster: {}", stdout.trim().replace('\n', "; "));
    assert_eq!(step("commit-own"), "ok", "a group commits offsets of its own cluster's topics");
    assert_eq!(step("committed-own"), "ok", "and reads them back");
    let both = step("commit-both");
    assert!(both.contains("INVALID_REQUEST") || both.contains("Invalid request"), "commit-both: {both}");
    let txn_commit = step("txn-commit");
    assert!(txn_commit.contains("Invalid request") || txn_commit.contains("INVALID_REQUEST"), "txn: {txn_commit}");

    // Each refusal was counted and logged with its reason.
    let refused = |api: &str| sidecar.metric("kproxy_route_refused_total", &[&format!("api=\"{api}\"")]).unwrap();
    assert!(refused("OffsetCommit") >= 1.0);
    assert!(refused("AddPartitionsToTxn") >= 1.0);
    let log = sidecar.log_text();
    assert!(log.contains("would span clusters") && log.contains(&audit), "the log names the clash");
}
