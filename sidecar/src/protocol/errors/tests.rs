//! Every API of the table answers with the code asked for on every entity its request names, at every version
//! kafka-protocol knows: UNSUPPORTED_VERSION for a version just above the advertised range, the ACLs' codes for
//! a denied request, INVALID_REQUEST with its reason for a refused one. Beyond what kafka-protocol encodes there
//! is no answer.

use bytes::BytesMut;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use uuid::Uuid;

use super::{Fill, apis, encode, unsupported as response};
use crate::protocol::versions::Versions;

fn name() -> TopicName {
    TopicName(StrBytes::from_static_str("t"))
}

fn group() -> GroupId {
    GroupId(StrBytes::from_static_str("g"))
}

/// A request naming one entity (a topic with partition 0 and 1, a group, a resource…); `by_id` names topics by
/// id instead, for the versions that only carry ids.
fn sample(api: ApiKey, by_id: bool) -> RequestKind {
    use RequestKind as K;
    let (n, id) = if by_id { (TopicName::default(), Uuid::from_u128(7)) } else { (name(), Uuid::nil()) };
    match api {
        ApiKey::Produce => K::Produce(ProduceRequest::default().with_acks(-1).with_topic_data(vec![
            produce_request::TopicProduceData::default().with_name(n).with_topic_id(id).with_partition_data(vec![
                produce_request::PartitionProduceData::default().with_index(0),
                produce_request::PartitionProduceData::default().with_index(1),
            ]),
        ])),
        ApiKey::Fetch => K::Fetch(FetchRequest::default().with_topics(vec![
            fetch_request::FetchTopic::default().with_topic(n).with_topic_id(id).with_partitions(vec![
                fetch_request::FetchPartition::default().with_partition(0),
                fetch_request::FetchPartition::default().with_partition(1),
            ]),
        ])),
        ApiKey::ListOffsets => K::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(n)
                .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()]),
        ])),
        ApiKey::OffsetForLeaderEpoch => {
            K::OffsetForLeaderEpoch(OffsetForLeaderEpochRequest::default().with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(n)
                    .with_partitions(vec![Default::default()]),
            ]))
        }
        ApiKey::Metadata => K::Metadata(MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(n)).with_topic_id(id),
        ]))),
        ApiKey::OffsetCommit => {
            K::OffsetCommit(OffsetCommitRequest::default().with_group_id(group()).with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(n)
                .with_topic_id(id)
                .with_partitions(vec![Default::default()]),
        ]))
        }
        ApiKey::OffsetFetch => {
            let topics = vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(n.clone())
                    .with_partition_indexes(vec![0]),
            ];
            let groups =
                vec![offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(group()).with_topics(
                    Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(n)
                            .with_topic_id(id)
                            .with_partition_indexes(vec![0]),
                    ]),
                )];
            if by_id {
                K::OffsetFetch(OffsetFetchRequest::default().with_groups(groups))
            } else {
                K::OffsetFetch(OffsetFetchRequest::default().with_group_id(group()).with_topics(Some(topics)))
            }
        }
        ApiKey::FindCoordinator if by_id => K::FindCoordinator(
            FindCoordinatorRequest::default().with_coordinator_keys(vec![StrBytes::from_static_str("g")]),
        ),
        ApiKey::FindCoordinator => {
            K::FindCoordinator(FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g")))
        }
        ApiKey::DescribeGroups => K::DescribeGroups(DescribeGroupsRequest::default().with_groups(vec![group()])),
        ApiKey::DeleteGroups => K::DeleteGroups(DeleteGroupsRequest::default().with_groups_names(vec![group()])),
        ApiKey::CreateTopics => K::CreateTopics(
            CreateTopicsRequest::default()
                .with_topics(vec![create_topics_request::CreatableTopic::default().with_name(name())]),
        ),
        ApiKey::DeleteTopics if by_id => K::DeleteTopics(
            DeleteTopicsRequest::default()
                .with_topics(vec![delete_topics_request::DeleteTopicState::default().with_name(Some(name()))]),
        ),
        ApiKey::DeleteTopics => K::DeleteTopics(DeleteTopicsRequest::default().with_topic_names(vec![name()])),
        ApiKey::DeleteRecords => K::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(name())
                    .with_partitions(vec![Default::default()]),
            ])),
        ApiKey::DescribeConfigs => K::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t")),
        ])),
        ApiKey::AddPartitionsToTxn if by_id => K::AddPartitionsToTxn(
            AddPartitionsToTxnRequest::default()
                .with_transactions(vec![add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()]),
        ),
        ApiKey::AddPartitionsToTxn => {
            K::AddPartitionsToTxn(AddPartitionsToTxnRequest::default().with_v3_and_below_topics(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(name())
                    .with_partitions(vec![0]),
            ]))
        }
        ApiKey::TxnOffsetCommit => K::TxnOffsetCommit(TxnOffsetCommitRequest::default().with_topics(vec![
            txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                .with_name(name())
                .with_partitions(vec![Default::default()]),
        ])),
        ApiKey::CreateAcls => K::CreateAcls(
            CreateAclsRequest::default().with_creations(vec![create_acls_request::AclCreation::default()]),
        ),
        ApiKey::DeleteAcls => K::DeleteAcls(
            DeleteAclsRequest::default().with_filters(vec![delete_acls_request::DeleteAclsFilter::default()]),
        ),
        ApiKey::AlterConfigs => K::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t")),
        ])),
        ApiKey::IncrementalAlterConfigs => {
            K::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("t")),
            ]))
        }
        ApiKey::AlterReplicaLogDirs => K::AlterReplicaLogDirs(AlterReplicaLogDirsRequest::default().with_dirs(vec![
            alter_replica_log_dirs_request::AlterReplicaLogDir::default()
                .with_path(StrBytes::from_static_str("/d"))
                .with_topics(vec![
                    alter_replica_log_dirs_request::AlterReplicaLogDirTopic::default()
                        .with_name(name())
                        .with_partitions(vec![0, 1]),
                ]),
        ])),
        ApiKey::CreatePartitions => K::CreatePartitions(CreatePartitionsRequest::default().with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default().with_name(name()).with_count(3),
        ])),
        ApiKey::ElectLeaders => K::ElectLeaders(ElectLeadersRequest::default().with_topic_partitions(Some(vec![
            elect_leaders_request::TopicPartitions::default().with_topic(name()).with_partitions(vec![0, 1]),
        ]))),
        ApiKey::AlterPartitionReassignments => {
            K::AlterPartitionReassignments(AlterPartitionReassignmentsRequest::default().with_topics(vec![
                alter_partition_reassignments_request::ReassignableTopic::default()
                    .with_name(name())
                    .with_partitions(vec![Default::default()]),
            ]))
        }
        ApiKey::AlterClientQuotas => K::AlterClientQuotas(AlterClientQuotasRequest::default().with_entries(vec![
            alter_client_quotas_request::EntryData::default().with_entity(vec![
                alter_client_quotas_request::EntityData::default()
                    .with_entity_type(StrBytes::from_static_str("client-id"))
                    .with_entity_name(Some(StrBytes::from_static_str("c"))),
            ]),
        ])),
        ApiKey::DescribeUserScramCredentials => {
            K::DescribeUserScramCredentials(DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
                describe_user_scram_credentials_request::UserName::default().with_name(StrBytes::from_static_str("u")),
            ])))
        }
        ApiKey::AlterUserScramCredentials => {
            K::AlterUserScramCredentials(AlterUserScramCredentialsRequest::default().with_deletions(vec![
                alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                    .with_name(StrBytes::from_static_str("u"))
                    .with_mechanism(1),
            ]))
        }
        ApiKey::UpdateFeatures => K::UpdateFeatures(UpdateFeaturesRequest::default().with_feature_updates(vec![
            update_features_request::FeatureUpdateKey::default().with_feature(StrBytes::from_static_str("f")),
        ])),
        ApiKey::DescribeProducers => K::DescribeProducers(DescribeProducersRequest::default().with_topics(vec![
            describe_producers_request::TopicRequest::default().with_name(name()).with_partition_indexes(vec![0, 1]),
        ])),
        ApiKey::DescribeTransactions => K::DescribeTransactions(
            DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(StrBytes::from_static_str("x"))]),
        ),
        ApiKey::ConsumerGroupDescribe => {
            K::ConsumerGroupDescribe(ConsumerGroupDescribeRequest::default().with_group_ids(vec![group()]))
        }
        ApiKey::DescribeTopicPartitions => K::DescribeTopicPartitions(
            DescribeTopicPartitionsRequest::default()
                .with_topics(vec![describe_topic_partitions_request::TopicRequest::default().with_name(name())]),
        ),
        // Single-resource requests: their defaults are enough.
        other => default_request(other),
    }
}

