//! Error responses built by the sidecar: "answer every entity this request names with code X", one builder per
//! API in one table.
//!
//! One builder serves every reason the sidecar answers a request itself with an error: a version outside what
//! it offers (UNSUPPORTED_VERSION), a whole request the ACLs deny (the policy decides the code, e.g.
//! GROUP_AUTHORIZATION_FAILED; see `kproxy_policy::Outcome::Deny`), a request routes cannot serve from one
//! cluster (INVALID_REQUEST with the reason as message). The answer is what a broker builds for a failed
//! request: the error on every entity the request names (topic, partition, group, resource…), the top-level
//! error where the response has one, "no result" values (-1 offsets, node -1) beside it, and the message where
//! the version carries one.
//!
//! Adding an API the sidecar forwards is one entry in [`TABLE`]; the tests check every entry at every version
//! kafka-protocol knows.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::versions::UNSUPPORTED_VERSION;

mod admin;

/// What every entity of the answer carries.
#[derive(Clone, Copy, Debug)]
pub struct Fill<'a> {
    pub version: i16,
    pub code: i16,
    /// Written where the response version has an error message.
    pub message: Option<&'a str>,
}

impl Fill<'_> {
    fn message(&self) -> Option<StrBytes> {
        self.message.map(|m| StrBytes::from_string(m.to_string()))
    }
}

type Builder = fn(&RequestKind, &Fill) -> Option<ResponseKind>;

/// The error response of each API the sidecar forwards.
const TABLE: &[(ApiKey, Builder)] = &[
    (ApiKey::Produce, produce),
    (ApiKey::Fetch, fetch),
    (ApiKey::ListOffsets, list_offsets),
    (ApiKey::OffsetForLeaderEpoch, offset_for_leader_epoch),
    (ApiKey::Metadata, metadata),
    (ApiKey::OffsetCommit, offset_commit),
    (ApiKey::OffsetFetch, offset_fetch),
    (ApiKey::FindCoordinator, find_coordinator),
    (ApiKey::JoinGroup, single),
    (ApiKey::SyncGroup, single),
    (ApiKey::Heartbeat, single),
    (ApiKey::LeaveGroup, single),
    (ApiKey::ListGroups, single),
    (ApiKey::OffsetDelete, single),
    (ApiKey::InitProducerId, single),
    (ApiKey::AddOffsetsToTxn, single),
    (ApiKey::EndTxn, single),
    (ApiKey::DescribeCluster, single),
    (ApiKey::DescribeQuorum, single),
    (ApiKey::GetTelemetrySubscriptions, single),
    (ApiKey::PushTelemetry, single),
    (ApiKey::DescribeGroups, describe_groups),
    (ApiKey::DeleteGroups, delete_groups),
    (ApiKey::CreateTopics, create_topics),
    (ApiKey::DeleteTopics, delete_topics),
    (ApiKey::DeleteRecords, delete_records),
    (ApiKey::DescribeConfigs, describe_configs),
    (ApiKey::AddPartitionsToTxn, add_partitions_to_txn),
    (ApiKey::TxnOffsetCommit, txn_offset_commit),
    (ApiKey::DescribeAcls, single),
    (ApiKey::CreateAcls, admin::acls),
    (ApiKey::DeleteAcls, admin::acls),
    (ApiKey::AlterConfigs, admin::alter_configs),
    (ApiKey::IncrementalAlterConfigs, admin::alter_configs),
    (ApiKey::AlterReplicaLogDirs, admin::alter_replica_log_dirs),
    (ApiKey::DescribeLogDirs, single),
    (ApiKey::CreatePartitions, admin::create_partitions),
    (ApiKey::ElectLeaders, admin::elect_leaders),
    (ApiKey::AlterPartitionReassignments, admin::alter_partition_reassignments),
    (ApiKey::ListPartitionReassignments, single),
    (ApiKey::DescribeClientQuotas, single),
    (ApiKey::AlterClientQuotas, admin::alter_client_quotas),
    (ApiKey::DescribeUserScramCredentials, admin::scram_credentials),
    (ApiKey::AlterUserScramCredentials, admin::scram_credentials),
    (ApiKey::UpdateFeatures, admin::update_features),
    (ApiKey::DescribeProducers, admin::describe_producers),
    (ApiKey::DescribeTransactions, admin::describe_transactions),
    (ApiKey::ListTransactions, single),
    (ApiKey::ConsumerGroupHeartbeat, single),
    (ApiKey::ConsumerGroupDescribe, admin::consumer_group_describe),
    (ApiKey::ListConfigResources, single),
    (ApiKey::DescribeTopicPartitions, admin::describe_topic_partitions),
];

