//! Splitting and merging of the admin, transaction-admin and KIP-848 group APIs, per API and version.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kproxy_api::policy::{Acls, Action, Operation as Op, PatternType, ResourceType as Rt};

use super::{acl, roundtrip, topic};
use crate::acl::Authorizer;
use crate::acl::tests::rule;
use crate::code;
use crate::enforce::{Outcome, authorize};

/// Allows Alter/AlterConfigs/Describe on `ok` topics and groups, Read on `ok` topics, Describe on `ok`
/// transactional ids; nothing on the cluster.
fn admin_acl() -> Authorizer {
    Authorizer::compile(&Acls {
        default_action: Action::Deny,
        rules: vec![
            rule(Rt::Topic, "ok", PatternType::Prefixed, &[Op::Alter, Op::AlterConfigs, Op::Read], Action::Allow),
            rule(Rt::Group, "ok", PatternType::Prefixed, &[Op::Read, Op::AlterConfigs], Action::Allow),
            rule(Rt::TransactionalId, "ok", PatternType::Prefixed, &[Op::Describe], Action::Allow),
        ],
    })
}

#[test]
fn cluster_wide_admin_apis_need_their_cluster_operation_at_every_version() {
    let cases: [(RequestKind, Op); 15] = [
        (RequestKind::DescribeAcls(Default::default()), Op::Describe),
        (RequestKind::CreateAcls(Default::default()), Op::Alter),
        (RequestKind::DeleteAcls(Default::default()), Op::Alter),
        (RequestKind::DescribeLogDirs(Default::default()), Op::Describe),
        (RequestKind::AlterReplicaLogDirs(Default::default()), Op::Alter),
        (RequestKind::ElectLeaders(Default::default()), Op::Alter),
        (RequestKind::AlterPartitionReassignments(Default::default()), Op::Alter),
        (RequestKind::ListPartitionReassignments(Default::default()), Op::Describe),
        (RequestKind::DescribeClientQuotas(Default::default()), Op::DescribeConfigs),
        (RequestKind::AlterClientQuotas(Default::default()), Op::AlterConfigs),
        (RequestKind::DescribeUserScramCredentials(Default::default()), Op::Describe),
        (RequestKind::AlterUserScramCredentials(Default::default()), Op::Alter),
        (RequestKind::UpdateFeatures(Default::default()), Op::Alter),
        (RequestKind::ListConfigResources(Default::default()), Op::DescribeConfigs),
        (RequestKind::DescribeQuorum(Default::default()), Op::Describe),
    ];
    for (request, op) in cases {
        let allowed = Authorizer::compile(&Acls {
            default_action: Action::Deny,
            rules: vec![rule(Rt::Cluster, "kafka-cluster", PatternType::Literal, &[op], Action::Allow)],
        });
        let decision = authorize(&allowed, &(), 0, &mut request.clone());
        assert!(matches!(decision.outcome, Outcome::Forward { rewritten: false, merge: None }), "{request:?}");
        // Topic rights do not stand in for the cluster's.
        let decision = authorize(&admin_acl(), &(), 0, &mut request.clone());
        assert!(matches!(decision.outcome, Outcome::Deny(code::CLUSTER_AUTHORIZATION_FAILED)), "{request:?}");
        assert_eq!(decision.denied, 1);
    }
}

