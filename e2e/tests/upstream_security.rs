//! Upstream TLS and SASL against the real brokers' SASL_SSL listeners: an authenticated connection carries Kafka
//! requests, and every misconfiguration fails fast with a message naming the broker and the cause.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kproxy_api::config::{Cluster, Sasl, SaslMechanism, Tls};
use kproxy_e2e::{Env, env};
use kproxy_upstream::{Context, Error, Stream, connect, open, reauthenticate};
use sidecar::{Sidecar, kcat_metadata, mount_credentials};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "upstream_security/mechanisms.rs"]
mod mechanisms;
#[path = "upstream_security/sidecar.rs"]
mod sidecar;

/// Generous for a loaded CI machine, yet far below "hangs".
const TIMEOUT: Duration = Duration::from_secs(15);

/// Writes the credential files a mounted Secret would hold; returns the cluster using them.
fn sasl_cluster(dir: &Path, env: &Env, addr: &str, password: &str, ca: &str) -> Cluster {
    std::fs::write(dir.join("username"), format!("{}\n", env.var("KPROXY_KAFKA_USER"))).unwrap();
    std::fs::write(dir.join("password"), password).unwrap();
    Cluster {
        name: "east".into(),
        bootstrap_servers: vec![addr.into()],
        tls: Some(Tls { ca_file: Some(ca.into()), ..Tls::default() }),
        sasl: Some(Sasl {
            mechanism: SaslMechanism::ScramSha512,
            username_file: Some("username".into()),
            password_file: Some("password".into()),
            token_file: None,
        }),
    }
}

/// One request/response round trip on an established connection.
async fn call<R: Request>(stream: &mut Stream, request: &R, version: i16, id: i32) -> Result<R::Response> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(id)
        .with_client_id(Some(StrBytes::from_static_str("e2e")));
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, R::header_version(version))?;
    request.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    stream.write_all(&buf).await?;
    let len = tokio::time::timeout(TIMEOUT, stream.read_i32()).await.context("no response")??;
    let mut body = BytesMut::zeroed(len as usize);
    stream.read_exact(&mut body).await?;
    let mut body = body.freeze();
    let header = ResponseHeader::decode(&mut body, <R::Response as HeaderVersion>::header_version(version))?;
    assert_eq!(header.correlation_id, id);
    let response = R::Response::decode(&mut body, version)?;
    assert_eq!(body.remaining(), 0, "the whole response to api {} v{version} was decoded", R::KEY);
    Ok(response)
}

/// ApiVersions then Metadata over the authenticated connection; returns the advertised broker ports.
async fn metadata_ports(stream: &mut Stream) -> Result<Vec<i32>> {
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("kproxy-e2e"))
        .with_client_software_version(StrBytes::from_static_str("0.1.0"));
    let versions = call(stream, &request, 3, 1).await?;
    assert_eq!(versions.error_code, 0);
    assert!(versions.api_keys.len() > 20, "a real broker lists its APIs");
    let metadata = call(stream, &MetadataRequest::default().with_topics(None), 12, 2).await?;
    Ok(metadata.brokers.iter().map(|b| b.port).collect())
}

fn port(addr: &str) -> i32 {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap()
}

/// Runs `f` and checks it neither hangs nor succeeds; returns the error.
async fn fails_fast<T: std::fmt::Debug>(f: impl std::future::Future<Output = kproxy_upstream::Result<T>>) -> Error {
    let started = Instant::now();
    let result = tokio::time::timeout(TIMEOUT * 2, f).await.expect("the attempt hung");
    let err = result.expect_err("the attempt succeeded");
    eprintln!("failed after {:?} with: {err}", started.elapsed());
    err
}

#[tokio::test]
async fn scram_sha_512_over_tls_carries_kafka_requests() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    for addr in [env.var("KPROXY_KAFKA_EAST_SASL"), env.var("KPROXY_KAFKA_LEGACY_SASL")] {
        let dir = tempfile::tempdir()?;
        let cluster = sasl_cluster(dir.path(), env, addr, env.var("KPROXY_KAFKA_PASSWORD"), env.var("KPROXY_KAFKA_CA"));
        let ctx = Context::new(dir.path()).with_timeout(TIMEOUT);
        let (mut stream, session) = open(&cluster, addr, &ctx).await?;
        assert!(stream.is_tls());
        assert!(stream.tcp().nodelay()?, "TCP_NODELAY is set");
        let session = session.context("a SASL session")?;
        assert_eq!(session.mechanism(), SaslMechanism::ScramSha512);
        let ports = metadata_ports(&mut stream).await?;
        assert!(ports.contains(&port(addr)), "metadata over {addr} lists the SASL_SSL listener: {ports:?}");
        eprintln!("{addr}: authenticated, session lifetime {:?}, brokers on ports {ports:?}", session.lifetime());
    }
    Ok(())
}

