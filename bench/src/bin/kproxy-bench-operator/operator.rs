//! The operator process under test: started as the chart runs it (controller and webhook in one process, limited to
//! one namespace, with generated webhook certificates), its memory read from /proc and its reconcile counts from
//! its own /metrics. Killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The Secret the webhook shares its generated CA and certificate through (the flag's default).
pub const TLS_SECRET: &str = "kproxy-webhook-tls";

pub struct Operator {
    child: Child,
    /// When the process was spawned: cold-start times count from here.
    pub started: Instant,
    pub webhook_port: u16,
    admin_port: u16,
}

/// CPU seconds process `pid` has used (user + system), from /proc.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may contain spaces, closed by the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').context("malformed stat")?.1.split_whitespace().collect();
    let ticks: u64 =
        fields.get(11).context("no utime")?.parse::<u64>()? + fields.get(12).context("no stime")?.parse::<u64>()?;
    // Linux reports them in clock ticks of 1/100 s (USER_HZ).
    Ok(ticks as f64 / 100.0)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Operator {
    /// Starts `binary` for `namespace`. `term` names the run: its log file and its leader Lease, so a second
    /// operator does not wait for the first one's Lease to expire.
    pub fn start(binary: &Path, namespace: &str, log_dir: &Path, term: &str) -> Result<Operator> {
        let (webhook_port, admin_port) = (free_port()?, free_port()?);
        let log = log_dir.join(format!("{namespace}-operator-{term}.log"));
        let log = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(binary)
            .args(["--namespace", namespace, "--lease-namespace", namespace])
            .args(["--lease-name", &format!("kproxy-operator-{term}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .args(["--webhook-addr", &format!("127.0.0.1:{webhook_port}"), "--webhook-namespace", namespace])
            .args(["--webhook-san", "127.0.0.1", "--webhook-configuration", &format!("{namespace}-kproxy")])
            .args(["--sidecar-image", "kproxy-sidecar:bench"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Operator { child, started: Instant::now(), webhook_port, admin_port })
    }

    /// Resident memory now and at its peak, in KiB (VmRSS and VmHWM).
    pub fn memory(&self) -> Result<Value> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> Option<u64> {
            status.lines().find_map(|l| l.strip_prefix(name))?.trim().trim_end_matches("kB").trim().parse().ok()
        };
        Ok(json!({"rss_kib": field("VmRSS:"), "peak_kib": field("VmHWM:")}))
    }

    /// CPU seconds the process has used (user + system).
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(self.child.id())
    }

    /// `kproxy_operator_reconciles_total` by result, from the operator's /metrics.
    pub async fn reconciles(&self) -> Result<Value> {
        self.counters("kproxy_operator_reconciles_total{result=\"").await
    }

    /// `kproxy_operator_api_writes_total` by object (ConfigMap, status, Event, access Role), from its /metrics.
    pub async fn writes(&self) -> Result<Value> {
        self.counters("kproxy_operator_api_writes_total{object=\"").await
    }

    /// The values of one counter by its single label, given as `<name>{<label>="`.
    async fn counters(&self, prefix: &str) -> Result<Value> {
        let mut out = serde_json::Map::new();
        for line in self.metrics().await?.lines() {
            let Some(rest) = line.strip_prefix(prefix) else { continue };
            if let Some((result, value)) = rest.split_once("\"} ") {
                out.insert(result.to_string(), json!(value.trim().parse::<f64>().unwrap_or(f64::NAN)));
            }
        }
        Ok(Value::Object(out))
    }

    /// Waits (at most a minute) until no reconcile has finished for three seconds.
    pub async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        while Instant::now() < deadline {
            let now = self.reconciles().await.ok();
            if now.is_some() && now == last {
                return;
            }
            last = now;
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }

    async fn metrics(&self) -> Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.admin_port)).await?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await?;
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text)).await??;
        Ok(text)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