#[test]
fn alter_configs_are_decided_per_resource_with_kafkas_codes_at_every_version() {
    let resources = [(2i8, "ok.t"), (2, "secret"), (32, "ok.g"), (32, "other"), (4, "1"), (16, "m"), (99, "x")];
    let expected = [0, code::TOPIC_AUTHORIZATION_FAILED, 0, code::GROUP_AUTHORIZATION_FAILED]
        .into_iter()
        .chain([code::CLUSTER_AUTHORIZATION_FAILED, code::CLUSTER_AUTHORIZATION_FAILED, code::INVALID_REQUEST])
        .collect::<Vec<_>>();
    let name = |n: &'static str| StrBytes::from_static_str(n);
    for version in 0..=2 {
        let request = AlterConfigsRequest::default().with_resources(
            resources
                .iter()
                .map(|&(k, n)| {
                    alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(k)
                        .with_resource_name(name(n))
                })
                .collect(),
        );
        let mut request = RequestKind::AlterConfigs(request);
        let decision = authorize(&admin_acl(), &(), version, &mut request);
        assert_eq!(decision.denied, 5);
        let Outcome::Forward { rewritten: true, merge: Some(merge) } = decision.outcome else { panic!() };
        let RequestKind::AlterConfigs(forwarded) = &request else { unreachable!() };
        let upstream = forwarded
            .resources
            .iter()
            .map(|r| {
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone())
            })
            .collect();
        let mut response = ResponseKind::AlterConfigs(AlterConfigsResponse::default().with_responses(upstream));
        merge.apply_to(&mut response);
        let ResponseKind::AlterConfigs(r) = roundtrip(&response, ApiKey::AlterConfigs, version) else { unreachable!() };
        let codes: Vec<_> = r.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, expected, "v{version}");
    }
    for version in 0..=1 {
        let request = IncrementalAlterConfigsRequest::default().with_resources(
            resources
                .iter()
                .map(|&(k, n)| {
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(k)
                        .with_resource_name(name(n))
                })
                .collect(),
        );
        let mut request = RequestKind::IncrementalAlterConfigs(request);
        let Outcome::Forward { merge: Some(merge), .. } = authorize(&admin_acl(), &(), version, &mut request).outcome
        else {
            panic!()
        };
        let RequestKind::IncrementalAlterConfigs(forwarded) = &request else { unreachable!() };
        assert_eq!(forwarded.resources.len(), 2);
        let mut response = ResponseKind::IncrementalAlterConfigs(IncrementalAlterConfigsResponse::default());
        merge.apply_to(&mut response);
        let ResponseKind::IncrementalAlterConfigs(r) = roundtrip(&response, ApiKey::IncrementalAlterConfigs, version)
        else {
            unreachable!()
        };
        assert_eq!(r.responses.len(), 5);
        assert!(r.responses.iter().all(|r| r.error_code != 0));
    }
}

#[test]
fn create_partitions_and_describe_producers_are_decided_per_topic_at_every_version() {
    for version in 0..=3 {
        let topics = ["secret", "ok.a"]
            .map(|n| create_partitions_request::CreatePartitionsTopic::default().with_name(topic(n)).with_count(3));
        let mut request =
            RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(topics.to_vec()));
        let Outcome::Forward { rewritten: true, merge: Some(merge) } =
            authorize(&admin_acl(), &(), version, &mut request).outcome
        else {
            panic!()
        };
        let mut response = ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(vec![
            create_partitions_response::CreatePartitionsTopicResult::default().with_name(topic("ok.a")),
        ]));
        merge.apply_to(&mut response);
        let ResponseKind::CreatePartitions(r) = roundtrip(&response, ApiKey::CreatePartitions, version) else {
            unreachable!()
        };
        let got: Vec<_> = r.results.iter().map(|t| (t.name.as_str(), t.error_code)).collect();
        assert_eq!(got, [("secret", code::TOPIC_AUTHORIZATION_FAILED), ("ok.a", 0)], "v{version}");
        assert!(r.results[0].error_message.is_some());
    }
    // Alter on a topic is not implied by Write or Read.
    let mut request = RequestKind::CreatePartitions(
        CreatePartitionsRequest::default()
            .with_topics(vec![create_partitions_request::CreatePartitionsTopic::default().with_name(topic("ok.a"))]),
    );
    assert!(matches!(authorize(&acl(), &(), 3, &mut request).outcome, Outcome::Respond(_)));
    let mut request = RequestKind::DescribeProducers(DescribeProducersRequest::default().with_topics(vec![
            describe_producers_request::TopicRequest::default()
                .with_name(topic("secret"))
                .with_partition_indexes(vec![0, 1]),
        ]));
    let decision = authorize(&admin_acl(), &(), 0, &mut request);
    assert_eq!(decision.denied, 2);
    let Outcome::Respond(response) = decision.outcome else { panic!() };
    let ResponseKind::DescribeProducers(r) = roundtrip(&response, ApiKey::DescribeProducers, 0) else { unreachable!() };
    let codes: Vec<_> = r.topics[0].partitions.iter().map(|p| (p.partition_index, p.error_code)).collect();
    assert_eq!(codes, [(0, code::TOPIC_AUTHORIZATION_FAILED), (1, code::TOPIC_AUTHORIZATION_FAILED)]);
}

