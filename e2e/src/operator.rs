//! Runs the real `kproxy-operator` binary against the test apiserver, reads its admin endpoints, and reads the
//! objects it manages through kubectl.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{Env, binary, free_port, wait_for, workspace_root};

/// How one operator process is started.
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    /// Namespace whose policies it watches (tests keep to their own).
    pub namespace: String,
    /// Lease name; the Lease lives in `namespace`. Replicas meant to compete share it.
    pub lease_name: String,
    pub identity: String,
    pub lease_duration_seconds: u64,
    pub renew_interval_seconds: u64,
}

impl OperatorOptions {
    /// A lone operator for `namespace` with a short lease, so takeovers in tests stay quick.
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            lease_name: format!("kproxy-operator-{namespace}"),
            identity: identity.to_string(),
            lease_duration_seconds: 4,
            renew_interval_seconds: 1,
        }
    }
}

/// A running operator process; killed when dropped.
pub struct Operator {
    child: Child,
    /// Admin port on 127.0.0.1 (`/metrics`, `/healthz`, `/readyz`).
    pub admin_port: u16,
    /// Its log file, named in failure messages.
    pub log: PathBuf,
    pub identity: String,
}

impl Operator {
    /// Starts the operator and waits until its admin port answers `/readyz`.
    pub fn start(env: &Env, options: &OperatorOptions) -> Result<Self> {
        let admin_port = free_port();
        let log = PathBuf::from(env.log_dir()).join(format!("operator-{}.log", options.identity));
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = env
            .command(binary("kproxy-operator").to_str().unwrap_or("kproxy-operator"))
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .args(["--namespace", &options.namespace])
            .args(["--lease-namespace", &options.namespace])
            .args(["--lease-name", &options.lease_name])
            .args(["--identity", &options.identity])
            .args(["--lease-duration-seconds", &options.lease_duration_seconds.to_string()])
            .args(["--renew-interval-seconds", &options.renew_interval_seconds.to_string()])
            // Run as the admin, the operator may check the Secrets policies name (the chart leaves this off).
            .arg("--check-secrets")
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting kproxy-operator")?;
        let mut operator = Self { child, admin_port, log, identity: options.identity.clone() };
        let ready = wait_for("the operator's /readyz", Duration::from_secs(30), || {
            if let Some(status) = operator.child.try_wait()? {
                bail!("kproxy-operator exited with {status}");
            }
            Ok(operator.get("/readyz").ok().filter(|(code, _)| *code == 200).map(|_| ()))
        });
        if let Err(e) = ready {
            bail!("{e:#}; log: {}", operator.log_text());
        }
        Ok(operator)
    }

    /// `GET path` on the admin port: (status code, body).
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.admin_port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((code, body))
    }

    /// The value of one sample on `/metrics`, e.g. `kproxy_operator_reconciles_total{result="ready"}`.
    pub fn metric(&self, sample: &str) -> Result<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
            .with_context(|| format!("{sample} not on /metrics"))?
            .trim()
            .parse()
            .context("metric value")
    }

    /// Whether the operator says it holds the leader Lease.
    pub fn is_leader(&self) -> bool {
        self.metric("kproxy_operator_leader").is_ok_and(|v| v == 1.0)
    }

    /// Reconciles it has run, whatever their result.
    pub fn reconciles(&self) -> f64 {
        ["ready", "not_ready", "invalid", "error"]
            .iter()
            .map(|r| self.metric(&format!("kproxy_operator_reconciles_total{{result=\"{r}\"}}")).unwrap_or(0.0))
            .sum()
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let exited =
            wait_for("the operator to exit after SIGTERM", Duration::from_secs(30), || Ok(self.child.try_wait()?));
        exited.with_context(|| self.log_text())
    }

    /// SIGKILL: a crash, leaving the Lease to expire.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The log so far, for failure messages.
    pub fn log_text(&self) -> String {
        format!("{}:\n{}", self.log.display(), std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Installs (or updates) the KafkaProxyPolicy CRD from `crds/` and waits until it is served.
pub fn install_crd(env: &Env) -> Result<()> {
    let path = workspace_root().join("crds/kafkaproxypolicies.yaml");
    let path = path.to_str().context("CRD path")?;
    env.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", path])?;
    env.wait_crds_established(&["kafkaproxypolicies.kproxy.dev"])?;
    Ok(())
}

/// Creates a namespace of its own for a test.
pub fn create_namespace(env: &Env, prefix: &str) -> Result<String> {
    let ns = crate::unique(prefix);
    env.kubectl(&["create", "namespace", &ns])?;
    Ok(ns)
}

/// An object as JSON, or `None` when it does not exist.
pub fn get_json(env: &Env, namespace: &str, kind: &str, name: &str) -> Result<Option<Value>> {
    let out = crate::run_with_timeout(
        env.command("kubectl").args(["get", kind, name, "-n", namespace, "-o", "json", "--ignore-not-found"]),
        None,
        Duration::from_secs(30),
    )?;
    if !out.status.success() {
        bail!("kubectl get {kind} {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() { Ok(None) } else { Ok(Some(serde_json::from_str(&text)?)) }
}

/// `kubectl apply -f -`, returning stderr on refusal instead of failing: for manifests the apiserver must refuse.
pub fn try_apply(env: &Env, manifest: &str) -> Result<std::result::Result<String, String>> {
    let out = crate::run_with_timeout(
        env.command("kubectl").args(["apply", "-f", "-"]),
        Some(manifest.as_bytes()),
        Duration::from_secs(60),
    )?;
    Ok(if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}