fn default_request(api: ApiKey) -> RequestKind {
    use RequestKind as K;
    match api {
        ApiKey::JoinGroup => K::JoinGroup(Default::default()),
        ApiKey::SyncGroup => K::SyncGroup(Default::default()),
        ApiKey::Heartbeat => K::Heartbeat(Default::default()),
        ApiKey::LeaveGroup => K::LeaveGroup(Default::default()),
        ApiKey::ListGroups => K::ListGroups(Default::default()),
        ApiKey::OffsetDelete => K::OffsetDelete(Default::default()),
        ApiKey::InitProducerId => K::InitProducerId(Default::default()),
        ApiKey::AddOffsetsToTxn => K::AddOffsetsToTxn(Default::default()),
        ApiKey::EndTxn => K::EndTxn(Default::default()),
        ApiKey::DescribeCluster => K::DescribeCluster(Default::default()),
        ApiKey::DescribeQuorum => K::DescribeQuorum(Default::default()),
        ApiKey::GetTelemetrySubscriptions => K::GetTelemetrySubscriptions(Default::default()),
        ApiKey::PushTelemetry => K::PushTelemetry(Default::default()),
        ApiKey::DescribeAcls => K::DescribeAcls(Default::default()),
        ApiKey::DescribeLogDirs => K::DescribeLogDirs(Default::default()),
        ApiKey::ListPartitionReassignments => K::ListPartitionReassignments(Default::default()),
        ApiKey::DescribeClientQuotas => K::DescribeClientQuotas(Default::default()),
        ApiKey::ListTransactions => K::ListTransactions(Default::default()),
        ApiKey::ConsumerGroupHeartbeat => K::ConsumerGroupHeartbeat(Default::default()),
        ApiKey::ListConfigResources => K::ListConfigResources(Default::default()),
        other => panic!("no sample for {other:?}"),
    }
}