#[tokio::test]
async fn a_wrong_password_fails_with_a_clear_error_and_a_rotation_fixes_it() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let addr = env.var("KPROXY_KAFKA_EAST_SASL");
    let dir = tempfile::tempdir()?;
    let cluster = sasl_cluster(dir.path(), env, addr, "not-the-password", env.var("KPROXY_KAFKA_CA"));
    let ctx = Context::new(dir.path()).with_timeout(TIMEOUT);
    let err = fails_fast(connect(&cluster, addr, &ctx)).await;
    let text = err.to_string();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(text.contains(addr) && text.contains("SCRAM-SHA-512") && text.contains("wrong username or password"));

    // The Secret is rotated to the right password: the same context picks it up for the next connection.
    let fixed = dir.path().join("password.new");
    std::fs::write(&fixed, env.var("KPROXY_KAFKA_PASSWORD"))?;
    std::fs::rename(&fixed, dir.path().join("password"))?;
    let mut stream = connect(&cluster, addr, &ctx).await?;
    assert!(metadata_ports(&mut stream).await?.contains(&port(addr)));
    Ok(())
}

#[tokio::test]
async fn an_untrusted_ca_fails_with_a_clear_error() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let addr = env.var("KPROXY_KAFKA_EAST_SASL");
    let dir = tempfile::tempdir()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = params.self_signed(&rcgen::KeyPair::generate()?)?;
    std::fs::write(dir.path().join("other-ca.crt"), other.pem())?;
    let cluster = sasl_cluster(dir.path(), env, addr, env.var("KPROXY_KAFKA_PASSWORD"), "other-ca.crt");
    let ctx = Context::new(dir.path()).with_timeout(TIMEOUT);
    let err = fails_fast(connect(&cluster, addr, &ctx)).await;
    let text = err.to_string();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(text.contains(addr) && text.contains("untrusted CA") && text.contains("other-ca.crt"), "{text}");

    // The broker's certificate names 127.0.0.1 and localhost; a different expected name is refused.
    let mut named = sasl_cluster(dir.path(), env, addr, env.var("KPROXY_KAFKA_PASSWORD"), env.var("KPROXY_KAFKA_CA"));
    named.tls.as_mut().unwrap().server_name = Some("kafka-east.example".into());
    let text = fails_fast(connect(&named, addr, &ctx)).await.to_string();
    assert!(text.contains("not valid for") && text.contains("kafka-east.example"), "{text}");
    // ... unless hostname verification is explicitly skipped; the chain is still checked.
    named.tls.as_mut().unwrap().insecure_skip_hostname_verification = true;
    connect(&named, addr, &ctx).await?;
    Ok(())
}

#[tokio::test]
async fn a_mechanism_the_listener_does_not_enable_is_named_in_the_error() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let addr = env.var("KPROXY_KAFKA_EAST_SASL");
    let dir = tempfile::tempdir()?;
    let mut cluster = sasl_cluster(dir.path(), env, addr, env.var("KPROXY_KAFKA_PASSWORD"), env.var("KPROXY_KAFKA_CA"));
    cluster.sasl.as_mut().unwrap().mechanism = SaslMechanism::Plain;
    let ctx = Context::new(dir.path()).with_timeout(TIMEOUT);
    let text = fails_fast(connect(&cluster, addr, &ctx)).await.to_string();
    assert!(text.contains("PLAIN") && text.contains("does not enable it") && text.contains("SCRAM-SHA-512"), "{text}");
    Ok(())
}

