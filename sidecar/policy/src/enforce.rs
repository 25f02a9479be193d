//! Applies the ACL table to a decoded request: splits it into the part to forward and the denied entities, and
//! later merges the broker's answer with the denied entities' errors into the one response the client expects.
//!
//! Invariants: every request gets exactly one response; denied entries come back with the broker's own error
//! codes and in the position the client listed them; a request with nothing allowed is answered locally.

mod admin;
mod data;
mod groups;
mod metadata;
mod txn;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::delete_records_response::DeleteRecordsTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::describe_producers_response::TopicResponse as DescribeProducersTopic;
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_offsets_response::ListOffsetsTopicResponse;
use kafka_protocol::messages::offset_commit_response::OffsetCommitResponseTopic;
use kafka_protocol::messages::offset_delete_response::OffsetDeleteResponseTopic;
use kafka_protocol::messages::offset_for_leader_epoch_response::OffsetForLeaderTopicResult;
use kafka_protocol::messages::produce_response::TopicProduceResponse;
use kafka_protocol::messages::txn_offset_commit_response::TxnOffsetCommitResponseTopic;
use kafka_protocol::messages::{
    RequestKind, ResponseKind, TopicName, alter_configs_response, incremental_alter_configs_response,
};
use kproxy_api::policy::{Operation, ResourceType};
use uuid::Uuid;

use crate::acl::Authorizer;
use crate::code;
use crate::topic_ids::TopicNames;

pub use groups::ConsumerGroupDescribeMerge;
pub use metadata::{DescribeTopicPartitionsMerge, MetadataMerge};
pub use txn::DescribeTransactionsMerge;

/// Denied response entries and the index each had in the client's request.
pub type Inserts<T> = Vec<(usize, T)>;

/// What the data path does with a request.
#[derive(Debug)]
pub enum Outcome {
    /// Send it upstream. `rewritten`: the body changed and must be re-encoded (otherwise the original bytes go
    /// out untouched). `merge`: apply it to the broker's response before answering the client.
    Forward { rewritten: bool, merge: Option<Merge> },
    /// Answer locally, without a broker, with this response (per-entity answers the policy merged).
    Respond(ResponseKind),
    /// Answer locally with this error code on everything the request names: the whole request is denied. The
    /// data path builds the answer (the sidecar's `protocol::errors`, which also answers unsupported versions).
    Deny(i16),
    /// Close the client connection: what a broker does for an API it does not offer and for a failed acks=0
    /// produce (the client has no other way to learn about the failure).
    Close,
}

/// The outcome and how many entities were denied (for `kproxy_acl_denied_total`).
#[derive(Debug)]
pub struct Decision {
    pub outcome: Outcome,
    pub denied: usize,
}

impl Decision {
    pub fn forward() -> Self {
        Self { outcome: Outcome::Forward { rewritten: false, merge: None }, denied: 0 }
    }

    pub fn close() -> Self {
        Self { outcome: Outcome::Close, denied: 0 }
    }

    fn respond(response: ResponseKind, denied: usize) -> Self {
        Self { outcome: Outcome::Respond(response), denied }
    }

    /// The whole request denied with `code`.
    fn deny(code: i16) -> Self {
        Self { outcome: Outcome::Deny(code), denied: 1 }
    }

    /// Forward what is left; answer locally when nothing is; merge the rest.
    fn split(denied: usize, anything_left: bool, merge: Merge, empty: ResponseKind) -> Self {
        if denied == 0 {
            return Self::forward();
        }
        if !anything_left {
            let mut response = empty;
            merge.apply_to(&mut response);
            return Self::respond(response, denied);
        }
        Self { outcome: Outcome::Forward { rewritten: true, merge: Some(merge) }, denied }
    }
}

impl Decision {
    /// Forward what is left with a merge that also trims the broker's answer (so even an undenied request carries
    /// it); answer locally when the denials left nothing to ask.
    fn filtered(denied: usize, anything_left: bool, merge: Merge, empty: ResponseKind) -> Self {
        if denied > 0 && !anything_left {
            let mut response = empty;
            merge.apply_to(&mut response);
            return Self::respond(response, denied);
        }
        Self { outcome: Outcome::Forward { rewritten: denied > 0, merge: Some(merge) }, denied }
    }
}

