//! The watch loop against an in-process HTTPS server answering as the API server does: get, watch from the version
//! got, resume from the last version after the stream ends, start over with a get after 410 Gone, stay on a
//! refusal (403) with backoff.

use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Answers request number `n` (counted from 0) for a path; the token seen is recorded.
type Script = Arc<dyn Fn(usize, &str) -> (u16, String) + Send + Sync>;

struct Server {
    port: u16,
    ca: String,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn server(script: Script) -> Server {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(leaf.pem().as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut tls) = acceptor.accept(tcp).await else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && tls.read_exact(&mut byte).await.is_ok() {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or_default().to_string();
            let auth = head.lines().find(|l| l.to_ascii_lowercase().starts_with("authorization:")).unwrap_or("");
            let n = {
                let mut r = seen.lock().unwrap();
                r.push(format!("{path} {}", auth.trim()));
                r.len() - 1
            };
            let (status, body) = script(n, &path);
            let reply =
                format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{body}");
            let _ = tls.write_all(reply.as_bytes()).await;
            let _ = tls.shutdown().await;
        }
    });
    Server { port, ca: ca.pem(), requests }
}

#[derive(Default)]
struct Recorder {
    objects: Mutex<Vec<(Option<String>, String)>>,
    errors: Mutex<Vec<&'static str>>,
}

impl Sink for Recorder {
    fn object(&self, value: Option<String>, resource_version: &str) {
        self.objects.lock().unwrap().push((value, resource_version.to_string()));
    }
    fn connected(&self, _up: bool) {}
    fn failed(&self, error: &Error) {
        self.errors.lock().unwrap().push(error.metric_label());
    }
}

fn object(rv: &str, value: &str) -> String {
    serde_json::json!({"kind": "ConfigMap", "metadata": {"name": "p-kproxy", "resourceVersion": rv}, "data": {"config.yaml": value}}).to_string()
}

fn event(kind: &str, object: &str) -> String {
    format!("{{\"type\":\"{kind}\",\"object\":{object}}}\n")
}

async fn follow(server: &Server, until: impl Fn(&Recorder) -> bool) -> (Arc<Recorder>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "tok-1\n").unwrap();
    std::fs::write(dir.path().join("ca.crt"), &server.ca).unwrap();
    let target = Target {
        host: "127.0.0.1".into(),
        port: server.port,
        namespace: "shop".into(),
        name: "p-kproxy".into(),
        key: "config.yaml".into(),
        token_file: dir.path().join("token"),
        ca_file: dir.path().join("ca.crt"),
    };
    let timing =
        Timing { min_backoff: Duration::from_millis(10), max_backoff: Duration::from_millis(40), ..Timing::default() };
    let sink = Arc::new(Recorder::default());
    let shutdown = CancellationToken::new();
    let task = {
        let (sink, shutdown) = (sink.clone(), shutdown.clone());
        tokio::spawn(async move { run(target, timing, sink.as_ref(), shutdown).await })
    };
    for _ in 0..500 {
        if until(&sink) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    task.await.unwrap();
    let requests = server.requests.lock().unwrap().clone();
    (sink, requests)
}

#[tokio::test]
async fn gets_then_watches_resuming_from_the_last_version_and_starting_over_after_gone() {
    let script: Script = Arc::new(|n, path| match n {
        0 => (200, object("10", "one")),
        1 => (200, event("MODIFIED", &object("11", "two")) + &event("BOOKMARK", &object("12", ""))),
        2 => (200, event("ERROR", r#"{"kind":"Status","code":410,"message":"too old"}"#)),
        3 => (200, object("20", "three")),
        _ if path.contains("watch=true") => (200, event("MODIFIED", &object("21", "four"))),
        _ => (500, "{}".into()),
    });
    let server = server(script).await;
    let (sink, requests) = follow(&server, |s| s.objects.lock().unwrap().len() >= 4).await;
    let objects = sink.objects.lock().unwrap().clone();
    let values: Vec<_> = objects.iter().map(|(v, rv)| (v.clone().unwrap_or_default(), rv.clone())).collect();
    assert_eq!(
        values[..4],
        [
            ("one".into(), "10".into()),
            ("two".into(), "11".into()),
            ("three".into(), "20".into()),
            ("four".into(), "21".into())
        ]
    );
    assert!(requests[0].starts_with("/api/v1/namespaces/shop/configmaps/p-kproxy "), "{requests:?}");
    assert!(requests[1].contains("fieldSelector=metadata.name%3Dp-kproxy&resourceVersion=10&"), "{requests:?}");
    assert!(requests[2].contains("resourceVersion=12&"), "resumes after the bookmark's version: {requests:?}");
    assert!(requests[3].starts_with("/api/v1/namespaces/shop/configmaps/p-kproxy "), "a get after 410: {requests:?}");
    assert!(requests[4].contains("resourceVersion=20&"), "{requests:?}");
    assert!(requests.iter().all(|r| r.ends_with("Bearer tok-1")), "{requests:?}");
    assert_eq!(sink.errors.lock().unwrap()[0], "gone");
}

#[tokio::test]
async fn a_refusal_is_retried_with_backoff_and_reported() {
    let script: Script = Arc::new(|_, _| (403, r#"{"kind":"Status","message":"configmaps is forbidden"}"#.into()));
    let server = server(script).await;
    let (sink, requests) = follow(&server, |s| s.errors.lock().unwrap().len() >= 3).await;
    assert!(sink.objects.lock().unwrap().is_empty());
    assert!(sink.errors.lock().unwrap().iter().all(|e| *e == "forbidden"));
    assert!(requests.len() >= 3 && requests.len() < 50, "retried, not spun: {}", requests.len());
}