#[test]
fn transactions_are_described_and_listed_only_as_far_as_the_pod_may_describe_them() {
    let id = |n: &'static str| TransactionalId(StrBytes::from_static_str(n));
    let mut request = RequestKind::DescribeTransactions(
        DescribeTransactionsRequest::default().with_transactional_ids(vec![id("other"), id("ok.tx")]),
    );
    let decision = authorize(&admin_acl(), &(), 0, &mut request);
    assert_eq!(decision.denied, 1);
    let Outcome::Forward { rewritten: true, merge: Some(merge) } = decision.outcome else { panic!() };
    let state =
        describe_transactions_response::TransactionState::default().with_transactional_id(id("ok.tx")).with_topics(
            ["ok.a", "secret"]
                .map(|t| {
                    describe_transactions_response::TopicData::default().with_topic(topic(t)).with_partitions(vec![0])
                })
                .to_vec(),
        );
    let mut response = ResponseKind::DescribeTransactions(
        DescribeTransactionsResponse::default().with_transaction_states(vec![state]),
    );
    merge.apply_to(&mut response);
    let ResponseKind::DescribeTransactions(r) = roundtrip(&response, ApiKey::DescribeTransactions, 0) else {
        unreachable!()
    };
    assert_eq!(r.transaction_states[0].error_code, code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    let topics: Vec<_> = r.transaction_states[1].topics.iter().map(|t| t.topic.as_str()).collect();
    assert_eq!(topics, ["ok.a"], "topics the pod may not Describe are left out");
    for version in 0..=2 {
        let mut request = RequestKind::ListTransactions(Default::default());
        let Outcome::Forward { rewritten: false, merge: Some(merge) } =
            authorize(&admin_acl(), &(), version, &mut request).outcome
        else {
            panic!()
        };
        let states = ["ok.1", "other", "ok.2"]
            .map(|n| list_transactions_response::TransactionState::default().with_transactional_id(id(n)));
        let mut response = ResponseKind::ListTransactions(
            ListTransactionsResponse::default().with_transaction_states(states.to_vec()),
        );
        merge.apply_to(&mut response);
        let ResponseKind::ListTransactions(r) = roundtrip(&response, ApiKey::ListTransactions, version) else {
            unreachable!()
        };
        let ids: Vec<_> = r.transaction_states.iter().map(|t| t.transactional_id.as_str()).collect();
        assert_eq!(ids, ["ok.1", "ok.2"], "v{version}");
    }
}

#[test]
fn consumer_group_heartbeat_needs_group_read_and_describe_on_every_subscribed_topic() {
    let group = |n: &'static str| GroupId(StrBytes::from_static_str(n));
    for version in 0..=1 {
        let heartbeat = |g: &'static str, topics: Option<Vec<TopicName>>| {
            RequestKind::ConsumerGroupHeartbeat(
                ConsumerGroupHeartbeatRequest::default().with_group_id(group(g)).with_subscribed_topic_names(topics),
            )
        };
        let decide = |mut r: RequestKind| authorize(&acl(), &(), version, &mut r).outcome;
        assert!(matches!(decide(heartbeat("ok.g", Some(vec![topic("ok.a")]))), Outcome::Forward { merge: None, .. }));
        // An unchanged subscription is not repeated: nothing to check but the group.
        assert!(matches!(decide(heartbeat("ok.g", None)), Outcome::Forward { merge: None, .. }));
        assert!(matches!(
            decide(heartbeat("other", Some(vec![topic("ok.a")]))),
            Outcome::Deny(code::GROUP_AUTHORIZATION_FAILED)
        ));
        assert!(matches!(
            decide(heartbeat("ok.g", Some(vec![topic("ok.a"), topic("secret")]))),
            Outcome::Deny(code::TOPIC_AUTHORIZATION_FAILED)
        ));
    }
}

