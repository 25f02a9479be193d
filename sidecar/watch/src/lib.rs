//! Follows one ConfigMap through the Kubernetes API with the pod's own ServiceAccount token: get it, then watch it
//! from that resourceVersion, resuming from the last version seen after each disconnect (a 410 Gone starts over
//! with a get). Every version of one key is handed to a [`Sink`]; deciding whether it is valid and newer is the
//! caller's business. Nothing is queued: the sink is called inline, so a slow sink slows reading, never memory.
//!
//! Only `get` and `watch` on that one object are needed (a Role with `resourceNames`); a watch names the object by
//! `fieldSelector=metadata.name=<name>`, which is how the API server authorizes a watch against `resourceNames`.
#![forbid(unsafe_code)]

mod http;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Errors of one attempt; the loop logs them, reports their label and retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {0}: {1}")]
    File(PathBuf, std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("connecting to {0}: {1}")]
    Connect(String, String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("API server answered {0}: {1}")]
    Status(u16, String),
    #[error("nothing received for {0:?}")]
    Idle(Duration),
    #[error("a line longer than {0} bytes")]
    TooLarge(usize),
    #[error("unexpected answer: {0}")]
    Decode(String),
    #[error("resource version too old (410 Gone)")]
    Gone,
}

impl Error {
    /// The `reason` label of the error counter: a fixed set.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::File(..) => "file",
            Error::Tls(_) => "tls",
            Error::Connect(..) => "connect",
            Error::Http(_) => "http",
            Error::Status(401, _) => "unauthorized",
            Error::Status(403, _) => "forbidden",
            Error::Status(404, _) => "not_found",
            Error::Status(..) => "status",
            Error::Idle(_) => "idle",
            Error::TooLarge(_) => "too_large",
            Error::Decode(_) => "decode",
            Error::Gone => "gone",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which object to follow and how to reach the API server.
#[derive(Clone, Debug)]
pub struct Target {
    /// API server host (a name or an IP address, as its certificate names it).
    pub host: String,
    pub port: u16,
    pub namespace: String,
    /// The ConfigMap's name.
    pub name: String,
    /// The key whose value is handed to the sink.
    pub key: String,
    /// A projected ServiceAccount token, read again for every request.
    pub token_file: PathBuf,
    /// The API server's CA bundle.
    pub ca_file: PathBuf,
}

impl Target {
    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Receives what the watch learns.
pub trait Sink: Send + Sync {
    /// A version of the object: the key's value (`None` when the key is missing), with its resourceVersion.
    fn object(&self, value: Option<String>, resource_version: &str);
    /// Whether a watch is established now.
    fn connected(&self, up: bool);
    /// An attempt failed (it is retried).
    fn failed(&self, error: &Error);
}

/// How the loop paces itself.
#[derive(Clone, Debug)]
pub struct Timing {
    /// First wait after a failure; doubled per failure up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// The server ends each watch after this long (plus a jitter of up to a quarter), spreading reconnects.
    pub watch_timeout: Duration,
    /// A watch silent this much longer than `watch_timeout` counts as dead.
    pub idle_margin: Duration,
    /// Longest line accepted (one watch event).
    pub max_line: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            watch_timeout: Duration::from_secs(300),
            idle_margin: Duration::from_secs(30),
            max_line: 4 << 20,
        }
    }
}

#[derive(Deserialize)]
struct Object {
    metadata: Metadata,
    #[serde(default)]
    data: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    resource_version: String,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

/// Follows the object until `shutdown`.
pub async fn run(target: Target, timing: Timing, sink: &dyn Sink, shutdown: CancellationToken) {
    let mut version: Option<String> = None;
    let mut backoff = timing.min_backoff;
    loop {
        let started = std::time::Instant::now();
        let mut up = false;
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session(&target, &timing, sink, &mut version, &mut up) => r,
        };
        if up {
            sink.connected(false);
        }
        match result {
            Ok(()) => backoff = timing.min_backoff,
            Err(e) => {
                if matches!(e, Error::Gone) {
                    version = None;
                }
                tracing::warn!(error = %e, namespace = %target.namespace, configmap = %target.name, retry_in = ?backoff, "config watch interrupted");
                sink.failed(&e);
                // A watch that ran a while before failing was healthy: start the backoff over.
                if started.elapsed() > timing.max_backoff {
                    backoff = timing.min_backoff;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(timing.max_backoff);
            }
        }
    }
}

/// One get (when no version is known) and one watch until the server ends it.
async fn session(
    target: &Target,
    timing: &Timing,
    sink: &dyn Sink,
    version: &mut Option<String>,
    up: &mut bool,
) -> Result<()> {
    let base = format!("/api/v1/namespaces/{}/configmaps", target.namespace);
    if version.is_none() {
        let idle = timing.idle_margin;
        let body = http::get(target, &format!("{base}/{}", target.name), timing.max_line, idle).await?.all().await?;
        let object: Object = serde_json::from_slice(&body).map_err(|e| Error::Decode(e.to_string()))?;
        sink.object(object.data.get(&target.key).cloned(), &object.metadata.resource_version);
        *version = Some(object.metadata.resource_version);
    }
    let timeout = timing.watch_timeout + jitter(timing.watch_timeout / 4);
    let path = format!(
        "{base}?watch=true&allowWatchBookmarks=true&fieldSelector=metadata.name%3D{}&resourceVersion={}&timeoutSeconds={}",
        target.name,
        version.as_deref().unwrap_or_default(),
        timeout.as_secs()
    );
    let mut body = http::get(target, &path, timing.max_line, timeout + timing.idle_margin).await?;
    sink.connected(true);
    *up = true;
    while let Some(line) = body.line().await? {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let event: Event = serde_json::from_slice(&line).map_err(|e| Error::Decode(e.to_string()))?;
        match event.kind.as_str() {
            "ERROR" => {
                let code = event.object["code"].as_u64().unwrap_or_default();
                let message = event.object["message"].as_str().unwrap_or_default().to_string();
                return Err(if code == 410 { Error::Gone } else { Error::Status(code as u16, message) });
            }
            kind => {
                let object: Object = serde_json::from_value(event.object).map_err(|e| Error::Decode(e.to_string()))?;
                match kind {
                    "ADDED" | "MODIFIED" => {
                        sink.object(object.data.get(&target.key).cloned(), &object.metadata.resource_version)
                    }
                    // The policy was deleted: the last config keeps serving (as with the mounted volume).
                    "DELETED" => {
                        tracing::info!(configmap = %target.name, "config ConfigMap deleted; the last config keeps serving")
                    }
                    _ => {}
                }
                *version = Some(object.metadata.resource_version);
            }
        }
    }
    Ok(())
}

/// Up to `max`, from the clock's low bits: enough to spread reconnects of many pods.
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    Duration::from_secs(u64::from(nanos) % max.as_secs().max(1))
}
