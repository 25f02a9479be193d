//! The admin listener under connections that never finish their request: probes are still answered, at most
//! [`MAX_CONNECTIONS`] connections are held, `/metrics` is where it was asked to be.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::*;

fn state() -> State {
    State {
        metrics: Arc::new(Metrics::new().unwrap()),
        buffers: Pool::new(1 << 20),
        ready: Arc::new(AtomicBool::new(true)),
    }
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut out)).await.unwrap().unwrap();
    out
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[tokio::test]
async fn probes_are_answered_while_many_half_sent_requests_are_held() {
    let shutdown = CancellationToken::new();
    let bound = start(local(), None, state(), shutdown.clone()).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..(MAX_CONNECTIONS * 4) {
        let mut s = TcpStream::connect(bound.admin).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        held.push(s);
    }
    for _ in 0..20 {
        let answer = get(bound.admin, "/readyz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // The oldest half-sent requests were closed to make room: reading them ends.
    let mut closed = 0;
    for s in held.iter_mut().take(MAX_CONNECTIONS) {
        let mut buf = [0u8; 16];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, MAX_CONNECTIONS, "every one of the oldest held connections was closed");
    shutdown.cancel();
}

#[tokio::test]
async fn metrics_on_their_own_listener_are_not_on_the_admin_address() {
    let shutdown = CancellationToken::new();
    let bound = start(local(), Some(local()), state(), shutdown.clone()).await.unwrap();
    let metrics = bound.metrics.unwrap();
    assert!(get(bound.admin, "/metrics").await.starts_with("HTTP/1.1 404"));
    assert!(get(bound.admin, "/healthz").await.starts_with("HTTP/1.1 200"));
    let text = get(metrics, "/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200") && text.contains("kproxy_buffer_pool_bytes"), "{text}");

    let both = start(local(), None, state(), shutdown.clone()).await.unwrap();
    assert!(get(both.admin, "/metrics").await.contains("kproxy_buffer_pool_bytes"));
    assert!(get(both.admin, "/nothing").await.starts_with("HTTP/1.1 404"));
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_request_head_that_never_completes_is_closed_after_the_timeout() {
    let shutdown = CancellationToken::new();
    let bound = start(local(), None, state(), shutdown.clone()).await.unwrap();
    let mut s = TcpStream::connect(bound.admin).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(HEADER_READ_TIMEOUT * 2, s.read_to_end(&mut buf)).await;
    let answer = String::from_utf8_lossy(&buf);
    assert!(read.is_ok(), "closed within the timeout");
    assert!(!answer.contains("200 OK"), "{answer}");
    shutdown.cancel();
}
