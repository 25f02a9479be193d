//! Load on the webhook for the hardening tests: many policies in one namespace, admission reviews posted straight
//! to the webhook over TLS (to time them), and connections held open idle or sending their headers slowly.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kproxy_e2e::Env;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::support::kubectl_stdin;

/// Creates `count` policies `p0…` selecting `app=p<i>` in `namespace`, in batches of one request each.
pub fn apply_policies(env: &Env, namespace: &str, count: usize) -> Result<()> {
    let policy = |i: usize| {
        json!({
            "apiVersion": "kproxy.dev/v1alpha1", "kind": "KafkaProxyPolicy",
            "metadata": {"name": format!("p{i}"), "namespace": namespace},
            "spec": {"podSelector": {"matchLabels": {"app": format!("p{i}")}},
                     "clusters": [{"name": "east", "bootstrapServers": ["127.0.0.1:9093"]}]},
        })
    };
    for start in (0..count).step_by(250) {
        let items: Vec<Value> = (start..count.min(start + 250)).map(policy).collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
        let out = kubectl_stdin(env, &["create", "-f", "-", "-o", "name"], &list)?;
        if !out.status.success() {
            bail!("creating policies failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(())
}

/// How many policies of `namespace` are Ready.
pub fn ready_policies(env: &Env, namespace: &str) -> Result<usize> {
    let list: Value = serde_json::from_str(&env.kubectl(&["-n", namespace, "get", "kpp", "-o", "json"])?)?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    Ok(items
        .iter()
        .filter(|p| {
            let conditions = p["status"]["conditions"].as_array().cloned().unwrap_or_default();
            conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count())
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The CA the operator published into the webhook configuration (PEM).
pub fn published_ca(env: &Env, configuration: &str) -> Result<String> {
    let path = "jsonpath={.webhooks[0].clientConfig.caBundle}";
    let bundle = env.kubectl(&["get", "mutatingwebhookconfiguration", configuration, "-o", path])?;
    Ok(String::from_utf8(STANDARD.decode(bundle.trim())?)?)
}

fn connector(ca_pem: &str) -> Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let config = ClientConfig::builder_with_provider(Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn connect(port: u16, tls: &TlsConnector) -> Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    // As the API server's client does: without it, Nagle's algorithm holds a request's second write for the
    // peer's delayed ACK and every review "takes" 40 ms.
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("127.0.0.1")?;
    Ok(tls.connect(name, tcp).await?)
}

/// An admission review of a pod that opted in and is selected by policy `p<i>`.
fn review(namespace: &str, i: usize) -> Vec<u8> {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("e2e-{i}"), "name": format!("pod-{i}"), "namespace": namespace, "operation": "CREATE",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "userInfo": {"username": "e2e"}, "dryRun": true,
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("pod-{i}"), "namespace": namespace,
                             "labels": {"app": format!("p{}", i % 1000)}, "annotations": {"kproxy.dev/inject": "true"}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]}},
        },
    })
    .to_string()
    .into_bytes()
}

/// One POST on a kept-alive connection; returns the response body.
async fn post(stream: &mut TlsStream<TcpStream>, body: &[u8]) -> Result<Value> {
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await?;
    let mut buf = Vec::new();
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the webhook closed the connection mid-response");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).context("no content-length")?.trim().parse()?;
    while buf.len() < end + length {
        let mut chunk = vec![0u8; end + length - buf.len()];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the webhook closed the connection mid-body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(serde_json::from_slice(&buf[end..end + length])?)
}

/// Times `count` reviews posted one after another on one connection; each must be allowed with a patch.
pub async fn review_latencies(port: u16, ca_pem: &str, namespace: &str, count: usize) -> Result<Vec<Duration>> {
    let tls = connector(ca_pem)?;
    let mut stream = connect(port, &tls).await?;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let body = review(namespace, i);
        let started = Instant::now();
        let answer = post(&mut stream, &body).await?;
        out.push(started.elapsed());
        let response = &answer["response"];
        if response["allowed"] != true || response["patch"].is_null() {
            bail!("review {i} was not injected: {answer}");
        }
    }
    Ok(out)
}

