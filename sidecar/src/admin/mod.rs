//! The admin endpoints: `/healthz` (the process runs), `/readyz` (the bootstrap cluster answered) and `/metrics`
//! (Prometheus text).
//!
//! In a pod the admin address listens on the pod IP, where kubelet's probes come from the node and anyone in
//! the cluster network can connect. So each listener serves a bounded number of connections ([`slots`]: a new
//! one displaces the oldest that sent part of its request and stopped, or nothing at all for a moment, so
//! half-sent requests cannot starve the probes),
//! drops a connection whose request head is not complete within [`HEADER_READ_TIMEOUT`], buffers at most
//! [`MAX_HEAD_BYTES`] of it, and answers one request per connection. `/metrics` can be given a listener of its
//! own (`--metrics-addr 127.0.0.1:<port>`): the admin address then answers only the probes, and the metrics, which
//! describe the pod's traffic, stay inside the pod unless monitoring asks for them.

mod slots;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::buffer::Pool;
use crate::metrics::Metrics;
use slots::Slots;

/// Connections one admin listener serves at once. kubelet opens one per probe and Prometheus one per scrape;
/// the cap bounds what anyone else can hold (each connection holds at most [`MAX_HEAD_BYTES`] of input).
pub const MAX_CONNECTIONS: usize = 64;
/// A connection whose request head has not fully arrived this long after it opened is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer of one connection (hyper's smallest allowed): a probe's request is a few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct State {
    pub metrics: Arc<Metrics>,
    pub buffers: Arc<Pool>,
    /// Set once the bootstrap cluster answered.
    pub ready: Arc<AtomicBool>,
}

/// Where the admin endpoints listen.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// `/healthz`, `/readyz`, and `/metrics` unless it has its own listener.
    pub admin: SocketAddr,
    /// `/metrics` (and the probes) when it was given its own address.
    pub metrics: Option<SocketAddr>,
}

/// Binds the admin listener (and the metrics listener, if any) and serves them until shutdown.
pub async fn start(
    admin: SocketAddr,
    metrics: Option<SocketAddr>,
    state: State,
    shutdown: CancellationToken,
) -> Result<Bound> {
    let listener = TcpListener::bind(admin).await?;
    let bound = Bound { admin: listener.local_addr()?, metrics: None };
    let metrics_listener = match metrics {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    let bound = Bound { metrics: metrics_listener.as_ref().map(TcpListener::local_addr).transpose()?, ..bound };
    tokio::spawn(serve(listener, metrics.is_none(), state.clone(), shutdown.clone()));
    if let Some(listener) = metrics_listener {
        tokio::spawn(serve(listener, true, state, shutdown));
    }
    Ok(bound)
}

/// Accepts connections within the listener's slots until shutdown.
async fn serve(listener: TcpListener, with_metrics: bool, state: State, shutdown: CancellationToken) {
    let slots = Slots::new(MAX_CONNECTIONS);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = slots.admit() else { continue };
        let heard = Arc::new(AtomicBool::new(false));
        let stream = Heard { stream, heard: heard.clone() };
        let (state, shutdown) = (state.clone(), shutdown.clone());
        tokio::spawn(async move {
            let slot = Arc::new(slot);
            let marker = slot.clone();
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                marker.busy();
                let response = answer(&state, with_metrics, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            // A connection becomes displaceable once part of its request came and a read found it incomplete (see
            // slots.rs); a read before any byte arrived does not count (a probe's request may still be on its way).
            let mut conn = std::pin::pin!(conn);
            let conn = std::future::poll_fn(|cx| {
                let polled = conn.as_mut().poll(cx);
                if polled.is_pending() && heard.load(Ordering::Relaxed) {
                    slot.waiting();
                }
                polled
            });
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(error = %e, "admin connection ended") },
                _ = slot.displaced.cancelled() => tracing::debug!("admin connection displaced by a newer one"),
                _ = shutdown.cancelled() => {}
            }
        });
        // The new connection gets its first read before the next accept: a burst of accepts cannot fill every
        // slot with connections nobody has read.
        tokio::task::yield_now().await;
    }
}

/// An admin connection's stream that notes when a read brought bytes.
struct Heard {
    stream: tokio::net::TcpStream,
    heard: Arc<AtomicBool>,
}

impl tokio::io::AsyncRead for Heard {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.heard.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Heard {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The answer to one request.
fn answer(state: &State, with_metrics: bool, method: &Method, path: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "waiting for the bootstrap cluster\n"),
        "/metrics" if with_metrics => {
            let m = &state.metrics;
            m.buffer_pool_bytes.with_label_values(&["idle"]).set(state.buffers.idle_bytes());
            m.buffer_pool_bytes.with_label_values(&["in_use"]).set(state.buffers.in_use_bytes());
            let mut response = Response::new(Body::from(m.render()));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests;
