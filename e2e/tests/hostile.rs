//! Hostile clients against a real sidecar: every kind of bad frame, slowloris trickles and ten thousand
//! connections at once. Each bad connection is closed (or answered with an error) on its own and counted, the log
//! stays bounded, resident memory stays under a cap, and a well-behaved producer on the same sidecar is unharmed.
//! (sidecar_limits.rs covers a single bad frame of each basic kind next to a producer.)

use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::Duration;

use kproxy_e2e::hostile::{RssWatch, api_versions, closed_within, count_lines, read_response, request};
use kproxy_e2e::sidecar::{Sidecar, config};
use kproxy_e2e::{env, unique};

/// Resident memory the sidecar (a debug build) must stay under while it is attacked.
const RSS_CAP_KIB: u64 = 128 * 1024;
/// Warnings about closed client connections the log may hold after an attack, however many connections it had.
const LOG_BOUND: usize = 30;
const CLOSE_LINE: &str = "closing client connection";

/// A producer on its own connections that writes `batches` of 100 numbered records through the sidecar while the
/// attack goes on; yields how many it wrote (each kcat run fails unless every record is acknowledged).
fn well_behaved_producer(listen: &str, topic: &str, batches: usize) -> JoinHandle<usize> {
    let (listen, topic) = (listen.to_string(), topic.to_string());
    std::thread::spawn(move || {
        let env = kproxy_e2e::env().unwrap();
        for batch in 0..batches {
            let lines: Vec<String> = (0..100).map(|i| format!("{batch}-{i}")).collect();
            env.kcat_produce(&listen, &topic, &lines, &[]).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        batches * 100
    })
}

/// Sends `bytes` on a fresh connection; `then_half_close` ends the client's side afterwards.
fn attack(addr: &str, bytes: &[u8], then_half_close: bool) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    if then_half_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    s
}

#[test]
fn every_bad_frame_closes_its_connection_is_counted_and_logged_a_bounded_number_of_times() {
    let Some(env) = env() else { return };
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &["--frame-timeout-secs", "2"]).unwrap();
    let topic = unique("hostile-frames");
    let rss = RssWatch::start(sidecar.pid());
    let producer = well_behaved_producer(&sidecar.listen, &topic, 8);
    const ROUNDS: usize = 40;
    // (what, bytes, half-close after sending, reason it is counted under)
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        ("length 0", vec![0, 0, 0, 0], false, "too_short"),
        ("length -1", vec![0xff, 0xff, 0xff, 0xff, 0, 3], false, "negative_length"),
        ("length 2^31-1", vec![0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 1], false, "oversized"),
        ("a TLS hello", vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03], false, "oversized"),
        ("random bytes", (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect(), false, "oversized"),
        ("truncated frame", vec![0, 0, 0, 100, 0, 3, 0, 1, 0, 0, 0, 9], true, "truncated"),
        ("truncated length", vec![0, 0], true, "truncated"),
        ("unknown api key", request(999, 0, 1, &[0xff, 0xff]), false, "unknown_api"),
        ("negative api key", request(-2, 0, 1, &[0xff, 0xff]), false, "unknown_api"),
        ("Metadata v200", request(3, 200, 1, &[0xff, 0xff, 0, 0, 0, 0]), false, "unsupported_version"),
    ];
    for round in 0..ROUNDS {
        let open: Vec<(&str, TcpStream)> =
            cases.iter().map(|(what, bytes, half, _)| (*what, attack(&sidecar.listen, bytes, *half))).collect();
        for (what, mut s) in open {
            assert!(closed_within(&mut s, Duration::from_secs(20)), "round {round}: {what} was not closed");
        }
    }
    // An ApiVersions version beyond the newest is answered (v0, UNSUPPORTED_VERSION) as Kafka does, so the client
    // can retry with a version it finds in the answer; the connection stays usable.
    let mut s = TcpStream::connect(&sidecar.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&api_versions(200, 41)).unwrap();
    let (id, body) = read_response(&mut s).unwrap();
    assert_eq!((id, i16::from_be_bytes([body[4], body[5]])), (41, 35), "ApiVersions v200: UNSUPPORTED_VERSION");
    s.write_all(&api_versions(3, 42)).unwrap();
    let (id, body) = read_response(&mut s).unwrap();
    assert_eq!((id, i16::from_be_bytes([body[4], body[5]])), (42, 0), "ApiVersions v3 on the same connection");
    drop(s);

    let written = producer.join().expect("the well-behaved producer failed");
    let got = env.kcat_consume(&sidecar.listen, &topic, written, &[]).unwrap();
    assert_eq!(got.len(), written, "every record of the well-behaved producer arrived");
    let peak = rss.peak();
    let m = sidecar.metrics().unwrap();
    let mut expected = std::collections::BTreeMap::<&str, usize>::new();
    for (_, _, _, reason) in &cases {
        *expected.entry(reason).or_default() += ROUNDS;
    }
    for (reason, want) in &expected {
        let got =
            kproxy_e2e::sidecar::sum_series(&m, "kproxy_frames_rejected_total", &[&format!("reason=\"{reason}\"")]);
        assert_eq!(got as usize, *want, "connections counted as {reason}:\n{m}");
    }
    let log = sidecar.log_text();
    let lines = count_lines(&log, CLOSE_LINE);
    eprintln!(
        "bad frames: {} bad connections, {lines} log lines about them, peak RSS {} MiB",
        ROUNDS * cases.len(),
        peak / 1024
    );
    assert!(lines >= 1, "the closes are logged");
    assert!(lines <= LOG_BOUND, "{lines} log lines for {} bad connections", ROUNDS * cases.len());
    assert!(peak < RSS_CAP_KIB, "peak RSS {peak} KiB");
}

