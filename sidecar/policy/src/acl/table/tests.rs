//! One test per row of the ACL table: the checks it lists are exactly what the engine needs to forward a request,
//! and without them the request is not forwarded as is.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kproxy_api::policy::{Acls, Action, Operation, PatternType, ResourceType};

use super::{On, Support, authorizable, needs_body, row};
use crate::acl::Authorizer;
use crate::acl::tests::rule;
use crate::enforce::{Outcome, authorize};

fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

/// A typical request for the API naming topic `t`, group `g` and transactional id `x`, at its newest version that
/// names topics by name; `None` for APIs the engine does not inspect.
fn sample(api: ApiKey) -> Option<(RequestKind, i16)> {
    use RequestKind as K;
    let t = || TopicName(s("t"));
    let g = || GroupId(s("g"));
    let x = || TransactionalId(s("x"));
    Some(match api {
        ApiKey::Produce => (
            K::Produce(ProduceRequest::default().with_acks(-1).with_transactional_id(Some(x())).with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(t())
                    .with_partition_data(vec![produce_request::PartitionProduceData::default()]),
            ])),
            12,
        ),
        ApiKey::Fetch => (
            K::Fetch(FetchRequest::default().with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(t())
                    .with_partitions(vec![fetch_request::FetchPartition::default()]),
            ])),
            12,
        ),
        ApiKey::ListOffsets => (
            K::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(t())
                    .with_partitions(vec![Default::default()]),
            ])),
            9,
        ),
        ApiKey::OffsetForLeaderEpoch => (
            K::OffsetForLeaderEpoch(OffsetForLeaderEpochRequest::default().with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(t())
                    .with_partitions(vec![Default::default()]),
            ])),
            4,
        ),
        ApiKey::Metadata => (
            K::Metadata(
                MetadataRequest::default()
                    .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(t()))])),
            ),
            12,
        ),
        ApiKey::OffsetCommit => (
            K::OffsetCommit(OffsetCommitRequest::default().with_group_id(g()).with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(t())
                    .with_partitions(vec![Default::default()]),
            ])),
            9,
        ),
        ApiKey::OffsetFetch => (
            K::OffsetFetch(OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(g()).with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopics::default()
                        .with_name(t())
                        .with_partition_indexes(vec![0]),
                ])),
            ])),
            9,
        ),
        ApiKey::FindCoordinator => (
            K::FindCoordinator(FindCoordinatorRequest::default().with_key_type(0).with_coordinator_keys(vec![s("g")])),
            6,
        ),
        ApiKey::JoinGroup => (K::JoinGroup(JoinGroupRequest::default().with_group_id(g())), 9),
        ApiKey::SyncGroup => (K::SyncGroup(SyncGroupRequest::default().with_group_id(g())), 5),
        ApiKey::Heartbeat => (K::Heartbeat(HeartbeatRequest::default().with_group_id(g())), 4),
        ApiKey::LeaveGroup => (K::LeaveGroup(LeaveGroupRequest::default().with_group_id(g())), 5),
        ApiKey::DescribeGroups => (K::DescribeGroups(DescribeGroupsRequest::default().with_groups(vec![g()])), 5),
        ApiKey::ListGroups => (K::ListGroups(ListGroupsRequest::default()), 5),
        ApiKey::CreateTopics => (
            K::CreateTopics(
                CreateTopicsRequest::default()
                    .with_topics(vec![create_topics_request::CreatableTopic::default().with_name(t())]),
            ),
            7,
        ),
        ApiKey::DeleteTopics => (K::DeleteTopics(DeleteTopicsRequest::default().with_topic_names(vec![t()])), 5),
        ApiKey::DeleteRecords => (
            K::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(t())
                    .with_partitions(vec![Default::default()]),
            ])),
            2,
        ),
        ApiKey::InitProducerId => {
            (K::InitProducerId(InitProducerIdRequest::default().with_transactional_id(Some(x()))), 5)
        }
        ApiKey::AddPartitionsToTxn => (
            K::AddPartitionsToTxn(AddPartitionsToTxnRequest::default().with_transactions(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                    .with_transactional_id(x())
                    .with_topics(vec![
                        add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                            .with_name(t())
                            .with_partitions(vec![0]),
                    ]),
            ])),
            5,
        ),
        ApiKey::AddOffsetsToTxn => {
            (K::AddOffsetsToTxn(AddOffsetsToTxnRequest::default().with_transactional_id(x()).with_group_id(g())), 4)
        }
        ApiKey::EndTxn => (K::EndTxn(EndTxnRequest::default().with_transactional_id(x())), 4),
        ApiKey::TxnOffsetCommit => (
            K::TxnOffsetCommit(
                TxnOffsetCommitRequest::default().with_transactional_id(x()).with_group_id(g()).with_topics(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                        .with_name(t())
                        .with_partitions(vec![Default::default()]),
                ]),
            ),
            4,
        ),
        ApiKey::DescribeConfigs => (
            K::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("t")),
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(s("1")),
            ])),
            4,
        ),
        ApiKey::OffsetDelete => (
            K::OffsetDelete(OffsetDeleteRequest::default().with_group_id(g()).with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(t())
                    .with_partitions(vec![Default::default()]),
            ])),
            0,
        ),
        ApiKey::DeleteGroups => (K::DeleteGroups(DeleteGroupsRequest::default().with_groups_names(vec![g()])), 2),
        ApiKey::DescribeCluster => (K::DescribeCluster(DescribeClusterRequest::default()), 1),
        ApiKey::DescribeQuorum => (K::DescribeQuorum(Default::default()), 2),
        ApiKey::ApiVersions => (K::ApiVersions(ApiVersionsRequest::default()), 3),
        ApiKey::GetTelemetrySubscriptions => (K::GetTelemetrySubscriptions(Default::default()), 0),
        ApiKey::PushTelemetry => (K::PushTelemetry(Default::default()), 0),
        ApiKey::CreateAcls => (K::CreateAcls(CreateAclsRequest::default().with_creations(vec![Default::default()])), 3),
        ApiKey::DeleteAcls => (K::DeleteAcls(DeleteAclsRequest::default().with_filters(vec![Default::default()])), 3),
        ApiKey::DescribeAcls => (K::DescribeAcls(Default::default()), 3),
        ApiKey::DescribeLogDirs => (K::DescribeLogDirs(Default::default()), 4),
        ApiKey::ListPartitionReassignments => (K::ListPartitionReassignments(Default::default()), 0),
        ApiKey::DescribeUserScramCredentials => (K::DescribeUserScramCredentials(Default::default()), 0),
        ApiKey::AlterReplicaLogDirs => (K::AlterReplicaLogDirs(Default::default()), 2),
        ApiKey::ElectLeaders => (K::ElectLeaders(Default::default()), 2),
        ApiKey::AlterPartitionReassignments => (K::AlterPartitionReassignments(Default::default()), 1),
        ApiKey::AlterUserScramCredentials => (K::AlterUserScramCredentials(Default::default()), 0),
        ApiKey::UpdateFeatures => (K::UpdateFeatures(Default::default()), 2),
        ApiKey::DescribeClientQuotas => (K::DescribeClientQuotas(Default::default()), 1),
        ApiKey::ListConfigResources => (K::ListConfigResources(Default::default()), 1),
        ApiKey::AlterClientQuotas => (K::AlterClientQuotas(Default::default()), 1),
        ApiKey::CreatePartitions => (
            K::CreatePartitions(
                CreatePartitionsRequest::default()
                    .with_topics(vec![create_partitions_request::CreatePartitionsTopic::default().with_name(t())]),
            ),
            3,
        ),
        ApiKey::AlterConfigs | ApiKey::IncrementalAlterConfigs => {
            let resources = [(2, "t"), (32, "g"), (4, "1"), (16, "metrics")];
            if api == ApiKey::AlterConfigs {
                let r = resources.map(|(kind, name)| {
                    alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(kind)
                        .with_resource_name(s(name))
                });
                (K::AlterConfigs(AlterConfigsRequest::default().with_resources(r.to_vec())), 2)
            } else {
                let r = resources.map(|(kind, name)| {
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(kind)
                        .with_resource_name(s(name))
                });
                (K::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default().with_resources(r.to_vec())), 1)
            }
        }
        ApiKey::DescribeProducers => (
            K::DescribeProducers(DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default().with_name(t()).with_partition_indexes(vec![0]),
            ])),
            0,
        ),
        ApiKey::DescribeTransactions => {
            (K::DescribeTransactions(DescribeTransactionsRequest::default().with_transactional_ids(vec![x()])), 0)
        }
        ApiKey::ListTransactions => (K::ListTransactions(Default::default()), 2),
        ApiKey::ConsumerGroupHeartbeat => (
            K::ConsumerGroupHeartbeat(
                ConsumerGroupHeartbeatRequest::default()
                    .with_group_id(g())
                    .with_subscribed_topic_names(Some(vec![t()])),
            ),
            1,
        ),
        ApiKey::ConsumerGroupDescribe => {
            (K::ConsumerGroupDescribe(ConsumerGroupDescribeRequest::default().with_group_ids(vec![g()])), 1)
        }
        ApiKey::DescribeTopicPartitions => (
            K::DescribeTopicPartitions(
                DescribeTopicPartitionsRequest::default()
                    .with_topics(vec![describe_topic_partitions_request::TopicRequest::default().with_name(t())]),
            ),
            0,
        ),
        ApiKey::SaslHandshake => (K::SaslHandshake(Default::default()), 1),
        ApiKey::Vote => (K::Vote(Default::default()), 1),
        _ => return None,
    })
}

