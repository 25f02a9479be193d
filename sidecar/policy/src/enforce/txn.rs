//! Producer id and transaction APIs: InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit,
//! and the transaction admin APIs DescribeTransactions and ListTransactions.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::TxnOffsetCommitResponsePartition;
use kafka_protocol::messages::txn_offset_commit_response::TxnOffsetCommitResponseTopic;
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, DescribeTransactionsRequest,
    DescribeTransactionsResponse, EndTxnRequest, InitProducerIdRequest, ResponseKind, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse, describe_transactions_response,
};
use kproxy_api::policy::{Operation, ResourceType};

use super::{Ctx, Decision, Inserts, Merge, Outcome, insert, split};
use crate::acl::Authorizer;
use crate::code;

pub(super) fn init_producer_id(ctx: &Ctx, request: &InitProducerIdRequest) -> Decision {
    let error = match &request.transactional_id {
        Some(id) if !id.is_empty() => ctx.txn_error(id, Operation::Write),
        // An idempotent producer needs IdempotentWrite on the cluster or, since KIP-679, Write on any topic.
        _ => (!ctx.acl.allows_cluster(Operation::IdempotentWrite)
            && !ctx.acl.allows_any(ResourceType::Topic, Operation::Write))
        .then_some(code::CLUSTER_AUTHORIZATION_FAILED),
    };
    match error {
        None => Decision::forward(),
        Some(error) => Decision::deny(error),
    }
}

/// Results for one transaction's topics: denied topics get their error and, since the broker does not add part of
/// a transaction, every other partition gets OPERATION_NOT_ATTEMPTED.
fn txn_topic_results(
    ctx: &Ctx,
    id: &str,
    topics: &[AddPartitionsToTxnTopic],
) -> (Vec<AddPartitionsToTxnTopicResult>, usize) {
    let txn_error = ctx.txn_error(id, Operation::Write);
    let mut denied = 0;
    let results = topics
        .iter()
        .map(|topic| {
            let error = txn_error.or_else(|| ctx.topic_error(&topic.name, Default::default(), Operation::Write));
            if error.is_some() {
                denied += topic.partitions.len();
            }
            let error = error.unwrap_or(ResponseError::OperationNotAttempted.code());
            let partitions = topic
                .partitions
                .iter()
                .map(|&p| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(p)
                        .with_partition_error_code(error)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default().with_name(topic.name.clone()).with_results_by_partition(partitions)
        })
        .collect();
    (results, if txn_error.is_some() { denied.max(1) } else { denied })
}

pub(super) fn add_partitions_to_txn(ctx: &Ctx, request: &AddPartitionsToTxnRequest) -> Decision {
    let mut response = AddPartitionsToTxnResponse::default();
    let mut denied = 0;
    if ctx.version < 4 {
        let (results, d) = txn_topic_results(ctx, &request.v3_and_below_transactional_id, &request.v3_and_below_topics);
        response.results_by_topic_v3_and_below = results;
        denied = d;
    } else {
        for txn in &request.transactions {
            // verify_only comes from brokers; a client sending it is treated as a replica without ClusterAction.
            let (results, d) = if txn.verify_only && !ctx.acl.allows_cluster(Operation::ClusterAction) {
                let (r, _) = txn_topic_results(ctx, &txn.transactional_id, &txn.topics);
                (r, txn.topics.len().max(1))
            } else {
                txn_topic_results(ctx, &txn.transactional_id, &txn.topics)
            };
            denied += d;
            response.results_by_transaction.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(txn.transactional_id.clone())
                    .with_topic_results(results),
            );
        }
    }
    if denied == 0 {
        return Decision::forward();
    }
    Decision::respond(ResponseKind::AddPartitionsToTxn(response), denied)
}

pub(super) fn add_offsets_to_txn(ctx: &Ctx, request: &AddOffsetsToTxnRequest) -> Decision {
    let error = ctx
        .txn_error(&request.transactional_id, Operation::Write)
        .or_else(|| ctx.group_error(&request.group_id, Operation::Read));
    match error {
        None => Decision::forward(),
        Some(error) => Decision::deny(error),
    }
}

pub(super) fn end_txn(ctx: &Ctx, request: &EndTxnRequest) -> Decision {
    match ctx.txn_error(&request.transactional_id, Operation::Write) {
        None => Decision::forward(),
        Some(error) => Decision::deny(error),
    }
}

pub(super) fn txn_offset_commit(ctx: &Ctx, request: &mut TxnOffsetCommitRequest) -> Decision {
    let whole = ctx
        .txn_error(&request.transactional_id, Operation::Write)
        .or_else(|| ctx.group_error(&request.group_id, Operation::Read));
    let denied = split(&mut request.topics, |topic| {
        let error = whole.or_else(|| ctx.topic_error(&topic.name, Default::default(), Operation::Read))?;
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(error)
            })
            .collect();
        Some(TxnOffsetCommitResponseTopic::default().with_name(topic.name.clone()).with_partitions(partitions))
    });
    let count = denied.iter().map(|(_, t)| t.partitions.len()).sum::<usize>().max(whole.is_some() as usize);
    let left = !request.topics.is_empty();
    let empty = ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default());
    Decision::split(count, left, Merge::TxnOffsetCommit(denied), empty)
}

/// Denied transactional ids of a DescribeTransactions, and the ACLs each described transaction's topics are
/// filtered by.
#[derive(Debug)]
pub struct DescribeTransactionsMerge {
    denied: Inserts<describe_transactions_response::TransactionState>,
    acl: Authorizer,
}

impl DescribeTransactionsMerge {
    /// Inserts the denied ids and, as the broker does, leaves out the partitions of topics the pod may not
    /// Describe.
    pub(super) fn apply(self, response: &mut DescribeTransactionsResponse) {
        for state in &mut response.transaction_states {
            state.topics.retain(|t| self.acl.allows(ResourceType::Topic, &t.topic, Operation::Describe));
        }
        insert(&mut response.transaction_states, self.denied);
    }
}

/// DescribeTransactions: Describe per transactional id.
pub(super) fn describe_transactions(ctx: &Ctx, request: &mut DescribeTransactionsRequest) -> Decision {
    let denied = split(&mut request.transactional_ids, |id| {
        let error = ctx.txn_error(id, Operation::Describe)?;
        Some(
            describe_transactions_response::TransactionState::default()
                .with_transactional_id(id.clone())
                .with_error_code(error),
        )
    });
    let count = denied.len();
    let merge = Merge::DescribeTransactions(DescribeTransactionsMerge { denied, acl: ctx.acl.clone() });
    let empty = ResponseKind::DescribeTransactions(DescribeTransactionsResponse::default());
    Decision::filtered(count, !request.transactional_ids.is_empty(), merge, empty)
}

/// ListTransactions: the broker checks nothing on the request and lists only the transactional ids the
/// principal may Describe; the sidecar filters the same way on the way back.
pub(super) fn list_transactions(ctx: &Ctx) -> Decision {
    Decision {
        outcome: Outcome::Forward { rewritten: false, merge: Some(Merge::ListTransactions(ctx.acl.clone())) },
        denied: 0,
    }
}
