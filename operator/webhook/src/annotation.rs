//! The pod annotations users set to ask for, configure and recognise an injected kproxy sidecar.

/// `"true"` asks for the sidecar; `"false"` or absent leaves the pod alone.
pub const INJECT: &str = "kproxy.dev/inject";
/// Names the KafkaProxyPolicy to use when podSelectors alone do not pick exactly one.
pub const POLICY: &str = "kproxy.dev/policy";
/// Set by the webhook to the policy it injected, so a pod is never injected twice.
pub const INJECTED: &str = "kproxy.dev/injected";
/// Set by the webhook to the comma-separated Secrets the injected sidecar mounts (fixed for the pod's life).
pub const SECRETS: &str = "kproxy.dev/secrets";
/// Label `"true"` on every injected pod, for selectors (PodMonitor, the operator's pod watch).
pub const INJECTED_LABEL: &str = "kproxy.dev/injected";
/// Per-pod overrides of the sidecar's resource requests and limits.
pub const CPU: &str = "kproxy.dev/cpu";
pub const MEMORY: &str = "kproxy.dev/memory";
pub const CPU_LIMIT: &str = "kproxy.dev/cpu-limit";
pub const MEMORY_LIMIT: &str = "kproxy.dev/memory-limit";
/// The sidecar's log filter (a tracing directive such as `debug` or `kproxy=debug,info`), passed as `RUST_LOG`.
pub const LOG_LEVEL: &str = "kproxy.dev/log-level";
/// The sidecar's log format: `text` (default) or `json`.
pub const LOG_FORMAT: &str = "kproxy.dev/log-format";
/// `"false"` keeps this pod's sidecar on its mounted volume only; `"true"` has it also watch its ConfigMap through
/// the API server. Absent: the operator's default (`--sidecar-config-watch`).
pub const CONFIG_WATCH: &str = "kproxy.dev/config-watch";
