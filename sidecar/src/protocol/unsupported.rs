//! UNSUPPORTED_VERSION answers for requests at a version outside what the sidecar advertises.
//!
//! Clients only send versions they found in ApiVersions, so these are rare: a client that skipped
//! negotiation, or one that negotiated before a reload or a newly met broker narrowed the offered range. The
//! answer is the response a broker builds for a failed request: the error on every entity the request names
//! (topic, partition, group, resource…), the top-level error where the response has one, "no result" values
//! (-1 offsets, node -1) beside it. It is built from the decoded request, so it needs kafka-protocol to know
//! the version both ways. A version beyond that (or an API the sidecar does not forward) has no answer the
//! client could parse at that version: the connection is closed, as a Kafka broker does for any request it
//! cannot parse, and the caller counts and logs it.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kproxy_policy::deny;

use super::versions::UNSUPPORTED_VERSION as E;

/// The UNSUPPORTED_VERSION response body for a request frame (length prefix included), encoded at the request's
/// version. `None`: no parseable answer exists, close the connection.
pub fn response(api: ApiKey, version: i16, frame: &[u8]) -> Option<BytesMut> {
    let range = super::versions::parsed(api);
    if !(range.min..=range.max).contains(&version) {
        return None;
    }
    let at = super::request_body_offset(frame, api, version)?;
    let request = RequestKind::decode(api, &mut Bytes::copy_from_slice(&frame[at..]), version).ok()?;
    let response = build(request, version)?;
    let mut out = BytesMut::new();
    response.encode(&mut out, version).ok()?;
    Some(out)
}

/// The error response for a decoded request; `None` for APIs the sidecar never forwards.
pub fn build(request: RequestKind, version: i16) -> Option<ResponseKind> {
    use RequestKind as K;
    use ResponseKind as R;
    let top = |empty| Some(deny::with_error(empty, E));
    match request {
        K::Produce(r) => Some(R::Produce(produce(r))),
        K::Fetch(r) => Some(R::Fetch(fetch(r, version))),
        K::ListOffsets(r) => Some(R::ListOffsets(list_offsets(r))),
        K::OffsetForLeaderEpoch(r) => Some(R::OffsetForLeaderEpoch(offset_for_leader_epoch(r))),
        K::Metadata(r) => Some(R::Metadata(metadata(r, version))),
        K::OffsetCommit(r) => Some(R::OffsetCommit(offset_commit(r))),
        K::OffsetFetch(r) if version < 8 => Some(deny::offset_fetch_group(version, &r, E)),
        K::OffsetFetch(r) => Some(R::OffsetFetch(offset_fetch_groups(r))),
        K::FindCoordinator(_) if version < 4 => top(R::FindCoordinator(Default::default())),
        K::FindCoordinator(r) => Some(R::FindCoordinator(find_coordinator(r))),
        K::JoinGroup(_) => top(R::JoinGroup(Default::default())),
        K::SyncGroup(_) => top(R::SyncGroup(Default::default())),
        K::Heartbeat(_) => top(R::Heartbeat(Default::default())),
        K::LeaveGroup(_) => top(R::LeaveGroup(Default::default())),
        K::ListGroups(_) => top(R::ListGroups(Default::default())),
        K::OffsetDelete(_) => top(R::OffsetDelete(Default::default())),
        K::InitProducerId(_) => top(R::InitProducerId(Default::default())),
        K::AddOffsetsToTxn(_) => top(R::AddOffsetsToTxn(Default::default())),
        K::EndTxn(_) => top(R::EndTxn(Default::default())),
        K::DescribeCluster(_) => top(R::DescribeCluster(Default::default())),
        K::DescribeQuorum(_) => top(R::DescribeQuorum(Default::default())),
        K::DescribeGroups(r) => Some(R::DescribeGroups(describe_groups(r))),
        K::DeleteGroups(r) => Some(R::DeleteGroups(delete_groups(r))),
        K::CreateTopics(r) => Some(R::CreateTopics(create_topics(r, version))),
        K::DeleteTopics(r) => Some(R::DeleteTopics(delete_topics(r))),
        K::DeleteRecords(r) => Some(R::DeleteRecords(delete_records(r))),
        K::DescribeConfigs(r) => Some(R::DescribeConfigs(describe_configs(r))),
        K::AddPartitionsToTxn(r) => Some(R::AddPartitionsToTxn(add_partitions_to_txn(r, version))),
        K::TxnOffsetCommit(r) => Some(R::TxnOffsetCommit(txn_offset_commit(r))),
        K::GetTelemetrySubscriptions(_) => {
            Some(R::GetTelemetrySubscriptions(GetTelemetrySubscriptionsResponse::default().with_error_code(E)))
        }
        K::PushTelemetry(_) => Some(R::PushTelemetry(PushTelemetryResponse::default().with_error_code(E))),
        _ => None,
    }
}

