//! Process settings that come from flags and env (not from the hot-reloaded policy): addresses and limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the proxy needs besides the policy config. Fixed for the life of the process.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The mounted ConfigMap directory or a single config file.
    pub config: PathBuf,
    /// Bootstrap address the application's client dials.
    pub listen: SocketAddr,
    /// Address of /healthz and /readyz (kubelet's probes), and of /metrics unless `metrics` is set.
    pub admin: SocketAddr,
    /// Address of /metrics when it must not be on the admin address (loopback in a pod without monitoring).
    pub metrics: Option<SocketAddr>,
    /// Host written into rewritten broker addresses; the per-broker listeners bind to it too.
    pub advertised_host: String,
    /// 0: each broker listener gets an ephemeral port; otherwise base + virtual node id.
    pub broker_port_base: u16,
    /// Root of mounted Secrets; relative credential paths in the config resolve against it.
    pub secrets_dir: PathBuf,
    pub limits: Limits,
}

/// Bounds that keep one client from hurting the others.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request frame accepted (Kafka's socket.request.max.bytes default is 100 MiB).
    pub max_frame_bytes: usize,
    /// Client connections served at once across all listeners; further ones wait in the accept queue.
    pub max_connections: usize,
    /// Requests one client connection may have awaiting responses before its reads pause.
    pub max_in_flight: usize,
    /// A connection with no new request for this long is closed (as the broker's connections.max.idle.ms).
    pub idle_timeout: Duration,
    /// A frame whose first byte arrived must be complete within this time; a client that reads none of its
    /// answers for this long is closed.
    pub frame_timeout: Duration,
    /// The longest any upstream answer may take. Each request's own deadline is what its fields let the broker
    /// wait (Produce `timeout_ms`, Fetch `max_wait_ms`, ...) plus 30 s, capped by this; past it the client
    /// connection closes.
    pub request_timeout: Duration,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Upstream connections per broker for ordinary requests.
    pub upstream_connections: usize,
    /// Upstream connections per broker for long-poll requests (Fetch with wait, JoinGroup, SyncGroup...).
    pub upstream_long_poll_connections: usize,
    /// Idle buffers kept in the pool.
    pub buffer_pool_bytes: usize,
    /// The memory budget: bytes of frames in flight at once across every connection (see [`crate::budget`]).
    pub memory_budget_bytes: usize,
    /// The share of the budget one client connection may hold (one frame larger than it still passes alone).
    pub connection_memory_bytes: usize,
    /// How long a cluster removed by a reload keeps serving its broker listeners: clients refresh metadata at
    /// least every 5 minutes (metadata.max.age.ms), after which they no longer dial them.
    pub removed_cluster_grace: Duration,
    /// Whether upstream connection series are labelled with the brokers' real addresses (otherwise with an index
    /// per cluster, so `/metrics` does not tell where the brokers are). Not a bound: it travels with the limits
    /// because every pool is handed them.
    pub metrics_broker_addresses: bool,
}

impl Default for Limits {
    fn default() -> Self {
        let budget = crate::budget::default_limit();
        Limits {
            max_frame_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            max_in_flight: 64,
            idle_timeout: Duration::from_secs(600),
            frame_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(10),
            upstream_connections: 4,
            upstream_long_poll_connections: 16,
            buffer_pool_bytes: default_pool_bytes(budget),
            memory_budget_bytes: budget,
            connection_memory_bytes: default_connection_share(budget),
            removed_cluster_grace: Duration::from_secs(330),
            metrics_broker_addresses: false,
        }
    }
}

/// Idle buffers kept: a quarter of the budget, at most 64 MiB (idle buffers are memory the budget does not see).
pub fn default_pool_bytes(budget: usize) -> usize {
    (budget / 4).min(64 << 20)
}

/// One connection's share: an eighth of the budget, at least 1 MiB.
pub fn default_connection_share(budget: usize) -> usize {
    (budget / 8).max(1 << 20)
}

