//! The record APIs: Produce, Fetch, ListOffsets and OffsetForLeaderEpoch, split per topic.

use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse;
use kafka_protocol::messages::list_offsets_response::ListOffsetsTopicResponse;
use kafka_protocol::messages::offset_for_leader_epoch_response::EpochEndOffset;
use kafka_protocol::messages::offset_for_leader_epoch_response::OffsetForLeaderTopicResult;
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::produce_response::TopicProduceResponse;
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, ProduceRequest, ProduceResponse, ResponseKind,
};
use kproxy_api::policy::Operation;

use super::{Ctx, Decision, Merge, Outcome, split};
use crate::code;

pub(super) fn produce(ctx: &Ctx, request: &mut ProduceRequest) -> Decision {
    // A transactional producer without Write on its id fails as a whole, like the broker answers it.
    let txn_error = request.transactional_id.as_ref().and_then(|id| ctx.txn_error(id, Operation::Write));
    let denied = split(&mut request.topic_data, |topic| {
        let error = txn_error.or_else(|| ctx.topic_error(&topic.name, topic.topic_id, Operation::Write))?;
        let partitions = topic
            .partition_data
            .iter()
            .map(|p| {
                PartitionProduceResponse::default().with_index(p.index).with_error_code(error).with_base_offset(-1)
            })
            .collect();
        Some(
            TopicProduceResponse::default()
                .with_name(topic.name.clone())
                .with_topic_id(topic.topic_id)
                .with_partition_responses(partitions),
        )
    });
    let count = denied.iter().map(|(_, t)| t.partition_responses.len()).sum();
    if count > 0 && request.acks == 0 {
        // acks=0 gets no response; the broker closes the connection so the client notices and refreshes.
        return Decision { outcome: Outcome::Close, denied: count };
    }
    let left = !request.topic_data.is_empty();
    Decision::split(count, left, Merge::Produce(denied), ResponseKind::Produce(ProduceResponse::default()))
}

/// Whether a fetch comes from a replica (a broker) rather than a consumer.
fn from_replica(ctx: &Ctx, request: &FetchRequest) -> bool {
    if ctx.version >= 15 { request.replica_state.replica_id.0 >= 0 } else { request.replica_id.0 >= 0 }
}

pub(super) fn fetch(ctx: &Ctx, request: &mut FetchRequest) -> Decision {
    let replica = from_replica(ctx, request);
    let replica_denied = replica && !ctx.acl.allows_cluster(Operation::ClusterAction);
    let denied = split(&mut request.topics, |topic| {
        let error = if replica {
            replica_denied.then_some(code::TOPIC_AUTHORIZATION_FAILED)?
        } else {
            ctx.topic_error(&topic.topic, topic.topic_id, Operation::Read)?
        };
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_error_code(error)
                    .with_high_watermark(-1)
            })
            .collect();
        Some(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions),
        )
    });
    let count = denied.iter().map(|(_, t)| t.partitions.len()).sum();
    // An incremental fetch may legitimately list no topics; only a request this split emptied is answered here
    // (with session id 0, which tells the client to start a fresh session).
    let left = !request.topics.is_empty();
    Decision::split(count, left, Merge::Fetch(denied), ResponseKind::Fetch(FetchResponse::default()))
}

pub(super) fn list_offsets(ctx: &Ctx, request: &mut ListOffsetsRequest) -> Decision {
    let denied = split(&mut request.topics, |topic| {
        let error = ctx.topic_error(&topic.name, Default::default(), Operation::Describe)?;
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index).with_error_code(error)
            })
            .collect();
        Some(ListOffsetsTopicResponse::default().with_name(topic.name.clone()).with_partitions(partitions))
    });
    let count = denied.iter().map(|(_, t)| t.partitions.len()).sum();
    let left = !request.topics.is_empty();
    Decision::split(count, left, Merge::ListOffsets(denied), ResponseKind::ListOffsets(ListOffsetsResponse::default()))
}

pub(super) fn offset_for_leader_epoch(ctx: &Ctx, request: &mut OffsetForLeaderEpochRequest) -> Decision {
    let replica = ctx.version >= 3 && request.replica_id.0 >= 0;
    let replica_denied = replica && !ctx.acl.allows_cluster(Operation::ClusterAction);
    let denied = split(&mut request.topics, |topic| {
        let error = if replica {
            replica_denied.then_some(code::CLUSTER_AUTHORIZATION_FAILED)?
        } else {
            ctx.topic_error(&topic.topic, Default::default(), Operation::Describe)?
        };
        let partitions = topic
            .partitions
            .iter()
            .map(|p| EpochEndOffset::default().with_partition(p.partition).with_error_code(error))
            .collect();
        Some(OffsetForLeaderTopicResult::default().with_topic(topic.topic.clone()).with_partitions(partitions))
    });
    let count = denied.iter().map(|(_, t)| t.partitions.len()).sum();
    let left = !request.topics.is_empty();
    let empty = ResponseKind::OffsetForLeaderEpoch(OffsetForLeaderEpochResponse::default());
    Decision::split(count, left, Merge::OffsetForLeaderEpoch(denied), empty)
}
