//! The answer to a request that cannot be served by one cluster ([`super::cross_cluster`]): INVALID_REQUEST on
//! every entity it names, with the reason in the error message where the API version has one, so the client
//! fails the operation with a clear cause instead of the sidecar forwarding it to a cluster that would half do it.

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnResponse, AddPartitionsToTxnResponse, OffsetCommitResponse, ProduceResponse, RequestKind,
    ResponseKind, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::code::INVALID_REQUEST;
use crate::deny;

/// The error response for `request` (an API [`super::cross_cluster`] checks), or `None` for any other API.
pub fn refuse(request: &RequestKind, version: i16, reason: &str) -> Option<ResponseKind> {
    use RequestKind as K;
    let e = INVALID_REQUEST;
    Some(match request {
        K::Produce(r) => {
            let message = Some(StrBytes::from_string(reason.to_string()));
            let topics = r.topic_data.iter().map(|t| {
                let partitions = t.partition_data.iter().map(|p| {
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(e)
                        .with_base_offset(-1)
                        .with_error_message(message.clone())
                });
                TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_partition_responses(partitions.collect())
            });
            ResponseKind::Produce(ProduceResponse::default().with_responses(topics.collect()))
        }
        K::OffsetCommit(r) => {
            let topics = r.topics.iter().map(|t| {
                let partitions = t.partitions.iter().map(|p| {
                    OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(e)
                });
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_partitions(partitions.collect())
            });
            ResponseKind::OffsetCommit(OffsetCommitResponse::default().with_topics(topics.collect()))
        }
        K::TxnOffsetCommit(r) => {
            let topics = r.topics.iter().map(|t| {
                let partitions = t.partitions.iter().map(|p| {
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(e)
                });
                TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions.collect())
            });
            ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default().with_topics(topics.collect()))
        }
        K::OffsetFetch(r) if version >= 8 => {
            let groups = r
                .groups
                .iter()
                .map(|g| OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone()).with_error_code(e));
            let mut response = kafka_protocol::messages::OffsetFetchResponse::default();
            response.groups = groups.collect();
            ResponseKind::OffsetFetch(response)
        }
        K::OffsetFetch(r) => deny::offset_fetch_group(version, r, e),
        K::AddPartitionsToTxn(r) => {
            let topic = |name: &kafka_protocol::messages::TopicName, partitions: &[i32]| {
                let results = partitions.iter().map(|&p| {
                    AddPartitionsToTxnPartitionResult::default().with_partition_index(p).with_partition_error_code(e)
                });
                AddPartitionsToTxnTopicResult::default()
                    .with_name(name.clone())
                    .with_results_by_partition(results.collect())
            };
            let mut response = AddPartitionsToTxnResponse::default();
            if version <= 3 {
                response.results_by_topic_v3_and_below =
                    r.v3_and_below_topics.iter().map(|t| topic(&t.name, &t.partitions)).collect();
            } else {
                response.error_code = e;
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
            ResponseKind::AddPartitionsToTxn(response)
        }
        K::JoinGroup(_) => deny::with_error(ResponseKind::JoinGroup(Default::default()), e),
        K::AddOffsetsToTxn(_) => ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(e)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
