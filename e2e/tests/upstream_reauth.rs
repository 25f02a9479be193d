//! KIP-368 against the legacy cluster, whose SASL_SSL listener expires sessions (scripts/env/kafka.sh sets
//! `connections.max.reauth.ms`): a connection that is not re-authenticated is cut, while the sidecar's pooled
//! connections renew their sessions in place and outlive several session lifetimes under traffic.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{MetadataRequest, RequestHeader};
use kafka_protocol::protocol::{Encodable, HeaderVersion, Request, StrBytes};
use kproxy_api::config::{Cluster, Sasl, SaslMechanism, Tls};
use kproxy_e2e::sidecar::{Sidecar, java};
use kproxy_e2e::{Env, env, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn credentials(dir: &Path, env: &Env) -> Result<()> {
    let files = [("username", env.var("KPROXY_KAFKA_USER")), ("password", env.var("KPROXY_KAFKA_PASSWORD"))];
    kproxy_e2e::kubelet::project(
        &dir.join("legacy-kafka"),
        &files.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    )
}

fn cluster(env: &Env) -> Cluster {
    Cluster {
        name: "legacy".into(),
        bootstrap_servers: vec![env.var("KPROXY_KAFKA_LEGACY_SASL").into()],
        tls: Some(Tls { ca_file: Some(env.var("KPROXY_KAFKA_CA").into()), ..Tls::default() }),
        sasl: Some(Sasl {
            mechanism: SaslMechanism::ScramSha512,
            username_file: Some("legacy-kafka/username".into()),
            password_file: Some("legacy-kafka/password".into()),
            token_file: None,
        }),
    }
}

/// Whether a Metadata request still gets an answer on `stream`.
async fn answers(stream: &mut kproxy_upstream::Stream) -> bool {
    let header = RequestHeader::default()
        .with_request_api_key(MetadataRequest::KEY)
        .with_request_api_version(9)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("e2e")));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, MetadataRequest::header_version(9)).unwrap();
    MetadataRequest::default().with_topics(Some(vec![])).encode(&mut buf, 9).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    if stream.write_all(&buf).await.is_err() {
        return false;
    }
    let answer = async {
        let mut body = vec![0; usize::try_from(stream.read_i32().await?).unwrap_or_default()];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(body.len() >= 4)
    };
    matches!(tokio::time::timeout(Duration::from_secs(15), answer).await, Ok(Ok(true)))
}

/// Opens a SCRAM connection straight to the broker; returns the session lifetime it grants and whether the
/// connection still answers after that lifetime without re-authentication.
async fn cut_without_reauthentication(env: &'static Env, dir: &Path) -> Result<(Duration, bool)> {
    let ctx = kproxy_upstream::Context::new(dir).with_timeout(Duration::from_secs(15));
    let (mut stream, session) = kproxy_upstream::open(&cluster(env), env.var("KPROXY_KAFKA_LEGACY_SASL"), &ctx).await?;
    let session = session.context("a SASL session")?;
    let Some(lifetime) = session.lifetime() else {
        bail!("the legacy broker does not expire SASL sessions: restart it so scripts/env/kafka.sh's config applies")
    };
    assert!(answers(&mut stream).await, "a fresh connection answers");
    tokio::time::sleep(lifetime + Duration::from_secs(2)).await;
    Ok((lifetime, answers(&mut stream).await))
}

fn produce_lines(env: &Env, listen: &str, topic: &str, from: usize) -> Result<Vec<String>> {
    let lines: Vec<String> = (from..from + 20).map(|i| format!("reauth-{i}")).collect();
    env.kcat_produce(listen, topic, &lines, &["-X", "acks=all"])?;
    Ok(lines)
}

