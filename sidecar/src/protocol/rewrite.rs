//! Response rewriting: every response that names brokers is changed so clients only ever see the sidecar's
//! listeners and virtual node ids. All other responses pass through untouched.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{response_body_offset, response_frame};
use crate::buffer::Buf;
use crate::{Error, Result};

/// The broker address map as the rewriter sees it.
pub trait Addresses {
    /// The (virtual node id, host, port) a client must see for a real broker; registers it if new.
    fn broker(&mut self, node: i32, host: &str, port: i32) -> (i32, String, i32);
    /// The virtual node id for a real one (negative ids such as -1 "none" stay as they are).
    fn node(&mut self, node: i32) -> i32;
    /// The (virtual node id, host, port) a client is shown for a KRaft controller listener. Never registers the
    /// real address: a controller listener is not a broker listener the sidecar could serve. By default a
    /// loopback address nothing listens on.
    fn controller(&mut self, node: i32) -> (i32, String, u16) {
        (self.node(node), "127.0.0.1".to_string(), 0)
    }
}

/// Whether responses of this api/version may carry broker ids or addresses that need rewriting.
pub fn needs_rewrite(api: ApiKey, version: i16) -> bool {
    match api {
        ApiKey::Metadata
        | ApiKey::FindCoordinator
        | ApiKey::DescribeCluster
        | ApiKey::DescribeQuorum
        | ApiKey::DescribeTopicPartitions
        | ApiKey::ListPartitionReassignments => true,
        // KIP-951 leader hints: node endpoints travel in produce (v10+) and fetch (v16+) responses.
        ApiKey::Produce => version >= 10,
        ApiKey::Fetch => version >= 16,
        _ => false,
    }
}

/// Rewrites a response frame in place when it names brokers. Returns whether the bytes changed.
pub fn rewrite(frame: &mut Buf, api: ApiKey, version: i16, addrs: &mut dyn Addresses) -> Result<bool> {
    let Some(at) = response_body_offset(frame, api, version) else {
        return Err(Error::Protocol(format!("{api:?} v{version} response too short")));
    };
    if api == ApiKey::Produce && super::hints::produce_tagged(&frame[at..], version) == Some(false) {
        return Ok(false);
    }
    let correlation_id = super::response_correlation(frame).unwrap_or_default();
    let new_body = frame.with_frozen(|bytes| rewrite_body(bytes.slice(at..), api, version, addrs))?;
    if let Some(body) = new_body {
        response_frame(frame, api, version, correlation_id, &body);
        return Ok(true);
    }
    Ok(false)
}

fn rewrite_body(body: Bytes, api: ApiKey, version: i16, addrs: &mut dyn Addresses) -> Result<Option<BytesMut>> {
    let step = Recode { body, api, version };
    match api {
        ApiKey::Metadata => step.run(|r: &mut MetadataResponse| {
            metadata(r, addrs);
            true
        }),
        ApiKey::FindCoordinator => step.run(|r: &mut FindCoordinatorResponse| {
            find_coordinator(r, version, addrs);
            true
        }),
        ApiKey::DescribeCluster => step.run(|r: &mut DescribeClusterResponse| {
            describe_cluster(r, addrs);
            true
        }),
        ApiKey::DescribeQuorum => step.run(|r: &mut DescribeQuorumResponse| {
            describe_quorum(r, addrs);
            true
        }),
        ApiKey::DescribeTopicPartitions => step.run(|r: &mut DescribeTopicPartitionsResponse| {
            describe_topic_partitions(r, addrs);
            true
        }),
        ApiKey::ListPartitionReassignments => {
            step.run(|r: &mut ListPartitionReassignmentsResponse| list_partition_reassignments(r, addrs))
        }
        ApiKey::Produce => step.run(|r: &mut ProduceResponse| produce(r, addrs)),
        ApiKey::Fetch => step.run(|r: &mut FetchResponse| fetch(r, addrs)),
        _ => Ok(None),
    }
}

/// One response body decoded, changed in place and encoded again.
struct Recode {
    body: Bytes,
    api: ApiKey,
    version: i16,
}

impl Recode {
    /// `change` returns whether it changed anything; an unchanged response is not encoded again (`None`).
    fn run<R: Decodable + Encodable>(mut self, change: impl FnOnce(&mut R) -> bool) -> Result<Option<BytesMut>> {
        let (api, version) = (self.api, self.version);
        let mut r = R::decode(&mut self.body, version)
            .map_err(|e| Error::protocol(&format!("decoding {api:?} v{version} response"), e))?;
        if !change(&mut r) {
            return Ok(None);
        }
        let mut out = BytesMut::new();
        r.encode(&mut out, version)
            .map_err(|e| Error::protocol(&format!("encoding {api:?} v{version} response"), e))?;
        Ok(Some(out))
    }
}

fn endpoint(addrs: &mut dyn Addresses, node: &mut BrokerId, host: &mut StrBytes, port: &mut i32) {
    if node.0 < 0 {
        return;
    }
    let (id, h, p) = addrs.broker(node.0, host.as_str(), *port);
    *node = BrokerId(id);
    *host = StrBytes::from_string(h);
    *port = p;
}

fn ids(addrs: &mut dyn Addresses, nodes: &mut [BrokerId]) {
    for n in nodes {
        n.0 = addrs.node(n.0);
    }
}