/// The APIs with an error response.
pub fn apis() -> impl Iterator<Item = ApiKey> {
    TABLE.iter().map(|(api, _)| *api)
}

/// The error response for a decoded request; `None` for an API without an entry.
pub fn respond(request: &RequestKind, fill: &Fill) -> Option<ResponseKind> {
    let api = api_of(request)?;
    let (_, build) = TABLE.iter().find(|(a, _)| *a == api)?;
    build(request, fill)
}

/// The same, encoded at the fill's version.
pub fn encode(request: &RequestKind, fill: &Fill) -> Option<BytesMut> {
    let response = respond(request, fill)?;
    let mut out = BytesMut::new();
    response.encode(&mut out, fill.version).ok()?;
    Some(out)
}

/// The UNSUPPORTED_VERSION response body for a request frame (length prefix included), encoded at the request's
/// version. `None`: no answer the client could parse exists (kafka-protocol cannot decode or encode that
/// version, or the API has no entry); the caller closes the connection, as a broker does.
pub fn unsupported(api: ApiKey, version: i16, frame: &[u8]) -> Option<BytesMut> {
    let range = super::versions::parsed(api);
    if !(range.min..=range.max).contains(&version) {
        return None;
    }
    let at = super::request_body_offset(frame, api, version)?;
    let request = RequestKind::decode(api, &mut Bytes::copy_from_slice(&frame[at..]), version).ok()?;
    encode(&request, &Fill { version, code: UNSUPPORTED_VERSION, message: None })
}

fn api_of(request: &RequestKind) -> Option<ApiKey> {
    use RequestKind as K;
    Some(match request {
        K::Produce(_) => ApiKey::Produce,
        K::Fetch(_) => ApiKey::Fetch,
        K::ListOffsets(_) => ApiKey::ListOffsets,
        K::OffsetForLeaderEpoch(_) => ApiKey::OffsetForLeaderEpoch,
        K::Metadata(_) => ApiKey::Metadata,
        K::OffsetCommit(_) => ApiKey::OffsetCommit,
        K::OffsetFetch(_) => ApiKey::OffsetFetch,
        K::FindCoordinator(_) => ApiKey::FindCoordinator,
        K::JoinGroup(_) => ApiKey::JoinGroup,
        K::SyncGroup(_) => ApiKey::SyncGroup,
        K::Heartbeat(_) => ApiKey::Heartbeat,
        K::LeaveGroup(_) => ApiKey::LeaveGroup,
        K::ListGroups(_) => ApiKey::ListGroups,
        K::OffsetDelete(_) => ApiKey::OffsetDelete,
        K::InitProducerId(_) => ApiKey::InitProducerId,
        K::AddOffsetsToTxn(_) => ApiKey::AddOffsetsToTxn,
        K::EndTxn(_) => ApiKey::EndTxn,
        K::DescribeCluster(_) => ApiKey::DescribeCluster,
        K::DescribeQuorum(_) => ApiKey::DescribeQuorum,
        K::GetTelemetrySubscriptions(_) => ApiKey::GetTelemetrySubscriptions,
        K::PushTelemetry(_) => ApiKey::PushTelemetry,
        K::DescribeGroups(_) => ApiKey::DescribeGroups,
        K::DeleteGroups(_) => ApiKey::DeleteGroups,
        K::CreateTopics(_) => ApiKey::CreateTopics,
        K::DeleteTopics(_) => ApiKey::DeleteTopics,
        K::DeleteRecords(_) => ApiKey::DeleteRecords,
        K::DescribeConfigs(_) => ApiKey::DescribeConfigs,
        K::AddPartitionsToTxn(_) => ApiKey::AddPartitionsToTxn,
        K::TxnOffsetCommit(_) => ApiKey::TxnOffsetCommit,
        K::DescribeAcls(_) => ApiKey::DescribeAcls,
        K::CreateAcls(_) => ApiKey::CreateAcls,
        K::DeleteAcls(_) => ApiKey::DeleteAcls,
        K::AlterConfigs(_) => ApiKey::AlterConfigs,
        K::IncrementalAlterConfigs(_) => ApiKey::IncrementalAlterConfigs,
        K::AlterReplicaLogDirs(_) => ApiKey::AlterReplicaLogDirs,
        K::DescribeLogDirs(_) => ApiKey::DescribeLogDirs,
        K::CreatePartitions(_) => ApiKey::CreatePartitions,
        K::ElectLeaders(_) => ApiKey::ElectLeaders,
        K::AlterPartitionReassignments(_) => ApiKey::AlterPartitionReassignments,
        K::ListPartitionReassignments(_) => ApiKey::ListPartitionReassignments,
        K::DescribeClientQuotas(_) => ApiKey::DescribeClientQuotas,
        K::AlterClientQuotas(_) => ApiKey::AlterClientQuotas,
        K::DescribeUserScramCredentials(_) => ApiKey::DescribeUserScramCredentials,
        K::AlterUserScramCredentials(_) => ApiKey::AlterUserScramCredentials,
        K::UpdateFeatures(_) => ApiKey::UpdateFeatures,
        K::DescribeProducers(_) => ApiKey::DescribeProducers,
        K::DescribeTransactions(_) => ApiKey::DescribeTransactions,
        K::ListTransactions(_) => ApiKey::ListTransactions,
        K::ConsumerGroupHeartbeat(_) => ApiKey::ConsumerGroupHeartbeat,
        K::ConsumerGroupDescribe(_) => ApiKey::ConsumerGroupDescribe,
        K::ListConfigResources(_) => ApiKey::ListConfigResources,
        K::DescribeTopicPartitions(_) => ApiKey::DescribeTopicPartitions,
        _ => return None,
    })
}

