//! Virtual brokers: each upstream broker (cluster, node id) gets a virtual node id and a loopback listener, so
//! clients only ever dial the sidecar. Entries live as long as their cluster; reloads keep them. A listener bound
//! while rewriting a response is handed to whoever serves listeners (the server) over a channel, so the code
//! that rewrites holds no pointer to it.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::protocol::rewrite::Addresses;

/// Virtual ids for brokers of clusters other than the first one to claim a node id start here.
const REMAPPED_BASE: i32 = 100_000;
/// Most broker listeners open at once, across clusters. Each stands for a broker some metadata response named; a
/// policy has at most 16 clusters and real clusters rarely reach a few hundred brokers, so the bound only stops a
/// broken or hostile upstream that names endless node ids from taking every file descriptor of the pod.
pub const MAX_LISTENERS: usize = 4096;

/// One known upstream broker.
#[derive(Clone, Debug)]
pub struct Entry {
    pub virtual_id: i32,
    /// Where the broker really is, as it advertised itself (`host:port`); updated by every metadata response.
    pub upstream: Option<String>,
    /// The sidecar's listener standing for this broker; 0 while it has none.
    pub port: u16,
    listener_task: Option<tokio::task::AbortHandle>,
}

/// A listener bound for a newly discovered broker; the caller starts its accept loop.
pub struct NewListener {
    pub cluster: String,
    pub node: i32,
    pub listener: tokio::net::TcpListener,
}

#[derive(Default)]
struct Inner {
    by_real: HashMap<(String, i32), Entry>,
    by_virtual: HashMap<i32, (String, i32)>,
    next_remapped: i32,
}

/// The map of every broker the sidecar stands in for.
pub struct BrokerMap {
    inner: Mutex<Inner>,
    advertised_host: String,
    port_base: u16,
    /// Most listeners open at once ([`MAX_LISTENERS`]).
    limit: usize,
    /// Where listeners bound by rewriters go to be served. Bounded by [`MAX_LISTENERS`]: every message carries a
    /// listener, and no more than that many are bound at once, so the queue is full only if the server stopped
    /// taking them; a listener that finds it full is closed again and bound on a later metadata response.
    serve: mpsc::Sender<NewListener>,
}

impl BrokerMap {
    /// The map, and the listeners it binds for newly seen brokers, to be served.
    pub fn new(advertised_host: String, port_base: u16) -> (Self, mpsc::Receiver<NewListener>) {
        Self::with_limit(advertised_host, port_base, MAX_LISTENERS)
    }

