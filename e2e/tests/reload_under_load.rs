//! Hot reload under continuous load: 100 reloads alternating ACL, quota and route changes plus 10 invalid
//! configs, while a producer and a consumer group run through the sidecar. Nothing is dropped, lost or
//! duplicated, and no upstream connection is opened again.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kproxy_e2e::sidecar::{Sidecar, java, sum_series};
use kproxy_e2e::{env, unique, wait_for};

fn config(bootstrap: &str, i: usize) -> String {
    let base = format!("clusters:\n- name: east\n  bootstrapServers: [\"{bootstrap}\"]\n");
    match i % 11 {
        // Invalid: a route to a cluster that does not exist, and an address without a port.
        10 if i.is_multiple_of(2) => base + "routes:\n- match: {topicPrefix: \"x.\"}\n  cluster: nowhere\n",
        10 => format!("clusters:\n- name: east\n  bootstrapServers: [\"{}\"]\n", bootstrap.replace(':', "-")),
        n if n % 3 == 0 => {
            base + &format!(
                "acls:\n  defaultAction: Allow\n  rules:\n  - resource: {{type: Topic, name: \"blocked-{i}\"}}\n    \
                 operations: [All]\n    effect: Deny\n"
            )
        }
        n if n % 3 == 1 => base + &format!("quotas:\n  requestRate: {}\n", 100_000 + i),
        _ => base + &format!("routes:\n- match: {{topicPrefix: \"route-{i}.\"}}\n  cluster: east\n"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn a_hundred_reloads_under_load_drop_nothing_and_keep_every_upstream_connection() {
    let Some(env) = env() else { return };
    let bootstrap = env.kafka_east();
    let sidecar = Sidecar::start(env, &config(bootstrap, 1), &[]).unwrap();
    let topic = unique("reload-load");
    let group = unique("reload-load-group");
    let mut create = java(env, "org.apache.kafka.tools.TopicCommand");
    create.args(["--bootstrap-server", &sidecar.listen, "--create", "--topic", &topic, "--partitions", "3"]);
    env.run(&mut create, Duration::from_secs(120)).unwrap();

    let dir = std::env::temp_dir().join(unique("reload-load-out"));
    std::fs::create_dir_all(&dir).unwrap();
    let consumers: Vec<_> = (0..2)
        .map(|i| {
            env.command("kcat")
                .args(["-b", &sidecar.listen, "-G", &group, &topic, "-q", "-u"])
                .args(["-X", "auto.offset.reset=earliest", "-X", "auto.commit.interval.ms=500"])
                .stdout(std::fs::File::create(dir.join(format!("c{i}"))).unwrap())
                .stderr(std::fs::File::create(dir.join(format!("c{i}.err"))).unwrap())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut producer = env
        .command("kcat")
        .args(["-b", &sidecar.listen, "-P", "-t", &topic, "-X", "enable.idempotence=true", "-X", "linger.ms=5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("producer.err")).unwrap())
        .spawn()
        .unwrap();
    let mut stdin = producer.stdin.take().unwrap();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let feeder = std::thread::spawn(move || {
        let mut n = 0u64;
        while stop_rx.try_recv().is_err() {
            for _ in 0..20 {
                writeln!(stdin, "r-{n}").unwrap();
                n += 1;
            }
            stdin.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    });
    let consumed = || -> Vec<String> {
        (0..2)
            .flat_map(|i| {
                let text = std::fs::read_to_string(dir.join(format!("c{i}"))).unwrap_or_default();
                text.lines().map(String::from).collect::<Vec<_>>()
            })
            .collect()
    };
    // Warm up: every client has its connections and the group its assignment.
    wait_for(
        "the consumers to receive records",
        Duration::from_secs(90),
        || Ok((consumed().len() > 500).then_some(())),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let before = sidecar.metrics().unwrap();
    let opened_before = sum_series(&before, "kproxy_upstream_connections_opened_total", &[]);
    let accepted_before = sum_series(&before, "kproxy_client_connections_accepted_total", &[]);

    let mut took = Vec::new();
    let (mut applied, mut rejected) = (0.0, 0.0);
    for i in 2..112 {
        let text = config(bootstrap, i);
        let invalid = i % 11 == 10;
        let start = Instant::now();
        sidecar.publish(&text).unwrap();
        if invalid {
            rejected += 1.0;
        } else {
            applied += 1.0;
        }
        // Polled tightly (not with wait_for's 200 ms step) so the time to serving is measured, not the poll.
        loop {
            let m = sidecar.metrics().unwrap();
            let done = if invalid {
                sum_series(&m, "kproxy_config_reloads_total", &["result=\"rejected\""]) >= rejected
            } else {
                sum_series(&m, "kproxy_config_generation", &[]) >= 1.0 + applied
            };
            if done {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "reload {i} not taken within 10 s");
            std::thread::sleep(Duration::from_millis(2));
        }
        if !invalid {
            took.push(start.elapsed());
        }
        assert_eq!(sidecar.get("/readyz").unwrap().0, 200, "readiness holds through reload {i}");
        std::thread::sleep(Duration::from_millis(30));
    }
    stop_tx.send(()).unwrap();
    let produced = feeder.join().unwrap();
    let status = producer.wait().unwrap();
    let producer_err = std::fs::read_to_string(dir.join("producer.err")).unwrap_or_default();
    assert!(status.success() && !producer_err.contains("ERROR"), "producer failed: {producer_err}");
    wait_for("every record to be consumed", Duration::from_secs(120), || {
        Ok((consumed().iter().collect::<BTreeSet<_>>().len() as u64 >= produced).then_some(()))
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for mut c in consumers {
        let _ = c.kill();
        let _ = c.wait();
    }
    let records = consumed();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &records {
        *counts.entry(r.as_str()).or_default() += 1;
    }
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).map(|(r, _)| *r).take(5).collect();
    assert_eq!(counts.len() as u64, produced, "records lost");
    assert!(duplicated.is_empty(), "records duplicated: {duplicated:?}");

    let after = sidecar.metrics().unwrap();
    assert_eq!(sum_series(&after, "kproxy_config_generation", &[]), 101.0);
    assert_eq!(sum_series(&after, "kproxy_config_reloads_total", &["result=\"rejected\""]), 10.0);
    assert_eq!(sum_series(&after, "kproxy_requests_total", &["result=\"error\""]), 0.0, "failed requests");
    assert_eq!(
        sum_series(&after, "kproxy_upstream_connections_opened_total", &[]),
        opened_before,
        "upstream connections were opened during the reloads"
    );
    assert_eq!(
        sum_series(&after, "kproxy_client_connections_accepted_total", &[]),
        accepted_before,
        "clients reconnected during the reloads"
    );
    let log = sidecar.log_text();
    assert_eq!(log.matches("config reloaded").count(), 100, "one log line per reload");
    assert!(log.contains("config rejected") && log.contains("routes[0].cluster"), "rejections name the field");
    took.sort();
    eprintln!(
        "{produced} records; swap-to-serving over {} reloads: p50 {:?}, p99 {:?} (polling /metrics)",
        took.len(),
        percentile(&took, 0.5),
        percentile(&took, 0.99)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
