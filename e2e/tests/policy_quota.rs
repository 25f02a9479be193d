//! Quotas through the sidecar against a real broker: a producer pushing as fast as it can is held to its quota
//! by throttling (KIP-219), with no failed send, and sees the throttling in its own metrics.

use std::time::{Duration, Instant};

use kproxy_e2e::sidecar::{Sidecar, java};
use kproxy_e2e::{env, unique};

const MIB: f64 = 1024.0 * 1024.0;

#[test]
fn a_producer_with_a_1_mib_quota_gets_1_mib_per_second_and_no_failures() {
    let Some(env) = env() else { return };
    let config = format!(
        "clusters:\n- name: east\n  bootstrapServers: [\"{}\"]\nquotas:\n  producerByteRate: 1048576\n",
        env.kafka_east()
    );
    let sidecar = Sidecar::start(env, &config, &[]).unwrap();
    let topic = unique("quota");
    let mut create = java(env, "org.apache.kafka.tools.TopicCommand");
    create.args(["--bootstrap-server", env.kafka_east(), "--create", "--topic", &topic, "--partitions", "3"]);
    create.args(["--replication-factor", "1"]);
    env.run(&mut create, Duration::from_secs(120)).unwrap();

    // 30 MiB of 1 KiB records as fast as the producer may: 30 s at the quota.
    let records: u64 = 30 * 1024;
    let mut perf = java(env, "org.apache.kafka.tools.ProducerPerformance");
    perf.args(["--topic", &topic, "--num-records", &records.to_string(), "--record-size", "1024"]);
    perf.args(["--throughput", "-1", "--print-metrics"]);
    perf.args(["--producer-props", &format!("bootstrap.servers={}", sidecar.listen), "acks=all"]);
    perf.args(["client.id=quota-e2e", "delivery.timeout.ms=300000"]);
    let started = Instant::now();
    let out = env.run(&mut perf, Duration::from_secs(300)).unwrap();
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ProducerPerformance failed:\n{stdout}\n{stderr}");
    assert!(!stderr.contains("Exception") && !stdout.contains("Exception"), "a send failed:\n{stdout}\n{stderr}");

    // The tool's summary: "<n> records sent, <r> records/sec (<x> MB/sec), ..."
    let summary = stdout.lines().find(|l| l.starts_with(&format!("{records} records sent"))).unwrap_or_else(|| {
        panic!("no summary for {records} records:\n{stdout}");
    });
    let mb_per_sec: f64 = summary
        .split('(')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the rate in {summary:?}"));
    let ratio = mb_per_sec * (1 << 20) as f64 / MIB;
    eprintln!("quota 1 MiB/s: achieved {mb_per_sec:.3} MB/s in {elapsed:?} ({summary})");
    assert!((0.9..=1.1).contains(&ratio), "achieved {mb_per_sec} MB/s, outside 1 MiB/s ± 10%: {summary}");

    // The client's own view: its throttle-time metric shows it was throttled.
    let throttle_max = stdout
        .lines()
        .find(|l| l.contains("producer-metrics:produce-throttle-time-max"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no produce-throttle-time-max metric:\n{stdout}"));
    assert!(throttle_max > 0.0, "the producer never saw throttle_time_ms");
    assert!(sidecar.metric("kproxy_quota_throttle_seconds_total", &["kind=\"produce\""]).unwrap() > 0.0);
    assert!(sidecar.metric("kproxy_quota_bytes_per_second", &["kind=\"produce\""]).unwrap() > 0.0);
}
