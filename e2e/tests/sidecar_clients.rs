//! Real clients through the sidecar against real brokers (Kafka 4.x and 3.9): kcat with every codec, Kafka's
//! Java performance and admin tools, an idempotent and a transactional producer, and a consumer group.

use std::collections::BTreeSet;
use std::time::Duration;

use kproxy_e2e::sidecar::{Sidecar, config, java};
use kproxy_e2e::{Env, env, unique};

fn topic_command(env: &Env, bootstrap: &str, args: &[&str]) -> String {
    let mut cmd = java(env, "org.apache.kafka.tools.TopicCommand");
    cmd.args(["--bootstrap-server", bootstrap]).args(args);
    let out = env.run(&mut cmd, Duration::from_secs(120)).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn create_topic(env: &Env, bootstrap: &str, topic: &str, partitions: u32) {
    let p = partitions.to_string();
    topic_command(env, bootstrap, &["--create", "--topic", topic, "--partitions", &p, "--replication-factor", "1"]);
}

#[test]
fn kcat_produces_and_consumes_with_every_codec_on_kafka_4_and_3_9() {
    let Some(env) = env() else { return };
    for (name, bootstrap) in [("east", env.kafka_east()), ("legacy", env.kafka_legacy())] {
        let sidecar = Sidecar::start(env, &config(name, bootstrap), &[]).unwrap();
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let topic = unique(&format!("sidecar-codec-{codec}"));
            let records: Vec<String> = (0..500).map(|i| format!("{codec}-{i}-{}", "x".repeat(i % 64))).collect();
            env.kcat_produce(&sidecar.listen, &topic, &records, &["-z", codec]).unwrap();
            let got = env.kcat_consume(&sidecar.listen, &topic, records.len(), &[]).unwrap();
            assert_eq!(got, records, "{codec} through the sidecar to {name}");
        }
        // Clients only ever see the sidecar: the real broker port appears nowhere in metadata.
        let mut cmd = env.command("kcat");
        cmd.args(["-b", &sidecar.listen, "-L"]);
        let listing = String::from_utf8_lossy(&env.run(&mut cmd, Duration::from_secs(30)).unwrap().stdout).into_owned();
        let real_port = bootstrap.rsplit(':').next().unwrap();
        assert!(listing.contains("broker"), "{listing}");
        assert!(!listing.contains(&format!(":{real_port}")), "real broker address leaked:\n{listing}");
    }
}

#[test]
fn java_performance_tools_account_for_every_record() {
    let Some(env) = env() else { return };
    for (name, bootstrap) in [("east", env.kafka_east()), ("legacy", env.kafka_legacy())] {
        let sidecar = Sidecar::start(env, &config(name, bootstrap), &[]).unwrap();
        let topic = unique("sidecar-perf");
        create_topic(env, &sidecar.listen, &topic, 3);
        let n = "20000";
        let mut produce = java(env, "org.apache.kafka.tools.ProducerPerformance");
        produce.args(["--topic", &topic, "--num-records", n, "--record-size", "1024", "--throughput", "-1"]);
        produce.args(["--producer-props", &format!("bootstrap.servers={}", sidecar.listen), "acks=all"]);
        let out = env.run(&mut produce, Duration::from_secs(300)).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("{n} records sent")), "{name}: {text}");
        let mut consume = java(env, "org.apache.kafka.tools.ConsumerPerformance");
        consume.args(["--bootstrap-server", &sidecar.listen, "--topic", &topic, "--messages", n, "--timeout", "60000"]);
        consume.args(["--group", &unique("sidecar-perf-group")]);
        let out = env.run(&mut consume, Duration::from_secs(300)).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // CSV: start, end, MB consumed, MB/s, records consumed, ...
        let row = text.lines().last().unwrap_or_default();
        let consumed: u64 = row.split(',').nth(4).and_then(|c| c.trim().parse().ok()).unwrap_or(0);
        assert_eq!(consumed.to_string(), n, "{name}: ConsumerPerformance output:\n{text}");
    }
}

#[test]
fn topics_are_created_described_and_deleted_with_the_admin_tools() {
    let Some(env) = env() else { return };
    for bootstrap in [env.kafka_east(), env.kafka_legacy()] {
        let sidecar = Sidecar::start(env, &config("c", bootstrap), &[]).unwrap();
        let topic = unique("sidecar-admin");
        create_topic(env, &sidecar.listen, &topic, 4);
        let described = topic_command(env, &sidecar.listen, &["--describe", "--topic", &topic]);
        assert!(described.contains("PartitionCount: 4"), "{described}");
        topic_command(env, &sidecar.listen, &["--delete", "--topic", &topic]);
        kproxy_e2e::wait_for("topic deletion", Duration::from_secs(60), || {
            let list = topic_command(env, &sidecar.listen, &["--list"]);
            Ok((!list.lines().any(|l| l == topic)).then_some(()))
        })
        .unwrap();
    }
}