#[test]
fn consumer_group_describe_denies_per_group_and_hides_groups_using_topics_the_pod_may_not_see() {
    use consumer_group_describe_response::{Assignment, DescribedGroup, Member, TopicPartitions};
    let group = |n: &'static str| GroupId(StrBytes::from_static_str(n));
    let acl = Authorizer::compile(&Acls {
        default_action: Action::Deny,
        rules: vec![
            rule(Rt::Group, "ok", PatternType::Prefixed, &[Op::Describe], Action::Allow),
            rule(Rt::Topic, "ok", PatternType::Prefixed, &[Op::Describe], Action::Allow),
        ],
    });
    for version in 0..=1 {
        let mut request =
            RequestKind::ConsumerGroupDescribe(ConsumerGroupDescribeRequest::default().with_group_ids(vec![
                group("other"),
                group("ok.a"),
                group("ok.b"),
            ]));
        let decision = authorize(&acl, &(), version, &mut request);
        assert_eq!(decision.denied, 1);
        let Outcome::Forward { rewritten: true, merge: Some(merge) } = decision.outcome else { panic!() };
        let member = |t: &'static str| {
            Member::default().with_assignment(Assignment::default().with_topic_partitions(vec![
                TopicPartitions::default().with_topic_name(topic(t)).with_partitions(vec![0]),
            ]))
        };
        let mut response =
            ResponseKind::ConsumerGroupDescribe(ConsumerGroupDescribeResponse::default().with_groups(vec![
                DescribedGroup::default().with_group_id(group("ok.a")).with_members(vec![member("ok.t")]),
                DescribedGroup::default().with_group_id(group("ok.b")).with_members(vec![member("secret")]),
            ]));
        merge.apply_to(&mut response);
        let ResponseKind::ConsumerGroupDescribe(r) = roundtrip(&response, ApiKey::ConsumerGroupDescribe, version)
        else {
            unreachable!()
        };
        let got: Vec<_> = r.groups.iter().map(|g| (g.group_id.as_str(), g.error_code, g.members.len())).collect();
        assert_eq!(
            got,
            [
                ("other", code::GROUP_AUTHORIZATION_FAILED, 0),
                ("ok.a", 0, 1),
                ("ok.b", code::TOPIC_AUTHORIZATION_FAILED, 0)
            ],
            "v{version}"
        );
    }
}

#[test]
fn describe_topic_partitions_denies_named_topics_and_filters_all_topics() {
    use describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic as T;
    let request = |names: &[&'static str]| {
        RequestKind::DescribeTopicPartitions(
            DescribeTopicPartitionsRequest::default().with_topics(
                names
                    .iter()
                    .map(|n| describe_topic_partitions_request::TopicRequest::default().with_name(topic(n)))
                    .collect(),
            ),
        )
    };
    let mut named = request(&["secret", "ok.a"]);
    let Outcome::Forward { rewritten: true, merge: Some(merge) } = authorize(&acl(), &(), 0, &mut named).outcome else {
        panic!()
    };
    let mut response = ResponseKind::DescribeTopicPartitions(
        DescribeTopicPartitionsResponse::default().with_topics(vec![T::default().with_name(Some(topic("ok.a")))]),
    );
    merge.apply_to(&mut response);
    let ResponseKind::DescribeTopicPartitions(r) = roundtrip(&response, ApiKey::DescribeTopicPartitions, 0) else {
        unreachable!()
    };
    let got: Vec<_> = r.topics.iter().map(|t| (t.name.as_ref().unwrap().as_str(), t.error_code)).collect();
    assert_eq!(got, [("secret", code::TOPIC_AUTHORIZATION_FAILED), ("ok.a", 0)]);
    // Every named topic denied: answered without the broker (an empty list would mean all topics).
    assert!(matches!(authorize(&acl(), &(), 0, &mut request(&["secret"])).outcome, Outcome::Respond(_)));
    let mut all = request(&[]);
    let Outcome::Forward { rewritten: false, merge: Some(merge) } = authorize(&acl(), &(), 0, &mut all).outcome else {
        panic!()
    };
    let mut response = ResponseKind::DescribeTopicPartitions(
        DescribeTopicPartitionsResponse::default()
            .with_topics(["ok.a", "secret", "ok.b"].map(|n| T::default().with_name(Some(topic(n)))).to_vec()),
    );
    merge.apply_to(&mut response);
    let ResponseKind::DescribeTopicPartitions(r) = response else { unreachable!() };
    let names: Vec<_> = r.topics.iter().map(|t| t.name.as_ref().unwrap().as_str()).collect();
    assert_eq!(names, ["ok.a", "ok.b"]);
}