/// A request frame (length, header with client id, body) for `api` at `version`.
fn frame(api: ApiKey, version: i16) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(9)
        .with_client_id(Some(StrBytes::from_static_str("c")));
    // DeleteTopics v6+ still accepts (and ignores) the old name list: ask for the new shape first there.
    let order = if api == ApiKey::DeleteTopics && version >= 6 { [true, false] } else { [false, true] };
    for by_id in order {
        let mut b = BytesMut::from(&[0u8; 4][..]);
        header.encode(&mut b, api.request_header_version(version)).unwrap();
        if sample(api, by_id).encode(&mut b, version).is_ok() {
            let len = (b.len() - 4) as i32;
            b[..4].copy_from_slice(&len.to_be_bytes());
            return b.to_vec();
        }
    }
    panic!("{api:?} v{version}: no sample encodes");
}

/// Every API the sidecar forwards, as offered when a broker speaks everything.
fn forwarded() -> Vec<ApiKey> {
    let everything = ApiVersionsResponse::default().with_api_keys(
        ApiKey::iter()
            .map(|k| {
                let r = k.valid_versions();
                api_versions_response::ApiVersion::default()
                    .with_api_key(k as i16)
                    .with_min_version(r.min)
                    .with_max_version(r.max)
            })
            .collect(),
    );
    let offered = Versions::from_broker(everything);
    ApiKey::iter().filter(|k| *k != ApiKey::ApiVersions && offered.range(*k as i16).is_some()).collect()
}

fn errors(response: &ResponseKind) -> usize {
    count(response, 35)
}

/// DescribeLogDirs before v3 has no field a failed request's error could go in: Kafka answers it empty too.
fn says_nothing(api: ApiKey, version: i16) -> bool {
    api == ApiKey::DescribeLogDirs && version < 3
}

/// How many error codes `code` the response carries (top-level and per entity).
fn count(response: &ResponseKind, code: i16) -> usize {
    let text = format!("{response:?}");
    text.matches(&format!("error_code: {code},")).count() + text.matches(&format!("error_code: {code} ")).count()
}

/// Every API the sidecar forwards has an entry in the table.
#[test]
fn the_table_covers_every_forwarded_api() {
    let table: Vec<ApiKey> = apis().collect();
    for api in forwarded() {
        assert!(table.contains(&api), "{api:?} has no error response");
    }
}

