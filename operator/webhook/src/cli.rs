//! Command-line flags of the webhook, shared by the operator binary (flattened into its own) and `kproxy-webhook`.
//!
//! The names are the ones the Helm chart passes to the operator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cert::Lifetimes;
use crate::inject::{InjectConfig, Resources, Settings};
use crate::metrics::Metrics;
use crate::tls::{GeneratedTls, TlsSource, service_dns_names};
use crate::{Error, Result, WebhookConfig};

/// The sidecar image of this release.
pub const DEFAULT_SIDECAR_IMAGE: &str = concat!("ghcr.io/kproxy-dev/kproxy-sidecar:", env!("CARGO_PKG_VERSION"));

/// Flags of the admission webhook and of the sidecar it injects.
#[derive(clap::Args, Clone, Debug)]
pub struct WebhookArgs {
    /// Serve the admission webhook (HTTPS) on this address; absent: no webhook.
    #[arg(long, env = "KPROXY_WEBHOOK_ADDR")]
    pub webhook_addr: Option<SocketAddr>,
    /// Path of the pod mutation endpoint.
    #[arg(long, default_value = "/mutate")]
    pub webhook_path: String,
    /// Namespace of the webhook Service and certificate Secret (default: the client's, i.e. the pod's own).
    #[arg(long, env = "POD_NAMESPACE")]
    pub webhook_namespace: Option<String>,
    /// The webhook Service: its DNS names go into the generated certificate.
    #[arg(long, default_value = "kproxy-webhook")]
    pub webhook_service: String,
    /// MutatingWebhookConfiguration whose caBundle follows the generated CA.
    #[arg(long, default_value = "kproxy-webhook")]
    pub webhook_configuration: String,
    /// Secret shared by the replicas for the generated CA and certificate.
    #[arg(long, default_value = "kproxy-webhook-tls")]
    pub webhook_secret: String,
    /// Serve `tls.crt`/`tls.key` from this directory (e.g. cert-manager's Secret) instead of generating them.
    #[arg(long)]
    pub webhook_cert_dir: Option<PathBuf>,
    /// Extra subject alternative names of the generated certificate (DNS names or IPs such as 127.0.0.1).
    #[arg(long = "webhook-san")]
    pub webhook_sans: Vec<String>,
    /// Lifetime of a generated serving certificate.
    #[arg(long, default_value_t = 365 * 24 * 3600)]
    pub webhook_cert_validity_seconds: u64,
    /// Renew a generated certificate when less than this is left.
    #[arg(long, default_value_t = 30 * 24 * 3600)]
    pub webhook_renew_before_seconds: u64,
    /// How often replicas re-read the certificate Secret (how fast a renewal by another replica is picked up).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_check_interval_seconds: u64,
    /// Webhook connections served at once (more wait in the listen backlog).
    #[arg(long, default_value_t = crate::server::DEFAULT_MAX_CONNECTIONS, value_parser = parse_cap)]
    pub webhook_max_connections: usize,
    /// Image of the injected sidecar.
    #[arg(long, env = "KPROXY_SIDECAR_IMAGE", default_value = DEFAULT_SIDECAR_IMAGE)]
    pub sidecar_image: String,
    #[arg(long)]
    pub sidecar_image_pull_policy: Option<String>,
    /// Port of the sidecar's /metrics, /healthz and /readyz (container port `kproxy-admin`).
    #[arg(long, default_value_t = 9102)]
    pub sidecar_admin_port: u16,
    /// Serve the sidecar's /metrics on the pod IP (for a PodMonitor); otherwise on 127.0.0.1 at the admin port + 1.
    #[arg(long)]
    pub sidecar_metrics_on_pod_ip: bool,
    /// Sidecar CPU request (per pod: annotation kproxy.dev/cpu).
    #[arg(long, default_value = "50m")]
    pub sidecar_cpu: String,
    /// Sidecar memory request (per pod: annotation kproxy.dev/memory).
    #[arg(long, default_value = "64Mi")]
    pub sidecar_memory: String,
    /// Sidecar CPU limit; none by default (per pod: annotation kproxy.dev/cpu-limit).
    #[arg(long)]
    pub sidecar_cpu_limit: Option<String>,
    /// Sidecar memory limit (per pod: annotation kproxy.dev/memory-limit).
    #[arg(long, default_value = "256Mi")]
    pub sidecar_memory_limit: String,
    /// The sidecar's log filter (RUST_LOG), e.g. debug or kproxy=debug,info (per pod: kproxy.dev/log-level).
    #[arg(long)]
    pub sidecar_log_level: Option<String>,
    /// The sidecar's log format, text or json (per pod: kproxy.dev/log-format).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub sidecar_log_format: String,
    /// The sidecar's memory budget as a quantity (256Mi); absent: half the container's memory limit.
    #[arg(long)]
    pub sidecar_memory_budget: Option<String>,
    /// One client connection's share of the memory budget (16Mi); absent: an eighth of the budget.
    #[arg(long)]
    pub sidecar_connection_memory: Option<String>,
    /// Seconds without a request before the sidecar closes a client connection.
    #[arg(long)]
    pub sidecar_idle_timeout_seconds: Option<u64>,
    /// Seconds a started frame has to arrive completely (and a client to read its answers).
    #[arg(long)]
    pub sidecar_frame_timeout_seconds: Option<u64>,
    /// Most seconds any upstream answer may take.
    #[arg(long)]
    pub sidecar_request_timeout_seconds: Option<u64>,
    /// Upstream connections per broker for ordinary requests.
    #[arg(long)]
    pub sidecar_upstream_connections: Option<u64>,
    /// Upstream connections per broker for long-poll requests.
    #[arg(long)]
    pub sidecar_upstream_long_poll_connections: Option<u64>,
    /// An extra sidecar flag (repeatable), e.g. --sidecar-extra-arg=--max-in-flight=128.
    #[arg(long = "sidecar-extra-arg", allow_hyphen_values = true)]
    pub sidecar_extra_args: Vec<String>,
    /// An extra sidecar environment variable, NAME=VALUE (repeatable).
    #[arg(long = "sidecar-extra-env")]
    pub sidecar_extra_env: Vec<String>,
}