fn produce(r: ProduceRequest) -> ProduceResponse {
    use produce_response::{PartitionProduceResponse, TopicProduceResponse};
    let responses = r
        .topic_data
        .into_iter()
        .map(|t| {
            let partitions = t
                .partition_data
                .iter()
                .map(|p| {
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(E)
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(-1)
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(t.name)
                .with_topic_id(t.topic_id)
                .with_partition_responses(partitions)
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}

fn fetch(r: FetchRequest, version: i16) -> FetchResponse {
    use fetch_response::{FetchableTopicResponse, PartitionData};
    let responses = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_error_code(E)
                        .with_high_watermark(-1)
                        .with_last_stable_offset(-1)
                        .with_log_start_offset(-1)
                })
                .collect();
            FetchableTopicResponse::default().with_topic(t.topic).with_topic_id(t.topic_id).with_partitions(partitions)
        })
        .collect();
    // The top-level error exists from v7 (fetch sessions); a failed fetch keeps no session.
    let top = if version >= 7 { E } else { 0 };
    FetchResponse::default().with_error_code(top).with_session_id(0).with_responses(responses)
}

fn list_offsets(r: ListOffsetsRequest) -> ListOffsetsResponse {
    use list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(E)
                        .with_timestamp(-1)
                        .with_offset(-1)
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

fn offset_for_leader_epoch(r: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    use offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_error_code(E)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1)
                })
                .collect();
            OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

fn metadata(r: MetadataRequest, version: i16) -> MetadataResponse {
    use metadata_response::MetadataResponseTopic;
    let topics = r
        .topics
        .unwrap_or_default()
        .into_iter()
        .map(|t| MetadataResponseTopic::default().with_name(t.name).with_topic_id(t.topic_id).with_error_code(E))
        .collect();
    // A request for all topics names none: from v13 the top-level error carries the answer.
    let top = if version >= 13 { E } else { 0 };
    MetadataResponse::default().with_error_code(top).with_topics(topics)
}

fn offset_commit(r: OffsetCommitRequest) -> OffsetCommitResponse {
    use offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(E)
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(t.name).with_topic_id(t.topic_id).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// OffsetFetch v8+: one error per group, as a broker answers a failed batched fetch.
fn offset_fetch_groups(r: OffsetFetchRequest) -> OffsetFetchResponse {
    let groups = r
        .groups
        .into_iter()
        .map(|g| {
            offset_fetch_response::OffsetFetchResponseGroup::default().with_group_id(g.group_id).with_error_code(E)
        })
        .collect();
    OffsetFetchResponse::default().with_groups(groups)
}

fn find_coordinator(r: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let coordinators = r
        .coordinator_keys
        .into_iter()
        .map(|key| {
            find_coordinator_response::Coordinator::default()
                .with_key(key)
                .with_node_id((-1).into())
                .with_host(StrBytes::new())
                .with_port(-1)
                .with_error_code(E)
        })
        .collect();
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}

fn describe_groups(r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = r
        .groups
        .into_iter()
        .map(|g| describe_groups_response::DescribedGroup::default().with_group_id(g).with_error_code(E))
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

fn delete_groups(r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = r
        .groups_names
        .into_iter()
        .map(|g| delete_groups_response::DeletableGroupResult::default().with_group_id(g).with_error_code(E))
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}

fn create_topics(r: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let mut result = create_topics_response::CreatableTopicResult::default()
                .with_name(t.name)
                .with_error_code(E)
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            if version >= 5 {
                result.topic_config_error_code = E;
            }
            result
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

fn delete_topics(r: DeleteTopicsRequest) -> DeleteTopicsResponse {
    use delete_topics_response::DeletableTopicResult;
    // Before v6 topics are listed by name only; from v6 as (name or id) states.
    let by_name = r.topic_names.into_iter().map(|n| DeletableTopicResult::default().with_name(Some(n)));
    let by_state =
        r.topics.into_iter().map(|t| DeletableTopicResult::default().with_name(t.name).with_topic_id(t.topic_id));
    let responses = by_name.chain(by_state).map(|t| t.with_error_code(E)).collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

fn delete_records(r: DeleteRecordsRequest) -> DeleteRecordsResponse {
    use delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1)
                        .with_error_code(E)
                })
                .collect();
            DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

fn describe_configs(r: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = r
        .resources
        .into_iter()
        .map(|c| {
            describe_configs_response::DescribeConfigsResult::default()
                .with_resource_type(c.resource_type)
                .with_resource_name(c.resource_name)
                .with_error_code(E)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// AddPartitionsToTxn: per partition before v4; from v4 (sent by brokers, batched) the top-level error.
fn add_partitions_to_txn(r: AddPartitionsToTxnRequest, version: i16) -> AddPartitionsToTxnResponse {
    use add_partitions_to_txn_response::{AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult};
    let topics = r
        .v3_and_below_topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|&p| {
                    AddPartitionsToTxnPartitionResult::default().with_partition_index(p).with_partition_error_code(E)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default().with_name(t.name).with_results_by_partition(partitions)
        })
        .collect();
    let top = if version >= 4 { E } else { 0 };
    AddPartitionsToTxnResponse::default().with_error_code(top).with_results_by_topic_v3_and_below(topics)
}

fn txn_offset_commit(r: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    use txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(E)
                })
                .collect();
            TxnOffsetCommitResponseTopic::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests;
