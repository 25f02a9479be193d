//! Splitting and merging, per API, against what a broker answers.

use bytes::BytesMut;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kproxy_api::policy::{Acls, Action, Operation as Op, PatternType, ResourceType as Rt};
use uuid::Uuid;

use super::{Decision, Outcome, authorize};
use crate::acl::Authorizer;
use crate::acl::tests::rule;
use crate::code;
use crate::topic_ids::TopicIds;

fn topic(name: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(name))
}

/// Allows Write, Read and Describe on topics starting with `ok`, Read on groups starting with `ok`.
fn acl() -> Authorizer {
    Authorizer::compile(&Acls {
        default_action: Action::Deny,
        rules: vec![
            rule(Rt::Topic, "ok", PatternType::Prefixed, &[Op::Write, Op::Read], Action::Allow),
            rule(Rt::Group, "ok", PatternType::Prefixed, &[Op::Read], Action::Allow),
            rule(Rt::TransactionalId, "ok", PatternType::Prefixed, &[Op::Write], Action::Allow),
        ],
    })
}

fn produce(names: &[&'static str], acks: i16) -> ProduceRequest {
    let topics = names
        .iter()
        .map(|n| {
            produce_request::TopicProduceData::default().with_name(topic(n)).with_partition_data(vec![
                produce_request::PartitionProduceData::default().with_index(0),
                produce_request::PartitionProduceData::default().with_index(1),
            ])
        })
        .collect();
    ProduceRequest::default().with_acks(acks).with_topic_data(topics)
}

fn roundtrip(response: &ResponseKind, api: ApiKey, version: i16) -> ResponseKind {
    let mut buf = BytesMut::new();
    response.encode(&mut buf, version).unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"));
    ResponseKind::decode(api, &mut buf.freeze(), version).unwrap()
}

#[test]
fn mixed_produce_forwards_the_allowed_half_and_merges_in_request_order() {
    let mut request = RequestKind::Produce(produce(&["denied1", "ok.a", "denied2", "ok.b"], -1));
    let Decision { outcome: Outcome::Forward { rewritten: true, merge: Some(merge) }, denied: 4 } =
        authorize(&acl(), &(), 9, &mut request)
    else {
        panic!("expected a split")
    };
    let RequestKind::Produce(forwarded) = &request else { unreachable!() };
    let names: Vec<_> = forwarded.topic_data.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["ok.a", "ok.b"]);
    // The broker answers the forwarded topics.
    let upstream = forwarded
        .topic_data
        .iter()
        .map(|t| {
            produce_response::TopicProduceResponse::default().with_name(t.name.clone()).with_partition_responses(vec![
                produce_response::PartitionProduceResponse::default().with_index(0).with_base_offset(7),
            ])
        })
        .collect();
    let mut response = ResponseKind::Produce(ProduceResponse::default().with_responses(upstream));
    merge.apply_to(&mut response);
    let ResponseKind::Produce(merged) = roundtrip(&response, ApiKey::Produce, 9) else { unreachable!() };
    let summary: Vec<_> =
        merged.responses.iter().map(|t| (t.name.as_str().to_string(), t.partition_responses[0].error_code)).collect();
    assert_eq!(
        summary,
        [
            ("denied1".into(), code::TOPIC_AUTHORIZATION_FAILED),
            ("ok.a".into(), 0),
            ("denied2".into(), code::TOPIC_AUTHORIZATION_FAILED),
            ("ok.b".into(), 0),
        ]
    );
    assert_eq!(merged.responses[0].partition_responses.len(), 2);
}

#[test]
fn fully_denied_produce_is_answered_locally_at_every_version() {
    for version in 3..=13 {
        let mut request = produce(&["no"], -1);
        let id = Uuid::from_u128(7);
        let mut ids = TopicIds::default();
        if version >= 13 {
            request.topic_data[0].name = TopicName::default();
            request.topic_data[0].topic_id = id;
            ids.insert(id, topic("no"));
        }
        let decision = authorize(&acl(), &ids, version, &mut RequestKind::Produce(request));
        let Outcome::Respond(response) = decision.outcome else { panic!("v{version}: {decision:?}") };
        let ResponseKind::Produce(r) = roundtrip(&response, ApiKey::Produce, version) else { unreachable!() };
        assert_eq!(r.responses[0].partition_responses[1].error_code, code::TOPIC_AUTHORIZATION_FAILED);
        if version >= 13 {
            assert_eq!(r.responses[0].topic_id, id);
        }
    }
}

