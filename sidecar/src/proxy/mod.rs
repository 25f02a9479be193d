//! The running proxy: listeners (bootstrap and one per upstream broker), the shared state every connection
//! uses, readiness, and graceful shutdown.

mod conn;
mod sasl;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use kafka_protocol::messages::{ApiKey, MetadataRequest};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use conn::{Target, api_name};

use crate::broker_map::{BrokerMap, NewListener};
use crate::budget::Budget;
use crate::buffer::Pool;
use crate::cluster::Upstream;
use crate::metrics::Metrics;
use crate::protocol;
use crate::reload::Snapshot;
use crate::settings::Settings;
use crate::{Error, Result};

/// Highest Metadata version the readiness probe uses (any broker since Kafka 2.8 speaks it).
const PROBE_METADATA_VERSION: i16 = 12;

/// State shared by every connection; one per process, kept across reloads.
pub struct App {
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub buffers: Arc<Pool>,
    /// Bytes of frames in flight across every connection; each client connection reserves a share of it.
    pub budget: Arc<Budget>,
    pub brokers: BrokerMap,
    /// The config in force; each request loads it once.
    pub config: ArcSwap<Snapshot>,
    /// Policy state that outlives requests and reloads (quota measurements, topic ids, compiled policy).
    pub filters: crate::filter::State,
    /// Upstream clusters by name, swapped as a whole on reload.
    pub clusters: ArcSwap<HashMap<String, Arc<Upstream>>>,
    /// Every broker's ApiVersions answer across clusters; clients are offered their intersection.
    pub versions: Arc<protocol::versions::Book>,
    /// Clusters removed by a reload that still serve their broker listeners until clients have refreshed
    /// their metadata (which no longer lists them).
    leaving: std::sync::Mutex<HashMap<String, Arc<Upstream>>>,
    /// Set once the bootstrap cluster answered a metadata request.
    pub ready: AtomicBool,
    /// One permit per client connection; all permits back means every connection is closed.
    pub connections: Arc<Semaphore>,
    pub shutdown: CancellationToken,
}

/// Where a started proxy listens.
pub struct Running {
    pub app: Arc<App>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

impl App {
    pub fn new(settings: Settings, snapshot: Snapshot) -> Result<Arc<App>> {
        let metrics = Arc::new(Metrics::new()?);
        let filters = crate::filter::State::new(&metrics.registry)?;
        let buffers = Pool::new(settings.limits.buffer_pool_bytes);
        let budget = Budget::with_gauge(settings.limits.memory_budget_bytes, metrics.memory_reserved.clone());
        metrics.memory_budget.set(budget.limit() as i64);
        let brokers = BrokerMap::new(settings.advertised_host.clone(), settings.broker_port_base);
        let connections = Arc::new(Semaphore::new(settings.limits.max_connections));
        let app = Arc::new(App {
            metrics,
            buffers,
            budget,
            brokers,
            config: ArcSwap::from_pointee(Snapshot::new(snapshot.config.clone(), "", 0)),
            filters,
            clusters: ArcSwap::default(),
            versions: Arc::default(),
            leaving: Default::default(),
            ready: AtomicBool::new(false),
            connections,
            shutdown: CancellationToken::new(),
            settings,
        });
        app.apply(snapshot);
        Ok(app)
    }

    /// Binds the bootstrap and admin listeners, starts serving and probing the bootstrap cluster.
    pub async fn start(self: &Arc<Self>) -> Result<Running> {
        let listener = TcpListener::bind(self.settings.listen).await?;
        let listen = listener.local_addr()?;
        let admin = crate::admin::start(self.clone()).await?;
        tokio::spawn(accept_loop(self.clone(), listener, Target::Bootstrap));
        tokio::spawn(probe(self.clone()));
        crate::routing::spawn_probes(self.clone());
        tracing::info!(%listen, %admin, "kproxy sidecar serving");
        Ok(Running { app: self.clone(), listen, admin })
    }

    /// The upstream cluster of that name in the current config.
    pub fn upstream(&self, name: &str) -> Option<Arc<Upstream>> {
        self.clusters.load().get(name).cloned().or_else(|| self.leaving().get(name).cloned())
    }