fn unchanged(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Forward { rewritten: false, merge: None })
}

/// APIs whose answers are filtered by the ACLs: forwarded unchanged, with a merge that trims the answer.
fn filtered_on_return(api: ApiKey) -> bool {
    matches!(api, ApiKey::ListTransactions | ApiKey::DescribeTransactions | ApiKey::ConsumerGroupDescribe)
}

/// Rules allowing, on every name, the checks a row lists; with `alternative`, each check's `or` is used instead.
fn grant(checks: &[super::Check], alternative: bool) -> Authorizer {
    let rules = checks
        .iter()
        .map(|c| {
            let (kind, op) = match (alternative, c.or) {
                (true, Some((kind, op, _))) => (kind, op),
                _ => (c.resource, c.operation),
            };
            rule(kind, "*", PatternType::Literal, &[op], Action::Allow)
        })
        .collect();
    Authorizer::compile(&Acls { default_action: Action::Deny, rules })
}

#[test]
fn every_api_key_has_a_row() {
    for api in ApiKey::iter() {
        assert_eq!(row(api).api, api);
    }
    let offered = ApiKey::iter().filter(|a| authorizable(*a)).count();
    assert!(offered >= 25, "{offered}");
}

#[test]
fn each_enforced_row_lists_exactly_what_a_request_needs() {
    let deny_all = Authorizer::compile(&Acls { default_action: Action::Deny, rules: vec![] });
    for api in ApiKey::iter() {
        let Support::Enforced(checks) = row(api).support else { continue };
        let (request, version) = sample(api).unwrap_or_else(|| panic!("no sample for {api:?}"));
        for alternative in [false, true] {
            let acl = grant(checks, alternative);
            let decision = authorize(&acl, &(), version, &mut request.clone());
            // ListGroups by group Describe is forwarded and filtered on the way back.
            let filtered = api == ApiKey::ListGroups && alternative || filtered_on_return(api);
            let forwarded = matches!(decision.outcome, Outcome::Forward { rewritten: false, .. });
            assert!(
                unchanged(&decision.outcome) || filtered && forwarded,
                "{api:?} (alternative {alternative}) with its checks: {decision:?}"
            );
        }
        let decision = authorize(&deny_all, &(), version, &mut request.clone());
        if api != ApiKey::ListGroups && api != ApiKey::ListTransactions {
            assert!(!unchanged(&decision.outcome), "{api:?} forwarded without any grant");
            assert!(decision.denied > 0, "{api:?} denied nothing");
        }
        // Dropping any one (non-alternative) check must change the outcome, except checks that only apply to
        // replicas or to names the sample does not use.
        for (i, check) in checks.iter().enumerate() {
            // Checks on the answer (ListedTopic, ListedTransactionalId) trim what comes back instead of changing
            // the request.
            if matches!(
                check.on,
                On::ClusterFromReplica | On::TransactionKey | On::ListedTopic | On::ListedTransactionalId
            ) && check.or.is_none()
            {
                continue;
            }
            let fewer: Vec<_> = checks.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, c)| *c).collect();
            if check.or.is_some() {
                continue;
            }
            let decision = authorize(&grant(&fewer, false), &(), version, &mut request.clone());
            assert!(!unchanged(&decision.outcome), "{api:?} forwarded without {check:?}");
        }
    }
}