/// Denied entries waiting for the broker's response, per API.
#[derive(Debug)]
pub enum Merge {
    Produce(Inserts<TopicProduceResponse>),
    Fetch(Inserts<FetchableTopicResponse>),
    ListOffsets(Inserts<ListOffsetsTopicResponse>),
    OffsetForLeaderEpoch(Inserts<OffsetForLeaderTopicResult>),
    Metadata(MetadataMerge),
    CreateTopics(Inserts<CreatableTopicResult>),
    DeleteTopics(Inserts<DeletableTopicResult>),
    DeleteRecords(Inserts<DeleteRecordsTopicResult>),
    DescribeConfigs(Inserts<DescribeConfigsResult>),
    OffsetCommit(Inserts<OffsetCommitResponseTopic>),
    TxnOffsetCommit(Inserts<TxnOffsetCommitResponseTopic>),
    OffsetDelete(Inserts<OffsetDeleteResponseTopic>),
    OffsetFetch(groups::OffsetFetchMerge),
    FindCoordinator(Inserts<Coordinator>),
    DescribeGroups(Inserts<DescribedGroup>),
    DeleteGroups(Inserts<DeletableGroupResult>),
    /// Drop listed groups the pod may not Describe.
    ListGroups(Authorizer),
    AlterConfigs(Inserts<alter_configs_response::AlterConfigsResourceResponse>),
    IncrementalAlterConfigs(Inserts<incremental_alter_configs_response::AlterConfigsResourceResponse>),
    CreatePartitions(Inserts<CreatePartitionsTopicResult>),
    DescribeProducers(Inserts<DescribeProducersTopic>),
    DescribeTransactions(DescribeTransactionsMerge),
    /// Drop listed transactional ids the pod may not Describe.
    ListTransactions(Authorizer),
    ConsumerGroupDescribe(ConsumerGroupDescribeMerge),
    DescribeTopicPartitions(DescribeTopicPartitionsMerge),
}

impl Merge {
    /// Puts the denied entries into the broker's response (a response of another API is left alone).
    pub fn apply_to(self, response: &mut ResponseKind) {
        match (self, response) {
            (Merge::Produce(i), ResponseKind::Produce(r)) => insert(&mut r.responses, i),
            (Merge::Fetch(i), ResponseKind::Fetch(r)) => insert(&mut r.responses, i),
            (Merge::ListOffsets(i), ResponseKind::ListOffsets(r)) => insert(&mut r.topics, i),
            (Merge::OffsetForLeaderEpoch(i), ResponseKind::OffsetForLeaderEpoch(r)) => insert(&mut r.topics, i),
            (Merge::Metadata(m), ResponseKind::Metadata(r)) => m.apply(r),
            (Merge::CreateTopics(i), ResponseKind::CreateTopics(r)) => insert(&mut r.topics, i),
            (Merge::DeleteTopics(i), ResponseKind::DeleteTopics(r)) => insert(&mut r.responses, i),
            (Merge::DeleteRecords(i), ResponseKind::DeleteRecords(r)) => insert(&mut r.topics, i),
            (Merge::DescribeConfigs(i), ResponseKind::DescribeConfigs(r)) => insert(&mut r.results, i),
            (Merge::OffsetCommit(i), ResponseKind::OffsetCommit(r)) => insert(&mut r.topics, i),
            (Merge::TxnOffsetCommit(i), ResponseKind::TxnOffsetCommit(r)) => insert(&mut r.topics, i),
            (Merge::OffsetDelete(i), ResponseKind::OffsetDelete(r)) => insert(&mut r.topics, i),
            (Merge::OffsetFetch(m), ResponseKind::OffsetFetch(r)) => m.apply(r),
            (Merge::FindCoordinator(i), ResponseKind::FindCoordinator(r)) => insert(&mut r.coordinators, i),
            (Merge::DescribeGroups(i), ResponseKind::DescribeGroups(r)) => insert(&mut r.groups, i),
            (Merge::DeleteGroups(i), ResponseKind::DeleteGroups(r)) => insert(&mut r.results, i),
            (Merge::ListGroups(acl), ResponseKind::ListGroups(r)) => {
                r.groups.retain(|g| acl.allows(ResourceType::Group, &g.group_id, Operation::Describe))
            }
            (Merge::AlterConfigs(i), ResponseKind::AlterConfigs(r)) => insert(&mut r.responses, i),
            (Merge::IncrementalAlterConfigs(i), ResponseKind::IncrementalAlterConfigs(r)) => {
                insert(&mut r.responses, i)
            }
            (Merge::CreatePartitions(i), ResponseKind::CreatePartitions(r)) => insert(&mut r.results, i),
            (Merge::DescribeProducers(i), ResponseKind::DescribeProducers(r)) => insert(&mut r.topics, i),
            (Merge::DescribeTransactions(m), ResponseKind::DescribeTransactions(r)) => m.apply(r),
            (Merge::ListTransactions(acl), ResponseKind::ListTransactions(r)) => r
                .transaction_states
                .retain(|t| acl.allows(ResourceType::TransactionalId, &t.transactional_id, Operation::Describe)),
            (Merge::ConsumerGroupDescribe(m), ResponseKind::ConsumerGroupDescribe(r)) => m.apply(r),
            (Merge::DescribeTopicPartitions(m), ResponseKind::DescribeTopicPartitions(r)) => m.apply(r),
            _ => {}
        }
    }
}

