//! Wiring: builds each part with what it needs, binds the bootstrap and admin listeners, serves the broker
//! listeners the broker map opens, starts the probes and the config watcher, and drains on shutdown. Nothing
//! below points back here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::broker_map::{BrokerMap, NewListener};
use crate::budget::Budget;
use crate::buffer::Pool;
use crate::conn::{self, Target};
use crate::metrics::Metrics;
use crate::reload::{self, Reloader};
use crate::settings::Settings;
use crate::state::{Snapshot, Store};
use crate::upstream::Clusters;
use crate::{Result, admin, health};

/// The running sidecar's parts.
pub struct Server {
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// The snapshot in force, the measurements and the health view.
    pub store: Arc<Store>,
    pub clusters: Arc<Clusters>,
    /// Set once the default cluster answered.
    pub ready: Arc<AtomicBool>,
    pub shutdown: CancellationToken,
    /// What client connections share.
    conns: Arc<conn::Shared>,
    /// One permit per client connection; all permits back means every connection is closed.
    connections: Arc<Semaphore>,
    /// Listeners the broker map binds, until `start` serves them.
    listeners: Mutex<Option<mpsc::Receiver<NewListener>>>,
}

/// Where a started sidecar listens.
pub struct Running {
    pub server: Arc<Server>,
    pub listen: SocketAddr,
    /// The probes' address (and /metrics' unless it has its own).
    pub admin: SocketAddr,
    /// /metrics' own address, when it has one.
    pub metrics: Option<SocketAddr>,
}

impl Server {
    /// Builds every part and puts the first snapshot in force; nothing listens yet.
    pub fn new(settings: Settings, snapshot: Snapshot) -> Result<Arc<Server>> {
        let metrics = Arc::new(Metrics::new()?);
        let limits = settings.limits.clone();
        let buffers = Pool::new(limits.buffer_pool_bytes);
        let budget = Budget::with_gauge(limits.memory_budget_bytes, metrics.memory_reserved.clone());
        metrics.memory_budget.set(budget.limit() as i64);
        let (brokers, listeners) = BrokerMap::new(settings.advertised_host.clone(), settings.broker_port_base);
        let brokers = Arc::new(brokers);
        let shutdown = CancellationToken::new();
        let store =
            Arc::new(Store::new(Snapshot::compiled(snapshot.config.clone(), String::new(), 0), &metrics.registry)?);
        let clusters = Clusters::new(
            limits.clone(),
            metrics.clone(),
            buffers.clone(),
            settings.secrets_dir.clone(),
            brokers.clone(),
            shutdown.clone(),
        );
        reload::apply(&store, &clusters, &metrics, snapshot);
        let conns = Arc::new(conn::Shared {
            limits: limits.clone(),
            listen: settings.listen,
            metrics: metrics.clone(),
            buffers,
            budget,
            store: store.clone(),
            clusters: clusters.clone(),
            brokers,
            shutdown: shutdown.clone(),
        });
        Ok(Arc::new(Server {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            settings,
            metrics,
            store,
            clusters,
            ready: Arc::new(AtomicBool::new(false)),
            shutdown,
            conns,
            listeners: Mutex::new(Some(listeners)),
        }))
    }

    /// Binds the bootstrap and admin listeners, starts serving, probing and serving broker listeners.
    pub async fn start(self: &Arc<Self>) -> Result<Running> {
        let listener = TcpListener::bind(self.settings.listen).await?;
        let listen = listener.local_addr()?;
        let state = admin::State {
            metrics: self.metrics.clone(),
            buffers: self.conns.buffers.clone(),
            ready: self.ready.clone(),
        };
        let bound = admin::start(self.settings.admin, self.settings.metrics, state, self.shutdown.clone()).await?;
        let (admin, metrics) = (bound.admin, bound.metrics);
        tokio::spawn(accept_loop(self.clone(), listener, Target::Bootstrap));
        if let Some(listeners) = self.listeners.lock().await.take() {
            tokio::spawn(serve_brokers(self.clone(), listeners));
        }
        health::spawn(health::Probes {
            store: self.store.clone(),
            clusters: self.clusters.clone(),
            brokers: self.conns.brokers.clone(),
            buffers: self.conns.buffers.clone(),
            ready: self.ready.clone(),
            shutdown: self.shutdown.clone(),
        });
        tracing::info!(%listen, %admin, ?metrics, "kproxy sidecar serving");
        Ok(Running { server: self.clone(), listen, admin, metrics })
    }

    /// Watches the config path (and SIGHUP) and reloads on change; returns the reloader, which the API path
    /// ([`reload::api`]) offers its configs to.
    pub fn watch_config(&self) -> Result<Arc<Reloader>> {
        let reloader = Arc::new(Reloader::new(
            self.settings.config.clone(),
            self.store.clone(),
            self.clusters.clone(),
            self.metrics.clone(),
        )?);
        reload::spawn(reloader.clone(), self.shutdown.clone())?;
        Ok(reloader)
    }

    /// Stops accepting, gives in-flight requests (and acks=0 produce not yet written) up to the grace period,
    /// then returns.
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

/// Serves the listeners the broker map binds for newly seen brokers.
async fn serve_brokers(server: Arc<Server>, mut listeners: mpsc::Receiver<NewListener>) {
    while let Some(NewListener { cluster, node, listener }) = listeners.recv().await {
        let target = Target::Broker { cluster: cluster.clone(), node };
        let task = tokio::spawn(accept_loop(server.clone(), listener, target));
        let brokers = &server.conns.brokers;
        brokers.set_listener_task(&cluster, node, task.abort_handle());
        server.metrics.broker_listeners.set(brokers.listeners() as i64);
    }
}

async fn accept_loop(server: Arc<Server>, listener: TcpListener, target: Target) {
    loop {
        let permit = tokio::select! {
            _ = server.shutdown.cancelled() => return,
            p = server.connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let accepted = tokio::select! {
            _ = server.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                server.metrics.client_connections_accepted.inc();
                tokio::spawn(conn::serve(server.conns.clone(), stream, peer, target.clone(), permit));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
