//! Refusals of cross-cluster requests: which requests clash, and the reason names the clash. (The answer, with
//! INVALID_REQUEST on every entity and the reason as message, is built and tested in the sidecar's
//! `protocol::errors`.)

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kproxy_api::config::SidecarConfig;

use crate::route::{Routes, cross_cluster};

fn routes() -> Routes {
    Routes::compile(
        &SidecarConfig::parse(
            r#"
clusters:
- {name: east, bootstrapServers: ["127.0.0.1:1"]}
- {name: west, bootstrapServers: ["127.0.0.1:2"]}
defaultCluster: west
routes:
- {match: {topicPrefix: "orders."}, cluster: east, failover: [west]}
- {match: {groupPrefix: "orders-"}, cluster: east, failover: [west]}
"#,
        )
        .unwrap(),
    )
}

fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

/// A consumer's JoinGroup subscribing to `topics`, its subscription at consumer protocol `version`.
fn join(group: &'static str, topics: &[&'static str], version: i16) -> RequestKind {
    let subscription = ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|t| s(t)).collect());
    let mut metadata = BytesMut::new();
    metadata.put_i16(version);
    subscription.encode(&mut metadata, version.min(3)).unwrap();
    let protocol =
        join_group_request::JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(metadata.freeze());
    RequestKind::JoinGroup(
        JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![protocol]),
    )
}

#[test]
fn a_consumer_group_subscribing_to_topics_of_two_clusters_is_refused() {
    let r = routes();
    assert_eq!(cross_cluster(&join("orders-app", &["orders.eu", "orders.us"], 1), &r), None);
    assert_eq!(cross_cluster(&join("app", &["audit", "misc"], 3), &r), None);
    let why = cross_cluster(&join("orders-app", &["orders.eu", "audit"], 3), &r).unwrap();
    assert!(why.contains("\"orders-app\"") && why.contains("\"audit\"") && why.contains("west"), "{why}");
    // A newer subscription version than known is read as the highest known one.
    assert!(cross_cluster(&join("app", &["orders.eu"], 7), &r).is_some());
}

fn commit() -> RequestKind {
    let partition = offset_commit_request::OffsetCommitRequestPartition::default().with_partition_index(3);
    let topic = offset_commit_request::OffsetCommitRequestTopic::default()
        .with_name(TopicName(s("audit")))
        .with_partitions(vec![partition]);
    RequestKind::OffsetCommit(
        OffsetCommitRequest::default().with_group_id(GroupId(s("orders-app"))).with_topics(vec![topic]),
    )
}

fn add_partitions() -> RequestKind {
    use add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
    let topic = AddPartitionsToTxnTopic::default().with_name(TopicName(s("orders.eu"))).with_partitions(vec![0, 1]);
    RequestKind::AddPartitionsToTxn(
        AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
            .with_v3_and_below_topics(vec![topic.clone()])
            .with_transactions(vec![
                AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(TransactionalId(s("tx")))
                    .with_topics(vec![topic]),
            ]),
    )
}

#[test]
fn every_api_that_can_span_clusters_is_refused_with_a_reason() {
    let r = routes();
    let offset_fetch = RequestKind::OffsetFetch(
        OffsetFetchRequest::default()
            .with_group_id(GroupId(s("orders-app")))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("audit")))
                    .with_partition_indexes(vec![0]),
            ]))
            .with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("orders-app")))
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(TopicName(s("audit")))
                            .with_partition_indexes(vec![0]),
                    ])),
            ]),
    );
    let add_offsets = RequestKind::AddOffsetsToTxn(
        AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_group_id(GroupId(s("orders-app"))),
    );
    let requests = [
        (ApiKey::OffsetCommit, commit()),
        (ApiKey::OffsetFetch, offset_fetch),
        (ApiKey::AddPartitionsToTxn, add_partitions()),
        (ApiKey::AddOffsetsToTxn, add_offsets),
        (ApiKey::JoinGroup, join("orders-app", &["audit"], 1)),
    ];
    for (api, request) in requests {
        let why = cross_cluster(&request, &r).unwrap_or_else(|| panic!("{api:?} should clash"));
        assert!(why.contains("east") && why.contains("west"), "{api:?}: {why}");
    }
}

#[test]
fn a_transactional_produce_to_another_cluster_is_refused_naming_the_topic() {
    use produce_request::{PartitionProduceData, TopicProduceData};
    let request = RequestKind::Produce(
        ProduceRequest::default().with_transactional_id(Some(TransactionalId(s("tx")))).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(s("orders.eu")))
                .with_partition_data(vec![PartitionProduceData::default().with_index(2)]),
        ]),
    );
    let why = cross_cluster(&request, &routes()).unwrap();
    assert!(why.contains("orders.eu"), "{why}");
}

#[test]
fn a_kip_848_member_subscribing_to_topics_of_another_cluster_is_refused() {
    let r = routes();
    let heartbeat = |group: &'static str, topics: Option<Vec<&'static str>>| {
        RequestKind::ConsumerGroupHeartbeat(
            ConsumerGroupHeartbeatRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_subscribed_topic_names(topics.map(|t| t.into_iter().map(|n| TopicName(s(n))).collect())),
        )
    };
    assert_eq!(cross_cluster(&heartbeat("orders-app", Some(vec!["orders.eu"])), &r), None);
    assert_eq!(cross_cluster(&heartbeat("orders-app", None), &r), None, "an unchanged subscription is not sent");
    let why = cross_cluster(&heartbeat("orders-app", Some(vec!["orders.eu", "audit"])), &r).unwrap();
    assert!(why.contains("\"orders-app\"") && why.contains("\"audit\""), "{why}");
}
