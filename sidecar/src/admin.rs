//! The admin port: `/metrics` (Prometheus text), `/healthz` (the process runs) and `/readyz` (the bootstrap
//! cluster answered).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::buffer::Pool;
use crate::metrics::Metrics;

/// What the admin port reads.
#[derive(Clone)]
pub struct State {
    pub metrics: Arc<Metrics>,
    pub buffers: Arc<Pool>,
    /// Set once the bootstrap cluster answered.
    pub ready: Arc<AtomicBool>,
}

/// Binds the admin listener and serves it until shutdown.
pub async fn start(addr: SocketAddr, state: State, shutdown: CancellationToken) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state);
    tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    Ok(addr)
}

async fn metrics(Extract(state): Extract<State>) -> impl IntoResponse {
    let m = &state.metrics;
    m.buffer_pool_bytes.with_label_values(&["idle"]).set(state.buffers.idle_bytes());
    m.buffer_pool_bytes.with_label_values(&["in_use"]).set(state.buffers.in_use_bytes());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render())
}

async fn ready(Extract(state): Extract<State>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for the bootstrap cluster\n")
    }
}