    fn leaving(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Upstream>>> {
        self.leaving.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cluster that serves the bootstrap listener (and everything unrouted).
    pub fn default_upstream(&self) -> Option<Arc<Upstream>> {
        let snapshot = self.config.load();
        self.upstream(snapshot.config.default_cluster_name())
    }

    /// Serves listeners bound for newly discovered brokers.
    pub fn serve_brokers(self: &Arc<Self>, new: Vec<NewListener>) {
        for NewListener { cluster, node, listener } in new {
            let task =
                tokio::spawn(accept_loop(self.clone(), listener, Target::Broker { cluster: cluster.clone(), node }));
            self.brokers.set_listener_task(&cluster, node, task.abort_handle());
            self.metrics.broker_listeners.set(self.brokers.listeners() as i64);
        }
    }

    /// Swaps in a validated config: clusters with unchanged connection settings keep their pools, changed ones
    /// get new pools (the old ones drain), removed ones drain and lose their listeners.
    pub fn apply(self: &Arc<Self>, snapshot: Snapshot) {
        let old = self.clusters.load_full();
        let mut next = HashMap::new();
        for cluster in &snapshot.config.clusters {
            let returning = self.leaving().remove(&cluster.name);
            let kept =
                old.get(&cluster.name).or(returning.as_ref()).filter(|u| u.cluster.same_connection(cluster)).cloned();
            let up = kept.unwrap_or_else(|| {
                Upstream::new(
                    cluster.clone(),
                    self.settings.limits.clone(),
                    self.metrics.clone(),
                    self.buffers.clone(),
                    self.settings.secrets_dir.clone(),
                    self.versions.clone(),
                )
            });
            next.insert(cluster.name.clone(), up);
        }
        self.clusters.store(Arc::new(next.clone()));
        let m = &self.metrics;
        m.config_generation.set(snapshot.generation as i64);
        m.config_info.reset();
        m.config_info
            .with_label_values(&[&snapshot.hash, &snapshot.config.policy, &snapshot.config.generation.to_string()])
            .set(1);
        self.config.store(Arc::new(snapshot));
        for (name, up) in old.iter() {
            match next.get(name) {
                Some(now) if Arc::ptr_eq(now, up) => {}
                Some(_) => {
                    let up = up.clone();
                    tokio::spawn(async move { up.retire().await });
                }
                None => self.remove_later(name, up.clone()),
            }
        }
    }

    /// A removed cluster keeps serving its broker listeners for the grace period (clients still holding old
    /// metadata reach it), then its listeners close and its pools drain, unless a reload brought it back.
    fn remove_later(self: &Arc<Self>, name: &str, up: Arc<Upstream>) {
        self.leaving().insert(name.to_string(), up.clone());
        let (app, name) = (self.clone(), name.to_string());
        let grace = self.settings.limits.removed_cluster_grace;
        tracing::info!(cluster = %name, ?grace, "cluster removed; its broker listeners close after the grace period");
        tokio::spawn(async move {
            tokio::select! {
                _ = app.shutdown.cancelled() => return,
                _ = tokio::time::sleep(grace) => {}
            }
            {
                let mut leaving = app.leaving();
                if leaving.get(&name).is_some_and(|l| Arc::ptr_eq(l, &up)) {
                    leaving.remove(&name);
                }
            }
            let current = app.clusters.load().get(&name).cloned();
            if current.is_none() {
                let n = app.brokers.remove_cluster(&name);
                app.metrics.broker_listeners.set(app.brokers.listeners() as i64);
                tracing::info!(cluster = %name, brokers = n, "removed cluster's broker listeners closed");
            }
            // A reload that brought the cluster back with the same settings took this very pool over.
            if !current.is_some_and(|c| Arc::ptr_eq(&c, &up)) {
                up.retire().await;
            }
        });
    }

    /// Stops accepting, gives in-flight requests up to the grace period, then returns.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let all = self.settings.limits.max_connections as u32;
        let grace = self.settings.limits.shutdown_grace;
        match tokio::time::timeout(grace, self.connections.acquire_many(all)).await {
            Ok(_) => tracing::info!("all client connections closed"),
            Err(_) => tracing::warn!(?grace, "grace period over; closing remaining connections"),
        }
    }
}

async fn accept_loop(app: Arc<App>, listener: TcpListener, target: Target) {
    loop {
        let permit = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            p = app.connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let accepted = tokio::select! {
            _ = app.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                app.metrics.client_connections_accepted.inc();
                tokio::spawn(conn::serve(app.clone(), stream, peer, target.clone(), permit));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Asks the bootstrap cluster for its brokers until it answers; the answer opens their listeners and makes
/// the sidecar ready.
async fn probe(app: Arc<App>) {
    let mut delay = Duration::from_millis(100);
    loop {
        match probe_once(&app).await {
            Ok(brokers) => {
                app.ready.store(true, Ordering::Relaxed);
                tracing::info!(brokers, "bootstrap cluster answered; ready");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "bootstrap cluster not answering yet"),
        }
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn probe_once(app: &Arc<App>) -> Result<usize> {
    let up = app.default_upstream().ok_or_else(|| Error::Protocol("no default cluster".into()))?;
    let pool = up.bootstrap_pool();
    let lease = match pool.lease().await {
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
    let mut frame = app.buffers.get(64);
    protocol::request_frame(
        &mut frame,
        ApiKey::Metadata,
        version,
        0,
        &MetadataRequest::default().with_topics(Some(vec![])),
    )?;
    let rx = lease.conn.send(frame, true, None).await.map_err(|_| Error::Protocol("connection closed".into()))?;
    let rx = rx.ok_or_else(|| Error::Protocol("no reply expected".into()))?;
    let mut response = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .map_err(|_| Error::Protocol("metadata probe timed out".into()))?
        .map_err(|_| Error::Protocol("connection lost".into()))?;
    let mut rewriter = app.brokers.rewriter(up.name());
    protocol::rewrite::rewrite(&mut response, ApiKey::Metadata, version, &mut rewriter)?;
    let n = rewriter.new_listeners.len();
    app.serve_brokers(rewriter.new_listeners);
    Ok(n)
}
