//! Smoke run of the benchmark tools (`make bench` uses them at full length): the benchmark-only responder behind
//! a real sidecar, driven by the load generator for a couple of seconds. Counts, never speed.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use kproxy_e2e::sidecar::{Sidecar, config};
use kproxy_e2e::{env, run_with_timeout, workspace_root};

/// The benchmark tools' binaries, built once per test process so the test never runs stale code.
fn bench_binary(name: &str) -> Result<PathBuf> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "-q", "-p", "kproxy-bench"])
                .current_dir(workspace_root())
                .status()
                .map_err(|e| e.to_string())?;
            if status.success() { Ok(()) } else { Err(format!("cargo build -p kproxy-bench: {status}")) }
        })
        .clone()
        .map_err(anyhow::Error::msg)?;
    let target =
        std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace_root().join("target"));
    Ok(target.join("debug").join(name))
}

/// `kproxy-bench-upstream` on a free port; killed when dropped.
struct Responder {
    child: Child,
    addr: String,
}

impl Responder {
    fn start() -> Result<Self> {
        let mut child = Command::new(bench_binary("kproxy-bench-upstream")?)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting kproxy-bench-upstream")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let v: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("first line: {line:?}"))?;
        let addr = v["listening"].as_str().context("no listening address")?.to_string();
        Ok(Responder { child, addr })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn load(args: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(bench_binary("kproxy-bench-load").unwrap());
    cmd.args(args);
    let out = run_with_timeout(&mut cmd, None, Duration::from_secs(120)).unwrap();
    assert!(out.status.success(), "kproxy-bench-load {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
}

#[test]
fn pipelined_produce_through_the_sidecar_gets_every_response() {
    let Some(env) = env() else { return };
    let responder = Responder::start().unwrap();
    let sidecar = Sidecar::start(env, &config("bench", &responder.addr), &[]).unwrap();
    let report = load(&[
        "produce",
        "--bootstrap",
        &sidecar.listen,
        "--duration-s",
        "2",
        "--warmup-s",
        "0.5",
        "--connections",
        "3",
        "--in-flight",
        "8",
        "--record-bytes",
        "100",
        "--records-per-request",
        "4",
    ]);
    let sent = report["total_sent"].as_u64().unwrap();
    assert!(sent > 0, "nothing was sent: {report}");
    assert_eq!(report["total_responses"].as_u64(), Some(sent), "every request gets exactly one response: {report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    assert_eq!(report["failed_connections"].as_u64(), Some(0), "{report}");

    let fixed = load(&["produce", "--bootstrap", &sidecar.listen, "--requests", "500", "--in-flight", "4"]);
    assert_eq!(fixed["total_sent"].as_u64(), Some(500), "{fixed}");
    assert_eq!(fixed["total_responses"].as_u64(), Some(500), "{fixed}");
}

#[test]
fn idle_connections_are_all_accepted_by_the_sidecar() {
    let Some(env) = env() else { return };
    let responder = Responder::start().unwrap();
    let sidecar = Sidecar::start(env, &config("bench", &responder.addr), &[]).unwrap();
    let report = load(&["idle", "--bootstrap", &sidecar.listen, "--connections", "100", "--hold-s", "0.2"]);
    assert_eq!(report["connected"].as_u64(), Some(100), "{report}");
    assert_eq!(report["failed"].as_u64(), Some(0), "{report}");
}