/// Metadata: brokers, controller and every partition's leader and replica lists.
pub fn metadata(r: &mut MetadataResponse, addrs: &mut dyn Addresses) {
    for b in &mut r.brokers {
        endpoint(addrs, &mut b.node_id, &mut b.host, &mut b.port);
    }
    r.controller_id.0 = addrs.node(r.controller_id.0);
    for t in &mut r.topics {
        for p in &mut t.partitions {
            p.leader_id.0 = addrs.node(p.leader_id.0);
            ids(addrs, &mut p.replica_nodes);
            ids(addrs, &mut p.isr_nodes);
            ids(addrs, &mut p.offline_replicas);
        }
    }
}

/// FindCoordinator: the single coordinator (v0-3) and the coordinators array (v4+).
pub fn find_coordinator(r: &mut FindCoordinatorResponse, version: i16, addrs: &mut dyn Addresses) {
    // v4+ leaves the single-coordinator fields unset; giving them values would not encode.
    if version < 4 && r.error_code == 0 {
        endpoint(addrs, &mut r.node_id, &mut r.host, &mut r.port);
    }
    for c in &mut r.coordinators {
        if c.error_code == 0 {
            endpoint(addrs, &mut c.node_id, &mut c.host, &mut c.port);
        }
    }
}

pub fn describe_cluster(r: &mut DescribeClusterResponse, addrs: &mut dyn Addresses) {
    for b in &mut r.brokers {
        endpoint(addrs, &mut b.broker_id, &mut b.host, &mut b.port);
    }
    r.controller_id.0 = addrs.node(r.controller_id.0);
}

/// DescribeQuorum: the leader, voter and observer ids of the metadata log and (v2+) the controllers' listeners.
///
/// Controller ids get virtual ids from the same map as brokers, so in combined mode (broker and controller in
/// one process) a voter shows the id the client already knows from Metadata. Controller listeners are not
/// served by the sidecar: they speak a controller-only API set, often with other security, and a client has no
/// business dialling them through a broker proxy. So each listener is shown at the sidecar's address, on the
/// node's virtual broker listener when the node is also a broker the sidecar stands in for (reaching a broker
/// there, which answers DescribeQuorum too), else on port 0, an address nothing listens on. The real host and
/// port never leave the sidecar.
pub fn describe_quorum(r: &mut DescribeQuorumResponse, addrs: &mut dyn Addresses) {
    for t in &mut r.topics {
        for p in &mut t.partitions {
            p.leader_id.0 = addrs.node(p.leader_id.0);
            for replica in p.current_voters.iter_mut().chain(p.observers.iter_mut()) {
                replica.replica_id.0 = addrs.node(replica.replica_id.0);
            }
        }
    }
    for n in &mut r.nodes {
        let (id, host, port) = addrs.controller(n.node_id.0);
        n.node_id = BrokerId(id);
        for l in &mut n.listeners {
            l.host = StrBytes::from_string(host.clone());
            l.port = port;
        }
    }
}

/// DescribeTopicPartitions (KIP-966): every partition's leader, replicas, ISR, eligible leader replicas, last
/// known ELR and offline replicas.
pub fn describe_topic_partitions(r: &mut DescribeTopicPartitionsResponse, addrs: &mut dyn Addresses) {
    for t in &mut r.topics {
        for p in &mut t.partitions {
            p.leader_id.0 = addrs.node(p.leader_id.0);
            ids(addrs, &mut p.replica_nodes);
            ids(addrs, &mut p.isr_nodes);
            ids(addrs, &mut p.offline_replicas);
            for list in [&mut p.eligible_leader_replicas, &mut p.last_known_elr].into_iter().flatten() {
                ids(addrs, list);
            }
        }
    }
}

/// ListPartitionReassignments: the replica, adding and removing broker ids of each ongoing reassignment; false when
/// there is none (the common answer).
pub fn list_partition_reassignments(r: &mut ListPartitionReassignmentsResponse, addrs: &mut dyn Addresses) -> bool {
    for t in &mut r.topics {
        for p in &mut t.partitions {
            ids(addrs, &mut p.replicas);
            ids(addrs, &mut p.adding_replicas);
            ids(addrs, &mut p.removing_replicas);
        }
    }
    !r.topics.is_empty()
}

/// Produce leader hints; false when nothing had to change (the common, error-free case).
pub fn produce(r: &mut ProduceResponse, addrs: &mut dyn Addresses) -> bool {
    let mut changed = !r.node_endpoints.is_empty();
    for e in &mut r.node_endpoints {
        endpoint(addrs, &mut e.node_id, &mut e.host, &mut e.port);
    }
    for t in &mut r.responses {
        for p in &mut t.partition_responses {
            let id = addrs.node(p.current_leader.leader_id.0);
            changed |= id != p.current_leader.leader_id.0;
            p.current_leader.leader_id.0 = id;
        }
    }
    changed
}

/// Fetch leader hints and preferred read replicas; false when nothing had to change.
pub fn fetch(r: &mut FetchResponse, addrs: &mut dyn Addresses) -> bool {
    let mut changed = !r.node_endpoints.is_empty();
    for e in &mut r.node_endpoints {
        endpoint(addrs, &mut e.node_id, &mut e.host, &mut e.port);
    }
    for t in &mut r.responses {
        for p in &mut t.partitions {
            for id in [&mut p.current_leader.leader_id, &mut p.preferred_read_replica] {
                let v = addrs.node(id.0);
                changed |= v != id.0;
                id.0 = v;
            }
        }
    }
    changed
}
