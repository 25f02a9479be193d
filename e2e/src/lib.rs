//! Shared harness for the end-to-end tests: finds the environment `make env-up` started and runs real clients.
//!
//! Every e2e test calls [`env`] first. Under `make test` (`KPROXY_E2E_REQUIRED=1`) a missing environment is a
//! failure; when a developer runs `cargo test` without `make env-up`, the test says so and returns.

pub mod hostile;
pub mod kubelet;
pub mod operator;
pub mod partition;
pub mod sidecar;
pub mod wire;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The services of one `make env-up`, read from `.cache/env.sh`.
#[derive(Debug, Clone)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// A variable `env.sh` exports, e.g. `KPROXY_KAFKA_EAST`.
    pub fn var(&self, name: &str) -> &str {
        self.vars.get(name).map(String::as_str).unwrap_or_else(|| panic!("{name} is not set by .cache/env.sh"))
    }

    /// A variable `env.sh` may export (parts of the environment that can be left out, e.g. the node).
    pub fn var_opt(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    pub fn kafka_east(&self) -> &str {
        self.var("KPROXY_KAFKA_EAST")
    }

    pub fn kafka_west(&self) -> &str {
        self.var("KPROXY_KAFKA_WEST")
    }

    pub fn kafka_legacy(&self) -> &str {
        self.var("KPROXY_KAFKA_LEGACY")
    }

    /// Every broker address of `cluster` ("east", "west", …) the environment knows, running or not.
    pub fn brokers(&self, cluster: &str) -> Vec<String> {
        let upper = cluster.to_uppercase();
        let known = (1..=9).filter_map(|id| self.var_opt(&format!("KPROXY_KAFKA_{upper}_{id}")));
        let known: Vec<String> = known.map(str::to_string).collect();
        if known.is_empty() { vec![self.var(&format!("KPROXY_KAFKA_{upper}")).to_string()] } else { known }
    }

    pub fn kubeconfig(&self) -> &str {
        self.var("KUBECONFIG")
    }

    /// Where every service writes its log; named in failure messages.
    pub fn log_dir(&self) -> &str {
        self.var("KPROXY_LOG_DIR")
    }

    /// A `Command` with the environment's PATH, KUBECONFIG and variables set.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(&self.vars);
        cmd
    }

    /// Runs a command to completion within `timeout`, failing with its output when it exits non-zero.
    pub fn run(&self, cmd: &mut Command, timeout: Duration) -> Result<Output> {
        run_with_timeout(cmd, None, timeout).and_then(|out| {
            if out.status.success() {
                Ok(out)
            } else {
                bail!(
                    "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}\nservice logs: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    self.log_dir()
                )
            }
        })
    }

    /// `kubectl` against the test apiserver.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = self.run(self.command("kubectl").args(args), Duration::from_secs(60))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until each named CRD is Established. Polls rather than `kubectl wait`, which fails outright while a
    /// just-created CRD has no status conditions yet.
    pub fn wait_crds_established(&self, names: &[&str]) -> Result<()> {
        for name in names {
            wait_for(&format!("CRD {name} Established"), Duration::from_secs(60), || {
                let status = self.kubectl(&[
                    "get",
                    "crd",
                    name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
                ])?;
                Ok((status.trim() == "True").then_some(()))
            })?;
        }
        Ok(())
    }

    /// `kubectl apply -f -` with the manifest on stdin.
    pub fn kubectl_apply(&self, manifest: &str) -> Result<String> {
        self.kubectl_apply_args(&[], manifest)
    }

    /// `kubectl apply -n NAMESPACE -f -`: the manifest's objects land in `ns` unless they name another.
    pub fn kubectl_apply_in(&self, ns: &str, manifest: &str) -> Result<String> {
        self.kubectl_apply_args(&["-n", ns], manifest)
    }

    fn kubectl_apply_args(&self, args: &[&str], manifest: &str) -> Result<String> {
        let out = run_with_timeout(
            self.command("kubectl").arg("apply").args(args).args(["-f", "-"]),
            Some(manifest.as_bytes()),
            Duration::from_secs(60),
        )?;
        if !out.status.success() {
            bail!("kubectl apply failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A kube client for the test apiserver, from its admin kubeconfig.
    pub async fn kube_client(&self) -> Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig())?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Produces `lines` (one record each) with kcat; `extra` adds `-X` options etc.
    pub fn kcat_produce(&self, brokers: &str, topic: &str, lines: &[String], extra: &[&str]) -> Result<()> {
        let input = lines.join("\n") + "\n";
        let mut cmd = self.command("kcat");
        cmd.args(["-b", brokers, "-t", topic, "-P", "-X", "message.timeout.ms=30000"]).args(extra);
        let out = run_with_timeout(&mut cmd, Some(input.as_bytes()), Duration::from_secs(60))?;
        if !out.status.success() {
            bail!("kcat produce to {topic} via {brokers} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Consumes exactly `count` records from the start of `topic` with kcat and returns their values.
    pub fn kcat_consume(&self, brokers: &str, topic: &str, count: usize, extra: &[&str]) -> Result<Vec<String>> {
        let mut cmd = self.command("kcat");
        cmd.args(["-b", brokers, "-t", topic, "-C", "-o", "beginning", "-e", "-q", "-c", &count.to_string()])
            .args(extra);
        let out = run_with_timeout(&mut cmd, None, Duration::from_secs(60))?;
        if !out.status.success() {
            bail!("kcat consume from {topic} via {brokers} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
    }

    /// Options that make kcat talk SASL_SSL with SCRAM-SHA-512 to the environment's brokers.
    pub fn kcat_sasl_options(&self) -> Vec<String> {
        [
            "security.protocol=SASL_SSL".to_string(),
            "sasl.mechanisms=SCRAM-SHA-512".to_string(),
            format!("sasl.username={}", self.var("KPROXY_KAFKA_USER")),
            format!("sasl.password={}", self.var("KPROXY_KAFKA_PASSWORD")),
            format!("ssl.ca.location={}", self.var("KPROXY_KAFKA_CA")),
        ]
        .into_iter()
        .flat_map(|o| ["-X".to_string(), o])
        .collect()
    }
}

/// The environment, or `None` (after saying why) when it is not up and not required.
pub fn env() -> Option<&'static Env> {
    static ENV: OnceLock<Option<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = workspace_root().join(".cache/env.sh");
        match load_env_file(&path) {
            Ok(env) => Some(env),
            Err(err) if std::env::var("KPROXY_E2E_REQUIRED").is_ok_and(|v| v == "1") => {
                panic!("the e2e environment is required but {} is unusable: {err:#}", path.display())
            }
            Err(err) => {
                eprintln!("skipping: no e2e environment ({err:#}); run `make env-up` first");
                None
            }
        }
    })
    .as_ref()
}

/// Reads `export NAME=value` lines (values optionally quoted) and layers them over this process's environment.
fn load_env_file(path: &Path) -> Result<Env> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("export ") else { continue };
        let Some((name, value)) = rest.split_once('=') else { continue };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        let value = match name {
            // PATH additions refer to the inherited PATH.
            "PATH" => value.replace("$PATH", &std::env::var("PATH").unwrap_or_default()).replace("${PATH}", ""),
            _ => value.to_string(),
        };
        vars.insert(name.to_string(), value);
    }
    if !vars.contains_key("KPROXY_KAFKA_EAST") {
        bail!("{} does not export KPROXY_KAFKA_EAST", path.display());
    }
    Ok(Env { vars })
}

/// A policy sending everything to one cluster (`brokers`), allowing all but answering writes to `topic` with
/// `effect` (Allow or Deny); it selects pods labelled `app: <app>`.
pub fn topic_write_policy(ns: &str, name: &str, app: &str, brokers: &str, topic: &str, effect: &str) -> String {
    format!(
        r#"apiVersion: kproxy.dev/v1alpha1
kind: KafkaProxyPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec:
  podSelector: {{matchLabels: {{app: {app}}}}}
  clusters:
    - name: east
      bootstrapServers: ["{brokers}"]
  acls:
    defaultAction: Allow
    rules:
      - resource: {{type: Topic, name: "{topic}"}}
        operations: [Write]
        effect: {effect}
"#
    )
}

/// The repository root (this crate lives in `<root>/e2e`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// A built binary of the workspace. `make test` runs the release binaries the images ship
/// (`KPROXY_E2E_PROFILE=release`); without the variable, the more recently built of the release and debug binaries
/// is used, so a developer's `cargo build` is what the tests run.
pub fn binary(name: &str) -> PathBuf {
    let target =
        std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace_root().join("target"));
    let path = match std::env::var("KPROXY_E2E_PROFILE") {
        Ok(profile) => target.join(profile).join(name),
        Err(_) => ["release", "debug"]
            .iter()
            .map(|p| target.join(p).join(name))
            .filter_map(|p| Some((std::fs::metadata(&p).and_then(|m| m.modified()).ok()?, p)))
            .max_by_key(|(modified, _)| *modified)
            .map(|(_, p)| p)
            .unwrap_or_else(|| target.join("release").join(name)),
    };
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release -p kproxy-sidecar -p kproxy-operator -p kproxy-webhook -p kproxy-bench` first",
        path.display()
    );
    path
}

/// A name no other test (or earlier run) uses: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A loopback port free right now (the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Polls `check` until it returns `Ok(Some(_))` or `timeout` passes; the last error explains a failure.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "not yet".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs a command, feeding `input` to stdin, killing it when `timeout` passes.
pub fn run_with_timeout(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Result<Output> {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    // stdin is fed and stdout/stderr drained on their own threads: a child whose output outgrows the pipe buffer
    // (helm template, kubectl -o json of many objects) would otherwise block forever and never exit.
    let (data, stdin) = (input.map(<[u8]>::to_vec), child.stdin.take());
    let feeder = std::thread::spawn(move || match (data, stdin) {
        (Some(data), Some(mut stdin)) => stdin.write_all(&data),
        _ => Ok(()),
    });
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            bail!("{cmd:?} timed out after {timeout:?}; stderr: {}", String::from_utf8_lossy(&stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A child that exits without reading all of stdin breaks the pipe; its exit status already says what happened.
    let _ = feeder.join();
    Ok(Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() })
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}