/// Decides a decoded request. `version` is the request's API version.
pub fn authorize(acl: &Authorizer, names: &dyn TopicNames, version: i16, request: &mut RequestKind) -> Decision {
    let ctx = Ctx { acl, names, version };
    use RequestKind as K;
    match request {
        K::Produce(r) => data::produce(&ctx, r),
        K::Fetch(r) => data::fetch(&ctx, r),
        K::ListOffsets(r) => data::list_offsets(&ctx, r),
        K::OffsetForLeaderEpoch(r) => data::offset_for_leader_epoch(&ctx, r),
        K::Metadata(r) => metadata::metadata(&ctx, r),
        K::CreateTopics(r) => admin::create_topics(&ctx, r),
        K::DeleteTopics(r) => admin::delete_topics(&ctx, r),
        K::DeleteRecords(r) => admin::delete_records(&ctx, r),
        K::DescribeConfigs(r) => admin::describe_configs(&ctx, r),
        K::DescribeCluster(_) => admin::describe_cluster(&ctx),
        K::DescribeQuorum(_)
        | K::DescribeAcls(_)
        | K::DescribeLogDirs(_)
        | K::ListPartitionReassignments(_)
        | K::DescribeUserScramCredentials(_) => cluster(&ctx, Operation::Describe),
        K::CreateAcls(_)
        | K::DeleteAcls(_)
        | K::AlterReplicaLogDirs(_)
        | K::ElectLeaders(_)
        | K::AlterPartitionReassignments(_)
        | K::AlterUserScramCredentials(_)
        | K::UpdateFeatures(_) => cluster(&ctx, Operation::Alter),
        K::DescribeClientQuotas(_) | K::ListConfigResources(_) => cluster(&ctx, Operation::DescribeConfigs),
        K::AlterClientQuotas(_) => cluster(&ctx, Operation::AlterConfigs),
        K::CreatePartitions(r) => admin::create_partitions(&ctx, r),
        K::AlterConfigs(r) => admin::alter_configs(&ctx, r),
        K::IncrementalAlterConfigs(r) => admin::incremental_alter_configs(&ctx, r),
        K::DescribeProducers(r) => admin::describe_producers(&ctx, r),
        K::DescribeTransactions(r) => txn::describe_transactions(&ctx, r),
        K::ListTransactions(_) => txn::list_transactions(&ctx),
        K::ConsumerGroupHeartbeat(r) => groups::consumer_group_heartbeat(&ctx, r),
        K::ConsumerGroupDescribe(r) => groups::consumer_group_describe(&ctx, r),
        K::DescribeTopicPartitions(r) => metadata::describe_topic_partitions(&ctx, r),
        K::OffsetCommit(r) => groups::offset_commit(&ctx, r),
        K::OffsetFetch(r) => groups::offset_fetch(&ctx, r),
        K::OffsetDelete(r) => groups::offset_delete(&ctx, r),
        K::FindCoordinator(r) => groups::find_coordinator(&ctx, r),
        K::JoinGroup(r) => groups::membership(&ctx, &r.group_id),
        K::SyncGroup(r) => groups::membership(&ctx, &r.group_id),
        K::Heartbeat(r) => groups::membership(&ctx, &r.group_id),
        K::LeaveGroup(r) => groups::membership(&ctx, &r.group_id),
        K::DescribeGroups(r) => groups::describe_groups(&ctx, r),
        K::ListGroups(_) => groups::list_groups(&ctx),
        K::DeleteGroups(r) => groups::delete_groups(&ctx, r),
        K::InitProducerId(r) => txn::init_producer_id(&ctx, r),
        K::AddPartitionsToTxn(r) => txn::add_partitions_to_txn(&ctx, r),
        K::AddOffsetsToTxn(r) => txn::add_offsets_to_txn(&ctx, r),
        K::EndTxn(r) => txn::end_txn(&ctx, r),
        K::TxnOffsetCommit(r) => txn::txn_offset_commit(&ctx, r),
        K::ApiVersions(_) | K::GetTelemetrySubscriptions(_) | K::PushTelemetry(_) => Decision::forward(),
        _ => Decision::close(),
    }
}

