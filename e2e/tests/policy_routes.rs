//! Routes through the sidecar against the real east and west clusters: each topic lands in the cluster its route
//! names (read back directly from each broker), and one consumer reads topics of both through one bootstrap.

use std::time::Duration;

use kproxy_e2e::sidecar::{Sidecar, java};
use kproxy_e2e::{Env, env, run_with_timeout, unique};

/// `<run>-orders.*` to east, `<run>-audit` to west, everything else to east.
pub fn routes_config(env: &Env, run: &str, failover: bool) -> String {
    let fallback = if failover { ", failover: [west]" } else { "" };
    format!(
        r#"clusters:
- name: east
  bootstrapServers: ["{east}"]
- name: west
  bootstrapServers: ["{west}"]
defaultCluster: east
routes:
- {{match: {{topicPrefix: "{run}-orders."}}, cluster: east{fallback}}}
- {{match: {{topic: "{run}-audit"}}, cluster: west}}
failover:
  unreachableAfterMs: 3000
  probeIntervalMs: 500
"#,
        east = env.kafka_east(),
        west = env.kafka_west(),
    )
}

pub fn create_topic(env: &Env, bootstrap: &str, topic: &str) {
    let mut cmd = java(env, "org.apache.kafka.tools.TopicCommand");
    cmd.args(["--bootstrap-server", bootstrap, "--create", "--topic", topic, "--partitions", "1"]);
    cmd.args(["--replication-factor", "1"]);
    env.run(&mut cmd, Duration::from_secs(120)).unwrap();
}

fn topics_of(env: &Env, bootstrap: &str) -> String {
    let mut cmd = env.command("kcat");
    cmd.args(["-b", bootstrap, "-L"]);
    String::from_utf8_lossy(&env.run(&mut cmd, Duration::from_secs(30)).unwrap().stdout).into_owned()
}

/// A librdkafka consumer assigned to partition 0 of every topic (no group), reading `count` values.
const ASSIGNING_CONSUMER: &str = r#"
import sys, time
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
bootstrap, count, topics = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
c.assign([TopicPartition(t, 0, OFFSET_BEGINNING) for t in topics])
got, deadline = [], time.time() + 60
while len(got) < count and time.time() < deadline:
    m = c.poll(1.0)
    if m is not None and not m.error():
        got.append(m.value().decode())
c.close()
print("\n".join(sorted(got)))
"#;

#[test]
fn topics_land_in_the_cluster_of_their_route_and_one_consumer_reads_both() {
    let Some(env) = env() else { return };
    let run = unique("rt");
    let orders = format!("{run}-orders.eu");
    let audit = format!("{run}-audit");
    create_topic(env, env.kafka_east(), &orders);
    create_topic(env, env.kafka_west(), &audit);
    let sidecar = Sidecar::start(env, &routes_config(env, &run, false), &[]).unwrap();

    // Metadata through the sidecar shows both clusters' topics as one cluster.
    let listing = topics_of(env, &sidecar.listen);
    assert!(listing.contains(&orders) && listing.contains(&audit), "{listing}");

    env.kcat_produce(&sidecar.listen, &orders, &["order-1".to_string(), "order-2".to_string()], &[]).unwrap();
    env.kcat_produce(&sidecar.listen, &audit, &["audit-1".to_string()], &[]).unwrap();

    // Read back directly from each broker.
    assert_eq!(env.kcat_consume(env.kafka_east(), &orders, 2, &[]).unwrap(), ["order-1", "order-2"]);
    assert_eq!(env.kcat_consume(env.kafka_west(), &audit, 1, &[]).unwrap(), ["audit-1"]);
    assert!(!topics_of(env, env.kafka_east()).contains(&audit), "audit must not exist in east");
    assert!(!topics_of(env, env.kafka_west()).contains(&orders), "orders must not exist in west");

    // One consumer, one bootstrap address, both topics.
    let mut cmd = env.command(env.var("KPROXY_PYTHON"));
    cmd.args(["-c", ASSIGNING_CONSUMER, &sidecar.listen, "3", &orders, &audit]);
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(120)).unwrap();
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(got.trim().lines().collect::<Vec<_>>(), ["audit-1", "order-1", "order-2"], "{out:?}");
}
