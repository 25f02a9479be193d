//! The admin port: `/metrics` (Prometheus text), `/healthz` (the process runs) and `/readyz` (the bootstrap
//! cluster answered).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::Result;
use crate::proxy::App;

/// Binds the admin listener and serves it until shutdown.
pub async fn start(app: Arc<App>) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(app.settings.admin).await?;
    let addr = listener.local_addr()?;
    let shutdown = app.shutdown.clone();
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(app);
    tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    Ok(addr)
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let m = &app.metrics;
    m.buffer_pool_bytes.with_label_values(&["idle"]).set(app.buffers.idle_bytes());
    m.buffer_pool_bytes.with_label_values(&["in_use"]).set(app.buffers.in_use_bytes());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render())
}

async fn ready(State(app): State<Arc<App>>) -> impl IntoResponse {
    if app.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for the bootstrap cluster\n")
    }
}
