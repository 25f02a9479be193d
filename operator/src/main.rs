//! kproxy-operator binary: parses flags, starts tracing, runs the controller (while leading), the admission webhook
//! (on every replica) and the admin endpoints until SIGTERM or Ctrl-C, then drains and releases the leader Lease.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kproxy_operator::admin::{self, Health};
use kproxy_operator::controller;
use kproxy_operator::leader::{Elector, LeaseConfig};
use kproxy_operator::metrics::Metrics;
use kproxy_webhook::cli::WebhookArgs;
use kproxy_webhook::policies::PolicyCache;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Parser, Debug)]
#[command(name = "kproxy-operator", version, about = "Reconciles KafkaProxyPolicy objects into sidecar ConfigMaps")]
struct Args {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "KPROXY_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    admin_addr: SocketAddr,
    /// Watch policies (and admit pods) in these namespaces only, repeated or comma-separated (default: every
    /// namespace). The chart's namespaced RBAC grants exactly these.
    #[arg(long, env = "KPROXY_WATCH_NAMESPACE", value_delimiter = ',')]
    namespace: Vec<String>,
    /// Check that the Secrets a policy names exist and hold its keys. Needs read access to Secrets in the watched
    /// namespaces, which RBAC cannot limit to metadata; off by default, when a missing Secret shows on the pod.
    #[arg(long, env = "KPROXY_CHECK_SECRETS")]
    check_secrets: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "KPROXY_LEASE_NAME", default_value = "kproxy-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: the client's namespace, i.e. the pod's own in a cluster).
    #[arg(long, env = "KPROXY_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: the pod name or host name, plus the process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a silent leader keeps the Lease: the longest takeover after a crash.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    lease_duration_seconds: u64,
    /// Seconds between renewals (and a standby's retries); below the lease duration.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    renew_interval_seconds: u64,
    /// Injected sidecars also watch their policy's ConfigMap through the API server (edits arrive in about a
    /// second instead of kubelet's minute); the operator keeps the per-namespace Role that lets them.
    #[arg(long, env = "KPROXY_SIDECAR_CONFIG_WATCH", default_value_t = true, action = clap::ArgAction::Set)]
    sidecar_config_watch: bool,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "KPROXY_LOG_JSON")]
    log_json: bool,
    #[command(flatten)]
    webhook: WebhookArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_json);
    // Several TLS backends can end up linked in; pick one explicitly (a second install is a harmless no-op).
    let _ = rustls::crypto::ring::default_provider().install_default();
    if args.renew_interval_seconds >= args.lease_duration_seconds {
        anyhow::bail!("--renew-interval-seconds must be below --lease-duration-seconds");
    }
    let client =
        kube::Client::try_default().await.context("no Kubernetes client configuration (KUBECONFIG or in-cluster)")?;
    let metrics = Arc::new(Metrics::new()?);
    let health = Health::new(metrics.clone());
    let shutdown = CancellationToken::new();

    let admin_listener = admin::bind(args.admin_addr).await?;
    info!(addr = %args.admin_addr, "admin endpoints listening");
    let admin_task = tokio::spawn(admin::serve(admin_listener, health.clone(), shutdown.clone().cancelled_owned()));

    // Sidecar injection webhook: every replica serves it, leader or not, so the webhook Service can use any pod.
    let webhook_metrics = kproxy_webhook::metrics::Metrics::new(&metrics.registry)?;
    let namespaces: Vec<String> = args.namespace.iter().filter(|n| !n.is_empty()).cloned().collect();
    // One policy cache for the whole process: the webhook reads it, and the controller follows it while leading.
    let policies = Arc::new(PolicyCache::start(client.clone(), &namespaces));
    let webhook = match args.webhook.config(client.default_namespace(), Some(webhook_metrics))? {
        Some(mut cfg) => {
            cfg.namespaces = namespaces.clone();
            cfg.policies = Some(policies.clone());
            cfg.inject.config_watch = args.sidecar_config_watch;
            info!(addr = %cfg.listen, "admission webhook listening");
            Some(tokio::spawn(kproxy_webhook::serve(client.clone(), cfg, shutdown.clone().cancelled_owned())))
        }
        None => None,
    };

    let lease = LeaseConfig {
        namespace: args.lease_namespace.unwrap_or_else(|| client.default_namespace().to_string()),
        name: args.lease_name,
        identity: args.identity.unwrap_or_else(default_identity),
        lease_duration: Duration::from_secs(args.lease_duration_seconds),
        renew_interval: Duration::from_secs(args.renew_interval_seconds),
    };
    info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "contending for leadership");
    let identity = lease.identity.clone();
    let (leading_tx, leading_rx) = watch::channel(false);
    let elector = tokio::spawn(Elector::new(client.clone(), lease).run(leading_tx, health.clone(), shutdown.clone()));
    let settings = controller::Settings {
        policies,
        check_secrets: args.check_secrets,
        identity,
        sidecar_access: args.sidecar_config_watch,
    };
    let term = Term { client, settings, metrics };
    let leading = tokio::spawn(lead_while_elected(term, leading_rx, shutdown.clone()));

    // A webhook that cannot serve ends the process, so the pod restarts rather than looking healthy.
    let mut webhook = webhook;
    let webhook_result = tokio::select! {
        _ = wait_for_signal() => None,
        result = async { match webhook.as_mut() { Some(task) => task.await, None => std::future::pending().await } } => {
            webhook = None;
            Some(result)
        }
    };
    info!("shutting down");
    shutdown.cancel();
    // The controller drains before the Lease is released, so the next leader never overlaps with it.
    leading.await?;
    elector.await?;
    admin_task.await??;
    let webhook_result = match (webhook_result, webhook) {
        (Some(result), _) => Some(result),
        (None, Some(task)) => Some(task.await),
        (None, None) => None,
    };
    if let Some(result) = webhook_result {
        result?.context("serving the admission webhook")?;
    }
    info!("stopped");
    Ok(())
}

/// What each term of leadership runs the controller with.
struct Term {
    client: kube::Client,
    settings: controller::Settings,
    metrics: Arc<Metrics>,
}

/// Runs the controller during each term of leadership; stops it when leadership is lost or on shutdown.
async fn lead_while_elected(term_of: Term, mut leading: watch::Receiver<bool>, shutdown: CancellationToken) {
    let Term { client, settings, metrics } = term_of;
    loop {
        // Shutdown first: leadership is still held (the Lease is released after this returns), so an unbiased
        // select could start a new term on a shutdown token that is already cancelled.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            changed = leading.wait_for(|l| *l) => if changed.is_err() { return },
        }
        info!("became leader; starting the controller");
        metrics.leader.set(1);
        metrics.leader_changes.inc();
        let term = shutdown.child_token();
        let stop = term.clone();
        let mut lost = leading.clone();
        let watch_term = tokio::spawn(async move {
            tokio::select! {
                _ = lost.wait_for(|l| !*l) => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        });
        controller::run(client.clone(), settings.clone(), metrics.clone(), term.clone()).await;
        term.cancel();
        let _ = watch_term.await;
        metrics.leader.set(0);
        metrics.leader_changes.inc();
        info!("stopped leading; the controller is stopped");
        if shutdown.is_cancelled() {
            return;
        }
    }
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "kproxy-operator".into());
    format!("{host}-{}", std::process::id())
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(std::io::stdout().is_terminal());
    if json { builder.json().init() } else { builder.init() }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