#[test]
fn open_rows_forward_and_unsupported_rows_close() {
    let deny_all = Authorizer::compile(&Acls { default_action: Action::Deny, rules: vec![] });
    for api in [ApiKey::ApiVersions, ApiKey::GetTelemetrySubscriptions, ApiKey::PushTelemetry] {
        assert_eq!(row(api).support, Support::Open);
        let (mut request, version) = sample(api).unwrap();
        assert!(unchanged(&authorize(&deny_all, &(), version, &mut request).outcome));
        assert!(authorizable(api) && !needs_body(api));
    }
    for api in [ApiKey::SaslHandshake, ApiKey::Vote] {
        assert!(!authorizable(api));
        let (mut request, version) = sample(api).unwrap();
        let open = Authorizer::allow_all();
        assert!(matches!(authorize(&open, &(), version, &mut request).outcome, Outcome::Close), "{api:?}");
    }
}

#[test]
fn bodies_are_needed_exactly_where_names_are_checked() {
    assert!(needs_body(ApiKey::Produce));
    assert!(needs_body(ApiKey::JoinGroup));
    assert!(!needs_body(ApiKey::DescribeCluster));
    assert!(!needs_body(ApiKey::ApiVersions));
    let _ = (ResourceType::Topic, Operation::Read);
}