#[test]
fn acks_zero_produce_with_a_denial_closes_and_denied_transactional_id_fails_everything() {
    let decision = authorize(&acl(), &(), 9, &mut RequestKind::Produce(produce(&["ok.a", "no"], 0)));
    assert!(matches!(decision.outcome, Outcome::Close));
    let mut request = produce(&["ok.a"], -1);
    request.transactional_id = Some(TransactionalId(StrBytes::from_static_str("other")));
    let decision = authorize(&acl(), &(), 9, &mut RequestKind::Produce(request));
    let Outcome::Respond(ResponseKind::Produce(r)) = decision.outcome else { panic!() };
    assert_eq!(r.responses[0].partition_responses[0].error_code, code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
}

#[test]
fn fetch_by_topic_id_resolves_names_and_unknown_ids_get_unknown_topic_id() {
    let known = Uuid::from_u128(1);
    let denied = Uuid::from_u128(2);
    let unknown = Uuid::from_u128(3);
    let mut ids = TopicIds::default();
    ids.insert(known, topic("ok.t"));
    ids.insert(denied, topic("secret"));
    let topics = [known, denied, unknown]
        .iter()
        .map(|id| {
            fetch_request::FetchTopic::default()
                .with_topic_id(*id)
                .with_partitions(vec![fetch_request::FetchPartition::default()])
        })
        .collect();
    let mut request = RequestKind::Fetch(FetchRequest::default().with_topics(topics));
    let decision = authorize(&acl(), &ids, 16, &mut request);
    let Outcome::Forward { rewritten: true, merge: Some(merge) } = decision.outcome else { panic!() };
    let mut response = ResponseKind::Fetch(FetchResponse::default().with_responses(vec![
        fetch_response::FetchableTopicResponse::default()
            .with_topic_id(known)
            .with_partitions(vec![fetch_response::PartitionData::default()]),
    ]));
    merge.apply_to(&mut response);
    let ResponseKind::Fetch(r) = roundtrip(&response, ApiKey::Fetch, 16) else { unreachable!() };
    let errors: Vec<_> = r.responses.iter().map(|t| (t.topic_id, t.partitions[0].error_code)).collect();
    assert_eq!(errors, [(known, 0), (denied, code::TOPIC_AUTHORIZATION_FAILED), (unknown, code::UNKNOWN_TOPIC_ID)]);
}

#[test]
fn fully_denied_fetch_encodes_at_every_version() {
    for version in 4..=18 {
        let mut t =
            fetch_request::FetchTopic::default().with_partitions(vec![fetch_request::FetchPartition::default()]);
        let mut ids = TopicIds::default();
        if version >= 13 {
            t.topic_id = Uuid::from_u128(9);
            ids.insert(t.topic_id, topic("no"));
        } else {
            t.topic = topic("no");
        }
        let decision =
            authorize(&acl(), &ids, version, &mut RequestKind::Fetch(FetchRequest::default().with_topics(vec![t])));
        let Outcome::Respond(response) = decision.outcome else { panic!("v{version}") };
        let ResponseKind::Fetch(r) = roundtrip(&response, ApiKey::Fetch, version) else { unreachable!() };
        assert_eq!(r.responses[0].partitions[0].error_code, code::TOPIC_AUTHORIZATION_FAILED);
    }
}

fn metadata_response(names: &[&'static str]) -> ResponseKind {
    let topics =
        names.iter().map(|n| metadata_response::MetadataResponseTopic::default().with_name(Some(topic(n)))).collect();
    ResponseKind::Metadata(MetadataResponse::default().with_topics(topics))
}

#[test]
fn metadata_for_all_topics_hides_what_the_pod_may_not_describe() {
    let mut request = RequestKind::Metadata(MetadataRequest::default().with_topics(None));
    let decision = authorize(&acl(), &(), 12, &mut request);
    let Outcome::Forward { rewritten: false, merge: Some(merge) } = decision.outcome else { panic!() };
    let mut response = metadata_response(&["ok.1", "secret", "ok.2"]);
    merge.apply_to(&mut response);
    let ResponseKind::Metadata(r) = response else { unreachable!() };
    let names: Vec<_> = r.topics.iter().map(|t| t.name.as_ref().unwrap().as_str()).collect();
    assert_eq!(names, ["ok.1", "ok.2"]);
    // Without ACLs nothing is decoded or merged.
    let decision = authorize(&Authorizer::allow_all(), &(), 12, &mut RequestKind::Metadata(Default::default()));
    assert!(matches!(decision.outcome, Outcome::Forward { rewritten: false, merge: None }));
}

#[test]
fn metadata_asked_for_a_denied_topic_returns_the_error_and_refused_auto_create_is_an_authorization_error() {
    for version in 0..=13 {
        let topics = ["secret", "ok.new"]
            .iter()
            .map(|n| metadata_request::MetadataRequestTopic::default().with_name(Some(topic(n))))
            .collect();
        let mut request = RequestKind::Metadata(
            MetadataRequest::default().with_topics(Some(topics)).with_allow_auto_topic_creation(true),
        );
        let decision = authorize(&acl(), &(), version, &mut request);
        let Outcome::Forward { rewritten: true, merge: Some(merge) } = decision.outcome else { panic!("v{version}") };
        let RequestKind::Metadata(forwarded) = &request else { unreachable!() };
        assert_eq!(forwarded.topics.as_ref().unwrap().len(), 1);
        assert_eq!(forwarded.allow_auto_topic_creation, version < 4, "v{version}");
        let mut response = metadata_response(&["ok.new"]);
        if let ResponseKind::Metadata(r) = &mut response {
            r.topics[0].error_code = code::UNKNOWN_TOPIC_OR_PARTITION;
        }
        merge.apply_to(&mut response);
        let ResponseKind::Metadata(r) = roundtrip(&response, ApiKey::Metadata, version) else { unreachable!() };
        assert_eq!(r.topics[0].name.as_ref().unwrap().as_str(), "secret");
        assert_eq!(r.topics[0].error_code, code::TOPIC_AUTHORIZATION_FAILED);
        let expected = if version >= 4 { code::TOPIC_AUTHORIZATION_FAILED } else { code::UNKNOWN_TOPIC_OR_PARTITION };
        assert_eq!(r.topics[1].error_code, expected, "v{version}");
    }
}

#[test]
fn consumer_in_a_denied_group_gets_group_authorization_failed_at_every_version() {
    let g = GroupId(StrBytes::from_static_str("denied-group"));
    for version in 0..=9 {
        let mut request = RequestKind::JoinGroup(JoinGroupRequest::default().with_group_id(g.clone()));
        let decision = authorize(&acl(), &(), version, &mut request);
        assert!(matches!(decision.outcome, Outcome::Deny(code::GROUP_AUTHORIZATION_FAILED)), "v{version}");
    }
    for version in 2..=10 {
        let mut request =
            RequestKind::OffsetCommit(OffsetCommitRequest::default().with_group_id(g.clone()).with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic("ok.t"))
                    .with_partitions(vec![Default::default()]),
            ]));
        let Outcome::Respond(response) = authorize(&acl(), &(), version.min(9), &mut request).outcome else { panic!() };
        let ResponseKind::OffsetCommit(r) = roundtrip(&response, ApiKey::OffsetCommit, version.min(9)) else {
            unreachable!()
        };
        assert_eq!(r.topics[0].partitions[0].error_code, code::GROUP_AUTHORIZATION_FAILED);
    }
}

