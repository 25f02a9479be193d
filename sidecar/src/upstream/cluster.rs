//! One upstream cluster as the sidecar holds it: its connection settings ([`Endpoint`], shared with its pools,
//! which point at nothing else), the versions its brokers speak and the connection pools of its brokers.
//! Replaced only when the cluster's connection settings change.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest};
use kafka_protocol::protocol::StrBytes;
use tokio::io::AsyncWriteExt;

use super::pool::{BoxStream, BrokerPool};
use crate::buffer::{Buf, Pool};
use crate::metrics::Metrics;
use crate::protocol::{self, versions::Book, versions::Versions};
use crate::settings::Limits;
use crate::{Error, Result};

/// ApiVersions version used upstream: v3 carries the feature levels clients need (transaction version...).
const API_VERSIONS_VERSION: i16 = 3;

/// What every pooled connection of a cluster shares: how to reach and authenticate to its brokers.
pub struct Endpoint {
    pub cluster: kproxy_api::config::Cluster,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    pub buffers: Arc<Pool>,
    /// Credentials and CA files resolve against it.
    pub secrets_dir: PathBuf,
    /// TLS/SASL settings cache for this cluster's connections; notices rotated Secret files.
    pub connector: kproxy_upstream::Context,
    /// Every broker's ApiVersions answer, shared with the other clusters; what clients are told in ApiVersions.
    versions: Arc<Book>,
    /// Tells this cluster instance's answers in the book apart from those of the instance a reload replaces.
    id: u64,
}

/// A cluster: its endpoint and its brokers' pools.
pub struct Upstream {
    endpoint: Arc<Endpoint>,
    pools: Mutex<HashMap<String, Arc<BrokerPool>>>,
    /// Index of the bootstrap server that answered last, tried first next time.
    bootstrap: AtomicUsize,
    /// Set when a reload replaced this cluster; connections holding its pools look up the new one.
    retired: AtomicBool,
}

impl Upstream {
    pub fn new(
        cluster: kproxy_api::config::Cluster,
        limits: Limits,
        metrics: Arc<Metrics>,
        buffers: Arc<Pool>,
        secrets_dir: PathBuf,
        versions: Arc<Book>,
    ) -> Arc<Self> {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let endpoint = Arc::new(Endpoint {
            cluster,
            limits,
            metrics,
            buffers,
            connector: kproxy_upstream::Context::new(&secrets_dir).with_client_id("kproxy-sidecar"),
            secrets_dir,
            versions,
            id: IDS.fetch_add(1, Ordering::Relaxed),
        });
        Arc::new(Upstream {
            endpoint,
            pools: Mutex::default(),
            bootstrap: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
        })
    }

    /// The settings its pools share.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// The pool of the broker at `addr`, created on first use.
    pub fn pool(&self, addr: &str) -> Arc<BrokerPool> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let index = pools.len();
        pools
            .entry(addr.to_string())
            .or_insert_with(|| Arc::new(BrokerPool::new(self.endpoint.clone(), addr.to_string(), index)))
            .clone()
    }

    /// The pool of the bootstrap server to use now.
    pub fn bootstrap_pool(&self) -> Arc<BrokerPool> {
        let servers = &self.cluster.bootstrap_servers;
        let i = self.bootstrap.load(Ordering::Relaxed) % servers.len().max(1);
        self.pool(servers.get(i).map(String::as_str).unwrap_or_default())
    }

    /// Moves on to the next bootstrap server after a failure.
    pub fn bootstrap_failed(&self) {
        self.bootstrap.fetch_add(1, Ordering::Relaxed);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Marks the cluster replaced and lets its connections finish their in-flight requests, then close.
    pub async fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        if self.endpoint.versions.forget(self.endpoint.id) {
            tracing::info!(cluster = %self.cluster.name, "api versions offered to clients changed");
        }
        let pools: Vec<_> = self.pools.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, p)| p).collect();
        for p in pools {
            p.drain().await;
        }
    }

    /// Open connections summed over the cluster's brokers.
    pub async fn connections(&self) -> usize {
        let pools: Vec<_> = self.pools.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let mut n = 0;
        for p in pools {
            let (a, b) = p.sizes().await;
            n += a + b;
        }
        n
    }
}

impl std::ops::Deref for Upstream {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Endpoint {
    pub fn name(&self) -> &str {
        &self.cluster.name
    }

    /// The versions clients are offered (the intersection over every broker of every cluster that answered),
    /// once a broker has answered. A pointer load: it is computed when a broker's answer is learnt.
    pub fn versions(&self) -> Option<Arc<Versions>> {
        self.versions.current()
    }

    /// On every new pooled connection, asks the broker which versions it speaks (one round trip per connection,
    /// not per request) and folds the answer into what clients are offered.
    pub async fn learn_versions(&self, mut stream: BoxStream, addr: &str) -> Result<BoxStream> {
        let mut frame = self.buffers.get(128);
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("kproxy-sidecar"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        protocol::request_frame(&mut frame, ApiKey::ApiVersions, API_VERSIONS_VERSION, 0, &request)?;
        stream.write_all(&frame).await?;
        let timeout = self.limits.frame_timeout;
        let response = protocol::read_frame(&mut stream, &self.buffers, 1 << 24, 4, timeout, timeout)
            .await
            .map_err(|e| Error::Upstream { addr: addr.to_string(), reason: format!("ApiVersions: {e}") })?
            .ok_or_else(|| Error::Upstream { addr: addr.to_string(), reason: "closed during ApiVersions".into() })?;
        let answer = decode_versions(&response)?;
        if answer.error_code != 0 {
            return Err(Error::Upstream {
                addr: addr.to_string(),
                reason: format!("ApiVersions error code {}", answer.error_code),
            });
        }
        let apis = answer.api_keys.len();
        if self.versions.learn(self.id, addr, Versions::from_broker(answer)) {
            tracing::info!(cluster = %self.cluster.name, addr, apis, "api versions offered to clients changed");
        }
        Ok(stream)
    }
}

fn decode_versions(frame: &Buf) -> Result<kafka_protocol::messages::ApiVersionsResponse> {
    // ApiVersions responses always use header v0: the body follows the correlation id.
    protocol::versions::decode_broker_answer(frame.get(8..).unwrap_or_default(), API_VERSIONS_VERSION)
}