/// A request about the cluster as a whole, allowed by `op` on the cluster; otherwise every entity it names gets
/// CLUSTER_AUTHORIZATION_FAILED (the sidecar's error builder answers it as the broker's `getErrorResponse` does).
fn cluster(ctx: &Ctx, op: Operation) -> Decision {
    if ctx.acl.allows_cluster(op) {
        return Decision::forward();
    }
    Decision::deny(code::CLUSTER_AUTHORIZATION_FAILED)
}

/// What every family needs to decide.
struct Ctx<'a> {
    acl: &'a Authorizer,
    names: &'a dyn TopicNames,
    version: i16,
}

impl Ctx<'_> {
    /// The error for a topic named by name or (newer versions) by id, or `None` when `op` is allowed on it.
    fn topic_error(&self, name: &TopicName, id: Uuid, op: Operation) -> Option<i16> {
        if id.is_nil() {
            return (!self.acl.allows(ResourceType::Topic, name, op)).then_some(code::TOPIC_AUTHORIZATION_FAILED);
        }
        match self.names.topic_name(id) {
            Some(name) => {
                (!self.acl.allows(ResourceType::Topic, &name, op)).then_some(code::TOPIC_AUTHORIZATION_FAILED)
            }
            // A broker answers an id it does not know the same way; the client refreshes metadata.
            None => Some(code::UNKNOWN_TOPIC_ID),
        }
    }

    fn group_error(&self, group: &str, op: Operation) -> Option<i16> {
        (!self.acl.allows(ResourceType::Group, group, op)).then_some(code::GROUP_AUTHORIZATION_FAILED)
    }

    fn txn_error(&self, id: &str, op: Operation) -> Option<i16> {
        (!self.acl.allows(ResourceType::TransactionalId, id, op)).then_some(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    }
}

/// Removes the items `deny` returns an error entry for, keeping those entries with their original index.
fn split<T, R>(items: &mut Vec<T>, mut deny: impl FnMut(&T) -> Option<R>) -> Inserts<R> {
    let mut denied = Vec::new();
    let mut index = 0;
    items.retain(|item| {
        let i = index;
        index += 1;
        match deny(item) {
            Some(entry) => {
                denied.push((i, entry));
                false
            }
            None => true,
        }
    });
    denied
}

/// Puts denied entries back where the client listed them. The broker answers the forwarded items in request
/// order, so inserting in ascending original index restores the client's order.
fn insert<T>(target: &mut Vec<T>, inserts: Inserts<T>) {
    for (index, entry) in inserts {
        let at = index.min(target.len());
        target.insert(at, entry);
    }
}

#[cfg(test)]
pub(crate) mod tests;
