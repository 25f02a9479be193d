//! KIP-368 re-authentication of pooled upstream connections, in place, before the broker's session ends.
//!
//! A broker with `connections.max.reauth.ms` closes a SASL connection whose session expired. Two ways keep
//! pooled connections alive: retire each one in time (no new leases, move its clients over once they have
//! nothing in flight, close it when drained) or renew the session on the connection itself. kproxy renews in
//! place: clients stay bound to the connection they use, so their request order needs no hand-over protocol;
//! no TCP/TLS/SASL dial is paid per lifetime on every pooled connection of every pod; and a connection whose
//! clients never go quiet (a producer sending all the time) cannot outlive its session waiting to be retired.
//! The price is a short pause: the connection's writer stops taking requests, waits until every request it has
//! sent is answered (the broker must not see SASL frames interleaved with other requests), runs the exchange
//! and resumes. Requests queued meanwhile wait in the writer's channel, in order.
//!
//! The SASL exchange itself is [`kproxy_upstream::reauthenticate`], which speaks to a byte stream. Here that
//! stream is one end of an in-memory pipe; the other end is relayed frame by frame through the connection's own
//! writer and reader (the stream is split between them), so the broker's answers come back through the same
//! FIFO as any other response.

use std::sync::Arc;
use std::time::Duration;

use kproxy_upstream::Session;
use tokio::io::{AsyncWriteExt, DuplexStream};

use super::BoxStream;
use crate::buffer::{Buf, Pool};
use crate::protocol::{self, Header, MIN_REQUEST};
use crate::upstream::Endpoint;
use crate::{Error, Result};

/// SASL requests and responses are small; the pipe only ever holds one of them.
const PIPE_BYTES: usize = 64 << 10;

/// Opens one connection to a broker with the cluster's TLS and SASL settings and returns its SASL session (when
/// the cluster uses SASL), whose lifetime says when to re-authenticate.
pub async fn dial(up: &Endpoint, addr: &str) -> Result<(BoxStream, Option<Session>)> {
    // Each step (TCP with TCP_NODELAY, TLS, SASL) is bounded in time; errors name the cause (wrong password,
    // untrusted CA, ...).
    let (stream, session) = kproxy_upstream::open(&up.cluster, addr, &up.connector).await.map_err(|e| {
        tracing::warn!(cluster = %up.cluster.name, error = %e, kind = e.metric_label(), "upstream connection failed");
        Error::Upstream { addr: addr.to_string(), reason: e.detail() }
    })?;
    Ok((Box::new(stream), session))
}

/// One request/response round trip on an upstream connection, in its FIFO order.
pub(super) trait RoundTrip {
    /// Sends a whole request frame and waits for its response frame; `None` when the connection is gone.
    async fn round_trip(&mut self, frame: Buf) -> Option<Buf>;
}

/// The SASL session of one pooled connection and what renewing it needs.
pub struct Reauth {
    up: Arc<Endpoint>,
    addr: String,
    session: Session,
}

impl Reauth {
    /// `None` when there is nothing to renew: no SASL, or a broker that does not expire sessions.
    pub fn new(up: Arc<Endpoint>, addr: String, session: Option<Session>) -> Option<Reauth> {
        let session = session.filter(|s| s.lifetime().is_some())?;
        Some(Reauth { up, addr, session })
    }

    /// When the writer should pause for re-authentication; `None` once the broker stops expiring the session.
    pub(super) fn due(&self) -> Option<tokio::time::Instant> {
        self.session.reauthenticate_at().map(tokio::time::Instant::from_std)
    }

    /// Renews the session through `link`, which must have no request in flight. Returns whether the connection
    /// is still usable; a broker closes a connection whose re-authentication failed.
    pub(super) async fn run(&mut self, link: &mut impl RoundTrip, buffers: &Arc<Pool>) -> bool {
        let (mut ours, mut theirs) = tokio::io::duplex(PIPE_BYTES);
        let up = &self.up;
        let exchange =
            kproxy_upstream::reauthenticate(&mut ours, &up.cluster, &self.addr, &up.connector, &self.session);
        let outcome = tokio::select! {
            r = exchange => r.map_err(|e| e.detail()),
            e = relay(&mut theirs, link, buffers) => Err(e),
        };
        let cluster = up.cluster.name.as_str();
        match outcome {
            Ok(session) => {
                up.metrics.upstream_reauthentications.with_label_values(&[cluster, "ok"]).inc();
                tracing::debug!(cluster, addr = %self.addr, lifetime = ?session.lifetime(), "upstream re-authenticated");
                self.session = session;
                true
            }
            Err(reason) => {
                up.metrics.upstream_reauthentications.with_label_values(&[cluster, "failed"]).inc();
                tracing::warn!(cluster, addr = %self.addr, %reason, "upstream re-authentication failed; closing the connection");
                false
            }
        }
    }
}

/// Carries the exchange's frames to the broker and its answers back, restoring the exchange's correlation ids
/// (the connection numbers requests its own way). Returns only when something failed.
async fn relay(pipe: &mut DuplexStream, link: &mut impl RoundTrip, buffers: &Arc<Pool>) -> String {
    // The exchange bounds each round trip itself; the pipe only waits for its next request.
    let idle = Duration::from_secs(3600);
    loop {
        let frame = match protocol::read_frame(&mut *pipe, buffers, PIPE_BYTES, MIN_REQUEST, idle, idle).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return "the SASL exchange ended early".into(),
            Err(e) => return format!("relaying the SASL exchange: {e}"),
        };
        let Some(header) = Header::peek(&frame) else { return "a SASL request without a header".into() };
        let Some(mut response) = link.round_trip(frame).await else {
            return "the connection closed during re-authentication".into();
        };
        if protocol::response_correlation(&response).is_none() {
            return "a SASL response without a correlation id".into();
        }
        protocol::set_response_correlation(&mut response, header.correlation_id);
        if let Err(e) = pipe.write_all(&response).await {
            return format!("relaying the SASL exchange: {e}");
        }
    }
}

#[cfg(test)]
mod tests;