#[test]
fn offset_fetch_v8_splits_groups_and_topics() {
    let group = |name: &'static str, topics: &[&'static str]| {
        offset_fetch_request::OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(StrBytes::from_static_str(name)))
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(topic(t))
                            .with_partition_indexes(vec![0])
                    })
                    .collect(),
            ))
    };
    // Offsets need Describe on the group: Read implies it.
    let mut request = RequestKind::OffsetFetch(
        OffsetFetchRequest::default().with_groups(vec![group("nope", &["ok.a"]), group("ok.g", &["secret", "ok.a"])]),
    );
    let decision = authorize(&acl(), &(), 9, &mut request);
    assert_eq!(decision.denied, 2);
    let Outcome::Forward { rewritten: true, merge: Some(merge) } = decision.outcome else { panic!() };
    let mut response = ResponseKind::OffsetFetch(OffsetFetchResponse::default().with_groups(vec![
        offset_fetch_response::OffsetFetchResponseGroup::default()
            .with_group_id(GroupId(StrBytes::from_static_str("ok.g")))
            .with_topics(vec![offset_fetch_response::OffsetFetchResponseTopics::default().with_name(topic("ok.a"))]),
    ]));
    merge.apply_to(&mut response);
    let ResponseKind::OffsetFetch(r) = roundtrip(&response, ApiKey::OffsetFetch, 9) else { unreachable!() };
    assert_eq!(r.groups[0].error_code, code::GROUP_AUTHORIZATION_FAILED);
    let topics: Vec<_> = r.groups[1].topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(topics, ["secret", "ok.a"]);
    assert_eq!(r.groups[1].topics[0].partitions[0].error_code, code::TOPIC_AUTHORIZATION_FAILED);
}