impl WebhookArgs {
    /// The webhook config, or `None` when `--webhook-addr` is absent. `default_namespace` is used when neither
    /// `--webhook-namespace` nor `POD_NAMESPACE` is set (pass the kube client's default namespace).
    pub fn config(&self, default_namespace: &str, metrics: Option<Metrics>) -> Result<Option<WebhookConfig>> {
        let Some(listen) = self.webhook_addr else { return Ok(None) };
        let inject = InjectConfig {
            image: self.sidecar_image.clone(),
            image_pull_policy: self.sidecar_image_pull_policy.clone(),
            admin_port: self.sidecar_admin_port,
            metrics_on_pod_ip: self.sidecar_metrics_on_pod_ip,
            config_watch: true,
            resources: Resources {
                cpu: Some(self.sidecar_cpu.clone()),
                memory: Some(self.sidecar_memory.clone()),
                cpu_limit: self.sidecar_cpu_limit.clone(),
                memory_limit: Some(self.sidecar_memory_limit.clone()),
            },
            sidecar: Settings {
                log_level: self.sidecar_log_level.clone(),
                log_json: self.sidecar_log_format == "json",
                memory_budget: self.sidecar_memory_budget.clone(),
                connection_memory: self.sidecar_connection_memory.clone(),
                idle_timeout_seconds: self.sidecar_idle_timeout_seconds,
                frame_timeout_seconds: self.sidecar_frame_timeout_seconds,
                request_timeout_seconds: self.sidecar_request_timeout_seconds,
                upstream_connections: self.sidecar_upstream_connections,
                upstream_long_poll_connections: self.sidecar_upstream_long_poll_connections,
                extra_args: self.sidecar_extra_args.clone(),
                extra_env: self.sidecar_extra_env.clone(),
            },
        };
        inject.validate().map_err(|problems| Error::Config(problems.join("; ")))?;
        let tls = match &self.webhook_cert_dir {
            Some(dir) => TlsSource::Directory(dir.clone()),
            None => {
                let namespace = self.webhook_namespace.clone().unwrap_or_else(|| default_namespace.to_string());
                let mut sans = service_dns_names(&self.webhook_service, &namespace);
                sans.extend(self.webhook_sans.iter().cloned());
                TlsSource::Generated(GeneratedTls {
                    namespace,
                    secret_name: self.webhook_secret.clone(),
                    sans,
                    webhook_configuration: Some(self.webhook_configuration.clone()),
                    lifetimes: Lifetimes {
                        cert: Duration::from_secs(self.webhook_cert_validity_seconds),
                        renew_before: Duration::from_secs(self.webhook_renew_before_seconds),
                        ..Lifetimes::default()
                    },
                    check_interval: Duration::from_secs(self.webhook_check_interval_seconds),
                })
            }
        };
        let mut cfg = WebhookConfig::new(listen, inject, tls);
        cfg.path = self.webhook_path.clone();
        cfg.metrics = metrics;
        cfg.max_connections = self.webhook_max_connections;
        Ok(Some(cfg))
    }
}