/// p50, p99 and max of `samples`.
pub fn summary(samples: &[Duration]) -> String {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    format!("n={} p50={:.2?} p99={:.2?} max={:.2?}", sorted.len(), at(0.5), at(0.99), sorted[sorted.len() - 1])
}

/// Connections held against the webhook until [`Pressure::stop`]: each slot reconnects when the webhook closes it.
pub struct Pressure {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    idle_open: Arc<AtomicUsize>,
    slow_open: Arc<AtomicUsize>,
    idle_reconnects: Arc<AtomicUsize>,
    slow_reconnects: Arc<AtomicUsize>,
    /// Per slow slot: the webhook closed it at least once.
    slow_closed: Arc<Vec<AtomicBool>>,
}

/// What the held connections went through.
pub struct Stats {
    pub idle_reconnects: usize,
    pub slow_reconnects: usize,
}

impl Pressure {
    /// Opens `idle` TLS connections that send nothing and `slow` ones that send a request head one line a second,
    /// and waits (at most a minute) until all are open at once.
    pub async fn start(port: u16, ca_pem: &str, idle: usize, slow: usize) -> Result<Pressure> {
        let tls = connector(ca_pem)?;
        let (stop, stopped) = watch::channel(false);
        let mut pressure = Pressure {
            stop,
            tasks: JoinSet::new(),
            idle_open: Arc::default(),
            slow_open: Arc::default(),
            idle_reconnects: Arc::default(),
            slow_reconnects: Arc::default(),
            slow_closed: Arc::new((0..slow).map(|_| AtomicBool::new(false)).collect()),
        };
        // Connections are opened a few hundred at a time, as a client pool would, not all in one burst.
        let opening = Arc::new(tokio::sync::Semaphore::new(200));
        for slot in 0..idle + slow {
            let (tls, mut stopped, opening) = (tls.clone(), stopped.clone(), opening.clone());
            let is_slow = slot >= idle;
            let (open, reconnects) = match is_slow {
                true => (pressure.slow_open.clone(), pressure.slow_reconnects.clone()),
                false => (pressure.idle_open.clone(), pressure.idle_reconnects.clone()),
            };
            let closed = pressure.slow_closed.clone();
            pressure.tasks.spawn(async move {
                while !*stopped.borrow() {
                    let permit = opening.acquire().await;
                    let stream = connect(port, &tls).await;
                    drop(permit);
                    let Ok(mut stream) = stream else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    open.fetch_add(1, Ordering::SeqCst);
                    let by_server = hold(&mut stream, is_slow, &mut stopped).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                    if !by_server {
                        break;
                    }
                    reconnects.fetch_add(1, Ordering::SeqCst);
                    if is_slow {
                        closed[slot - idle].store(true, Ordering::SeqCst);
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while pressure.idle() < idle || pressure.slow() < slow {
            if Instant::now() > deadline {
                bail!("only {} idle and {} slow connections could be opened", pressure.idle(), pressure.slow());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(pressure)
    }

    pub fn idle(&self) -> usize {
        self.idle_open.load(Ordering::SeqCst)
    }

    pub fn slow(&self) -> usize {
        self.slow_open.load(Ordering::SeqCst)
    }

    /// How many slow slots the webhook has closed at least once.
    pub fn slow_slots_closed_by_server(&self) -> Option<usize> {
        Some(self.slow_closed.iter().filter(|c| c.load(Ordering::SeqCst)).count())
    }

    pub async fn stop(mut self) -> Stats {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        Stats {
            idle_reconnects: self.idle_reconnects.load(Ordering::SeqCst),
            slow_reconnects: self.slow_reconnects.load(Ordering::SeqCst),
        }
    }
}

/// Holds one connection until the webhook closes it (`true`) or the test stops (`false`). A slow one sends a
/// request line and then one header line a second, never finishing the head.
async fn hold(stream: &mut TlsStream<TcpStream>, slow: bool, stopped: &mut watch::Receiver<bool>) -> bool {
    if slow && stream.write_all(b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.is_err() {
        return true;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            // Data (an error response) or end of stream: either way the webhook gave up on this connection.
            _ = stream.read(&mut buf) => return true,
            _ = stopped.changed() => return false,
            _ = tick.tick(), if slow => {
                if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return true;
                }
            }
        }
    }
}