/// Requests about one resource (a group, a transactional id, the cluster): the top-level error, with the "no
/// result" values a broker puts next to it.
fn single(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use RequestKind as K;
    use ResponseKind as R;
    let e = f.code;
    Some(match request {
        K::JoinGroup(_) => R::JoinGroup(JoinGroupResponse::default().with_error_code(e).with_generation_id(-1)),
        K::SyncGroup(_) => R::SyncGroup(SyncGroupResponse::default().with_error_code(e)),
        K::Heartbeat(_) => R::Heartbeat(HeartbeatResponse::default().with_error_code(e)),
        K::LeaveGroup(_) => R::LeaveGroup(LeaveGroupResponse::default().with_error_code(e)),
        K::ListGroups(_) => R::ListGroups(ListGroupsResponse::default().with_error_code(e)),
        K::OffsetDelete(_) => R::OffsetDelete(OffsetDeleteResponse::default().with_error_code(e)),
        K::InitProducerId(_) => R::InitProducerId(
            InitProducerIdResponse::default().with_error_code(e).with_producer_id((-1).into()).with_producer_epoch(-1),
        ),
        K::AddOffsetsToTxn(_) => R::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(e)),
        K::EndTxn(_) => R::EndTxn(
            EndTxnResponse::default().with_error_code(e).with_producer_id((-1).into()).with_producer_epoch(-1),
        ),
        K::DescribeCluster(_) => {
            R::DescribeCluster(DescribeClusterResponse::default().with_error_code(e).with_error_message(f.message()))
        }
        K::DescribeQuorum(_) => R::DescribeQuorum(DescribeQuorumResponse::default().with_error_code(e)),
        K::GetTelemetrySubscriptions(_) => {
            R::GetTelemetrySubscriptions(GetTelemetrySubscriptionsResponse::default().with_error_code(e))
        }
        K::PushTelemetry(_) => R::PushTelemetry(PushTelemetryResponse::default().with_error_code(e)),
        K::DescribeAcls(_) => {
            R::DescribeAcls(DescribeAclsResponse::default().with_error_code(e).with_error_message(f.message()))
        }
        // The top-level error exists from v3; before, an empty answer is all a failed request can say.
        K::DescribeLogDirs(_) => {
            R::DescribeLogDirs(DescribeLogDirsResponse::default().with_error_code(if f.version >= 3 { e } else { 0 }))
        }
        K::ListPartitionReassignments(_) => R::ListPartitionReassignments(
            ListPartitionReassignmentsResponse::default().with_error_code(e).with_error_message(f.message()),
        ),
        K::DescribeClientQuotas(_) => R::DescribeClientQuotas(
            DescribeClientQuotasResponse::default()
                .with_error_code(e)
                .with_error_message(f.message())
                .with_entries(None),
        ),
        K::ListTransactions(_) => R::ListTransactions(ListTransactionsResponse::default().with_error_code(e)),
        K::ConsumerGroupHeartbeat(_) => R::ConsumerGroupHeartbeat(
            ConsumerGroupHeartbeatResponse::default().with_error_code(e).with_error_message(f.message()),
        ),
        K::ListConfigResources(_) => R::ListConfigResources(ListConfigResourcesResponse::default().with_error_code(e)),
        _ => return None,
    })
}

