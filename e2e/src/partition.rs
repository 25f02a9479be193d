//! A network partition between one sidecar and one Kafka cluster that leaves every other process alone.
//!
//! The sidecar runs under a group id of its own (`setpriv --regid`, still root otherwise), and an iptables rule
//! drops what sockets of that group send to the cluster's brokers on loopback: new connections fail at once and
//! open ones fall silent, as a datacenter dropping off the network does, while the brokers keep serving every
//! other test. The rule names this process and matches only that group id, so one left behind by a killed test
//! touches nothing else.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

/// One sidecar's partition from one cluster; healed when dropped.
pub struct Partition {
    gid: u32,
    /// The iptables rule in force (its match and target), while cut.
    rule: Option<Vec<String>>,
}

impl Default for Partition {
    fn default() -> Self {
        Partition::new()
    }
}

impl Partition {
    /// A group id no other process on the machine runs under (one per test process and partition).
    pub fn new() -> Partition {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = std::process::id().wrapping_mul(8).wrapping_add(N.fetch_add(1, Ordering::Relaxed));
        Partition { gid: 61_000 + n % 4_000, rule: None }
    }

    /// What the sidecar's command line starts with, so that its sockets belong to this partition's group.
    pub fn prefix(&self) -> Vec<String> {
        ["setpriv", &format!("--regid={}", self.gid), "--clear-groups", "--"].map(str::to_string).to_vec()
    }

    /// Drops everything the sidecar sends to `brokers` (`127.0.0.1:port`) until [`Partition::heal`].
    pub fn cut(&mut self, brokers: &[String]) -> Result<()> {
        if self.rule.is_some() {
            bail!("already cut");
        }
        let ports = brokers
            .iter()
            .map(|b| b.strip_prefix("127.0.0.1:").with_context(|| format!("{b} is not a loopback address")))
            .collect::<Result<Vec<_>>>()?
            .join(",");
        let rule = [
            "-o",
            "lo",
            "-d",
            "127.0.0.1",
            "-p",
            "tcp",
            "-m",
            "owner",
            "--gid-owner",
            &self.gid.to_string(),
            "-m",
            "multiport",
            "--dports",
            &ports,
            "-m",
            "comment",
            "--comment",
            &format!("kproxy-e2e-partition-{}", std::process::id()),
            "-j",
            "DROP",
        ]
        .map(str::to_string)
        .to_vec();
        iptables("-I", &rule)?;
        self.rule = Some(rule);
        Ok(())
    }

    /// Lets the sidecar reach the cluster again.
    pub fn heal(&mut self) -> Result<()> {
        match self.rule.take() {
            Some(rule) => iptables("-D", &rule),
            None => Ok(()),
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = self.heal();
    }
}

fn iptables(action: &str, rule: &[String]) -> Result<()> {
    let out = Command::new("iptables").args(["-w", "10", action, "OUTPUT"]).args(rule).output()?;
    if !out.status.success() {
        bail!("iptables {action} OUTPUT {}: {}", rule.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
