//! Where the served config came from and how long it took to get here: `kproxy_config_source{source}`, the age of
//! the served rendering (computed when scraped) and the propagation delay from the operator's render time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::Result;

/// A path a config reaches the sidecar by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The mounted ConfigMap volume (kubelet's projection), and SIGHUP.
    Volume,
    /// The ConfigMap watched through the API server.
    Api,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::Volume, Source::Api];

    pub fn label(self) -> &'static str {
        match self {
            Source::Volume => "volume",
            Source::Api => "api",
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The metrics of config sources.
pub struct Sources {
    /// 1 for the source of the config being served, 0 for the other.
    served: IntGaugeVec,
    /// Seconds from the operator's render to the sidecar putting the config in force, by source.
    propagation: HistogramVec,
    /// Render time of the served config (0: unknown, e.g. a hand-written config).
    rendered_at_ms: Arc<AtomicU64>,
    /// Whether the API watch is established.
    pub api_up: IntGauge,
    /// Interrupted API watches and failed attempts, by reason.
    pub api_errors: IntCounterVec,
}

/// `kproxy_config_age_seconds`, worked out at each scrape from the served config's render time.
struct Age {
    gauge: Gauge,
    rendered_at_ms: Arc<AtomicU64>,
}

impl Collector for Age {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match self.rendered_at_ms.load(Ordering::Relaxed) {
            0 => Vec::new(),
            at => {
                self.gauge.set(now_ms().saturating_sub(at) as f64 / 1000.0);
                self.gauge.collect()
            }
        }
    }
}

impl Sources {
    pub fn new(registry: &Registry) -> Result<Self> {
        let served = IntGaugeVec::new(
            Opts::new("kproxy_config_source", "1 for the path the served config arrived by (volume or api)"),
            &["source"],
        )?;
        let propagation = HistogramVec::new(
            HistogramOpts::new(
                "kproxy_config_propagation_seconds",
                "Time from the operator rendering a config to this sidecar putting it in force, by source",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]),
            &["source"],
        )?;
        let rendered_at_ms = Arc::new(AtomicU64::new(0));
        let age = Age {
            gauge: Gauge::new("kproxy_config_age_seconds", "Seconds since the served config was rendered")?,
            rendered_at_ms: rendered_at_ms.clone(),
        };
        let api_up = IntGauge::new("kproxy_config_api_watch_up", "1 while the config watch through the API runs")?;
        let api_errors = IntCounterVec::new(
            Opts::new("kproxy_config_api_errors_total", "Config watch attempts through the API that failed, by reason"),
            &["reason"],
        )?;
        registry.register(Box::new(served.clone()))?;
        registry.register(Box::new(propagation.clone()))?;
        registry.register(Box::new(age))?;
        registry.register(Box::new(api_up.clone()))?;
        registry.register(Box::new(api_errors.clone()))?;
        for source in Source::ALL {
            served.with_label_values(&[source.label()]);
            propagation.with_label_values(&[source.label()]);
        }
        Ok(Sources { served, propagation, rendered_at_ms, api_up, api_errors })
    }

    /// Records that a config from `source`, rendered at `rendered_at_ms`, is now served.
    pub fn served(&self, source: Source, rendered_at_ms: u64) {
        for s in Source::ALL {
            self.served.with_label_values(&[s.label()]).set(i64::from(s == source));
        }
        self.rendered_at_ms.store(rendered_at_ms, Ordering::Relaxed);
        if rendered_at_ms > 0 {
            let delay = now_ms().saturating_sub(rendered_at_ms) as f64 / 1000.0;
            self.propagation.with_label_values(&[source.label()]).observe(delay);
        }
    }

    /// The first config, read at start: its source and age, but no propagation (the pod was not running).
    pub fn initial(&self, source: Source, rendered_at_ms: u64) {
        for s in Source::ALL {
            self.served.with_label_values(&[s.label()]).set(i64::from(s == source));
        }
        self.rendered_at_ms.store(rendered_at_ms, Ordering::Relaxed);
    }
}