#[test]
fn idempotent_and_transactional_producers_with_a_read_committed_consumer() {
    let Some(env) = env() else { return };
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &[]).unwrap();
    let (input, output) = (unique("sidecar-txn-in"), unique("sidecar-txn-out"));
    create_topic(env, &sidecar.listen, &input, 1);
    create_topic(env, &sidecar.listen, &output, 1);
    let records: Vec<String> = (0..1000).map(|i| format!("txn-{i}")).collect();
    env.kcat_produce(&sidecar.listen, &input, &records, &["-X", "enable.idempotence=true"]).unwrap();
    // Copies the input transactionally (offsets committed in the transaction), aborting some transactions.
    let mut copier = java(env, "org.apache.kafka.tools.TransactionalMessageCopier");
    copier.args(["--broker-list", &sidecar.listen, "--input-topic", &input, "--input-partition", "0"]);
    copier.args(["--output-topic", &output, "--transactional-id", &unique("sidecar-txn-id")]);
    copier.args(["--consumer-group", &unique("sidecar-txn-group"), "--transaction-size", "50"]);
    copier.args(["--enable-random-aborts", "--max-messages", "1000"]);
    env.run(&mut copier, Duration::from_secs(300)).unwrap();
    let committed =
        env.kcat_consume(&sidecar.listen, &output, 1000, &["-X", "isolation.level=read_committed"]).unwrap();
    let unique_committed: BTreeSet<_> = committed.iter().collect();
    assert_eq!(committed.len(), 1000, "read_committed sees every record exactly once");
    assert_eq!(unique_committed, records.iter().collect(), "and only the input's records");
    // A transactional producer through the sidecar: ProducerPerformance committing every 100 ms.
    let output = unique("sidecar-txn-perf");
    create_topic(env, &sidecar.listen, &output, 1);
    let mut txn = java(env, "org.apache.kafka.tools.ProducerPerformance");
    txn.args(["--topic", &output, "--num-records", "5000", "--record-size", "100", "--throughput", "-1"]);
    txn.args(["--transactional-id", &unique("sidecar-perf-txn"), "--transaction-duration-ms", "100"]);
    txn.args(["--producer-props", &format!("bootstrap.servers={}", sidecar.listen), "enable.idempotence=true"]);
    let out = env.run(&mut txn, Duration::from_secs(300)).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("5000 records sent"));
    let all = env.kcat_consume(&sidecar.listen, &output, 5000, &["-X", "isolation.level=read_committed"]).unwrap();
    assert_eq!(all.len(), 5000);
}

#[test]
fn a_consumer_group_of_three_rebalances_when_one_leaves_and_commits_correct_offsets() {
    let Some(env) = env() else { return };
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &[]).unwrap();
    let topic = unique("sidecar-group");
    let group = unique("sidecar-group-id");
    create_topic(env, &sidecar.listen, &topic, 6);
    let first: Vec<String> = (0..600).map(|i| format!("a-{i}")).collect();
    env.kcat_produce(&sidecar.listen, &topic, &first, &[]).unwrap();
    let dir = std::env::temp_dir().join(unique("sidecar-group-out"));
    std::fs::create_dir_all(&dir).unwrap();
    let members: Vec<_> = (0..3)
        .map(|i| {
            let out = std::fs::File::create(dir.join(format!("member-{i}"))).unwrap();
            env.command("kcat")
                .args(["-b", &sidecar.listen, "-G", &group, &topic, "-q", "-u", "-X", "auto.offset.reset=earliest"])
                .args(["-X", "auto.commit.interval.ms=500", "-X", "session.timeout.ms=10000"])
                .stdout(out)
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let consumed = |dir: &std::path::Path| -> Vec<String> {
        (0..3)
            .flat_map(|i| {
                std::fs::read_to_string(dir.join(format!("member-{i}")))
                    .unwrap_or_default()
                    .lines()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    kproxy_e2e::wait_for("the group to consume the first batch", Duration::from_secs(90), || {
        Ok((consumed(&dir).iter().collect::<BTreeSet<_>>().len() >= 600).then_some(()))
    })
    .unwrap();
    let describe = || {
        let mut cmd = java(env, "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand");
        cmd.args(["--bootstrap-server", &sidecar.listen, "--describe", "--group", &group]);
        String::from_utf8_lossy(&env.run(&mut cmd, Duration::from_secs(120)).unwrap().stdout).into_owned()
    };
    let members_in = |text: &str| {
        text.lines()
            .filter_map(|l| l.split_whitespace().nth(6))
            .filter(|c| c.starts_with("rdkafka"))
            .collect::<BTreeSet<_>>()
            .len()
    };
    let before = describe();
    assert_eq!(members_in(&before), 3, "three members share the partitions:\n{before}");
    // One member leaves (SIGTERM: kcat closes its consumer and leaves the group).
    let mut members = members;
    let mut leaving = members.remove(0);
    let _ = std::process::Command::new("kill").args(["-TERM", &leaving.id().to_string()]).status();
    let _ = leaving.wait();
    // Only once the group has rebalanced to two members do new records arrive, so the leaving member (which
    // may drop what it fetched while closing, as kcat does) cannot take any of them.
    kproxy_e2e::wait_for("a rebalance to two members", Duration::from_secs(60), || {
        Ok((members_in(&describe()) == 2).then_some(()))
    })
    .unwrap();
    let second: Vec<String> = (0..600).map(|i| format!("b-{i}")).collect();
    env.kcat_produce(&sidecar.listen, &topic, &second, &[]).unwrap();
    kproxy_e2e::wait_for("the remaining members to consume everything", Duration::from_secs(90), || {
        Ok((consumed(&dir).iter().filter(|r| r.starts_with("b-")).collect::<BTreeSet<_>>().len() >= 600).then_some(()))
    })
    .unwrap();
    let after = kproxy_e2e::wait_for("committed offsets at the log end", Duration::from_secs(60), || {
        let text = describe();
        let lags_zero = text.lines().filter(|l| l.contains(&topic)).all(|l| l.split_whitespace().nth(5) == Some("0"));
        Ok((members_in(&text) == 2 && lags_zero).then_some(text))
    })
    .unwrap();
    for mut m in members {
        let _ = m.kill();
        let _ = m.wait();
    }
    let all: BTreeSet<String> = consumed(&dir).into_iter().collect();
    let expected: BTreeSet<String> = first.into_iter().chain(second).collect();
    assert_eq!(all, expected, "every record consumed by the group");
    assert!(after.lines().filter(|l| l.contains(&topic)).count() == 6, "{after}");
    let _ = std::fs::remove_dir_all(&dir);
}
