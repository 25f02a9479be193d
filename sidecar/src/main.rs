//! kproxy-sidecar binary: parses flags, starts tracing, runs the proxy until a signal, drains.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kproxy_api::config::{CONFIG_MOUNT_DIR, SECRETS_MOUNT_DIR, SidecarConfig};
use kproxy_sidecar::server::Server;
use kproxy_sidecar::settings::{Limits, Settings};
use kproxy_sidecar::state::Snapshot;

/// Exit code for an unusable config (EX_DATAERR-like, as linkerd uses for bad config).
const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Parser, Debug)]
#[command(name = "kproxy-sidecar", version, about = "Kafka protocol sidecar proxy")]
struct Args {
    /// Config file, or the directory where the ConfigMap is mounted (reads config.yaml inside it).
    #[arg(long, env = "KPROXY_CONFIG", default_value = CONFIG_MOUNT_DIR)]
    config: PathBuf,
    /// Bootstrap address for the application's Kafka client.
    #[arg(long = "listen-addr", alias = "listen", env = "KPROXY_LISTEN_ADDR", default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// Address of /healthz and /readyz (kubelet's probes), and of /metrics unless --metrics-addr is given.
    #[arg(long = "admin-addr", alias = "admin", env = "KPROXY_ADMIN_ADDR", default_value = "127.0.0.1:9102")]
    admin: SocketAddr,
    /// Address of /metrics alone (e.g. 127.0.0.1:9103): the admin address then answers only the probes.
    #[arg(long = "metrics-addr", alias = "metrics", env = "KPROXY_METRICS_ADDR")]
    metrics: Option<SocketAddr>,
    /// Label upstream connection series with the brokers' addresses (default: an index per cluster, so the
    /// metrics do not show where the brokers are).
    #[arg(long, env = "KPROXY_METRICS_BROKER_ADDRESSES")]
    metrics_broker_addresses: bool,
    /// Host advertised to clients for the per-broker listeners (and bound by them).
    #[arg(long, env = "KPROXY_ADVERTISED_HOST", default_value = "127.0.0.1")]
    advertised_host: String,
    /// 0: ephemeral ports for broker listeners; otherwise base + virtual node id.
    #[arg(long, env = "KPROXY_BROKER_PORT_BASE", default_value_t = 0)]
    broker_port_base: u16,
    /// Where mounted Secrets live; relative credential paths resolve against it.
    #[arg(long, env = "KPROXY_SECRETS_DIR", default_value = SECRETS_MOUNT_DIR)]
    secrets_dir: PathBuf,
    /// Largest request frame accepted, in bytes.
    #[arg(long, env = "KPROXY_MAX_FRAME_BYTES", default_value_t = 100 * 1024 * 1024)]
    max_frame_bytes: usize,
    /// Client connections served at once.
    #[arg(long, env = "KPROXY_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Requests per client connection awaiting a response before reading pauses.
    #[arg(long, env = "KPROXY_MAX_IN_FLIGHT", default_value_t = 64)]
    max_in_flight: usize,
    /// Seconds without a request before a client connection is closed.
    #[arg(
        long = "idle-timeout-seconds",
        alias = "idle-timeout-secs",
        env = "KPROXY_IDLE_TIMEOUT_SECONDS",
        default_value_t = 600
    )]
    idle_timeout_secs: u64,
    /// Seconds a started frame has to arrive completely.
    #[arg(
        long = "frame-timeout-seconds",
        alias = "frame-timeout-secs",
        env = "KPROXY_FRAME_TIMEOUT_SECONDS",
        default_value_t = 30
    )]
    frame_timeout_secs: u64,
    /// Most seconds any upstream answer may take; each request's own deadline (its fields' wait + 30 s) is capped
    /// by it.
    #[arg(
        long = "request-timeout-seconds",
        alias = "request-timeout-secs",
        env = "KPROXY_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 600
    )]
    request_timeout_secs: u64,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(
        long = "shutdown-grace-seconds",
        alias = "shutdown-grace-secs",
        env = "KPROXY_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 10
    )]
    shutdown_grace_secs: u64,
    /// Upstream connections per broker for ordinary requests.
    #[arg(long, env = "KPROXY_UPSTREAM_CONNECTIONS", default_value_t = 4)]
    upstream_connections: usize,
    /// Upstream connections per broker for long-poll requests.
    #[arg(long, env = "KPROXY_UPSTREAM_LONG_POLL_CONNECTIONS", default_value_t = 16)]
    upstream_long_poll_connections: usize,
    /// Bytes of frames held in flight at once across all connections; 0: half the container's memory limit
    /// (cgroup memory.max), or 512 MiB without one. Clients wait (are not read) while it is used up.
    #[arg(long, env = "KPROXY_MEMORY_BUDGET_BYTES", default_value_t = 0)]
    memory_budget_bytes: usize,
    /// The share of the memory budget one client connection may hold; 0: an eighth of the budget.
    #[arg(long, env = "KPROXY_CONNECTION_MEMORY_BYTES", default_value_t = 0)]
    connection_memory_bytes: usize,
    /// The policy's ConfigMap, followed through the API server next to the mounted volume (the webhook sets it);
    /// empty: the volume only.
    #[arg(long, env = "KPROXY_CONFIG_MAP", default_value = "")]
    config_map: String,
    /// The pod's namespace, where that ConfigMap lives.
    #[arg(long, env = "KPROXY_NAMESPACE", default_value = "")]
    namespace: String,
    /// `host:port` of the API server; empty: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT.
    #[arg(long, env = "KPROXY_API_SERVER", default_value = "")]
    api_server: String,
    /// Directory of the projected ServiceAccount token (`token`) and the API server's CA bundle (`ca.crt`).
    #[arg(long, env = "KPROXY_API_TOKEN_DIR", default_value = kproxy_sidecar::reload::api::TOKEN_DIR)]
    api_token_dir: PathBuf,
    /// Threads that run the proxy; 0: the CPUs the process may use (its affinity and the container's CPU limit).
    /// With one, the proxy runs on a single thread: no cross-thread wake-ups, and tasks woken together run in
    /// turn before any of them writes, so their frames leave in one write.
    #[arg(long, env = "KPROXY_WORKER_THREADS", default_value_t = 0)]
    worker_threads: usize,
    /// Log as JSON lines (log level from RUST_LOG, default info).
    #[arg(long, env = "KPROXY_LOG_JSON")]
    log_json: bool,
}

