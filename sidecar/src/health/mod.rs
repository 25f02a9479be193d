//! One probe loop for readiness and failover.
//!
//! Until the sidecar is ready it asks the default cluster for its brokers (backing off from 100 ms to 5 s); the
//! answer opens their listeners (through the broker map) and makes the sidecar ready. With routes, every cluster
//! is probed every `probeIntervalMs` and the health view ([`crate::state::Health`]) follows, so routes switch to
//! their fallbacks and back. A routing probe is a Metadata request for no topics, asked of the cluster's brokers
//! until one answers ([`reach`]): a cluster is unreachable only when none of its brokers answers.

mod reach;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, MetadataRequest};
use tokio_util::sync::CancellationToken;

use crate::broker_map::BrokerMap;
use crate::buffer::Pool;
use crate::protocol;
use crate::state::Store;
use crate::upstream::{Clusters, Upstream};
use crate::{Error, Result};

/// Highest Metadata version of the probes (any broker since Kafka 2.8 speaks it).
const PROBE_METADATA_VERSION: i16 = 12;
/// Longest wait for a routing probe's connection and for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the readiness probe's answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the probes use.
pub struct Probes {
    pub store: Arc<Store>,
    pub clusters: Arc<Clusters>,
    pub brokers: Arc<BrokerMap>,
    pub buffers: Arc<Pool>,
    /// Set once the default cluster answered.
    pub ready: Arc<AtomicBool>,
    pub shutdown: CancellationToken,
}

/// Starts the probe loop; it ends at shutdown.
pub fn spawn(probes: Probes) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        // Per cluster, the broker that answered its last probe: asked first next time.
        let mut answered: HashMap<String, String> = HashMap::new();
        loop {
            let snapshot = probes.store.snapshot();
            let mut delay = Duration::from_millis(snapshot.config.failover.probe_interval_ms.max(100));
            if !probes.ready.load(Ordering::Relaxed) {
                match ready_probe(&probes).await {
                    Ok(brokers) => {
                        probes.ready.store(true, Ordering::Relaxed);
                        tracing::info!(brokers, "bootstrap cluster answered; ready");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "bootstrap cluster not answering yet");
                        delay = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            if snapshot.routed {
                // A hung cluster is found within about unreachableAfterMs plus one probe, not several probe timeouts.
                let after = Duration::from_millis(snapshot.config.failover.unreachable_after_ms);
                let timeout = (after / 2).clamp(Duration::from_millis(200), PROBE_TIMEOUT);
                for cluster in &snapshot.config.clusters {
                    let started = Instant::now();
                    let last = answered.get(&cluster.name).map(String::as_str);
                    let answer = match probes.clusters.get(&cluster.name) {
                        Some(up) => probe(&probes, &up, last, timeout).await,
                        None => None,
                    };
                    probes.store.health.observe(&snapshot, &cluster.name, answer.is_some(), started);
                    if let Some(addr) = answer {
                        answered.insert(cluster.name.clone(), addr);
                    }
                }
            }
            tokio::select! {
                _ = probes.shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    });
}

/// Asks the default cluster for its brokers; their listeners open as the answer is rewritten.
async fn ready_probe(probes: &Probes) -> Result<usize> {
    let snapshot = probes.store.snapshot();
    let up =
        probes.clusters.get(snapshot.default_cluster()).ok_or_else(|| Error::Protocol("no default cluster".into()))?;
    let lease = match up.bootstrap_pool().lease().await {
        Ok(l) => l,
        Err(e) => {
            up.bootstrap_failed();
            return Err(e);
        }
    };
    let versions = up.versions().ok_or_else(|| Error::Protocol("no versions learnt".into()))?;
    let (_, max) = versions
        .range(ApiKey::Metadata as i16)
        .ok_or_else(|| Error::Protocol("upstream does not offer Metadata".into()))?;
    let version = max.min(PROBE_METADATA_VERSION);
    let mut response = round_trip(&probes.buffers, &lease.conn, version, READY_TIMEOUT).await?;
    let before = probes.brokers.listeners();
    protocol::rewrite::rewrite(&mut response, ApiKey::Metadata, version, &mut probes.brokers.rewriter(up.name()))?;
    Ok(probes.brokers.listeners() - before)
}

/// The address of a broker of `up` that answers within `timeout`, `last` (the one that answered before) asked
/// first; `None` when none does.
async fn probe(probes: &Probes, up: &Arc<Upstream>, last: Option<&str>, timeout: Duration) -> Option<String> {
    let candidates = reach::candidates(last, &up.cluster.bootstrap_servers, &probes.brokers.upstreams(up.name()));
    reach::first_answer(&candidates, timeout / 4, timeout, |addr| {
        let (up, buffers) = (up.clone(), probes.buffers.clone());
        async move {
            match ask(&up, &buffers, &addr, timeout).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(cluster = up.name(), addr, error = %e, "broker did not answer the probe");
                    false
                }
            }
        }
    })
    .await
}

/// One probe of the broker at `addr`, on a connection of its pool with nothing in flight (the long-poll lane
/// hands out an idle one while it has or may open one): a broker answers each connection's requests in order, so
/// a probe behind a produce waiting for its in-sync replicas (while a lost follower is not yet dropped from
/// them) would wait as long, and a healthy cluster would look unreachable.
async fn ask(up: &Upstream, buffers: &Arc<Pool>, addr: &str, timeout: Duration) -> Result<()> {
    let conn = tokio::time::timeout(timeout, up.pool(addr).long_poll())
        .await
        .map_err(|_| Error::Protocol("connect timed out".into()))??;
    round_trip(buffers, &conn, 9, timeout).await.map(drop)
}

/// One Metadata request for no topics, answered within `timeout`.
async fn round_trip(
    buffers: &Arc<Pool>,
    conn: &crate::upstream::pool::Conn,
    version: i16,
    timeout: Duration,
) -> Result<crate::buffer::Buf> {
    let mut frame = buffers.get(64);
    let request = MetadataRequest::default().with_topics(Some(vec![]));
    protocol::request_frame(&mut frame, ApiKey::Metadata, version, 0, &request)?;
    let deadline = std::time::Instant::now() + timeout;
    let rx = conn.send(frame, Some((None, deadline))).await.map_err(|_| Error::Protocol("connection closed".into()))?;
    let rx = rx.ok_or_else(|| Error::Protocol("no reply expected".into()))?;
    tokio::time::timeout(timeout, rx)
        .await
        .map_err(|_| Error::Protocol("probe timed out".into()))?
        .map_err(|_| Error::Protocol("connection lost".into()))
}
