//! Every SASL mechanism and KIP-368 re-authentication against a real Kafka broker of this test's own: the shared
//! environment's listeners enable SCRAM-SHA-512 only and do not expire sessions, so this broker (same Kafka
//! release, same CA) enables PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER with a short session lifetime.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kproxy_api::config::{Cluster, Sasl, SaslMechanism, Tls};
use kproxy_e2e::{Env, free_port, workspace_root};
use kproxy_upstream::{Context, Session, Stream, open, reauthenticate};

/// SCRAM-SHA-256 and OAUTHBEARER sessions end this long after authentication unless renewed; PLAIN and
/// SCRAM-SHA-512 sessions do not expire. (A sidecar's pool renews expiring sessions: see upstream_reauth.rs.)
pub const REAUTH_MS: u64 = 8_000;
pub const USER: &str = "kproxy";

/// A single-node KRaft broker started for this test and stopped when dropped.
pub struct Broker {
    child: Child,
    pub sasl_ssl: String,
    pub ca: String,
    pub password: String,
    dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    pub fn start(env: &Env) -> Result<Broker> {
        let dir = tempfile::tempdir()?;
        let libs = env.var("KPROXY_KAFKA_LIBS");
        let ca = env.var("KPROXY_KAFKA_CA").to_string();
        let tls = Path::new(&ca).parent().context("CA directory")?.to_path_buf();
        let store_password = std::fs::read_to_string(tls.join("store.password"))?.trim().to_string();
        let password = kproxy_e2e::unique("pw");
        let (plain, sasl_ssl, controller) = (free_port(), free_port(), free_port());
        let data = dir.path().join("data");
        let properties = format!(
            "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{sasl_ssl},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{sasl_ssl}\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT\n\
             controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
             sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER\n\
             listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{USER}=\"{password}\";\n\
             listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;\n\
             listener.name.sasl_ssl.scram-sha-256.connections.max.reauth.ms={REAUTH_MS}\n\
             listener.name.sasl_ssl.oauthbearer.connections.max.reauth.ms={REAUTH_MS}\n\
             ssl.keystore.type=PKCS12\nssl.keystore.location={keystore}\nssl.keystore.password={store_password}\n\
             ssl.key.password={store_password}\nlog.dirs={data}\nnum.partitions=1\n\
             offsets.topic.replication.factor=1\noffsets.topic.num.partitions=1\n\
             transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\nshare.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n",
            keystore = tls.join("broker.p12").display(),
            data = data.display(),
        );
        let config = dir.path().join("server.properties");
        std::fs::write(&config, properties)?;
        let java = |class: &str| {
            let mut cmd = Command::new("java");
            cmd.args(["-Xmx384m", "-Xms64m", "-XX:+UseG1GC", "-Djava.awt.headless=true"])
                .arg(format!("-Dkafka.logs.dir={}", dir.path().display()))
                .arg("-Dkafka.cluster.name=mechanisms")
                .arg(format!(
                    "-Dlog4j2.configurationFile={}",
                    workspace_root().join("tools/kafka-4/log4j2.properties").display()
                ))
                .args(["-cp", &format!("{libs}/*"), class]);
            cmd
        };
        let scram = |m: &str| format!("{m}=[name={USER},password={password}]");
        let format = java("kafka.tools.StorageTool")
            .args(["format", "-t", "a3Byb3h5LW1lY2hhbmlzbQ", "-c", &config.display().to_string(), "--standalone"])
            .args(["--add-scram", &scram("SCRAM-SHA-256"), "--add-scram", &scram("SCRAM-SHA-512")])
            .output()?;
        if !format.status.success() {
            bail!("formatting the broker's storage failed: {}", String::from_utf8_lossy(&format.stderr));
        }
        let out = std::fs::File::create(dir.path().join("kafka.out"))?;
        let child = java("kafka.Kafka")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting the broker")?;
        Ok(Broker { child, sasl_ssl: format!("127.0.0.1:{sasl_ssl}"), ca, password, dir })
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("kafka-mechanisms.log")
    }

    /// Writes the credential files for `mechanism` into `dir` and returns the cluster that uses them.
    pub fn cluster(&self, dir: &Path, mechanism: SaslMechanism) -> Result<Cluster> {
        std::fs::write(dir.join("username"), USER)?;
        std::fs::write(dir.join("password"), &self.password)?;
        std::fs::write(dir.join("token"), unsecured_jwt(USER))?;
        let (username_file, password_file, token_file) = match mechanism {
            SaslMechanism::OauthBearer => (None, None, Some("token".to_string())),
            _ => (Some("username".to_string()), Some("password".to_string()), None),
        };
        Ok(Cluster {
            name: "mechanisms".into(),
            bootstrap_servers: vec![self.sasl_ssl.clone()],
            tls: Some(Tls { ca_file: Some(self.ca.clone()), ..Tls::default() }),
            sasl: Some(Sasl { mechanism, username_file, password_file, token_file }),
        })
    }

    /// Waits until the SASL_SSL listener authenticates.
    pub async fn ready(&self, ctx: &Context, dir: &Path) -> Result<()> {
        let cluster = self.cluster(dir, SaslMechanism::ScramSha512)?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match open(&cluster, &self.sasl_ssl, ctx).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    bail!("the broker never authenticated: {e}; log: {}", self.log().display())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// An unsigned JWT, which Kafka's default OAUTHBEARER validator accepts (for tests; production brokers plug in
/// their identity provider's validator).
fn unsecured_jwt(subject: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
    let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{subject}","iat":{now},"exp":{}}}"#, now + 3600));
    format!("{header}.{claims}.")
}

/// Opens an authenticated connection and proves it carries Kafka requests.
pub async fn authenticated(cluster: &Cluster, addr: &str, ctx: &Context) -> Result<(Stream, Session)> {
    let (mut stream, session) = open(cluster, addr, ctx).await?;
    super::metadata_ports(&mut stream).await?;
    Ok((stream, session.context("a SASL session")?))
}

/// Re-authenticates before the session ends and shows the connection outlives its first session.
pub async fn renew_past_the_first_session(cluster: &Cluster, addr: &str, ctx: &Context) -> Result<()> {
    let (mut stream, session) = authenticated(cluster, addr, ctx).await?;
    let expires = session.expires_at().context("the broker expires sessions")?;
    let due = session.reauthenticate_at().context("re-authentication is due")?;
    tokio::time::sleep_until(due.into()).await;
    let renewed = reauthenticate(&mut stream, cluster, addr, ctx, &session).await?;
    assert!(renewed.expires_at() > Some(expires));
    tokio::time::sleep_until((expires + Duration::from_secs(1)).into()).await;
    super::metadata_ports(&mut stream).await.context("the connection after its first session ended")?;

    // Without renewal the broker closes the connection at its next request.
    let (mut stale, session) = authenticated(cluster, addr, ctx).await?;
    tokio::time::sleep_until((session.expires_at().context("expiry")? + Duration::from_secs(1)).into()).await;
    assert!(super::metadata_ports(&mut stale).await.is_err(), "an expired session is cut by the broker");
    Ok(())
}
