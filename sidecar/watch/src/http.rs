//! One HTTPS request to the API server: a fresh TLS connection per request (a watch holds it for minutes, a get is
//! rare), the bearer token read from its file each time (kubelet rotates projected tokens), bounded reads.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{Error, Result, Target};

/// Connecting and the TLS handshake together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes read of an error answer (only its message is logged).
const MAX_ERROR_BODY: usize = 16 << 10;

/// A response whose status was 200, its body still to read.
pub(crate) struct Body {
    body: Incoming,
    /// Bytes received but not yet handed out as lines.
    pending: BytesMut,
    /// Longest line (one watch event, one object) accepted; a ConfigMap is at most 1 MiB, JSON-escaped.
    max_line: usize,
    /// Most time between two reads before the stream counts as dead (a dropped connection sends nothing).
    idle: Duration,
}

impl Body {
    /// The next newline-terminated line (the API server writes one watch event per line), `None` at the end.
    pub(crate) async fn line(&mut self) -> Result<Option<Bytes>> {
        loop {
            if let Some(at) = self.pending.iter().position(|b| *b == b'\n') {
                let line = self.pending.split_to(at + 1).freeze();
                return Ok(Some(line.slice(..at)));
            }
            if self.pending.len() > self.max_line {
                return Err(Error::TooLarge(self.max_line));
            }
            let frame = match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => return Err(Error::Idle(self.idle)),
                Ok(None) => {
                    return Ok((!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending).freeze()));
                }
                Ok(Some(frame)) => frame.map_err(|e| Error::Http(e.to_string()))?,
            };
            if let Ok(data) = frame.into_data() {
                self.pending.extend_from_slice(&data);
            }
        }
    }

    /// The whole body (one JSON object), at most `max_line` bytes.
    pub(crate) async fn all(mut self) -> Result<Bytes> {
        let mut out = BytesMut::new();
        while let Some(line) = self.line().await? {
            out.extend_from_slice(&line);
            out.extend_from_slice(b"\n");
        }
        Ok(out.freeze())
    }
}

/// The TLS settings for the API server, from the CA file as it is now.
pub(crate) fn connector(target: &Target) -> Result<TlsConnector> {
    let pem = std::fs::read(&target.ca_file).map_err(|e| Error::File(target.ca_file.clone(), e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| Error::Tls(format!("{}: {e}", target.ca_file.display())))?;
        roots.add(cert).map_err(|e| Error::Tls(format!("{}: {e}", target.ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls(format!("{}: no certificate", target.ca_file.display())));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// `GET path` on the API server; an answer other than 200 is an error carrying its status and message.
pub(crate) async fn get(target: &Target, path: &str, max_line: usize, idle: Duration) -> Result<Body> {
    let token = std::fs::read_to_string(&target.token_file).map_err(|e| Error::File(target.token_file.clone(), e))?;
    let connector = connector(target)?;
    let name = ServerName::try_from(target.host.clone()).map_err(|e| Error::Tls(format!("{}: {e}", target.host)))?;
    let addr = target.authority();
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = TcpStream::connect(&addr).await?;
        tcp.set_nodelay(true)?;
        connector.connect(name, tcp).await
    })
    .await
    .map_err(|_| Error::Connect(addr.clone(), "timed out".into()))?
    .map_err(|e| Error::Connect(addr.clone(), e.to_string()))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| Error::Http(e.to_string()))?;
    // The connection task ends when the response body is read or dropped.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "API connection closed");
        }
    });
    let request = Request::get(path)
        .header(header::HOST, &addr)
        .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "kproxy-sidecar")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::Http(e.to_string()))?;
    let response = tokio::time::timeout(idle, send.send_request(request))
        .await
        .map_err(|_| Error::Idle(idle))?
        .map_err(|e| Error::Http(e.to_string()))?;
    let status = response.status();
    let body = Body { body: response.into_body(), pending: BytesMut::new(), max_line, idle };
    if status == StatusCode::OK {
        return Ok(body);
    }
    let text = Body { max_line: MAX_ERROR_BODY, ..body }.all().await.unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&text).trim().to_string());
    Err(Error::Status(status.as_u16(), message))
}