#[test]
fn slowloris_trickles_are_cut_at_the_frame_timeout_even_while_bytes_keep_coming() {
    let Some(env) = env() else { return };
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &["--frame-timeout-secs", "2"]).unwrap();
    let topic = unique("hostile-slowloris");
    let producer = well_behaved_producer(&sidecar.listen, &topic, 4);
    let tricklers: Vec<JoinHandle<bool>> = (0..20)
        .map(|_| {
            let listen = sidecar.listen.clone();
            std::thread::spawn(move || {
                // A 1000-byte frame sent one byte every 250 ms would take four minutes.
                let frame = request(3, 1, 1, &[0u8; 992]);
                let mut s = TcpStream::connect(&listen).unwrap();
                for (i, byte) in frame.iter().enumerate() {
                    if s.write_all(&[*byte]).is_err() {
                        return i < 200;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                    // The close may arrive as EOF to the reader before a write notices it.
                    if i % 8 == 7 && closed_within(&mut s, Duration::from_millis(1)) {
                        return i < 200;
                    }
                }
                false
            })
        })
        .collect();
    for t in tricklers {
        assert!(t.join().unwrap(), "a trickling client was not cut off within 50 s");
    }
    assert_eq!(producer.join().expect("the well-behaved producer failed"), 400);
    let got = sidecar.metric("kproxy_frames_rejected_total", &["reason=\"partial_timeout\""]).unwrap();
    assert_eq!(got, 20.0, "each trickle counted once");
}

/// The largest number of sockets this process may open, raising the soft limit to the hard one first.
fn raise_fd_limit() -> u64 {
    let pid = std::process::id().to_string();
    let hard = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile", "--raw", "--noheadings", "--output=HARD"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<u64>().ok())
        .unwrap_or(1024);
    let _ = std::process::Command::new("prlimit").args(["--pid", &pid, &format!("--nofile={hard}:{hard}")]).status();
    hard
}

#[test]
fn ten_thousand_connections_at_once_are_each_closed_on_their_own() {
    let Some(env) = env() else { return };
    // The sidecar inherits this process's limit; each side holds one descriptor per connection.
    let limit = raise_fd_limit();
    let total = 10_000.min(limit.saturating_sub(500) as usize) / 2 * 2;
    if total < 10_000 {
        eprintln!("only {limit} file descriptors allowed: using {total} connections instead of 10000");
    }
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &["--frame-timeout-secs", "3"]).unwrap();
    let topic = unique("hostile-crowd");
    let rss = RssWatch::start(sidecar.pid());
    let producer = well_behaved_producer(&sidecar.listen, &topic, 8);
    let threads = 20;
    let barrier = Arc::new(Barrier::new(threads));
    let crowd: Vec<JoinHandle<usize>> = (0..threads)
        .map(|t| {
            let (listen, barrier) = (sidecar.listen.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut socks = Vec::new();
                for i in 0..total / threads {
                    let mut s = TcpStream::connect(&listen).unwrap();
                    // Half send a negative length, half the first two bytes of a length and nothing more.
                    let bytes: &[u8] = if (t + i) % 2 == 0 { &[0xff, 0xff, 0xff, 0xff] } else { &[0, 0] };
                    s.write_all(bytes).unwrap();
                    socks.push(s);
                }
                // Every connection is open (or queued for accept) at once before any is checked.
                barrier.wait();
                socks.iter_mut().map(|s| usize::from(closed_within(s, Duration::from_secs(120)))).sum()
            })
        })
        .collect();
    let closed: usize = crowd.into_iter().map(|t| t.join().unwrap()).sum();
    let written = producer.join().expect("the well-behaved producer failed");
    let peak = rss.peak();
    assert_eq!(closed, total, "every connection of the crowd was closed by the sidecar");
    let got = env.kcat_consume(&sidecar.listen, &topic, written, &[]).unwrap();
    assert_eq!(got.len(), written, "every record of the well-behaved producer arrived");
    let m = sidecar.metrics().unwrap();
    let count = |reason: &str| {
        kproxy_e2e::sidecar::sum_series(&m, "kproxy_frames_rejected_total", &[&format!("reason=\"{reason}\"")])
    };
    assert_eq!(count("negative_length") as usize, total / 2);
    assert_eq!(count("partial_timeout") as usize, total / 2);
    let accepted = kproxy_e2e::sidecar::sum_series(&m, "kproxy_client_connections_accepted_total", &[]);
    assert!(accepted as usize >= total);
    let lines = count_lines(&sidecar.log_text(), CLOSE_LINE);
    eprintln!("crowd: {total} connections closed, {lines} log lines about them, peak RSS {} MiB", peak / 1024);
    assert!(lines <= LOG_BOUND, "{lines} log lines for {total} bad connections");
    assert!(peak < RSS_CAP_KIB, "peak RSS {peak} KiB over the cap of {RSS_CAP_KIB} KiB");
}