impl Settings {
    /// Settings for tests and embedding: ephemeral ports on loopback.
    pub fn local(config: PathBuf) -> Self {
        Settings {
            config,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: None,
            advertised_host: "127.0.0.1".to_string(),
            broker_port_base: 0,
            secrets_dir: PathBuf::from(kproxy_api::config::SECRETS_MOUNT_DIR),
            limits: Limits::default(),
        }
    }
}

/// Environment variables renamed so every kproxy binary says `*_ADDR` and `*_SECONDS`: (old name, new name, the
/// flag both set). The old names are still read.
pub const RENAMED_ENV: &[(&str, &str, &str)] = &[
    ("KPROXY_LISTEN", "KPROXY_LISTEN_ADDR", "--listen-addr"),
    ("KPROXY_ADMIN", "KPROXY_ADMIN_ADDR", "--admin-addr"),
    ("KPROXY_METRICS", "KPROXY_METRICS_ADDR", "--metrics-addr"),
    ("KPROXY_IDLE_TIMEOUT_SECS", "KPROXY_IDLE_TIMEOUT_SECONDS", "--idle-timeout-seconds"),
    ("KPROXY_FRAME_TIMEOUT_SECS", "KPROXY_FRAME_TIMEOUT_SECONDS", "--frame-timeout-seconds"),
    ("KPROXY_REQUEST_TIMEOUT_SECS", "KPROXY_REQUEST_TIMEOUT_SECONDS", "--request-timeout-seconds"),
    ("KPROXY_SHUTDOWN_GRACE_SECS", "KPROXY_SHUTDOWN_GRACE_SECONDS", "--shutdown-grace-seconds"),
];

/// Flags renamed the same way: (old, new). The old ones stay as hidden aliases.
pub const RENAMED_FLAGS: &[(&str, &str)] = &[
    ("--listen", "--listen-addr"),
    ("--admin", "--admin-addr"),
    ("--metrics", "--metrics-addr"),
    ("--idle-timeout-secs", "--idle-timeout-seconds"),
    ("--frame-timeout-secs", "--frame-timeout-seconds"),
    ("--request-timeout-secs", "--request-timeout-seconds"),
    ("--shutdown-grace-secs", "--shutdown-grace-seconds"),
];

/// The command line with each renamed variable that is set under its old name only turned into its flag, unless
/// the flag is given (under either name): flag, then new variable, then old variable.
pub fn with_renamed_env(
    args: Vec<std::ffi::OsString>,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let given = |flag: &str| {
        let old = RENAMED_FLAGS.iter().find(|(_, new)| *new == flag).map(|(old, _)| *old);
        args.iter().filter_map(|a| a.to_str()).any(|a| {
            let name = a.split('=').next().unwrap_or_default();
            name == flag || Some(name) == old
        })
    };
    let mut out = args.clone();
    for (old, new, flag) in RENAMED_ENV {
        if var(new).is_none()
            && !given(flag)
            && let Some(value) = var(old)
        {
            let mut arg = std::ffi::OsString::from(format!("{flag}="));
            arg.push(value);
            out.push(arg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
        let args = args.iter().map(OsString::from).collect();
        let var = |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| OsString::from(v));
        with_renamed_env(args, var).into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn old_variable_names_still_set_their_flag_unless_the_flag_or_new_name_is_given() {
        let env = [("KPROXY_ADMIN", "0.0.0.0:9102"), ("KPROXY_IDLE_TIMEOUT_SECS", "60")];
        assert_eq!(
            run(&["kproxy-sidecar"], &env),
            ["kproxy-sidecar", "--admin-addr=0.0.0.0:9102", "--idle-timeout-seconds=60"]
        );
        assert_eq!(run(&["s", "--admin=1.2.3.4:1"], &env), ["s", "--admin=1.2.3.4:1", "--idle-timeout-seconds=60"]);
        assert_eq!(run(&["s", "--idle-timeout-seconds", "5"], &env[1..]), ["s", "--idle-timeout-seconds", "5"]);
        let both = [("KPROXY_ADMIN", "0.0.0.0:1"), ("KPROXY_ADMIN_ADDR", "0.0.0.0:2")];
        assert_eq!(run(&["s"], &both), ["s"], "the new name wins (clap reads it)");
    }
}
