//! What the load generator prints: one JSON object per run, latencies from an HDR histogram.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in microseconds.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Responses completed per time bucket, from the moment the first connection started.
#[derive(Debug, Default, Serialize)]
pub struct Timeline {
    /// Wall-clock start of bucket 0, milliseconds since the Unix epoch (to line up with other events).
    pub start_unix_ms: u128,
    pub bucket_ms: u64,
    pub responses: Vec<u64>,
}

/// A produce run. "measured" figures cover requests sent inside the measured window (after warm-up).
#[derive(Debug, Default, Serialize)]
pub struct ProduceReport {
    pub mode: &'static str,
    pub bootstrap: String,
    pub topic: String,
    pub produce_version: i16,
    pub connections: usize,
    pub in_flight: usize,
    pub record_bytes: usize,
    pub records_per_request: usize,
    pub acks: i16,
    /// Target request rate for fixed-rate runs; absent when sending as fast as responses allow.
    pub rate: Option<f64>,
    /// Every request written, warm-up included, and every response read: equal unless something was lost.
    pub total_sent: u64,
    pub total_responses: u64,
    /// Partition-level error codes other than 0 in responses.
    pub errors: u64,
    /// Connections that ended with an error instead of a clean drain.
    pub failed_connections: u64,
    pub first_failure: Option<String>,
    pub duration_s: f64,
    pub requests: u64,
    pub request_bytes: u64,
    pub payload_bytes: u64,
    pub requests_per_s: f64,
    pub records_per_s: f64,
    /// Record payload throughput in MB/s with MB = 2^20 bytes, as Kafka's perf tools count.
    pub mb_per_s: f64,
    pub latency_us: Latency,
    pub timeline: Option<Timeline>,
}

/// An idle-connections run.
#[derive(Debug, Default, Serialize)]
pub struct IdleReport {
    pub mode: &'static str,
    pub bootstrap: String,
    pub requested: usize,
    pub connected: usize,
    pub failed: usize,
    pub first_failure: Option<String>,
    /// Time to open every connection and finish its ApiVersions exchange.
    pub open_ms: u128,
}
