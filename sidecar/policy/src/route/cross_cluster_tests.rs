//! Refusals of cross-cluster requests: the reason names the clash, and the answer encodes at every version.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kproxy_api::config::SidecarConfig;

use super::refuse;
use crate::code::INVALID_REQUEST;
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
fn refusals_carry_invalid_request_and_encode_at_every_version() {
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
        let range = api.valid_versions();
        for version in range.min..=range.max {
            let response = refuse(&request, version, &why).unwrap();
            let mut buf = BytesMut::new();
            response.encode(&mut buf, version).unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"));
            let decoded = ResponseKind::decode(api, &mut buf.freeze(), version).unwrap();
            assert!(format!("{decoded:?}").contains(&INVALID_REQUEST.to_string()), "{api:?} v{version}: {decoded:?}");
            let codes = error_codes(&decoded);
            assert!(!codes.is_empty() && codes.iter().all(|&c| c == INVALID_REQUEST), "{api:?} v{version}: {codes:?}");
        }
    }
}

#[test]
fn a_transactional_produce_to_another_cluster_carries_the_reason_where_the_version_has_a_message() {
    use produce_request::{PartitionProduceData, TopicProduceData};
    let request = RequestKind::Produce(
        ProduceRequest::default().with_transactional_id(Some(TransactionalId(s("tx")))).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(s("orders.eu")))
                .with_partition_data(vec![PartitionProduceData::default().with_index(2)]),
        ]),
    );
    let why = cross_cluster(&request, &routes()).unwrap();
    for version in ApiKey::Produce.valid_versions().min..=ApiKey::Produce.valid_versions().max {
        let response = refuse(&request, version, &why).unwrap();
        let mut buf = BytesMut::new();
        response.encode(&mut buf, version).unwrap();
        let Ok(ResponseKind::Produce(r)) = ResponseKind::decode(ApiKey::Produce, &mut buf.freeze(), version) else {
            panic!("v{version}")
        };
        let p = &r.responses[0].partition_responses[0];
        assert_eq!((p.index, p.error_code), (2, INVALID_REQUEST));
        if version >= 8 {
            assert!(p.error_message.as_ref().is_some_and(|m| m.contains("orders.eu")), "v{version}");
        }
    }
}

/// Every error code in a refusal's answer, top-level and per entity.
fn error_codes(response: &ResponseKind) -> Vec<i16> {
    match response {
        ResponseKind::OffsetCommit(r) => {
            r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect()
        }
        ResponseKind::OffsetFetch(r) => {
            let mut codes: Vec<i16> = r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect();
            codes.extend(r.groups.iter().map(|g| g.error_code));
            codes.extend((r.error_code != 0).then_some(r.error_code));
            codes
        }
        ResponseKind::AddPartitionsToTxn(r) => {
            let topics = r
                .results_by_topic_v3_and_below
                .iter()
                .chain(r.results_by_transaction.iter().flat_map(|x| &x.topic_results));
            topics.flat_map(|t| t.results_by_partition.iter().map(|p| p.partition_error_code)).collect()
        }
        ResponseKind::AddOffsetsToTxn(r) => vec![r.error_code],
        ResponseKind::JoinGroup(r) => vec![r.error_code],
        _ => Vec::new(),
    }
}
