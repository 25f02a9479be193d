//! Kafka's own admin tools through the sidecar, each compared with the same command run directly against the
//! broker (Kafka 4.1): kafka-topics (--alter --partitions, --describe through the Java Admin's describeTopics,
//! i.e. DescribeTopicPartitions), kafka-configs --alter, kafka-acls --add/--list, kafka-transactions list and
//! describe, kafka-leader-election, kafka-reassign-partitions --list and kafka-client-metrics.

use std::time::Duration;

use kproxy_e2e::sidecar::{Sidecar, config, java};
use kproxy_e2e::{Env, env, run_with_timeout, unique};

/// Runs a Kafka tool with `--bootstrap-server <bootstrap>` first; stdout and stderr together (a tool's refusal is
/// part of what is compared), and whether it succeeded.
fn tool(env: &Env, class: &str, bootstrap: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = java(env, class);
    cmd.args(["--bootstrap-server", bootstrap]).args(args);
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(120)).unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The same command through the sidecar and directly: both outputs, which must be equal once `normalize` has
/// removed what legitimately differs (nothing, for most tools).
fn compare(env: &Env, sidecar: &Sidecar, class: &str, args: &[&str], normalize: fn(&str) -> String) -> String {
    let (ok_via, via) = tool(env, class, &sidecar.listen, args);
    let (ok_direct, direct) = tool(env, class, env.kafka_east(), args);
    assert_eq!(ok_via, ok_direct, "{class} {args:?}: through the sidecar:\n{via}\ndirectly:\n{direct}");
    assert_eq!(normalize(&via), normalize(&direct), "{class} {args:?}: through the sidecar vs directly");
    eprintln!("{class} {args:?} through the sidecar:\n{via}");
    via
}

fn same(text: &str) -> String {
    text.to_string()
}

fn forwarded(sidecar: &Sidecar, api: &str) -> f64 {
    sidecar.metric("kproxy_requests_total", &[&format!("api=\"{api}\""), "result=\"forwarded\""]).unwrap()
}

const TOPICS: &str = "org.apache.kafka.tools.TopicCommand";

#[test]
fn topics_configs_elections_and_reassignments_work_through_the_sidecar_as_directly() {
    let Some(env) = env() else { return };
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &[]).unwrap();
    let topic = unique("tools-topic");
    let (ok, text) = tool(env, TOPICS, &sidecar.listen, &["--create", "--topic", &topic, "--partitions", "1"]);
    assert!(ok, "{text}");
    // CreatePartitions.
    let (ok, text) = tool(env, TOPICS, &sidecar.listen, &["--alter", "--topic", &topic, "--partitions", "3"]);
    assert!(ok, "kafka-topics --alter --partitions through the sidecar: {text}");
    // describeTopics: DescribeTopicPartitions, its broker ids shown as the sidecar's virtual ones (the same ids
    // for a single cluster).
    let described = compare(env, &sidecar, TOPICS, &["--describe", "--topic", &topic], same);
    assert!(described.contains("PartitionCount: 3"), "{described}");
    assert!(forwarded(&sidecar, "CreatePartitions") >= 1.0 && forwarded(&sidecar, "DescribeTopicPartitions") >= 1.0);

    // IncrementalAlterConfigs, then DescribeConfigs both ways.
    let configs = "kafka.admin.ConfigCommand";
    let entity = ["--entity-type", "topics", "--entity-name", &topic];
    let (ok, text) = tool(
        env,
        configs,
        &sidecar.listen,
        &[&entity[..], &["--alter", "--add-config", "retention.ms=1234567"]].concat(),
    );
    assert!(ok, "kafka-configs --alter through the sidecar: {text}");
    let described = compare(env, &sidecar, configs, &[&entity[..], &["--describe"]].concat(), same);
    assert!(described.contains("retention.ms=1234567"), "{described}");
    assert!(forwarded(&sidecar, "IncrementalAlterConfigs") >= 1.0);

    // ElectLeaders: the preferred leader already leads.
    let election = ["--election-type", "PREFERRED", "--topic", &topic, "--partition", "0"];
    let elected = compare(env, &sidecar, "org.apache.kafka.tools.LeaderElectionCommand", &election, same);
    assert!(elected.contains(&format!("{topic}-0")), "{elected}");
    assert!(forwarded(&sidecar, "ElectLeaders") >= 1.0);

    // ListPartitionReassignments.
    let reassign = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand";
    let listed = compare(env, &sidecar, reassign, &["--list"], same);
    assert!(forwarded(&sidecar, "ListPartitionReassignments") >= 1.0, "{listed}");
}

/// A transaction description's duration (its 8th column, TransactionDurationMs) moves between two runs: compare
/// everything else.
fn without_duration(text: &str) -> String {
    let line = |l: &str| {
        let mut words: Vec<&str> = l.split_whitespace().collect();
        if words.len() > 7 {
            words.remove(7);
        }
        words.join(" ")
    };
    text.lines().map(line).collect::<Vec<_>>().join("\n")
}