fn produce(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use produce_response::{PartitionProduceResponse, TopicProduceResponse};
    let RequestKind::Produce(r) = request else { return None };
    let topics = r.topic_data.iter().map(|t| {
        let partitions = t.partition_data.iter().map(|p| {
            PartitionProduceResponse::default()
                .with_index(p.index)
                .with_error_code(f.code)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1)
                .with_error_message(f.message())
        });
        TopicProduceResponse::default()
            .with_name(t.name.clone())
            .with_topic_id(t.topic_id)
            .with_partition_responses(partitions.collect())
    });
    Some(ResponseKind::Produce(ProduceResponse::default().with_responses(topics.collect())))
}

fn fetch(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use fetch_response::{FetchableTopicResponse, PartitionData};
    let RequestKind::Fetch(r) = request else { return None };
    let topics = r.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            PartitionData::default()
                .with_partition_index(p.partition)
                .with_error_code(f.code)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
        });
        FetchableTopicResponse::default()
            .with_topic(t.topic.clone())
            .with_topic_id(t.topic_id)
            .with_partitions(partitions.collect())
    });
    // The top-level error exists from v7 (fetch sessions); a failed fetch keeps no session.
    let top = if f.version >= 7 { f.code } else { 0 };
    let response = FetchResponse::default().with_error_code(top).with_session_id(0);
    Some(ResponseKind::Fetch(response.with_responses(topics.collect())))
}

fn list_offsets(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
    let RequestKind::ListOffsets(r) = request else { return None };
    let topics = r.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_error_code(f.code)
                .with_timestamp(-1)
                .with_offset(-1)
        });
        ListOffsetsTopicResponse::default().with_name(t.name.clone()).with_partitions(partitions.collect())
    });
    Some(ResponseKind::ListOffsets(ListOffsetsResponse::default().with_topics(topics.collect())))
}

fn offset_for_leader_epoch(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
    let RequestKind::OffsetForLeaderEpoch(r) = request else { return None };
    let topics = r.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            EpochEndOffset::default()
                .with_partition(p.partition)
                .with_error_code(f.code)
                .with_leader_epoch(-1)
                .with_end_offset(-1)
        });
        OffsetForLeaderTopicResult::default().with_topic(t.topic.clone()).with_partitions(partitions.collect())
    });
    Some(ResponseKind::OffsetForLeaderEpoch(OffsetForLeaderEpochResponse::default().with_topics(topics.collect())))
}

fn metadata(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use metadata_response::MetadataResponseTopic;
    let RequestKind::Metadata(r) = request else { return None };
    let topics = r.topics.iter().flatten().map(|t| {
        MetadataResponseTopic::default().with_name(t.name.clone()).with_topic_id(t.topic_id).with_error_code(f.code)
    });
    // A request for all topics names none: from v13 the top-level error carries the answer.
    let top = if f.version >= 13 { f.code } else { 0 };
    Some(ResponseKind::Metadata(MetadataResponse::default().with_error_code(top).with_topics(topics.collect())))
}

fn offset_commit(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
    let RequestKind::OffsetCommit(r) = request else { return None };
    let topics = r.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(f.code)
        });
        OffsetCommitResponseTopic::default()
            .with_name(t.name.clone())
            .with_topic_id(t.topic_id)
            .with_partitions(partitions.collect())
    });
    Some(ResponseKind::OffsetCommit(OffsetCommitResponse::default().with_topics(topics.collect())))
}

/// OffsetFetch: from v8 one error per group (a failed batched fetch); before, the top-level error (v2+) or, in
/// v1 which has none, the error on every partition asked for.
fn offset_fetch(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use offset_fetch_response::{OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponseTopic};
    let RequestKind::OffsetFetch(r) = request else { return None };
    let mut response = OffsetFetchResponse::default();
    if f.version >= 8 {
        response.groups = r
            .groups
            .iter()
            .map(|g| OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone()).with_error_code(f.code))
            .collect();
    } else if f.version >= 2 {
        response.error_code = f.code;
    } else {
        response.topics = r
            .topics
            .iter()
            .flatten()
            .map(|t| {
                let partitions = t.partition_indexes.iter().map(|&p| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(-1)
                        .with_metadata(Some(StrBytes::new()))
                        .with_error_code(f.code)
                });
                OffsetFetchResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions.collect())
            })
            .collect();
    }
    Some(ResponseKind::OffsetFetch(response))
}

