//! The sidecar's Prometheus metrics, registered once on one registry and rendered by the admin server.

use std::sync::Mutex;

use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::Result;

/// The commit the binary was built from, set at image build; "unknown" for other builds.
pub const COMMIT: &str = match option_env!("KPROXY_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// Every metric the sidecar exports. Labels come from fixed sets: api names, cluster names, results, reasons.
pub struct Metrics {
    pub registry: Registry,
    /// Requests by api and result: `forwarded`, `local` (answered by the sidecar), `error` (no answer could be had;
    /// the connection closed). Frames that closed their connection unread are in `frames_rejected`.
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    /// Frames that closed their connection, by reason.
    pub frames_rejected: IntCounterVec,
    pub client_connections: IntGauge,
    pub client_connections_accepted: IntCounter,
    pub upstream_connections: IntGaugeVec,
    pub upstream_connections_opened: IntCounterVec,
    /// KIP-368 re-authentications of pooled connections, by cluster and result (`ok`, `failed`).
    pub upstream_reauthentications: IntCounterVec,
    pub buffer_pool_bytes: IntGaugeVec,
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub config_info: IntGaugeVec,
    pub reload_seconds: Histogram,
    pub broker_listeners: IntGauge,
    /// The memory budget's size: bytes of frames that may be in flight at once.
    pub memory_budget: IntGauge,
    /// Bytes reserved in the memory budget now (frames not yet written, room held for responses).
    pub memory_reserved: IntGauge,
    /// Seconds client connections spent not read because the memory budget had no room, summed.
    pub client_paused_seconds: Counter,
    /// Fetch requests whose `max_bytes` was lowered to what the memory budget had room for.
    pub fetch_lowered: IntCounter,
    /// Bytes of request frames read from clients (length prefix included), by api and the cluster answering.
    pub request_bytes: IntCounterVec,
    /// Bytes of response frames written to clients (length prefix included), by api and the cluster answering.
    pub response_bytes: IntCounterVec,
    /// Fields of the served config this sidecar does not know.
    pub unknown_fields: UnknownFields,
}

/// Fields of the served config this version does not know (what a newer schema minor added): counted in
/// `kproxy_config_unknown_fields` and logged once per distinct set, so an older sidecar never drops them silently.
pub struct UnknownFields {
    gauge: IntGauge,
    /// The set last logged; a reload carrying the same fields says nothing again.
    logged: Mutex<Vec<String>>,
}

impl UnknownFields {
    /// Reports the unknown fields of the config text just put in force.
    pub fn report(&self, text: &str) {
        let fields = kproxy_api::config::SidecarConfig::unknown_fields(text);
        self.gauge.set(fields.len() as i64);
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if *logged != fields {
            if !fields.is_empty() {
                tracing::warn!(
                    ?fields,
                    "the config has fields this sidecar does not know (rendered for a newer version); they are \
                     ignored: upgrade the sidecar to enforce them"
                );
            }
            *logged = fields;
        }
    }
}

impl Metrics {
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("kproxy_requests_total", "Client requests by api and result"),
            &["api", "result"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("kproxy_request_latency_seconds", "Time from a request read to its response written")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
            &["api", "cluster"],
        )?;
        let frames_rejected = IntCounterVec::new(
            Opts::new("kproxy_frames_rejected_total", "Client frames that closed their connection, by reason"),
            &["reason"],
        )?;
        let client_connections = IntGauge::new("kproxy_client_connections", "Open client connections")?;
        let client_connections_accepted =
            IntCounter::new("kproxy_client_connections_accepted_total", "Client connections accepted")?;
        let upstream_connections = IntGaugeVec::new(
            Opts::new("kproxy_upstream_connections", "Open upstream connections per broker"),
            &["cluster", "broker"],
        )?;
        let upstream_connections_opened = IntCounterVec::new(
            Opts::new("kproxy_upstream_connections_opened_total", "Upstream connections opened"),
            &["cluster"],
        )?;
        let upstream_reauthentications = IntCounterVec::new(
            Opts::new("kproxy_upstream_reauthentications_total", "SASL re-authentications of pooled connections"),
            &["cluster", "result"],
        )?;
        let buffer_pool_bytes =
            IntGaugeVec::new(Opts::new("kproxy_buffer_pool_bytes", "Frame buffer pool bytes by state"), &["state"])?;
        let config_reloads = IntCounterVec::new(
            Opts::new("kproxy_config_reloads_total", "Config reloads by result (applied, unchanged, rejected)"),
            &["result"],
        )?;
        let config_generation =
            IntGauge::new("kproxy_config_generation", "Number of configs applied since start, the first being 1")?;
        let config_info = IntGaugeVec::new(
            Opts::new("kproxy_config_info", "The config being served: its hash and policy generation"),
            &["hash", "policy", "policy_generation"],
        )?;
        let reload_seconds = Histogram::with_opts(
            HistogramOpts::new("kproxy_config_reload_seconds", "Time to read, validate and swap in a config")
                .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5]),
        )?;
        let broker_listeners =
            IntGauge::new("kproxy_broker_listeners", "Local listeners standing for upstream brokers")?;
        let memory_budget =
            IntGauge::new("kproxy_memory_budget_bytes", "Bytes of frames that may be held in flight at once")?;
        let memory_reserved = IntGauge::new(
            "kproxy_memory_reserved_bytes",
            "Bytes reserved in the memory budget: frames not yet written and room held for responses",
        )?;
        let client_paused_seconds = Counter::new(
            "kproxy_client_paused_seconds_total",
            "Time client connections were not read because the memory budget had no room",
        )?;
        let fetch_lowered = IntCounter::new(
            "kproxy_fetch_max_bytes_lowered_total",
            "Fetch requests whose max_bytes was lowered to the room the memory budget had",
        )?;
        let request_bytes = IntCounterVec::new(
            Opts::new("kproxy_request_bytes_total", "Bytes of request frames read from clients, by api and cluster"),
            &["api", "cluster"],
        )?;
        let response_bytes = IntCounterVec::new(
            Opts::new("kproxy_response_bytes_total", "Bytes of response frames written to clients, by api and cluster"),
            &["api", "cluster"],
        )?;
        // Which build runs where (README "Upgrading" finds old sidecars by it): 1, with the version and the commit
        // set at image build through KPROXY_GIT_COMMIT ("unknown" otherwise).
        let build_info = IntGaugeVec::new(
            Opts::new("kproxy_build_info", "1, labelled with the running build's version and commit"),
            &["version", "commit"],
        )?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), COMMIT]).set(1);
        registry.register(Box::new(build_info))?;
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds and the rest.
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        let unknown_fields = IntGauge::new(
            "kproxy_config_unknown_fields",
            "Fields of the served config this sidecar does not know and ignores (rendered for a newer version)",
        )?;
        registry.register(Box::new(unknown_fields.clone()))?;
        registry.register(Box::new(request_bytes.clone()))?;
        registry.register(Box::new(response_bytes.clone()))?;
        registry.register(Box::new(memory_budget.clone()))?;
        registry.register(Box::new(memory_reserved.clone()))?;
        registry.register(Box::new(client_paused_seconds.clone()))?;
        registry.register(Box::new(fetch_lowered.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(frames_rejected.clone()))?;
        registry.register(Box::new(client_connections.clone()))?;
        registry.register(Box::new(client_connections_accepted.clone()))?;
        registry.register(Box::new(upstream_connections.clone()))?;
        registry.register(Box::new(upstream_connections_opened.clone()))?;
        registry.register(Box::new(upstream_reauthentications.clone()))?;
        registry.register(Box::new(buffer_pool_bytes.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        // Every result has a series from the start, so a dashboard or alert sees 0 rather than nothing.
        for result in ["applied", "unchanged", "rejected"] {
            config_reloads.with_label_values(&[result]);
        }
        registry.register(Box::new(config_generation.clone()))?;
        registry.register(Box::new(config_info.clone()))?;
        registry.register(Box::new(reload_seconds.clone()))?;
        registry.register(Box::new(broker_listeners.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            frames_rejected,
            client_connections,
            client_connections_accepted,
            upstream_connections,
            upstream_connections_opened,
            upstream_reauthentications,
            buffer_pool_bytes,
            config_reloads,
            config_generation,
            config_info,
            reload_seconds,
            broker_listeners,
            memory_budget,
            memory_reserved,
            client_paused_seconds,
            fetch_lowered,
            request_bytes,
            response_bytes,
            unknown_fields: UnknownFields { gauge: unknown_fields, logged: Mutex::new(Vec::new()) },
        })
    }

    /// Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_process_and_byte_metrics_are_exported() {
        let metrics = Metrics::new().unwrap();
        metrics.request_bytes.with_label_values(&["Produce", "east"]).inc_by(120);
        metrics.response_bytes.with_label_values(&["Produce", "east"]).inc_by(60);
        let text = metrics.render();
        let build = format!("kproxy_build_info{{commit=\"{COMMIT}\",version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        assert!(text.contains(&build), "{text}");
        assert!(text.contains("kproxy_request_bytes_total{api=\"Produce\",cluster=\"east\"} 120"), "{text}");
        assert!(text.contains("kproxy_response_bytes_total{api=\"Produce\",cluster=\"east\"} 60"), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
    }

    #[test]
    fn unknown_config_fields_are_counted() {
        let metrics = Metrics::new().unwrap();
        let config =
            "clusters:\n- name: east\n  bootstrapServers: [\"127.0.0.1:9093\"]\n  weight: 3\nsinceV12: {a: 1}\n";
        metrics.unknown_fields.report(config);
        assert!(metrics.render().contains("kproxy_config_unknown_fields 2"));
        metrics.unknown_fields.report("clusters: []\n");
        assert!(metrics.render().contains("kproxy_config_unknown_fields 0"));
    }
}
