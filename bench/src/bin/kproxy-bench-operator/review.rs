//! Admission reviews sent to the webhook as the API server sends them: `POST /mutate` with an `AdmissionReview`
//! over TLS (checked against the webhook's CA), one kept-alive HTTP/1.1 connection, each review timed until its
//! whole answer is read. Every answer must allow the pod with a patch, so a refusal cannot pass for a fast review.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// One HTTP/1.1 connection to the webhook.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Connection {
    /// Connects to `127.0.0.1:port` and completes the TLS handshake, trusting only `ca_pem`.
    pub async fn open(port: u16, ca_pem: &str) -> Result<Connection> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.context("reading the webhook CA")?)?;
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        // The API server's client sets it too; without it a request's body waits for the delayed ACK of its head.
        tcp.set_nodelay(true)?;
        let tls = TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("127.0.0.1")?, tcp).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
        let task = tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("webhook connection: {e}");
            }
        });
        Ok(Connection { sender, task })
    }

    /// Posts one review and returns the decoded answer.
    pub async fn post(&mut self, body: Vec<u8>) -> Result<Value> {
        self.sender.ready().await?;
        let request = http::Request::post("/mutate")
            .header(http::header::HOST, "127.0.0.1")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("the webhook answered {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(serde_json::from_slice(&body)?)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The review of a new pod opting in to injection, labelled `app=p<policy>` so exactly one policy selects it.
pub fn pod_review(namespace: &str, seq: usize, policy: usize) -> Vec<u8> {
    let name = format!("bench-{seq}");
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{seq:012}"), "name": name, "namespace": namespace,
            "operation": "CREATE",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "dryRun": false,
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace,
                             "labels": {"app": format!("p{policy}")}, "annotations": {"kproxy.dev/inject": "true"}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]}},
        },
    })
    .to_string()
    .into_bytes()
}

/// Sends `warmup` untimed reviews, then `count` timed ones, for pods selected by policies `0..policies` in turn;
/// returns the latencies in microseconds.
pub async fn latencies(
    port: u16,
    ca_pem: &str,
    namespace: &str,
    policies: usize,
    warmup: usize,
    count: usize,
) -> Result<Histogram<u64>> {
    let mut conn = Connection::open(port, ca_pem).await?;
    let mut histogram = Histogram::<u64>::new(3)?;
    for seq in 0..warmup + count {
        let body = pod_review(namespace, seq, seq % policies.max(1));
        let started = Instant::now();
        let answer = conn.post(body).await?;
        let took = started.elapsed();
        let response = &answer["response"];
        if response["allowed"] != true || response["patch"].is_null() {
            bail!("review {seq} was not injected: {answer}");
        }
        if seq >= warmup {
            histogram.record(took.as_micros() as u64)?;
        }
    }
    Ok(histogram)
}
