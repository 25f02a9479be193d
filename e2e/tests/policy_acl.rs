//! ACLs through the sidecar against a real broker: kcat and Java clients get the broker's own authorization
//! errors, and a produce request naming an allowed and a denied topic half succeeds, as a broker answers it.

use std::net::TcpStream;
use std::time::Duration;

use kafka_protocol::messages::ProduceResponse;
use kproxy_e2e::sidecar::{Sidecar, create_topic_on_first_broker, java};
use kproxy_e2e::{Env, env, unique};

/// Allows everything on topics and groups starting with `allowed-`, nothing else (default Deny).
fn acl_config(bootstrap: &str) -> String {
    format!(
        r#"clusters:
- name: east
  bootstrapServers: ["{bootstrap}"]
acls:
  defaultAction: Deny
  rules:
  - resource: {{type: Topic, name: "allowed-", patternType: Prefixed}}
    operations: [All]
    effect: Allow
  - resource: {{type: Group, name: "allowed-", patternType: Prefixed}}
    operations: [All]
    effect: Allow
  - resource: {{type: Cluster}}
    operations: [IdempotentWrite, Describe]
    effect: Allow
"#
    )
}

fn create_topic(env: &Env, bootstrap: &str, topic: &str) {
    create_topic_on_first_broker(env, bootstrap, topic, 1, &[]).unwrap();
}

fn output(env: &Env, cmd: &mut std::process::Command, timeout: Duration) -> String {
    let out = env.run(cmd, timeout).unwrap();
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn producers_to_a_denied_topic_get_topic_authorization_failed() {
    let Some(env) = env() else { return };
    let sidecar = Sidecar::start(env, &acl_config(env.kafka_east()), &[]).unwrap();
    let denied = unique("denied-topic");
    let err = env.kcat_produce(&sidecar.listen, &denied, &["x".to_string()], &[]).unwrap_err().to_string();
    assert!(err.to_lowercase().contains("authorization failed"), "kcat: {err}");

    let mut perf = java(env, "org.apache.kafka.tools.ProducerPerformance");
    perf.args(["--topic", &denied, "--num-records", "3", "--record-size", "10", "--throughput", "-1"]);
    perf.args(["--producer-props", &format!("bootstrap.servers={}", sidecar.listen), "max.block.ms=20000"]);
    let text = output(env, &mut perf, Duration::from_secs(120));
    assert!(text.contains("TopicAuthorizationException"), "Java producer:\n{text}");
    assert!(sidecar.metric("kproxy_acl_denied_total", &[]).unwrap() > 0.0);

    // The allowed prefix works end to end.
    let allowed = unique("allowed-topic");
    create_topic(env, env.kafka_east(), &allowed);
    let records = vec!["one".to_string(), "two".to_string()];
    env.kcat_produce(&sidecar.listen, &allowed, &records, &[]).unwrap();
    assert_eq!(env.kcat_consume(env.kafka_east(), &allowed, 2, &[]).unwrap(), records);
}

#[test]
fn a_consumer_in_a_denied_group_gets_group_authorization_failed() {
    let Some(env) = env() else { return };
    let sidecar = Sidecar::start(env, &acl_config(env.kafka_east()), &[]).unwrap();
    let topic = unique("allowed-group-topic");
    create_topic(env, env.kafka_east(), &topic);
    env.kcat_produce(env.kafka_east(), &topic, &["r".to_string()], &[]).unwrap();
    let mut consumer = java(env, "org.apache.kafka.tools.consumer.ConsoleConsumer");
    consumer.args(["--bootstrap-server", &sidecar.listen, "--topic", &topic, "--group", &unique("denied-group")]);
    consumer.args(["--from-beginning", "--max-messages", "1", "--timeout-ms", "20000"]);
    let text = output(env, &mut consumer, Duration::from_secs(120));
    assert!(text.contains("GroupAuthorizationException"), "Java consumer:\n{text}");

    // The same consumer in an allowed group reads the record.
    let mut consumer = java(env, "org.apache.kafka.tools.consumer.ConsoleConsumer");
    consumer.args(["--bootstrap-server", &sidecar.listen, "--topic", &topic, "--group", &unique("allowed-group")]);
    consumer.args(["--from-beginning", "--max-messages", "1", "--timeout-ms", "60000"]);
    let out = env.run(&mut consumer, Duration::from_secs(120)).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "r");
}

/// Sends one Produce request naming both topics, as a client batching for one broker does.
fn produce_two_topics(addr: &str, topics: [&str; 2]) -> ProduceResponse {
    let values = topics.map(|t| format!("to {t}"));
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let records = [(topics[0], values[0].as_str()), (topics[1], values[1].as_str())];
    kproxy_e2e::wire::produce(&mut stream, 7, "policy-e2e", &records).unwrap()
}

#[test]
fn a_mixed_produce_request_half_succeeds_and_half_fails_as_the_broker_would_answer() {
    let Some(env) = env() else { return };
    let sidecar = Sidecar::start(env, &acl_config(env.kafka_east()), &[]).unwrap();
    let allowed = unique("allowed-mixed");
    let denied = unique("denied-mixed");
    create_topic(env, env.kafka_east(), &allowed);
    create_topic(env, env.kafka_east(), &denied);
    let response = produce_two_topics(&sidecar.listen, [&denied, &allowed]);
    let results: Vec<(String, i16)> =
        response.responses.iter().map(|t| (t.name.as_str().to_string(), t.partition_responses[0].error_code)).collect();
    // In the client's order: the denied topic gets TOPIC_AUTHORIZATION_FAILED (29), the allowed one is written.
    assert_eq!(results, [(denied.clone(), 29), (allowed.clone(), 0)]);
    // Read back directly from the broker: only the allowed record landed.
    assert_eq!(env.kcat_consume(env.kafka_east(), &allowed, 1, &[]).unwrap(), [format!("to {allowed}")]);
    let mut cmd = env.command("kcat");
    cmd.args(["-b", env.kafka_east(), "-t", &denied, "-C", "-o", "beginning", "-e", "-q"]);
    let out = env.run(&mut cmd, Duration::from_secs(60)).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "", "nothing may reach the denied topic");
}