    fn with_limit(advertised_host: String, port_base: u16, limit: usize) -> (Self, mpsc::Receiver<NewListener>) {
        let (serve, listeners) = mpsc::channel(limit.max(1));
        let map = BrokerMap {
            inner: Mutex::new(Inner { next_remapped: REMAPPED_BASE, ..Default::default() }),
            advertised_host,
            port_base,
            limit,
            serve,
        };
        (map, listeners)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The virtual id of a real broker. Node ids are kept as they are when no other cluster took them first, so
    /// a single-cluster setup shows the brokers' own ids (which broker-config admin calls rely on).
    pub fn virtual_id(&self, cluster: &str, node: i32) -> i32 {
        if node < 0 {
            return node;
        }
        let mut inner = self.lock();
        entry(&mut inner, cluster, node).virtual_id
    }

    /// The real (cluster, node) behind a virtual id.
    pub fn real(&self, virtual_id: i32) -> Option<(String, i32)> {
        self.lock().by_virtual.get(&virtual_id).cloned()
    }

    /// Where a broker really is, if known.
    pub fn upstream(&self, cluster: &str, node: i32) -> Option<String> {
        self.lock().by_real.get(&(cluster.to_string(), node)).and_then(|e| e.upstream.clone())
    }

    /// Where every known broker of `cluster` is, in node id order: what the failover probes may ask besides the
    /// bootstrap servers.
    pub fn upstreams(&self, cluster: &str) -> Vec<String> {
        let inner = self.lock();
        let mut known: Vec<(i32, String)> = inner
            .by_real
            .iter()
            .filter(|((c, _), _)| c == cluster)
            .filter_map(|((_, node), e)| Some((*node, e.upstream.clone()?)))
            .collect();
        known.sort();
        known.into_iter().map(|(_, addr)| addr).collect()
    }

    /// Records a broker's address and makes sure it has a listener. Returns the entry and, when a listener was
    /// just bound, that listener.
    pub fn register(&self, cluster: &str, node: i32, host: &str, port: i32) -> (Entry, Option<NewListener>) {
        let mut inner = self.lock();
        let unbound = inner.by_real.get(&(cluster.to_string(), node)).is_none_or(|e| e.port == 0);
        let open = if unbound { inner.by_real.values().filter(|e| e.port != 0).count() } else { 0 };
        let e = entry(&mut inner, cluster, node);
        e.upstream = Some(format!("{host}:{port}"));
        let mut new = None;
        if e.port == 0 && open >= self.limit {
            tracing::error!(cluster, node, open, "broker listener not opened: too many brokers named by metadata");
        } else if e.port == 0 {
            let want = if self.port_base == 0 { 0 } else { i32::from(self.port_base) + e.virtual_id };
            match u16::try_from(want).map_err(|_| std::io::Error::other("port out of range")).and_then(|p| {
                let l = std::net::TcpListener::bind((self.advertised_host.as_str(), p))?;
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            }) {
                Ok(listener) => {
                    e.port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
                    tracing::info!(cluster, node, virtual_id = e.virtual_id, port = e.port, upstream = ?e.upstream, "broker listener opened");
                    new = Some(NewListener { cluster: cluster.to_string(), node, listener });
                }
                Err(err) => tracing::error!(cluster, node, port = want, error = %err, "cannot open broker listener"),
            }
        }
        (e.clone(), new)
    }

    /// Forgets the listener of a broker whose listener could not be handed over to be served; the next metadata
    /// response naming it binds another.
    fn unbind(&self, cluster: &str, node: i32) {
        if let Some(e) = self.lock().by_real.get_mut(&(cluster.to_string(), node)) {
            e.port = 0;
        }
    }

    /// Remembers the accept task of a broker listener so removing the cluster can stop it.
    pub fn set_listener_task(&self, cluster: &str, node: i32, task: tokio::task::AbortHandle) {
        if let Some(e) = self.lock().by_real.get_mut(&(cluster.to_string(), node)) {
            e.listener_task = Some(task);
        }
    }

    /// Forgets a removed cluster and stops its listeners; returns how many brokers it had.
    pub fn remove_cluster(&self, cluster: &str) -> usize {
        let mut inner = self.lock();
        let gone: Vec<_> = inner.by_real.keys().filter(|(c, _)| c == cluster).cloned().collect();
        for key in &gone {
            if let Some(e) = inner.by_real.remove(key) {
                inner.by_virtual.remove(&e.virtual_id);
                if let Some(t) = e.listener_task {
                    t.abort();
                }
            }
        }
        gone.len()
    }

    /// Number of broker listeners open.
    pub fn listeners(&self) -> usize {
        self.lock().by_real.values().filter(|e| e.port != 0).count()
    }

    /// A view for rewriting one cluster's responses; listeners bound on the way go to be served.
    pub fn rewriter<'a>(&'a self, cluster: &'a str) -> Rewriter<'a> {
        Rewriter { map: self, cluster }
    }
}

fn entry<'a>(inner: &'a mut Inner, cluster: &str, node: i32) -> &'a mut Entry {
    let Inner { by_real, by_virtual, next_remapped, .. } = inner;
    by_real.entry((cluster.to_string(), node)).or_insert_with_key(|key| {
        // A node id another cluster already uses as its virtual id gets the next free remapped id instead.
        let id = if by_virtual.contains_key(&node) {
            while by_virtual.contains_key(next_remapped) {
                *next_remapped += 1;
            }
            *next_remapped
        } else {
            node
        };
        by_virtual.insert(id, key.clone());
        Entry { virtual_id: id, upstream: None, port: 0, listener_task: None }
    })
}

/// Rewrites one cluster's broker references through the map.
pub struct Rewriter<'a> {
    map: &'a BrokerMap,
    cluster: &'a str,
}