#[test]
fn find_coordinator_denies_per_key_from_v4_and_whole_before() {
    let mut request = RequestKind::FindCoordinator(
        FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![StrBytes::from_static_str("nope"), StrBytes::from_static_str("ok.tx")]),
    );
    let decision = authorize(&acl(), &(), 4, &mut request);
    // Write on a transactional id implies Describe: only the other key is denied.
    assert_eq!(decision.denied, 1);
    assert!(matches!(decision.outcome, Outcome::Forward { rewritten: true, .. }));
    let acl = Authorizer::compile(&Acls {
        default_action: Action::Deny,
        rules: vec![rule(Rt::Group, "ok", PatternType::Prefixed, &[Op::Read], Action::Allow)],
    });
    let mut request = RequestKind::FindCoordinator(
        FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![StrBytes::from_static_str("nope"), StrBytes::from_static_str("ok.g")]),
    );
    let Outcome::Forward { merge: Some(merge), .. } = authorize(&acl, &(), 4, &mut request).outcome else { panic!() };
    let mut response = ResponseKind::FindCoordinator(FindCoordinatorResponse::default().with_coordinators(vec![
        find_coordinator_response::Coordinator::default().with_key(StrBytes::from_static_str("ok.g")),
    ]));
    merge.apply_to(&mut response);
    let ResponseKind::FindCoordinator(r) = roundtrip(&response, ApiKey::FindCoordinator, 4) else { unreachable!() };
    assert_eq!(r.coordinators[0].error_code, code::GROUP_AUTHORIZATION_FAILED);
    assert_eq!(r.coordinators[1].key.as_str(), "ok.g");
}

#[test]
fn add_partitions_to_txn_fails_the_whole_transaction_like_the_broker() {
    for version in 0..=5 {
        let topics = vec![
            add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(topic("ok.a"))
                .with_partitions(vec![0]),
            add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(topic("no"))
                .with_partitions(vec![0]),
        ];
        let txn = TransactionalId(StrBytes::from_static_str("ok.tx"));
        let request = if version < 4 {
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(txn)
                .with_v3_and_below_topics(topics)
        } else {
            AddPartitionsToTxnRequest::default().with_transactions(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(txn)
                    .with_topics(topics),
            ])
        };
        let decision = authorize(&acl(), &(), version, &mut RequestKind::AddPartitionsToTxn(request));
        let Outcome::Respond(response) = decision.outcome else { panic!() };
        let ResponseKind::AddPartitionsToTxn(r) = roundtrip(&response, ApiKey::AddPartitionsToTxn, version) else {
            unreachable!()
        };
        let topics = if version < 4 {
            r.results_by_topic_v3_and_below
        } else {
            r.results_by_transaction[0].topic_results.clone()
        };
        assert_eq!(topics[0].results_by_partition[0].partition_error_code, 55, "OPERATION_NOT_ATTEMPTED");
        assert_eq!(topics[1].results_by_partition[0].partition_error_code, code::TOPIC_AUTHORIZATION_FAILED);
    }
}

#[test]
fn idempotent_producer_needs_idempotent_write_or_write_on_some_topic() {
    let mut request = RequestKind::InitProducerId(InitProducerIdRequest::default());
    assert!(matches!(authorize(&acl(), &(), 5, &mut request).outcome, Outcome::Forward { .. }));
    let none = Authorizer::compile(&Acls { default_action: Action::Deny, rules: vec![] });
    let decision = authorize(&none, &(), 5, &mut request);
    assert!(matches!(decision.outcome, Outcome::Deny(code::CLUSTER_AUTHORIZATION_FAILED)), "{decision:?}");
}

#[test]
fn create_and_delete_topics_report_per_topic() {
    let mut request =
        RequestKind::DeleteTopics(DeleteTopicsRequest::default().with_topic_names(vec![topic("a"), topic("b")]));
    let delete_a = Authorizer::compile(&Acls {
        default_action: Action::Deny,
        rules: vec![rule(Rt::Topic, "a", PatternType::Literal, &[Op::Delete], Action::Allow)],
    });
    let Outcome::Forward { merge: Some(merge), .. } = authorize(&delete_a, &(), 5, &mut request).outcome else {
        panic!()
    };
    let mut response = ResponseKind::DeleteTopics(
        DeleteTopicsResponse::default()
            .with_responses(vec![delete_topics_response::DeletableTopicResult::default().with_name(Some(topic("a")))]),
    );
    merge.apply_to(&mut response);
    let ResponseKind::DeleteTopics(r) = roundtrip(&response, ApiKey::DeleteTopics, 5) else { unreachable!() };
    assert_eq!(r.responses[1].error_code, code::TOPIC_AUTHORIZATION_FAILED);
    for version in 2..=7 {
        let mut request = RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_topics(vec![create_topics_request::CreatableTopic::default().with_name(topic("x"))]),
        );
        let Outcome::Respond(response) = authorize(&acl(), &(), version, &mut request).outcome else { panic!() };
        let ResponseKind::CreateTopics(r) = roundtrip(&response, ApiKey::CreateTopics, version) else { unreachable!() };
        assert_eq!(r.topics[0].error_code, code::TOPIC_AUTHORIZATION_FAILED);
    }
}

mod admin;
