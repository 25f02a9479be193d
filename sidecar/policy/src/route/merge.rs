//! One cluster as the client sees it: Metadata answers from several clusters merged by route, and requests that
//! cannot work across clusters refused with a clear reason.

use kafka_protocol::messages::{MetadataResponse, RequestKind};

use super::{Health, Kind, Routes};

/// Merges Metadata responses from several clusters (broker ids already mapped to virtual ids by the data path):
/// brokers from all, each topic only from the cluster its route picks now, cluster id and controller from the
/// default cluster's answer (or the first).
pub fn merge_metadata(parts: Vec<(&str, MetadataResponse)>, routes: &Routes, health: &Health) -> MetadataResponse {
    let base = parts.iter().position(|(c, _)| *c == routes.default_cluster()).unwrap_or(0);
    let mut merged = MetadataResponse::default();
    let mut topics = Vec::new();
    let mut brokers = Vec::new();
    for (i, (cluster, part)) in parts.into_iter().enumerate() {
        merged.throttle_time_ms = merged.throttle_time_ms.max(part.throttle_time_ms);
        for broker in part.brokers {
            if !brokers.iter().any(|b: &kafka_protocol::messages::metadata_response::MetadataResponseBroker| {
                b.node_id == broker.node_id
            }) {
                brokers.push(broker);
            }
        }
        topics.extend(part.topics.into_iter().filter(|t| match &t.name {
            Some(name) => routes.cluster(Kind::Topic, name, health) == cluster,
            // Asked for by an id: only the cluster that knows the id answers without an error.
            None => t.error_code == 0,
        }));
        if i == base {
            merged.cluster_id = part.cluster_id;
            merged.controller_id = part.controller_id;
            merged.cluster_authorized_operations = part.cluster_authorized_operations;
            merged.error_code = part.error_code;
        }
    }
    merged.brokers = brokers;
    merged.topics = topics;
    merged
}

/// Why a request cannot be served by one cluster, if it names a group or transaction and topics that routes put
/// in different clusters (offsets live with the group; a transaction's markers with its coordinator).
pub fn cross_cluster(request: &RequestKind, routes: &Routes) -> Option<String> {
    let clash = |what: &str, owner_kind: Kind, owner: &str, topics: &mut dyn Iterator<Item = &str>| {
        let home = routes.primary(owner_kind, owner);
        topics.filter(|t| !t.is_empty()).find(|t| routes.primary(Kind::Topic, t) != home).map(|t| {
            format!(
                "{what} {owner:?} is routed to cluster {home:?} but topic {t:?} is routed to {:?}; one {what} cannot span clusters",
                routes.primary(Kind::Topic, t)
            )
        })
    };
    use RequestKind as K;
    match request {
        K::OffsetCommit(r) => clash("group", Kind::Group, &r.group_id, &mut r.topics.iter().map(|t| t.name.as_str())),
        K::TxnOffsetCommit(r) => {
            clash("group", Kind::Group, &r.group_id, &mut r.topics.iter().map(|t| t.name.as_str())).or_else(|| {
                clash(
                    "transaction",
                    Kind::TransactionalId,
                    &r.transactional_id,
                    &mut r.topics.iter().map(|t| t.name.as_str()),
                )
            })
        }
        K::OffsetFetch(r) => {
            let single = r.topics.iter().flatten().map(|t| t.name.as_str());
            clash("group", Kind::Group, &r.group_id, &mut single.into_iter()).or_else(|| {
                r.groups.iter().find_map(|g| {
                    clash("group", Kind::Group, &g.group_id, &mut g.topics.iter().flatten().map(|t| t.name.as_str()))
                })
            })
        }
        K::AddPartitionsToTxn(r) => clash(
            "transaction",
            Kind::TransactionalId,
            &r.v3_and_below_transactional_id,
            &mut r.v3_and_below_topics.iter().map(|t| t.name.as_str()),
        )
        .or_else(|| {
            r.transactions.iter().find_map(|x| {
                clash(
                    "transaction",
                    Kind::TransactionalId,
                    &x.transactional_id,
                    &mut x.topics.iter().map(|t| t.name.as_str()),
                )
            })
        }),
        K::AddOffsetsToTxn(r) => {
            let txn = routes.primary(Kind::TransactionalId, &r.transactional_id);
            let group = routes.primary(Kind::Group, &r.group_id);
            (txn != group).then(|| {
                format!(
                    "transaction {:?} is routed to cluster {txn:?} but group {:?} to {group:?}; a transaction cannot commit offsets in another cluster",
                    r.transactional_id.as_str(),
                    r.group_id.as_str()
                )
            })
        }
        K::Produce(r) => r.transactional_id.as_ref().and_then(|id| {
            clash("transaction", Kind::TransactionalId, id, &mut r.topic_data.iter().map(|t| t.name.as_str()))
        }),
        _ => None,
    }
}