fn main() -> ExitCode {
    bound_heap();
    // Variables renamed for consistency keep working under their old names (RENAMED_ENV).
    let args = Args::parse_from(kproxy_sidecar::settings::with_renamed_env(std::env::args_os().collect(), |name| {
        std::env::var_os(name)
    }));
    init_tracing(args.log_json);
    let (config, text) = match SidecarConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(path = %args.config.display(), error = %e, "cannot load config");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let api = match args.config_map.as_str() {
        "" => None,
        name => {
            let options = kproxy_sidecar::reload::api::Options {
                config_map: name.to_string(),
                namespace: args.namespace.clone(),
                server: args.api_server.clone(),
                token_file: args.api_token_dir.join("token"),
                ca_file: args.api_token_dir.join("ca.crt"),
            };
            // The watch only speeds edits up: without it the mounted volume still carries them, so a sidecar that
            // cannot set it up serves rather than failing the pod.
            options
                .target()
                .inspect_err(|e| tracing::error!(error = %e, "config watch through the API is off; edits arrive through the volume"))
                .ok()
        }
    };
    let defaults = Limits::default();
    let budget = if args.memory_budget_bytes > 0 { args.memory_budget_bytes } else { defaults.memory_budget_bytes };
    let share = match args.connection_memory_bytes {
        0 => kproxy_sidecar::settings::default_connection_share(budget),
        n => n,
    };
    let settings = Settings {
        config: args.config.clone(),
        listen: args.listen,
        admin: args.admin,
        metrics: args.metrics,
        advertised_host: args.advertised_host,
        broker_port_base: args.broker_port_base,
        secrets_dir: args.secrets_dir,
        limits: Limits {
            max_frame_bytes: args.max_frame_bytes,
            max_connections: args.max_connections.max(1),
            max_in_flight: args.max_in_flight.max(1),
            idle_timeout: Duration::from_secs(args.idle_timeout_secs),
            frame_timeout: Duration::from_secs(args.frame_timeout_secs),
            request_timeout: Duration::from_secs(args.request_timeout_secs),
            shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
            upstream_connections: args.upstream_connections.max(1),
            upstream_long_poll_connections: args.upstream_long_poll_connections.max(1),
            memory_budget_bytes: budget,
            connection_memory_bytes: share,
            buffer_pool_bytes: kproxy_sidecar::settings::default_pool_bytes(budget),
            metrics_broker_addresses: args.metrics_broker_addresses,
            ..defaults
        },
    };
    let runtime = match runtime(args.worker_threads) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings, Snapshot::new(config, &text, 1), &text, api)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "sidecar failed");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime: one thread when one CPU is available (or asked for), else a thread per CPU.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    match threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    }
}

async fn run(
    settings: Settings,
    snapshot: Snapshot,
    text: &str,
    api: Option<kproxy_watch::Target>,
) -> anyhow::Result<()> {
    let limits = &settings.limits;
    if limits.max_frame_bytes > limits.memory_budget_bytes {
        tracing::warn!(
            max_frame_bytes = limits.max_frame_bytes,
            memory_budget_bytes = limits.memory_budget_bytes,
            "a frame larger than the memory budget waits until nothing else is in flight"
        );
    }
    tracing::info!(
        memory_budget_bytes = limits.memory_budget_bytes,
        connection_memory_bytes = limits.connection_memory_bytes,
        cgroup_memory_limit = ?kproxy_sidecar::budget::cgroup_memory_limit(),
        "memory budget"
    );
    tracing::info!(
        path = %settings.config.display(),
        generation = snapshot.generation,
        hash = %snapshot.hash,
        policy = %snapshot.config.policy,
        "config loaded"
    );
    let server = Server::new(settings, snapshot)?;
    // Fields a newer operator rendered that this sidecar does not know: counted and logged, not dropped silently.
    server.metrics.unknown_fields.report(text);
    server.start().await?;
    let reloader = server.watch_config()?;
    if let Some(target) = api {
        kproxy_sidecar::reload::api::spawn(reloader, target, server.shutdown.clone());
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: draining"),
    }
    server.shutdown().await;
    Ok(())
}

/// glibc's allocator raises its mmap threshold (up to 32 MiB) each time a large buffer is freed, and buffers
/// under the threshold stay in its heaps once freed: after a burst of large frames (eight 50 MiB fetches under a
/// 256 MiB budget) the process kept up to 420 MiB resident. A fixed 1 MiB threshold hands every large frame
/// buffer back to the kernel when it is freed; small frames, which the hot path reuses, stay in the heap.
/// `MALLOC_MMAP_THRESHOLD_` in the environment, which glibc has already applied, wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_heap() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return;
    }
    // SAFETY: mallopt only changes the allocator's tuning; it is called before any other thread exists.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    if ok != 1 {
        eprintln!("kproxy-sidecar: cannot set the allocator's mmap threshold; large buffers may stay resident");
    }
}

/// Other allocators return large buffers on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_heap() {}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
