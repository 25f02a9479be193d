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
        for mut topic in part.topics {
            let keep = match &topic.name {
                Some(name) => routes.cluster(Kind::Topic, name, health) == cluster,
                // Asked for by an id: only the cluster that knows the id answers without an error.
                None => topic.error_code == 0,
            };
            if !keep {
                continue;
            }
            // Leader epochs of two clusters are unrelated: a client that saw a higher epoch in the primary
            // would ignore the fallback's leader. "Unknown" (-1) is always accepted.
            if topic.name.as_ref().is_some_and(|n| routes.primary(Kind::Topic, n) != cluster) {
                for p in &mut topic.partitions {
                    p.leader_epoch = -1;
                }
            }
            topics.push(topic);
        }
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
        K::JoinGroup(r) if r.protocol_type.as_str() == "consumer" => {
            let topics: Vec<String> = r.protocols.iter().flat_map(|p| subscribed(&p.metadata)).collect();
            clash("group", Kind::Group, &r.group_id, &mut topics.iter().map(String::as_str))
        }
        // KIP-848: the member's subscription travels in its heartbeat (when it changed); the group's offsets and
        // assignment live in the group's cluster, so its topics must too.
        K::ConsumerGroupHeartbeat(r) => {
            clash("group", Kind::Group, &r.group_id, &mut r.subscribed_topic_names.iter().flatten().map(|t| t.as_str()))
        }
        K::Produce(r) => r.transactional_id.as_ref().and_then(|id| {
            clash("transaction", Kind::TransactionalId, id, &mut r.topic_data.iter().map(|t| t.name.as_str()))
        }),
        _ => None,
    }
}

/// The topics a consumer's JoinGroup subscribes to (the consumer protocol's subscription, read at the highest
/// version known when the client speaks a newer one, as brokers do); none when it cannot be read.
fn subscribed(metadata: &bytes::Bytes) -> Vec<String> {
    use bytes::Buf;
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let mut buf = metadata.clone();
    if buf.remaining() < 2 {
        return Vec::new();
    }
    let version = buf.get_i16().clamp(0, 3);
    ConsumerProtocolSubscription::decode(&mut buf, version)
        .map(|s| s.topics.iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}

/// Kafka's NOT_LEADER_OR_FOLLOWER: the client refreshes its metadata and retries, which is how it follows a route
/// that moved to another cluster.
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;

/// When a Produce or Fetch names a topic whose route now uses another cluster than the one this connection
/// reaches, the answer that sends the client back to Metadata: every partition NOT_LEADER_OR_FOLLOWER.
pub fn steer(
    request: &RequestKind,
    elsewhere: impl Fn(&str) -> bool,
) -> Option<kafka_protocol::messages::ResponseKind> {
    use kafka_protocol::messages::{FetchResponse, ProduceResponse, ResponseKind, fetch_response, produce_response};
    match request {
        RequestKind::Produce(r) if r.topic_data.iter().any(|t| elsewhere(&t.name)) => {
            let responses = r
                .topic_data
                .iter()
                .map(|t| {
                    let partitions = t
                        .partition_data
                        .iter()
                        .map(|p| {
                            produce_response::PartitionProduceResponse::default()
                                .with_index(p.index)
                                .with_error_code(NOT_LEADER_OR_FOLLOWER)
                                .with_base_offset(-1)
                        })
                        .collect();
                    produce_response::TopicProduceResponse::default()
                        .with_name(t.name.clone())
                        .with_topic_id(t.topic_id)
                        .with_partition_responses(partitions)
                })
                .collect();
            Some(ResponseKind::Produce(ProduceResponse::default().with_responses(responses)))
        }
        RequestKind::Fetch(r) if r.topics.iter().any(|t| elsewhere(&t.topic)) => {
            let responses = r
                .topics
                .iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            fetch_response::PartitionData::default()
                                .with_partition_index(p.partition)
                                .with_error_code(NOT_LEADER_OR_FOLLOWER)
                                .with_high_watermark(-1)
                        })
                        .collect();
                    fetch_response::FetchableTopicResponse::default()
                        .with_topic(t.topic.clone())
                        .with_topic_id(t.topic_id)
                        .with_partitions(partitions)
                })
                .collect();
            Some(ResponseKind::Fetch(FetchResponse::default().with_responses(responses)))
        }
        _ => None,
    }
}
