//! kproxy-webhook binary: the injection webhook on its own, for out-of-cluster runs and end-to-end tests.
//!
//! In a cluster the operator serves the same webhook; this binary adds the option to register the
//! MutatingWebhookConfiguration itself, pointing the API server at a URL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kproxy_webhook::cert::Lifetimes;
use kproxy_webhook::registration::{Endpoint, Registration, register};
use kproxy_webhook::tls::GeneratedTls;
use kproxy_webhook::{InjectConfig, Resources, TlsSource, WebhookConfig, serve};

#[derive(Parser, Debug)]
#[command(version, about = "kproxy sidecar injection webhook")]
struct Args {
    /// Address of the HTTPS listener.
    #[arg(long, default_value = "0.0.0.0:9443", env = "KPROXY_WEBHOOK_LISTEN")]
    listen: SocketAddr,
    /// Sidecar image to inject.
    #[arg(long, env = "KPROXY_SIDECAR_IMAGE")]
    image: String,
    #[arg(long, default_value = "50m")]
    cpu: String,
    #[arg(long, default_value = "64Mi")]
    memory: String,
    #[arg(long)]
    cpu_limit: Option<String>,
    #[arg(long, default_value = "256Mi")]
    memory_limit: String,
    /// Serve `tls.crt`/`tls.key` from this directory (cert-manager) instead of generating certificates.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Namespace of the Secret holding generated certificates.
    #[arg(long, default_value = "kproxy-system", env = "POD_NAMESPACE")]
    namespace: String,
    #[arg(long, default_value = "kproxy-webhook-tls")]
    secret: String,
    /// The webhook Service: its DNS names go into the generated certificate.
    #[arg(long, default_value = "kproxy-webhook")]
    service: String,
    /// Extra subject alternative names (DNS names or IPs, e.g. 127.0.0.1).
    #[arg(long = "san")]
    sans: Vec<String>,
    /// MutatingWebhookConfiguration whose caBundle follows the generated CA.
    #[arg(long, default_value = "kproxy-webhook")]
    webhook_configuration: String,
    /// Create or update the MutatingWebhookConfiguration, pointing at this URL (e.g. https://127.0.0.1:9443/mutate).
    #[arg(long)]
    register_url: Option<String>,
    /// failurePolicy of the registered webhook: Fail or Ignore.
    #[arg(long, default_value = "Fail")]
    failure_policy: String,
    /// Limit the registered webhook to these namespaces (default: all but kube-system and kube-node-lease).
    #[arg(long = "only-namespace")]
    only_namespaces: Vec<String>,
    /// PEM CA to register as caBundle (with --tls-dir; generated certificates publish their own CA).
    #[arg(long)]
    ca_bundle_file: Option<PathBuf>,
    /// Lifetime of a generated serving certificate, in seconds.
    #[arg(long, default_value_t = 365 * 24 * 3600)]
    cert_validity_seconds: u64,
    /// Renew a generated certificate when less than this many seconds are left.
    #[arg(long, default_value_t = 30 * 24 * 3600)]
    renew_before_seconds: u64,
    /// Seconds between re-reads of the certificate Secret.
    #[arg(long, default_value_t = 600)]
    check_interval_seconds: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    let client = kube::Client::try_default().await.context("connecting to the API server")?;

    if let Some(url) = &args.register_url {
        let mut registration = Registration::new(&args.webhook_configuration, Endpoint::Url(url.clone()));
        registration.failure_policy = args.failure_policy.clone();
        if let Some(path) = &args.ca_bundle_file {
            let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            registration.ca_bundle = Some(pem);
        }
        if !args.only_namespaces.is_empty() {
            registration.namespace_selector = Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".into(),
                    operator: "In".into(),
                    values: Some(args.only_namespaces.clone()),
                }]),
                ..Default::default()
            });
        }
        register(&client, &registration).await.context("registering the webhook")?;
    }

    let tls = match args.tls_dir {
        Some(dir) => TlsSource::Directory(dir),
        None => {
            let mut sans = kproxy_webhook::tls::service_dns_names(&args.service, &args.namespace);
            sans.extend(args.sans);
            TlsSource::Generated(GeneratedTls {
                namespace: args.namespace,
                secret_name: args.secret,
                sans,
                webhook_configuration: Some(args.webhook_configuration),
                lifetimes: Lifetimes {
                    cert: Duration::from_secs(args.cert_validity_seconds),
                    renew_before: Duration::from_secs(args.renew_before_seconds),
                    ..Lifetimes::default()
                },
                check_interval: Duration::from_secs(args.check_interval_seconds),
            })
        }
    };
    let inject = InjectConfig {
        image: args.image,
        resources: Resources {
            cpu: Some(args.cpu),
            memory: Some(args.memory),
            cpu_limit: args.cpu_limit,
            memory_limit: Some(args.memory_limit),
        },
        ..InjectConfig::default()
    };
    let cfg = WebhookConfig::new(args.listen, inject, tls);
    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    serve(client, cfg, shutdown).await.context("serving the webhook")?;
    Ok(())
}