#[tokio::test]
async fn wrong_listeners_and_silent_peers_fail_within_the_timeout() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let ctx = Context::new(dir.path()).with_timeout(Duration::from_secs(3));

    // TLS+SASL settings pointed at the PLAINTEXT listener.
    let plaintext = env.kafka_east();
    let cluster = sasl_cluster(dir.path(), env, plaintext, "x", env.var("KPROXY_KAFKA_CA"));
    let err = fails_fast(connect(&cluster, plaintext, &ctx)).await;
    assert!(err.to_string().contains(plaintext), "{err}");

    // SASL without TLS pointed at the SASL_SSL listener: the broker waits for a TLS hello that never comes.
    let sasl_ssl = env.var("KPROXY_KAFKA_EAST_SASL");
    let mut no_tls = sasl_cluster(dir.path(), env, sasl_ssl, "x", env.var("KPROXY_KAFKA_CA"));
    no_tls.tls = None;
    let err = fails_fast(connect(&no_tls, sasl_ssl, &ctx)).await;
    assert!(err.to_string().contains(sasl_ssl), "{err}");

    // A peer that accepts and then says nothing at all.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let silent_addr = silent.local_addr()?.to_string();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    for cluster in [cluster, no_tls] {
        let err = fails_fast(connect(&cluster, &silent_addr, &ctx)).await;
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert!(err.to_string().contains(&silent_addr));
    }
    // Nothing listening at all.
    let closed = format!("127.0.0.1:{}", kproxy_e2e::free_port());
    let err = fails_fast(connect(&plain(&closed), &closed, &ctx)).await;
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    Ok(())
}

fn plain(addr: &str) -> Cluster {
    Cluster { name: "east".into(), bootstrap_servers: vec![addr.into()], tls: None, sasl: None }
}

#[tokio::test]
async fn reauthentication_on_an_established_connection() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let addr = env.var("KPROXY_KAFKA_EAST_SASL");
    let dir = tempfile::tempdir()?;
    let cluster = sasl_cluster(dir.path(), env, addr, env.var("KPROXY_KAFKA_PASSWORD"), env.var("KPROXY_KAFKA_CA"));
    let ctx = Context::new(dir.path()).with_timeout(TIMEOUT);
    let (mut stream, session) = open(&cluster, addr, &ctx).await?;
    let session = session.context("a SASL session")?;
    metadata_ports(&mut stream).await?;
    match reauthenticate(&mut stream, &cluster, addr, &ctx, &session).await {
        Ok(renewed) => {
            assert!(renewed.authenticated_at() > session.authenticated_at());
            assert!(metadata_ports(&mut stream).await?.contains(&port(addr)), "the connection still works");
        }
        // A broker without connections.max.reauth.ms does not offer re-authentication; it must say so clearly.
        Err(e) if session.lifetime().is_none() => {
            eprintln!("re-authentication refused without a session lifetime: {e}")
        }
        Err(e) => bail!("re-authentication failed although the broker expires sessions: {e}"),
    }
    Ok(())
}

#[test]
fn kcat_through_the_sidecar_to_a_sasl_ssl_cluster() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let addr = env.var("KPROXY_KAFKA_EAST_SASL");
    let dir = tempfile::tempdir()?;
    // Start with a wrong password: the application sees a clean failure, the log says why.
    mount_credentials(dir.path(), env.var("KPROXY_KAFKA_USER"), "not-the-password")?;
    let sidecar = Sidecar::start(dir.path(), addr, env.var("KPROXY_KAFKA_CA"), "SCRAM-SHA-512")?;
    let started = Instant::now();
    let refused = kcat_metadata(env, &sidecar.listen);
    assert!(refused.is_err(), "metadata through a sidecar with a wrong password: {refused:?}");
    eprintln!("kcat failed cleanly after {:?}", started.elapsed());
    let log = sidecar.log();
    assert!(log.contains("wrong username or password") && log.contains(addr), "sidecar log:\n{log}");

    // The Secret is rotated: the sidecar picks the new password up without a restart.
    mount_credentials(dir.path(), env.var("KPROXY_KAFKA_USER"), env.var("KPROXY_KAFKA_PASSWORD"))?;
    kproxy_e2e::wait_for("metadata through the sidecar after the rotation", Duration::from_secs(60), || {
        Ok(kcat_metadata(env, &sidecar.listen).ok())
    })?;

    let topic = kproxy_e2e::unique("sasl-through-sidecar");
    let lines: Vec<String> = (0..50).map(|i| format!("record-{i}")).collect();
    env.kcat_produce(&sidecar.listen, &topic, &lines, &["-X", "acks=all"])?;
    assert_eq!(env.kcat_consume(&sidecar.listen, &topic, lines.len(), &[])?, lines);
    // The records are on the real cluster, read straight from its SASL_SSL listener.
    let direct: Vec<String> = env.kcat_sasl_options();
    let direct: Vec<&str> = direct.iter().map(String::as_str).collect();
    assert_eq!(env.kcat_consume(addr, &topic, lines.len(), &direct)?, lines);
    Ok(())
}