#[test]
fn pooled_connections_outlive_several_session_lifetimes() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let secrets = tempfile::tempdir()?;
    credentials(secrets.path(), env)?;
    // The control, alongside: the broker really cuts a connection whose session is not renewed.
    let control = {
        let dir = secrets.path().to_path_buf();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(cut_without_reauthentication(env, &dir))
        })
    };

    let cfg = cluster(env);
    let config = format!(
        "clusters:\n- name: legacy\n  bootstrapServers: [\"{}\"]\n  tls: {{caFile: \"{}\"}}\n  sasl:\n    \
         mechanism: SCRAM-SHA-512\n    usernameFile: legacy-kafka/username\n    passwordFile: legacy-kafka/password\n",
        cfg.bootstrap_servers[0],
        env.var("KPROXY_KAFKA_CA"),
    );
    let secrets_dir = secrets.path().display().to_string();
    let sidecar = Sidecar::start(env, &config, &["--secrets-dir", &secrets_dir])?;
    let opened = || sidecar.metric("kproxy_upstream_connections_opened_total", &[]);
    // Connections closed so far: a cut (and redialled) connection shows here, a lease that opens another does not.
    let closed = || Ok::<_, anyhow::Error>(opened()? - sidecar.metric("kproxy_upstream_connections", &[])?);
    let reauths =
        |result: &str| sidecar.metric("kproxy_upstream_reauthentications_total", &[&format!("result=\"{result}\"")]);

    // A Java producer sends all along, on connections that are never idle for long.
    let java_topic = unique("reauth-java");
    let records = 2_000;
    let producer = java(env, "org.apache.kafka.tools.ProducerPerformance")
        .args(["--topic", &java_topic, "--num-records", &records.to_string(), "--record-size", "100"])
        .args(["--throughput", "50", "--producer-props", &format!("bootstrap.servers={}", sidecar.listen)])
        .args(["acks=all", "enable.idempotence=true", "linger.ms=5"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;

    // kcat batches before, between and after the session lifetimes, one at a time.
    let topic = unique("reauth-kcat");
    let mut sent = produce_lines(env, &sidecar.listen, &topic, 0)?;
    std::thread::sleep(Duration::from_secs(3));
    sent.extend(produce_lines(env, &sidecar.listen, &topic, sent.len())?);
    let started = Instant::now();
    let (lifetime, control_answered) = control.join().map_err(|_| anyhow::anyhow!("control thread panicked"))??;
    eprintln!("session lifetime {lifetime:?}; an unrenewed connection answered after it: {control_answered}");
    assert!(!control_answered, "the broker cuts a connection whose session expired");
    while started.elapsed() < lifetime * 5 / 2 {
        std::thread::sleep(lifetime / 3);
        sent.extend(produce_lines(env, &sidecar.listen, &topic, sent.len())?);
        eprintln!(
            "{:>5.1?}: {} kcat records, connections opened {} (closed {}), re-authentications {}",
            started.elapsed(),
            sent.len(),
            opened()?,
            closed()?,
            reauths("ok")?
        );
    }
    let output = producer.wait_with_output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(&format!("{records} records sent")), "ProducerPerformance: {text}");
    let (total, cut) = (opened()?, closed()?);
    let (ok, failed) = (reauths("ok")?, reauths("failed")?);
    eprintln!("over {:?}: {total} connections opened, {cut} closed, {ok} re-authentications", started.elapsed());
    assert_eq!(cut, 0.0, "no pooled connection was cut");
    // The ordinary lane's bound (4 per broker by default): the count follows concurrent clients, not lifetimes.
    assert!(total <= 4.0, "connections were not redialled per session lifetime: {total} opened");
    assert!(ok >= 2.0, "each connection renewed its session at least once per lifetime: {ok}");
    assert_eq!(failed, 0.0);

    // Every record is on the broker, read back straight from its PLAINTEXT listener.
    let legacy = env.kafka_legacy();
    assert_eq!(env.kcat_consume(legacy, &topic, sent.len(), &[])?, sent);
    let offsets = env.kcat_consume(legacy, &java_topic, records, &["-f", "%o\n"])?;
    assert_eq!(offsets.len(), records, "every Java record was delivered");
    let log = sidecar.log_text();
    assert!(!log.contains("re-authentication failed"), "sidecar log:\n{log}");
    Ok(())
}
