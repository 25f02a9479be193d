//! Quota math against Kafka's: rates over the window, throttles that bring the rate back to the quota.

use std::time::{Duration, Instant};

use kproxy_api::policy::{ClientQuota, Quotas as Config};

use super::{Kind, Quotas, SAMPLE_WINDOW};

const MIB: u64 = 1024 * 1024;

fn config(produce: u64) -> Config {
    Config { producer_byte_rate: Some(produce), ..Default::default() }
}

#[test]
fn under_the_quota_nothing_is_throttled() {
    let mut q = Quotas::new(&config(MIB));
    let t0 = Instant::now();
    for i in 0..100 {
        let d = q.record(Kind::Produce, "app", 10 * 1024, t0 + Duration::from_millis(i * 100));
        assert_eq!(d, Duration::ZERO);
    }
    assert_eq!(q.record(Kind::Fetch, "app", 100 * MIB, t0), Duration::ZERO, "no fetch quota set");
}

#[test]
fn a_client_obeying_the_throttle_converges_to_the_quota() {
    // A producer sends 256 KiB batches as fast as it may: it waits only for the throttle the proxy returns.
    let mut q = Quotas::new(&config(MIB));
    let t0 = Instant::now();
    let mut now = t0;
    let mut sent = 0u64;
    let batch = 256 * 1024;
    while now - t0 < Duration::from_secs(30) {
        let throttle = q.record(Kind::Produce, "app", batch, now);
        sent += batch;
        now += throttle + Duration::from_millis(1);
    }
    let achieved = sent as f64 / (now - t0).as_secs_f64();
    let ratio = achieved / MIB as f64;
    assert!((0.95..1.1).contains(&ratio), "achieved {achieved:.0} B/s, ratio {ratio:.3}");
}

#[test]
fn throttle_time_is_kafkas_formula() {
    let mut q = Quotas::new(&config(1000));
    let t0 = Instant::now();
    // 2000 bytes at once: the window is at least 1 s, so the rate is 2000 B/s, twice the quota, and the
    // throttle is (2000 - 1000) / 1000 * 1 s = 1 s. After 4 more seconds with 3000 more bytes: 5000 B over 5 s.
    let d = q.record(Kind::Produce, "app", 2_000, t0);
    assert_eq!(d, SAMPLE_WINDOW);
    assert!((q.rate(Kind::Produce, "app", t0) - 2000.0).abs() < 1e-6);
    let d = q.record(Kind::Produce, "app", 6_000, t0 + Duration::from_secs(4));
    // 8000 B over 4 s = 2000 B/s: (2000 - 1000) / 1000 * 4 s.
    assert_eq!(d, Duration::from_secs(4));
}

#[test]
fn client_overrides_have_their_own_measurement_and_limit() {
    let mut cfg = config(1000);
    cfg.client_id_overrides = vec![ClientQuota {
        client_id: "loader".into(),
        producer_byte_rate: Some(100_000),
        consumer_byte_rate: None,
        request_rate: None,
    }];
    let mut q = Quotas::new(&cfg);
    let t0 = Instant::now();
    assert_eq!(q.record(Kind::Produce, "loader", 50_000, t0), Duration::ZERO);
    assert!(q.record(Kind::Produce, "other", 20_000, t0) > Duration::ZERO, "the pod-wide quota is shared");
    assert_eq!(q.pod_rate(Kind::Produce, t0), 20_000.0);
}

#[test]
fn request_rate_counts_requests_and_old_samples_expire() {
    let mut q = Quotas::new(&Config { request_rate: Some(10), ..Default::default() });
    let t0 = Instant::now();
    let mut last = Duration::ZERO;
    for _ in 0..150 {
        last = q.record(Kind::Request, "c", 1, t0);
    }
    assert!(last > Duration::ZERO);
    // 20 s later the burst has left the window.
    assert_eq!(q.record(Kind::Request, "c", 1, t0 + Duration::from_secs(20)), Duration::ZERO);
}

#[test]
fn reload_keeps_measurements() {
    let mut q = Quotas::new(&config(1000));
    let t0 = Instant::now();
    q.record(Kind::Produce, "app", 20_000, t0);
    q.update(&config(500));
    assert!(q.record(Kind::Produce, "app", 1, t0) > SAMPLE_WINDOW * 10, "rate kept, lower quota applies");
    assert!(q.limits(Kind::Produce) && !q.limits(Kind::Fetch));
}
