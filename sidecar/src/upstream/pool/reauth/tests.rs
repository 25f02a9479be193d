//! Re-authentication of a pooled connection against an in-process broker that expires sessions quickly and
//! refuses any request that arrives while a SASL exchange is open on the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf as _, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kproxy_api::config::{Cluster, Sasl, SaslMechanism};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Reauth, dial};
use crate::buffer::Pool;
use crate::metrics::Metrics;
use crate::settings::Limits;
use crate::upstream::Upstream;
use crate::upstream::pool::Conn;

const LIFETIME_MS: i64 = 300;

/// What the broker saw: completed authentications and protocol violations.
#[derive(Default)]
struct Seen {
    authentications: AtomicUsize,
    violations: AtomicUsize,
}

fn frame(correlation_id: i32, header_version: i16, body: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_i32(0);
    ResponseHeader::default().with_correlation_id(correlation_id).encode(&mut out, header_version).unwrap();
    body(&mut out);
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// One broker connection: SASL PLAIN with a session lifetime, then anything else echoed back empty.
async fn broker(mut s: TcpStream, seen: Arc<Seen>) {
    let (mut in_sasl, mut expires) = (false, None::<Instant>);
    loop {
        let Ok(len) = s.read_i32().await else { return };
        let mut body = vec![0; len as usize];
        if s.read_exact(&mut body).await.is_err() {
            return;
        }
        let mut b = Bytes::from(body);
        let (key, version) = (i16::from_be_bytes([b[0], b[1]]), i16::from_be_bytes([b[2], b[3]]));
        let api = ApiKey::try_from(key).unwrap();
        let header = RequestHeader::decode(&mut b, api.request_header_version(version)).unwrap();
        let id = header.correlation_id;
        let out = match api {
            ApiKey::ApiVersions => frame(id, 0, |o| {
                let keys = [(ApiKey::SaslHandshake, 1), (ApiKey::SaslAuthenticate, 2), (ApiKey::Metadata, 12)]
                    .map(|(k, max)| ApiVersion::default().with_api_key(k as i16).with_max_version(max));
                ApiVersionsResponse::default().with_api_keys(keys.to_vec()).encode(o, version).unwrap();
            }),
            ApiKey::SaslHandshake => {
                in_sasl = true;
                frame(id, 0, |o| {
                    let mechanisms = vec![StrBytes::from_static_str("PLAIN")];
                    SaslHandshakeResponse::default().with_mechanisms(mechanisms).encode(o, version).unwrap();
                })
            }
            ApiKey::SaslAuthenticate => {
                let request = SaslAuthenticateRequest::decode(&mut b, version).unwrap();
                assert_eq!(&request.auth_bytes[..], b"\0alice\0secret");
                in_sasl = false;
                expires = Some(Instant::now() + Duration::from_millis(LIFETIME_MS as u64));
                seen.authentications.fetch_add(1, Ordering::Relaxed);
                frame(id, api.response_header_version(version), |o| {
                    let response = SaslAuthenticateResponse::default().with_session_lifetime_ms(LIFETIME_MS);
                    response.encode(o, version).unwrap();
                })
            }
            _ => {
                // As Kafka does: a request during the exchange or after the session ended closes the connection.
                if in_sasl || expires.is_none_or(|at| Instant::now() > at) {
                    seen.violations.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                frame(id, api.response_header_version(version), |o| o.put_slice(&b.copy_to_bytes(b.remaining())))
            }
        };
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn metadata_request(pool: &Arc<Pool>) -> crate::buffer::Buf {
    let request = kafka_protocol::messages::MetadataRequest::default().with_topics(Some(vec![]));
    let mut frame = pool.get(64);
    crate::protocol::request_frame(&mut frame, ApiKey::Metadata, 12, 0, &request).unwrap();
    frame
}

/// A cluster using SASL PLAIN as alice, with its credential files in the returned directory.
fn upstream(addr: &str) -> (tempfile::TempDir, Arc<Pool>, Arc<Metrics>, Arc<Upstream>) {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("username"), "alice").unwrap();
    std::fs::write(secrets.path().join("password"), "secret").unwrap();
    let cluster = Cluster {
        name: "east".into(),
        bootstrap_servers: vec![addr.to_string()],
        tls: None,
        sasl: Some(Sasl {
            mechanism: SaslMechanism::Plain,
            username_file: Some("username".into()),
            password_file: Some("password".into()),
            token_file: None,
        }),
    };
    let buffers = Pool::new(1 << 20);
    let metrics = Arc::new(Metrics::new().unwrap());
    let dir = secrets.path().into();
    let up = Upstream::new(cluster, Limits::default(), metrics.clone(), buffers.clone(), dir, Default::default());
    (secrets, buffers, metrics, up)
}

#[tokio::test]
async fn a_busy_connection_renews_its_session_in_place_before_it_ends() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Seen::default());
    let accepted = Arc::new(AtomicUsize::new(0));
    tokio::spawn({
        let (seen, accepted) = (seen.clone(), accepted.clone());
        async move {
            while let Ok((s, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(broker(s, seen.clone()));
            }
        }
    });
    let (_secrets, buffers, metrics, up) = upstream(&addr);

    let (stream, session) = dial(up.endpoint(), &addr).await.unwrap();
    let reauth = Reauth::new(up.endpoint().clone(), addr.clone(), session).expect("the broker expires sessions");
    let second = Duration::from_secs(1);
    let conn = Conn::start(stream, buffers.clone(), second, second * 5, Some(reauth), || {});

    // Three requests in flight at a time for several session lifetimes.
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(LIFETIME_MS as u64 * 4) {
        let mut waits = Vec::new();
        for _ in 0..3 {
            let deadline = std::time::Instant::now() + second * 5;
            waits.push(conn.send(metadata_request(&buffers), Some((None, deadline))).await.unwrap().unwrap());
        }
        for rx in waits {
            rx.await.expect("every request is answered");
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!conn.is_closed());
    assert_eq!(seen.violations.load(Ordering::Relaxed), 0, "no request interleaved with SASL or outlived a session");
    assert_eq!(accepted.load(Ordering::Relaxed), 1, "one connection throughout");
    let renewed = metrics.upstream_reauthentications.with_label_values(&["east", "ok"]).get();
    assert!(renewed >= 3, "renewed {renewed} times over four lifetimes ({answered} requests answered)");
    assert_eq!(seen.authentications.load(Ordering::Relaxed) as u64, renewed + 1);
}

#[tokio::test]
async fn a_failed_renewal_closes_the_connection_and_is_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Seen::default());
    tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(broker(s, seen.clone()));
            }
        }
    });
    let (secrets, buffers, metrics, up) = upstream(&addr);
    let (stream, session) = dial(up.endpoint(), &addr).await.unwrap();
    // The Secret loses its password: the renewal cannot even start, and the connection must not linger.
    std::fs::remove_file(secrets.path().join("password")).unwrap();
    let reauth = Reauth::new(up.endpoint().clone(), addr.clone(), session).unwrap();
    let second = Duration::from_secs(1);
    let conn = Conn::start(stream, buffers.clone(), second, second * 5, Some(reauth), || {});
    let deadline = Instant::now() + Duration::from_secs(5);
    while !conn.is_closed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(conn.is_closed());
    assert_eq!(metrics.upstream_reauthentications.with_label_values(&["east", "failed"]).get(), 1);
}
