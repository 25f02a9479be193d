//! Runs a real `kproxy-sidecar` process for a test: its config published like a mounted ConfigMap, its own free
//! ports and log file, its admin endpoints read over plain HTTP; and Kafka's Java tools pointed at it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::{Env, free_port, kubelet, unique, wait_for};

/// A minimal rendered config: one cluster, everything allowed.
pub fn config(cluster: &str, bootstrap: &str) -> String {
    format!("clusters:\n- name: {cluster}\n  bootstrapServers: [\"{bootstrap}\"]\n")
}

/// The environment's east and west clusters: `default` serves what no route names, `routes` are the config's
/// route entries (`{match: …, cluster: …}`), and a route's fallback takes over once its cluster has not answered
/// for 3 s (probed every 500 ms).
pub fn east_west(env: &Env, default: &str, routes: &[String]) -> String {
    let routes: String = routes.iter().map(|r| format!("- {r}\n")).collect();
    format!(
        "clusters:\n- name: east\n  bootstrapServers: [\"{}\"]\n- name: west\n  bootstrapServers: [\"{}\"]\n\
         defaultCluster: {default}\nroutes:\n{routes}failover:\n  unreachableAfterMs: 3000\n  probeIntervalMs: 500\n",
        env.kafka_east(),
        env.kafka_west(),
    )
}

/// The sidecar binary the tests run: the release build under `make test`, as the image ships it (see
/// [`crate::binary`]).
pub fn binary() -> Result<PathBuf> {
    Ok(crate::binary("kproxy-sidecar"))
}

/// A running sidecar; killed when dropped.
pub struct Sidecar {
    child: Child,
    /// Bootstrap address for clients (`127.0.0.1:port`).
    pub listen: String,
    pub admin: String,
    /// The mounted-ConfigMap directory the sidecar watches.
    pub config_dir: PathBuf,
    pub log: PathBuf,
    scratch: PathBuf,
}

impl Sidecar {
    /// Starts a sidecar serving `config_yaml` and waits until it is ready.
    pub fn start(env: &Env, config_yaml: &str, extra_args: &[&str]) -> Result<Sidecar> {
        Sidecar::start_under(env, config_yaml, extra_args, &[])
    }

    /// [`Sidecar::start`] with its command line after `prefix` (e.g. [`crate::partition::Partition::prefix`]).
    pub fn start_under(env: &Env, config_yaml: &str, extra_args: &[&str], prefix: &[String]) -> Result<Sidecar> {
        let name = unique("sidecar");
        let scratch = std::env::temp_dir().join(format!("kproxy-e2e-{name}"));
        let config_dir = scratch.join("config");
        kubelet::project_one(&config_dir, "config.yaml", config_yaml)?;
        let log = Path::new(env.log_dir()).join(format!("{name}.log"));
        let listen = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let binary = binary()?;
        let mut cmd = match prefix.split_first() {
            Some((program, args)) => {
                let mut cmd = env.command(program);
                cmd.args(args).arg(&binary);
                cmd
            }
            None => env.command(binary.to_str().unwrap_or_default()),
        };
        cmd.args([
            "--config",
            config_dir.to_str().unwrap_or_default(),
            "--listen-addr",
            &listen,
            "--admin-addr",
            &admin,
        ])
        .args(extra_args)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?);
        let child = cmd.spawn().context("starting kproxy-sidecar")?;
        let mut sidecar = Sidecar { child, listen, admin, config_dir, log, scratch };
        let ready = wait_for("sidecar /readyz", Duration::from_secs(30), || {
            if let Some(status) = sidecar.child.try_wait()? {
                bail!("sidecar exited with {status}; log: {}", sidecar.log_text());
            }
            Ok(sidecar.get("/readyz").ok().filter(|(code, _)| *code == 200))
        });
        ready.with_context(|| format!("log {}", sidecar.log.display()))?;
        Ok(sidecar)
    }

    /// Publishes a new config the way kubelet updates a mounted ConfigMap.
    pub fn publish(&self, config_yaml: &str) -> Result<()> {
        kubelet::project_one(&self.config_dir, "config.yaml", config_yaml)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. "HUP", "TERM") to the sidecar.
    pub fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]).status()?;
        if !status.success() {
            bail!("kill -{name} failed");
        }
        Ok(())
    }

    /// Waits for the process to exit (after SIGTERM) and returns whether it exited cleanly.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<bool> {
        let child = &mut self.child;
        wait_for("sidecar exit", timeout, || Ok(child.try_wait()?.map(|s| s.success())))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An HTTP GET on the admin port: status code and body.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut s = TcpStream::connect(&self.admin)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.admin)?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((code, body))
    }

    pub fn metrics(&self) -> Result<String> {
        let (code, body) = self.get("/metrics")?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(body)
    }

    /// Sum of every series of `name` whose labels contain all of `labels` (e.g. `result="rejected"`).
    pub fn metric(&self, name: &str, labels: &[&str]) -> Result<f64> {
        Ok(sum_series(&self.metrics()?, name, labels))
    }

    /// Waits until routes switched `count` times in `direction` ("fallback" or "primary") in all.
    pub fn wait_switches(&self, direction: &str, count: u32, timeout: Duration) -> Result<()> {
        let label = format!("direction=\"{direction}\"");
        wait_for(&format!("{count} switch(es) to {direction}"), timeout, || {
            Ok((self.metric("kproxy_route_switches_total", &[&label])? >= f64::from(count)).then_some(()))
        })
    }
}

