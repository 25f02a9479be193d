//! A kproxy sidecar process for the upstream security tests, with kubelet-style mounted credentials.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use kproxy_e2e::Env;

/// A sidecar process serving one SASL_SSL cluster, with its log captured for assertions.
pub struct Sidecar {
    child: std::process::Child,
    pub listen: String,
    log: std::path::PathBuf,
}

impl Sidecar {
    /// Serves the cluster at `addr` with `mechanism` and the credentials of [`mount_credentials`].
    pub fn start(dir: &Path, addr: &str, ca_file: &str, mechanism: &str) -> Result<Sidecar> {
        let config = format!(
            "clusters:\n- name: east\n  bootstrapServers: [\"{addr}\"]\n  tls: {{caFile: \"{ca_file}\"}}\n  sasl:\n    \
             mechanism: {mechanism}\n    usernameFile: payments-kafka/username\n    passwordFile: payments-kafka/password\n"
        );
        std::fs::write(dir.join("config.yaml"), config)?;
        let listen = format!("127.0.0.1:{}", kproxy_e2e::free_port());
        let log = dir.join("sidecar.log");
        let out = std::fs::File::create(&log)?;
        let child = std::process::Command::new(kproxy_e2e::binary("kproxy-sidecar"))
            .args(["--config", &dir.join("config.yaml").display().to_string(), "--listen", &listen])
            .args(["--admin", &format!("127.0.0.1:{}", kproxy_e2e::free_port())])
            .args(["--secrets-dir", &dir.join("secrets").display().to_string()])
            .env("RUST_LOG", "info")
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting kproxy-sidecar")?;
        let sidecar = Sidecar { child, listen, log };
        kproxy_e2e::wait_for("the sidecar's listener", Duration::from_secs(30), || {
            Ok(std::net::TcpStream::connect(&sidecar.listen).ok().map(|_| ()))
        })?;
        Ok(sidecar)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mounts the credentials as kubelet mounts a Secret volume.
pub fn mount_credentials(dir: &Path, user: &str, password: &str) -> Result<()> {
    let files = [("username", user), ("password", password)];
    kproxy_e2e::kubelet::project(
        &dir.join("secrets/payments-kafka"),
        &files.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    )
}

/// `kcat -L` through the sidecar: Ok when metadata came back, Err with kcat's complaint otherwise.
pub fn kcat_metadata(env: &Env, brokers: &str) -> Result<String> {
    let out = env.run(env.command("kcat").args(["-b", brokers, "-L", "-m", "5"]), Duration::from_secs(30))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