/// FindCoordinator: the top-level error before v4, one per key from v4 (batched lookups).
fn find_coordinator(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    let RequestKind::FindCoordinator(r) = request else { return None };
    let response = FindCoordinatorResponse::default();
    if f.version < 4 {
        let response =
            response.with_error_code(f.code).with_node_id((-1).into()).with_host(StrBytes::new()).with_port(-1);
        return Some(ResponseKind::FindCoordinator(response.with_error_message(f.message())));
    }
    let coordinators = r.coordinator_keys.iter().map(|key| {
        find_coordinator_response::Coordinator::default()
            .with_key(key.clone())
            .with_node_id((-1).into())
            .with_host(StrBytes::new())
            .with_port(-1)
            .with_error_code(f.code)
            .with_error_message(f.message())
    });
    Some(ResponseKind::FindCoordinator(response.with_coordinators(coordinators.collect())))
}

fn describe_groups(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    let RequestKind::DescribeGroups(r) = request else { return None };
    let groups = r
        .groups
        .iter()
        .map(|g| describe_groups_response::DescribedGroup::default().with_group_id(g.clone()).with_error_code(f.code));
    Some(ResponseKind::DescribeGroups(DescribeGroupsResponse::default().with_groups(groups.collect())))
}

fn delete_groups(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    let RequestKind::DeleteGroups(r) = request else { return None };
    let results = r.groups_names.iter().map(|g| {
        delete_groups_response::DeletableGroupResult::default().with_group_id(g.clone()).with_error_code(f.code)
    });
    Some(ResponseKind::DeleteGroups(DeleteGroupsResponse::default().with_results(results.collect())))
}

fn create_topics(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    let RequestKind::CreateTopics(r) = request else { return None };
    let topics = r.topics.iter().map(|t| {
        let mut result = create_topics_response::CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_error_code(f.code)
            .with_error_message(f.message())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        if f.version >= 5 {
            result.topic_config_error_code = f.code;
        }
        result
    });
    Some(ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(topics.collect())))
}

fn delete_topics(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use delete_topics_response::DeletableTopicResult;
    let RequestKind::DeleteTopics(r) = request else { return None };
    // Before v6 topics are listed by name only; from v6 as (name or id) states.
    let by_name = r.topic_names.iter().map(|n| DeletableTopicResult::default().with_name(Some(n.clone())));
    let by_state =
        r.topics.iter().map(|t| DeletableTopicResult::default().with_name(t.name.clone()).with_topic_id(t.topic_id));
    let responses = by_name.chain(by_state).map(|t| t.with_error_code(f.code).with_error_message(f.message()));
    Some(ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(responses.collect())))
}

fn delete_records(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
    let RequestKind::DeleteRecords(r) = request else { return None };
    let topics = r.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1)
                .with_error_code(f.code)
        });
        DeleteRecordsTopicResult::default().with_name(t.name.clone()).with_partitions(partitions.collect())
    });
    Some(ResponseKind::DeleteRecords(DeleteRecordsResponse::default().with_topics(topics.collect())))
}

fn describe_configs(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    let RequestKind::DescribeConfigs(r) = request else { return None };
    let results = r.resources.iter().map(|c| {
        describe_configs_response::DescribeConfigsResult::default()
            .with_resource_type(c.resource_type)
            .with_resource_name(c.resource_name.clone())
            .with_error_code(f.code)
            .with_error_message(f.message())
    });
    Some(ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(results.collect())))
}

/// AddPartitionsToTxn: per partition; from v4 (batched, sent by brokers) per transaction, with the top-level
/// error too.
fn add_partitions_to_txn(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
    };
    let RequestKind::AddPartitionsToTxn(r) = request else { return None };
    let topic = |name: &TopicName, partitions: &[i32]| {
        let results = partitions.iter().map(|&p| {
            AddPartitionsToTxnPartitionResult::default().with_partition_index(p).with_partition_error_code(f.code)
        });
        AddPartitionsToTxnTopicResult::default().with_name(name.clone()).with_results_by_partition(results.collect())
    };
    let mut response = AddPartitionsToTxnResponse::default();
    if f.version <= 3 {
        response.results_by_topic_v3_and_below =
            r.v3_and_below_topics.iter().map(|t| topic(&t.name, &t.partitions)).collect();
    } else {
        response.error_code = f.code;
        response.results_by_transaction = r
            .transactions
            .iter()
            .map(|x| {
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(x.transactional_id.clone())
                    .with_topic_results(x.topics.iter().map(|t| topic(&t.name, &t.partitions)).collect())
            })
            .collect();
    }
    Some(ResponseKind::AddPartitionsToTxn(response))
}

fn txn_offset_commit(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
    let RequestKind::TxnOffsetCommit(r) = request else { return None };
    let topics = r.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            TxnOffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(f.code)
        });
        TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions.collect())
    });
    Some(ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default().with_topics(topics.collect())))
}

#[cfg(test)]
mod tests;
