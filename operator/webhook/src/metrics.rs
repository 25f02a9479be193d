//! The webhook's Prometheus metrics, registered on the caller's registry (the operator serves them).

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

/// What happened to one admission review: the fixed label set of `kproxy_webhook_admission_reviews_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar was added.
    Injected,
    /// Nothing to do: not asked for, already injected, or not a Pod CREATE.
    Skipped,
    /// The pod was refused with a message.
    Refused,
    /// The API server could not be asked (listing policies); answered with HTTP 500 so `failurePolicy` applies.
    Error,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped => "skipped",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }
}

/// Every metric the webhook exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub reviews: IntCounterVec,
    pub review_duration: Histogram,
    /// Unix time at which the served certificate expires, for an alert well before it does.
    pub certificate_expiry: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let reviews = IntCounterVec::new(
            Opts::new("kproxy_webhook_admission_reviews_total", "Pod admission reviews by result."),
            &["result"],
        )?;
        let review_duration = Histogram::with_opts(
            HistogramOpts::new("kproxy_webhook_admission_duration_seconds", "Time to answer one admission review.")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        )?;
        let certificate_expiry = Gauge::with_opts(Opts::new(
            "kproxy_webhook_certificate_expiry_timestamp_seconds",
            "When the served webhook certificate expires (Unix time).",
        ))?;
        registry.register(Box::new(reviews.clone()))?;
        registry.register(Box::new(review_duration.clone()))?;
        registry.register(Box::new(certificate_expiry.clone()))?;
        for outcome in [Outcome::Injected, Outcome::Skipped, Outcome::Refused, Outcome::Error] {
            reviews.with_label_values(&[outcome.label()]);
        }
        Ok(Metrics { reviews, review_duration, certificate_expiry })
    }
}