#[test]
fn acls_transactions_and_client_metrics_work_through_the_sidecar_as_directly() {
    let Some(env) = env() else { return };
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &[]).unwrap();
    let topic = unique("tools-txn");

    // CreateAcls and DescribeAcls: the brokers run without an authorizer, and say so the same way either way.
    let acls = "org.apache.kafka.tools.AclCommand";
    let add = ["--add", "--allow-principal", "User:alice", "--operation", "Read", "--topic", &topic];
    let added = compare(env, &sidecar, acls, &add, same);
    let listed = compare(env, &sidecar, acls, &["--list", "--topic", &topic], same);
    assert!(forwarded(&sidecar, "CreateAcls") >= 1.0 && forwarded(&sidecar, "DescribeAcls") >= 1.0, "{added}{listed}");

    // A committed transaction through the sidecar, then ListTransactions and DescribeTransactions.
    let txn = unique("tools-txn-id");
    let mut perf = java(env, "org.apache.kafka.tools.ProducerPerformance");
    perf.args(["--topic", &topic, "--num-records", "10", "--record-size", "10", "--throughput", "-1"]);
    perf.args(["--transactional-id", &txn, "--transaction-duration-ms", "100"]);
    perf.args(["--producer-props", &format!("bootstrap.servers={}", sidecar.listen)]);
    env.run(&mut perf, Duration::from_secs(120)).unwrap();
    let transactions = "org.apache.kafka.tools.TransactionsCommand";
    let mine = |text: &str| text.lines().filter(|l| l.contains(&txn)).collect::<Vec<_>>().join("\n");
    let (ok_via, via) = tool(env, transactions, &sidecar.listen, &["list"]);
    let (ok_direct, direct) = tool(env, transactions, env.kafka_east(), &["list"]);
    assert!(ok_via && ok_direct, "{via}\n{direct}");
    assert!(!mine(&via).is_empty(), "the transaction is listed through the sidecar:\n{via}");
    assert_eq!(mine(&via), mine(&direct));
    let described = compare(env, &sidecar, transactions, &["describe", "--transactional-id", &txn], without_duration);
    assert!(described.contains("CompleteCommit") || described.contains("Empty"), "{described}");
    assert!(forwarded(&sidecar, "ListTransactions") >= 1.0 && forwarded(&sidecar, "DescribeTransactions") >= 1.0);

    // Client metrics resources: IncrementalAlterConfigs, ListConfigResources and DescribeConfigs.
    let metrics = "org.apache.kafka.tools.ClientMetricsCommand";
    let name = unique("tools-metrics");
    let alter = ["--alter", "--name", &name, "--metrics", "org.apache.kafka.producer.", "--interval", "60000"];
    let (ok, text) = tool(env, metrics, &sidecar.listen, &alter);
    assert!(ok, "kafka-client-metrics --alter through the sidecar: {text}");
    let described = compare(env, &sidecar, metrics, &["--describe", "--name", &name], same);
    assert!(described.contains("org.apache.kafka.producer."), "{described}");
    let (_, listed) = tool(env, metrics, &sidecar.listen, &["--list"]);
    assert!(listed.contains(&name), "{listed}");
    assert!(forwarded(&sidecar, "ListConfigResources") >= 1.0, "{listed}");
}

#[test]
fn topic_admin_follows_routes_and_a_describe_of_topics_in_two_clusters_is_split_and_merged() {
    let Some(env) = env() else { return };
    let run = unique("tools-routed");
    let yaml = format!(
        "clusters:\n- name: east\n  bootstrapServers: [\"{}\"]\n- name: west\n  bootstrapServers: [\"{}\"]\n\
         defaultCluster: east\nroutes:\n- {{match: {{topicPrefix: \"{run}-w.\"}}, cluster: west}}\n",
        env.kafka_east(),
        env.kafka_west()
    );
    let sidecar = Sidecar::start(env, &yaml, &[]).unwrap();
    let (in_east, in_west) = (format!("{run}-e.a"), format!("{run}-w.b"));
    // CreateTopics and CreatePartitions go to each topic's cluster, whichever connection they arrive on.
    for (topic, partitions) in [(&in_east, "2"), (&in_west, "1")] {
        let (ok, text) =
            tool(env, TOPICS, &sidecar.listen, &["--create", "--topic", topic, "--partitions", partitions]);
        assert!(ok, "{text}");
    }
    let (ok, text) = tool(env, TOPICS, &sidecar.listen, &["--alter", "--topic", &in_west, "--partitions", "3"]);
    assert!(ok, "{text}");
    let (_, west) = tool(env, TOPICS, env.kafka_west(), &["--describe", "--topic", &in_west]);
    assert!(west.contains("PartitionCount: 3"), "created and grown in west:\n{west}");
    let (_, east) = tool(env, TOPICS, env.kafka_east(), &["--list"]);
    assert!(east.contains(&in_east) && !east.contains(&in_west), "nothing of west's landed in east:\n{east}");
    // One describeTopics (DescribeTopicPartitions) naming both: each cluster answers for its own topic.
    let (ok, both) = tool(env, TOPICS, &sidecar.listen, &["--describe", "--topic", &format!("{run}-.*")]);
    assert!(ok, "{both}");
    assert!(both.contains(&format!("Topic: {in_east}\t")) && both.contains("PartitionCount: 2"), "{both}");
    assert!(both.contains(&format!("Topic: {in_west}\t")) && both.contains("PartitionCount: 3"), "{both}");
    assert!(forwarded(&sidecar, "DescribeTopicPartitions") >= 1.0);
    eprintln!("one describe across east and west through the sidecar:\n{both}");
}