/// The ACLs' and the routes' codes, with and without a message, at every version of every API in the table.
#[test]
fn every_code_encodes_per_entity_at_every_version() {
    const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    const GROUP_AUTHORIZATION_FAILED: i16 = 30;
    const INVALID_REQUEST: i16 = 42;
    for api in apis() {
        let range = crate::protocol::versions::parsed(api);
        for version in range.min..=range.max {
            for code in [TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, INVALID_REQUEST] {
                for message in [None, Some("routed to west, group to east")] {
                    let request = [false, true]
                        .into_iter()
                        .map(|by_id| sample(api, by_id))
                        .find(|r| r.encode(&mut BytesMut::new(), version).is_ok())
                        .unwrap_or_else(|| panic!("{api:?} v{version}: no sample encodes"));
                    let fill = Fill { version, code, message };
                    let body = encode(&request, &fill).unwrap_or_else(|| panic!("{api:?} v{version}: no answer"));
                    let decoded = ResponseKind::decode(api, &mut body.freeze(), version).unwrap();
                    assert!(
                        count(&decoded, code) >= 1 || says_nothing(api, version),
                        "{api:?} v{version} {code}: {decoded:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_refused_produce_carries_its_reason_where_the_version_has_a_message() {
    let request = sample(ApiKey::Produce, false);
    for version in 3..=ApiKey::Produce.valid_versions().max {
        let fill = Fill { version, code: 42, message: Some("orders.eu is routed to west") };
        let body = encode(&request, &fill).unwrap();
        let ResponseKind::Produce(r) = ResponseKind::decode(ApiKey::Produce, &mut body.freeze(), version).unwrap()
        else {
            unreachable!()
        };
        let p = &r.responses[0].partition_responses;
        assert_eq!((p[0].index, p[0].error_code, p[1].index, p[1].error_code), (0, 42, 1, 42));
        if version >= 8 {
            assert!(p[0].error_message.as_ref().is_some_and(|m| m.contains("orders.eu")), "v{version}");
        }
    }
}

#[test]
fn every_forwarded_api_answers_unsupported_version_per_entity_just_above_the_intersection() {
    let apis = forwarded();
    assert!(apis.len() >= 28, "{apis:?}");
    for api in apis {
        let range = crate::protocol::versions::parsed(api);
        // The broker (or another cluster) is one version behind: the newest version is just above what is offered.
        let version = range.max;
        if range.min == range.max {
            continue;
        }
        let f = frame(api, version);
        let body = response(api, version, &f).unwrap_or_else(|| panic!("{api:?} v{version}: no answer"));
        let decoded = ResponseKind::decode(api, &mut body.freeze(), version).unwrap();
        assert!(errors(&decoded) >= 1, "{api:?} v{version}: {decoded:?}");
    }
}

#[test]
fn the_answer_encodes_at_every_version_kafka_protocol_knows() {
    for api in forwarded() {
        let range = crate::protocol::versions::parsed(api);
        for version in range.min..=range.max {
            let f = frame(api, version);
            let body = response(api, version, &f).unwrap_or_else(|| panic!("{api:?} v{version}: no answer"));
            let decoded = ResponseKind::decode(api, &mut body.freeze(), version).unwrap();
            assert!(errors(&decoded) >= 1 || says_nothing(api, version), "{api:?} v{version}: {decoded:?}");
        }
        // Beyond kafka-protocol: nothing the client could parse, so the connection is closed.
        assert!(response(api, range.max + 1, &frame(api, range.max)).is_none(), "{api:?}");
    }
}

#[test]
fn per_entity_errors_cover_every_partition_and_keep_the_client_order() {
    let f = frame(ApiKey::Produce, 9);
    let body = response(ApiKey::Produce, 9, &f).unwrap();
    let ResponseKind::Produce(r) = ResponseKind::decode(ApiKey::Produce, &mut body.freeze(), 9).unwrap() else {
        unreachable!()
    };
    let p = &r.responses[0].partition_responses;
    assert_eq!((r.responses[0].name.as_str(), p.len()), ("t", 2));
    assert_eq!((p[0].index, p[0].error_code, p[0].base_offset), (0, 35, -1));
    assert_eq!((p[1].index, p[1].error_code), (1, 35));
    let f = frame(ApiKey::OffsetCommit, 8);
    let body = response(ApiKey::OffsetCommit, 8, &f).unwrap();
    let ResponseKind::OffsetCommit(r) = ResponseKind::decode(ApiKey::OffsetCommit, &mut body.freeze(), 8).unwrap()
    else {
        unreachable!()
    };
    assert_eq!(r.topics[0].partitions[0].error_code, 35);
    // APIs the sidecar never forwards get no answer.
    assert!(response(ApiKey::Vote, 1, &frame(ApiKey::Heartbeat, 3)).is_none());
}