/// Sums the samples of a metric in Prometheus text whose labels include every one given.
pub fn sum_series(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.iter().all(|want| rest.contains(want))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Creates `topic` with `partitions` partitions whose only replica is broker 1, the broker each cluster's first
/// address names (east has three brokers), and the topic `configs` (`key=value`): a raw client sending its
/// requests on the bootstrap connection then always reaches the partitions' leader, as a real client would after
/// reading Metadata.
pub fn create_topic_on_first_broker(
    env: &Env,
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    configs: &[&str],
) -> Result<()> {
    let assignment = vec!["1"; partitions.max(1) as usize].join(",");
    let mut cmd = java(env, "org.apache.kafka.tools.TopicCommand");
    cmd.args(["--bootstrap-server", bootstrap, "--create", "--topic", topic, "--replica-assignment", &assignment]);
    for config in configs {
        cmd.args(["--config", config]);
    }
    env.run(&mut cmd, Duration::from_secs(120)).map(|_| ())
}

/// A Kafka Java tool (`org.apache.kafka.tools.*` and friends) from the environment's Kafka 4 libraries, with
/// quiet logging.
pub fn java(env: &Env, class: &str) -> Command {
    static LOG4J: OnceLock<PathBuf> = OnceLock::new();
    let log4j = LOG4J.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("kproxy-e2e-log4j2-{}.properties", std::process::id()));
        let _ = std::fs::write(
            &path,
            "rootLogger.level=WARN\nrootLogger.appenderRef.e.ref=E\nappender.e.type=Console\nappender.e.name=E\n\
             appender.e.target=SYSTEM_ERR\nappender.e.layout.type=PatternLayout\nappender.e.layout.pattern=%p %c %m%n\n",
        );
        path
    });
    let mut cmd = env.command("java");
    cmd.arg("-Xmx384m")
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(format!("{}/*", env.var("KPROXY_KAFKA_LIBS")))
        .arg(class);
    cmd
}

#[cfg(test)]
mod tests {
    #[test]
    fn east_west_is_a_config_the_sidecar_reads_with_its_routes_and_failover_settings() {
        let vars = [("KPROXY_KAFKA_EAST", "127.0.0.1:1"), ("KPROXY_KAFKA_WEST", "127.0.0.1:2")];
        let env = crate::Env { vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
        let route = r#"{match: {groupPrefix: "g-"}, cluster: east, failover: [west]}"#.to_string();
        let yaml = super::east_west(&env, "west", &[route.clone(), route.replace("group", "topic")]);
        let config = kproxy_api::config::SidecarConfig::parse(&yaml).unwrap();
        assert_eq!(config.default_cluster_name(), "west");
        assert_eq!(config.clusters[0].bootstrap_servers, ["127.0.0.1:1"]);
        assert_eq!(config.routes.len(), 2);
        assert_eq!(config.routes[1].matches.topic_prefix.as_deref(), Some("g-"));
        assert_eq!(config.routes[0].failover, ["west"]);
        assert_eq!((config.failover.unreachable_after_ms, config.failover.probe_interval_ms), (3000, 500));
    }
}
