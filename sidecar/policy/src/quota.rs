//! Quotas with Kafka's semantics (KIP-13, KIP-219): measure a rate over a sliding window of samples, and when it
//! exceeds the quota answer with the throttle time that brings the rate back to the quota. Nothing is dropped.
//!
//! The math is Kafka's `ClientQuotaManager`: with `value` recorded over an elapsed window `w`, `rate = value / w`,
//! and a rate above `quota` throttles for `(rate - quota) / quota * w`, which is exactly the pause after which
//! `value / (w + pause) == quota`. One difference: Kafka measures a young window as if `samples - 1` windows had
//! passed, which lets a new client burst ten times its quota for a second; here a window is at least one sample
//! long, so a pod converges to its quota from the start.

mod throttle;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kproxy_api::policy::Quotas as Config;

pub use throttle::{client_throttles, set_in as set_throttle_in, set_throttle_time};

/// Metric names the data path registers.
pub const METRIC_THROTTLE_SECONDS: &str = "kproxy_quota_throttle_seconds_total";
/// The pod-wide byte rates (Produce, Fetch), labelled by kind.
pub const METRIC_BYTE_RATE: &str = "kproxy_quota_bytes_per_second";
/// The pod-wide request rate.
pub const METRIC_REQUEST_RATE: &str = "kproxy_quota_requests_per_second";

/// What a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Produce request bytes per second.
    Produce,
    /// Fetch response bytes per second.
    Fetch,
    /// Requests per second.
    Request,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Produce, Kind::Fetch, Kind::Request];

    /// Whether the kind measures bytes (else requests): each unit has its own metric.
    pub fn is_bytes(self) -> bool {
        matches!(self, Kind::Produce | Kind::Fetch)
    }

    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Produce => "produce",
            Kind::Fetch => "fetch",
            Kind::Request => "request",
        }
    }
}

/// Kafka's defaults: 11 samples of one second.
pub const SAMPLES: usize = 11;
pub const SAMPLE_WINDOW: Duration = Duration::from_secs(1);

/// A windowed rate: the sum over the last `SAMPLES` sample windows.
#[derive(Clone, Debug)]
struct Rate {
    /// (window start, value) per sample, oldest first.
    samples: Vec<(Instant, f64)>,
}

impl Rate {
    fn new() -> Self {
        Self { samples: Vec::with_capacity(SAMPLES) }
    }

    fn record(&mut self, value: f64, now: Instant) {
        match self.samples.last_mut() {
            Some((start, v)) if now.saturating_duration_since(*start) < SAMPLE_WINDOW => *v += value,
            _ => {
                if self.samples.len() == SAMPLES {
                    self.samples.remove(0);
                }
                self.samples.push((now, value));
            }
        }
        self.expire(now);
    }

    /// Drops samples older than the whole window.
    fn expire(&mut self, now: Instant) {
        let horizon = SAMPLE_WINDOW * SAMPLES as u32;
        self.samples.retain(|(start, _)| now.saturating_duration_since(*start) < horizon);
    }

    /// The elapsed window the rate is measured over: from the oldest sample, and never less than one sample
    /// window, so a single request is not measured over a tiny window.
    fn window(&self, now: Instant) -> Duration {
        let elapsed = self.samples.first().map(|(start, _)| now.saturating_duration_since(*start)).unwrap_or_default();
        elapsed.max(SAMPLE_WINDOW)
    }

    fn measure(&self, now: Instant) -> f64 {
        let total: f64 = self
            .samples
            .iter()
            .filter(|(start, _)| now.saturating_duration_since(*start) < SAMPLE_WINDOW * SAMPLES as u32)
            .map(|(_, v)| v)
            .sum();
        total / self.window(now).as_secs_f64()
    }
}

/// Limits per kind: pod-wide, and per client id where an override sets one.
#[derive(Clone, Debug, Default, PartialEq)]
struct Limits {
    pod: [Option<u64>; 3],
    clients: HashMap<String, [Option<u64>; 3]>,
}

impl Limits {
    fn from_config(config: &Config) -> Self {
        let pod = [config.producer_byte_rate, config.consumer_byte_rate, config.request_rate];
        let clients = config
            .client_id_overrides
            .iter()
            .map(|o| (o.client_id.clone(), [o.producer_byte_rate, o.consumer_byte_rate, o.request_rate]))
            .collect();
        Self { pod, clients }
    }
}

/// Who a measurement belongs to: the whole pod, or one client id with its own override.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Owner {
    Pod,
    Client(String),
}

/// Quota state: limits from the policy and the measured rates, which survive policy reloads.
#[derive(Debug, Default)]
pub struct Quotas {
    limits: Limits,
    rates: HashMap<(Kind, Owner), Rate>,
}

impl Quotas {
    pub fn new(config: &Config) -> Self {
        Self { limits: Limits::from_config(config), rates: HashMap::new() }
    }

    /// Applies a new policy, keeping the measurements (a reload must not reset anyone's throttling).
    pub fn update(&mut self, config: &Config) {
        let limits = Limits::from_config(config);
        if limits != self.limits {
            self.rates.retain(|(_, owner), _| match owner {
                Owner::Pod => true,
                Owner::Client(id) => limits.clients.contains_key(id),
            });
            self.limits = limits;
        }
    }

    /// The limit that applies to `client_id` for `kind`, and whose measurement it shares.
    fn applicable(&self, kind: Kind, client_id: &str) -> Option<(u64, Owner)> {
        if let Some(limit) = self.limits.clients.get(client_id).and_then(|l| l[kind as usize]) {
            return Some((limit, Owner::Client(client_id.to_string())));
        }
        self.limits.pod[kind as usize].map(|limit| (limit, Owner::Pod))
    }

    /// Whether any quota of this kind is configured (the data path can skip measuring otherwise).
    pub fn limits(&self, kind: Kind) -> bool {
        self.limits.pod[kind as usize].is_some() || self.limits.clients.values().any(|l| l[kind as usize].is_some())
    }

    /// Records `amount` (bytes, or 1 for a request) and returns how long the client must be throttled.
    pub fn record(&mut self, kind: Kind, client_id: &str, amount: u64, now: Instant) -> Duration {
        let Some((limit, owner)) = self.applicable(kind, client_id) else { return Duration::ZERO };
        let rate = self.rates.entry((kind, owner)).or_insert_with(Rate::new);
        rate.record(amount as f64, now);
        throttle_time(rate, limit as f64, now)
    }

    /// The current rate of `kind` as seen by `client_id` (the pod's when it has no override).
    pub fn rate(&self, kind: Kind, client_id: &str, now: Instant) -> f64 {
        let owner = match self.applicable(kind, client_id) {
            Some((_, owner)) => owner,
            None => Owner::Pod,
        };
        self.rates.get(&(kind, owner)).map(|r| r.measure(now)).unwrap_or_default()
    }

    /// The pod-wide rate of `kind`, for the rate gauges (`METRIC_BYTE_RATE`, `METRIC_REQUEST_RATE`).
    pub fn pod_rate(&self, kind: Kind, now: Instant) -> f64 {
        self.rates.get(&(kind, Owner::Pod)).map(|r| r.measure(now)).unwrap_or_default()
    }
}

fn throttle_time(rate: &Rate, limit: f64, now: Instant) -> Duration {
    let observed = rate.measure(now);
    if observed <= limit {
        return Duration::ZERO;
    }
    let window = rate.window(now);
    let pause = window.mul_f64((observed - limit) / limit);
    // Kafka caps a single throttle at the whole quota window.
    pause.min(SAMPLE_WINDOW * SAMPLES as u32)
}

#[cfg(test)]
mod tests;