fn parse_cap(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        webhook: WebhookArgs,
    }

    #[test]
    fn chart_flags_build_the_config() {
        let cli = Cli::try_parse_from([
            "op",
            "--webhook-addr=0.0.0.0:8443",
            "--webhook-service=kproxy",
            "--webhook-configuration=kproxy",
            "--webhook-secret=kproxy-webhook-tls",
            "--webhook-namespace=kproxy-system",
            "--sidecar-image=registry.local/kproxy-sidecar:1",
            "--sidecar-cpu=100m",
            "--sidecar-memory-limit=512Mi",
            "--sidecar-log-format=json",
            "--sidecar-log-level=debug",
            "--sidecar-memory-budget=128Mi",
            "--sidecar-request-timeout-seconds=60",
            "--sidecar-extra-arg=--max-in-flight=32",
            "--sidecar-extra-env=TZ=UTC",
        ])
        .unwrap();
        let cfg = cli.webhook.config("default", None).unwrap().unwrap();
        assert_eq!(cfg.path, "/mutate");
        assert_eq!(cfg.inject.image, "registry.local/kproxy-sidecar:1");
        assert_eq!(cfg.inject.resources.cpu.as_deref(), Some("100m"));
        assert_eq!(cfg.inject.resources.memory_limit.as_deref(), Some("512Mi"));
        let sidecar = &cfg.inject.sidecar;
        assert_eq!((sidecar.log_json, sidecar.log_level.as_deref()), (true, Some("debug")));
        assert_eq!(
            sidecar.args(),
            ["--log-json", "--memory-budget-bytes=134217728", "--request-timeout-seconds=60", "--max-in-flight=32"]
        );
        assert_eq!(sidecar.extra_env, ["TZ=UTC"]);
        let TlsSource::Generated(tls) = cfg.tls else { panic!("expected generated certificates") };
        assert_eq!(tls.namespace, "kproxy-system");
        assert!(tls.sans.contains(&"kproxy.kproxy-system.svc".to_string()));
        assert_eq!(tls.webhook_configuration.as_deref(), Some("kproxy"));
    }

    #[test]
    fn no_address_no_webhook_and_bad_quantities_fail_at_startup() {
        assert!(Cli::try_parse_from(["op"]).unwrap().webhook.config("default", None).unwrap().is_none());
        let cli = Cli::try_parse_from(["op", "--webhook-addr=127.0.0.1:8443", "--sidecar-cpu=fast"]).unwrap();
        assert!(cli.webhook.config("default", None).is_err());
        let cli = Cli::try_parse_from(["op", "--webhook-addr=127.0.0.1:8443", "--sidecar-memory-budget=lots"]).unwrap();
        let err = cli.webhook.config("default", None).unwrap_err().to_string();
        assert!(err.contains("--sidecar-memory-budget=lots"), "{err}");
        let cli = Cli::try_parse_from(["op", "--webhook-addr=127.0.0.1:8443", "--webhook-cert-dir=/certs"]).unwrap();
        assert!(matches!(cli.webhook.config("default", None).unwrap().unwrap().tls, TlsSource::Directory(_)));
    }
}