#[test]
fn a_sidecar_with_an_untrusted_ca_fails_cleanly_and_says_why() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let addr = env.var("KPROXY_KAFKA_EAST_SASL");
    let dir = tempfile::tempdir()?;
    mount_credentials(dir.path(), env.var("KPROXY_KAFKA_USER"), env.var("KPROXY_KAFKA_PASSWORD"))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = params.self_signed(&rcgen::KeyPair::generate()?)?;
    let ca = dir.path().join("other-ca.crt");
    std::fs::write(&ca, other.pem())?;
    let sidecar = Sidecar::start(dir.path(), addr, &ca.display().to_string(), "SCRAM-SHA-512")?;
    assert!(kcat_metadata(env, &sidecar.listen).is_err());
    let log = sidecar.log();
    assert!(log.contains("untrusted CA") && log.contains(addr), "sidecar log:\n{log}");
    Ok(())
}

#[tokio::test]
async fn every_mechanism_and_reauthentication_against_a_broker_that_enables_them() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let broker = mechanisms::Broker::start(env)?;
    let dir = tempfile::tempdir()?;
    let ctx = Context::new(dir.path()).with_timeout(TIMEOUT);
    broker.ready(&ctx, dir.path()).await?;
    let addr = broker.sasl_ssl.as_str();
    for mechanism in
        [SaslMechanism::Plain, SaslMechanism::ScramSha256, SaslMechanism::ScramSha512, SaslMechanism::OauthBearer]
    {
        let cluster = broker.cluster(dir.path(), mechanism)?;
        let (_, session) = mechanisms::authenticated(&cluster, addr, &ctx).await?;
        let lifetime = session.lifetime();
        // The broker expires sessions of the two mechanisms the re-authentication below uses.
        let expiring = matches!(mechanism, SaslMechanism::ScramSha256 | SaslMechanism::OauthBearer);
        assert_eq!(lifetime.is_some(), expiring, "{mechanism:?}: {lifetime:?}");
        assert!(lifetime.is_none_or(|l| l <= Duration::from_millis(mechanisms::REAUTH_MS)), "{lifetime:?}");
        if mechanism != SaslMechanism::OauthBearer {
            std::fs::write(dir.path().join("password"), "not-the-password")?;
            let text = fails_fast(connect(&cluster, addr, &ctx)).await.to_string();
            assert!(text.contains("wrong username or password"), "{mechanism:?}: {text}");
        } else {
            std::fs::write(dir.path().join("token"), "not.a.jwt")?;
            let text = fails_fast(connect(&cluster, addr, &ctx)).await.to_string();
            assert!(text.contains("OAUTHBEARER") && text.contains("rejected the token"), "{text}");
        }
        eprintln!("{mechanism:?}: authenticated (session lifetime {lifetime:?}); bad credentials refused");
    }
    // PLAIN through the sidecar: kcat produces and consumes with no SASL settings of its own.
    let sidecar_dir = tempfile::tempdir()?;
    mount_credentials(sidecar_dir.path(), mechanisms::USER, &broker.password)?;
    let sidecar = Sidecar::start(sidecar_dir.path(), addr, &broker.ca, "PLAIN")?;
    let topic = kproxy_e2e::unique("plain-through-sidecar");
    let lines: Vec<String> = (0..20).map(|i| format!("plain-{i}")).collect();
    env.kcat_produce(&sidecar.listen, &topic, &lines, &["-X", "acks=all"])?;
    assert_eq!(env.kcat_consume(&sidecar.listen, &topic, lines.len(), &[])?, lines);
    drop(sidecar);

    // KIP-368: the session is renewed on the same connection before the broker would cut it.
    let scram = broker.cluster(dir.path(), SaslMechanism::ScramSha256)?;
    let oauth = broker.cluster(dir.path(), SaslMechanism::OauthBearer)?;
    let (a, b) = tokio::join!(
        mechanisms::renew_past_the_first_session(&scram, addr, &ctx),
        mechanisms::renew_past_the_first_session(&oauth, addr, &ctx)
    );
    a.context("SCRAM-SHA-256 re-authentication")?;
    b.context("OAUTHBEARER re-authentication")?;
    Ok(())
}