impl Addresses for Rewriter<'_> {
    fn broker(&mut self, node: i32, host: &str, port: i32) -> (i32, String, i32) {
        let (e, new) = self.map.register(self.cluster, node, host, port);
        let mut port = e.port;
        if let Some(listener) = new {
            match self.map.serve.try_send(listener) {
                Ok(()) => {}
                // Closed: the process shuts down. Full: the server is not taking listeners; this one closes and
                // clients are told port 0 until a later response binds it again.
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(cluster = self.cluster, node, "broker listener queue full; listener closed");
                    self.map.unbind(self.cluster, node);
                    port = 0;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        (e.virtual_id, self.map.advertised_host.clone(), i32::from(port))
    }

    fn node(&mut self, node: i32) -> i32 {
        self.map.virtual_id(self.cluster, node)
    }

    fn controller(&mut self, node: i32) -> (i32, String, u16) {
        if node < 0 {
            return (node, self.map.advertised_host.clone(), 0);
        }
        let mut inner = self.map.lock();
        let e = entry(&mut inner, self.cluster, node);
        (e.virtual_id, self.map.advertised_host.clone(), e.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_cluster_keeps_ids_others_are_remapped_and_listeners_bound_once() {
        let (map, _listeners) = BrokerMap::new("127.0.0.1".into(), 0);
        let (a, l) = map.register("east", 1, "10.0.0.1", 9092);
        assert_eq!(a.virtual_id, 1);
        assert!(l.is_some() && a.port != 0);
        let (again, l) = map.register("east", 1, "10.0.0.9", 9092);
        assert!(l.is_none());
        assert_eq!((again.port, again.upstream.as_deref()), (a.port, Some("10.0.0.9:9092")));
        let (b, _) = map.register("west", 1, "10.1.0.1", 9092);
        assert_eq!(b.virtual_id, REMAPPED_BASE);
        assert_eq!(map.real(REMAPPED_BASE), Some(("west".to_string(), 1)));
        assert_eq!(map.virtual_id("west", -1), -1);
        assert_eq!(map.remove_cluster("west"), 1);
        assert_eq!(map.real(REMAPPED_BASE), None);
        assert_eq!(map.listeners(), 1);
    }

    #[tokio::test]
    async fn controllers_show_their_broker_listener_or_port_zero_and_never_register_an_address() {
        let (map, _listeners) = BrokerMap::new("127.0.0.1".into(), 0);
        let (broker, _) = map.register("east", 1, "10.0.0.1", 9092);
        let mut r = map.rewriter("east");
        assert_eq!(r.controller(1), (1, "127.0.0.1".to_string(), broker.port));
        // A dedicated controller gets a virtual id but no listener and no upstream address.
        assert_eq!(r.controller(3000), (3000, "127.0.0.1".to_string(), 0));
        assert_eq!(map.upstream("east", 3000), None);
        assert_eq!(map.upstream("east", 1).as_deref(), Some("10.0.0.1:9092"));
        assert_eq!(map.listeners(), 1);
    }

    #[tokio::test]
    async fn a_clusters_known_broker_addresses_are_listed_in_node_order() {
        let (map, _listeners) = BrokerMap::new("127.0.0.1".into(), 0);
        map.register("east", 3, "10.0.0.3", 9092);
        map.register("east", 1, "10.0.0.1", 9092);
        map.register("west", 1, "10.1.0.1", 9092);
        // A node only named as a controller has no address to ask.
        map.rewriter("east").controller(3000);
        assert_eq!(map.upstreams("east"), ["10.0.0.1:9092", "10.0.0.3:9092"]);
        assert_eq!(map.upstreams("west"), ["10.1.0.1:9092"]);
        assert!(map.upstreams("legacy").is_empty());
    }

    #[tokio::test]
    async fn listeners_stop_at_the_limit_and_one_the_server_cannot_take_is_closed_again() {
        let (map, mut listeners) = BrokerMap::with_limit("127.0.0.1".into(), 0, 2);
        let mut east = map.rewriter("east");
        let ports: Vec<i32> = (1..=3).map(|node| east.broker(node, "10.0.0.1", 9092).2).collect();
        assert!(ports[0] != 0 && ports[1] != 0, "{ports:?}");
        assert_eq!(ports[2], 0, "beyond the limit no listener is opened");
        assert_eq!(map.listeners(), 2);
        // Nobody took the two queued listeners; after the cluster is gone a new one finds the queue full.
        map.remove_cluster("east");
        assert_eq!(map.rewriter("west").broker(1, "10.1.0.1", 9092).2, 0);
        assert_eq!(map.listeners(), 0, "the listener that could not be queued is closed");
        assert_eq!(map.upstream("west", 1).as_deref(), Some("10.1.0.1:9092"), "the broker stays known");
        // Once the server takes listeners again, the next metadata response binds it.
        while listeners.try_recv().is_ok() {}
        assert_ne!(map.rewriter("west").broker(1, "10.1.0.1", 9092).2, 0);
        assert!(listeners.try_recv().is_ok());
    }
}
