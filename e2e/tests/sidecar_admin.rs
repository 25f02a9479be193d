//! The sidecar's admin port as an injected pod exposes it: under 5,000 half-sent HTTP requests, probes sent as
//! kubelet sends them (curl with kubelet's 2 s timeout) are still answered, a Kafka client keeps producing and
//! consuming through the sidecar and resident memory stays bounded; `/metrics` on its own loopback listener is not
//! on the admin address; broker addresses appear in the metrics only when asked for.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use kproxy_e2e::hostile::{RssWatch, rss_kib};
use kproxy_e2e::sidecar::{Sidecar, config, sum_series};
use kproxy_e2e::{env, free_port, run_with_timeout, unique};

/// Half-sent requests held open at once by the attacker.
const HALF_SENT: usize = 5_000;
/// How much the sidecar's resident memory may grow during the attack: the admin listener holds at most 64
/// connections of at most 8 KiB of input each; the rest is the Kafka traffic's buffers.
const RSS_GROWTH_CAP_KIB: u64 = 48 * 1024;
/// Probes sent during the attack.
const PROBES: usize = 30;

/// One HTTP/1.0 GET: the status code and the body.
fn get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

/// Holds `HALF_SENT` connections that each sent part of a request head, opening a fresh set whenever the
/// previous one is complete, until stopped; counts the connections opened and signals when the first set is held.
fn attacker(addr: String, stop: Arc<AtomicBool>, held: Arc<AtomicBool>, opened: Arc<AtomicUsize>) {
    let mut previous: Vec<TcpStream> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut set = Vec::with_capacity(HALF_SENT);
        for _ in 0..HALF_SENT {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            // A connection the sidecar closed while the set is opened only costs a reconnect.
            let Ok(mut s) = TcpStream::connect(&addr) else { continue };
            if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: pod\r\nUser-Agent: slow").is_ok() {
                set.push(s);
            }
            opened.fetch_add(1, Ordering::Relaxed);
        }
        held.store(true, Ordering::Relaxed);
        previous = set;
    }
    drop(previous);
}

#[test]
fn probes_and_kafka_traffic_go_on_under_five_thousand_half_sent_requests() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &["--metrics", &metrics_addr])?;
    let baseline = rss_kib(sidecar.pid())?;
    let watch = RssWatch::start(sidecar.pid());

    let (stop, held) = (Arc::<AtomicBool>::default(), Arc::<AtomicBool>::default());
    let opened = Arc::<AtomicUsize>::default();
    let attack = {
        let (addr, stop, held, opened) = (sidecar.admin.clone(), stop.clone(), held.clone(), opened.clone());
        std::thread::spawn(move || attacker(addr, stop, held, opened))
    };
    let started = Instant::now();
    while !held.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(held.load(Ordering::Relaxed), "the attacker holds its first {HALF_SENT} connections");

    let topic = unique("admin-under-attack");
    let lines: Vec<String> = (0..200).map(|i| format!("record-{i}")).collect();
    let kafka = {
        let (listen, topic, lines) = (sidecar.listen.clone(), topic.clone(), lines.clone());
        std::thread::spawn(move || -> Result<Vec<String>> {
            let env = kproxy_e2e::env().expect("environment");
            env.kcat_produce(&listen, &topic, &lines, &["-X", "acks=all"])?;
            env.kcat_consume(&listen, &topic, lines.len(), &[])
        })
    };
    let (mut answered, mut slowest) = (Vec::new(), Duration::ZERO);
    for i in 0..PROBES {
        let path = if i % 2 == 0 { "/readyz" } else { "/healthz" };
        let url = format!("http://{}{path}", sidecar.admin);
        let sent = Instant::now();
        let mut curl = env.command("curl");
        curl.args(["-sf", "--max-time", "2", &url]);
        let out = run_with_timeout(&mut curl, None, Duration::from_secs(10))?;
        slowest = slowest.max(sent.elapsed());
        answered.push((path, out.status.success()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let consumed = kafka.join().expect("kafka thread")?;
    stop.store(true, Ordering::Relaxed);
    attack.join().expect("attacker");
    let peak = watch.peak();

    let failed: Vec<_> = answered.iter().filter(|(_, ok)| !ok).collect();
    eprintln!(
        "admin under attack: {} half-sent connections opened, {}/{PROBES} probes answered (slowest {slowest:?}), \
         {} records through the sidecar, RSS {baseline} KiB before, peak {peak} KiB",
        opened.load(Ordering::Relaxed),
        PROBES - failed.len(),
        consumed.len(),
    );
    assert!(failed.is_empty(), "probes not answered within kubelet's 2 s: {failed:?}");
    let mut got = consumed.clone();
    got.sort();
    let mut want = lines.clone();
    want.sort();
    assert_eq!(got, want, "every record produced during the attack is read back through the sidecar");
    assert!(peak <= baseline + RSS_GROWTH_CAP_KIB, "RSS grew from {baseline} KiB to {peak} KiB");

    let (code, _) = get(&sidecar.admin, "/metrics")?;
    assert_eq!(code, 404, "/metrics is not on the admin address when it has its own");
    let (code, text) = get(&metrics_addr, "/metrics")?;
    assert_eq!(code, 200);
    assert!(sum_series(&text, "kproxy_requests_total", &["api=\"Produce\""]) >= 1.0, "{text}");
    Ok(())
}

#[test]
fn broker_addresses_are_metric_labels_only_when_asked_for() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let east = env.kafka_east();
    for (args, shown) in [(&[][..], false), (&["--metrics-broker-addresses"][..], true)] {
        let sidecar = Sidecar::start(env, &config("east", east), args)?;
        let text = sidecar.metrics()?;
        let series: Vec<&str> = text.lines().filter(|l| l.starts_with("kproxy_upstream_connections{")).collect();
        eprintln!("{args:?}: {series:?}");
        assert!(!series.is_empty(), "the readiness probe's connection is counted: {text}");
        assert_eq!(text.contains(east), shown, "{east} in the metrics with {args:?}: {text}");
        if !shown {
            let index = |s: &&str| {
                let value = s.split("broker=\"").nth(1).and_then(|v| v.split('"').next()).unwrap_or_default();
                value.parse::<usize>().is_ok()
            };
            assert!(series.iter().all(index), "each broker is an index: {series:?}");
        }
    }
    Ok(())
}
