//! Metadata and DescribeTopicPartitions: a topic the pod may not Describe is left out of an all-topics answer and answered with
//! TOPIC_AUTHORIZATION_FAILED when asked for by name; auto-creation needs Create on the cluster or the topic.

use std::collections::HashSet;

use kafka_protocol::messages::describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{
    DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, MetadataRequest, MetadataResponse, ResponseKind,
    TopicName,
};
use kproxy_api::policy::{Operation, ResourceType};

use super::{Ctx, Decision, Inserts, Merge, Outcome, insert, split};
use crate::acl::Authorizer;
use crate::code;

/// What a Metadata response needs after the broker answered.
#[derive(Debug)]
pub struct MetadataMerge {
    /// Topics the pod may Describe; everything else the broker returns is dropped.
    acl: Authorizer,
    denied: Inserts<MetadataResponseTopic>,
    /// Topics the client may see but not create: "unknown" from the broker becomes an authorization error, as a
    /// broker answers when auto-creation is refused by its authorizer.
    no_create: HashSet<TopicName>,
}

impl MetadataMerge {
    pub(super) fn apply(self, response: &mut MetadataResponse) {
        response.topics.retain(|t| match &t.name {
            Some(name) => self.acl.allows(ResourceType::Topic, name, Operation::Describe),
            None => true,
        });
        for topic in &mut response.topics {
            if topic.error_code == code::UNKNOWN_TOPIC_OR_PARTITION
                && topic.name.as_ref().is_some_and(|n| self.no_create.contains(n))
            {
                topic.error_code = code::TOPIC_AUTHORIZATION_FAILED;
            }
        }
        insert(&mut response.topics, self.denied);
    }
}

pub(super) fn metadata(ctx: &Ctx, request: &mut MetadataRequest) -> Decision {
    let acl = ctx.acl;
    let Some(topics) = &mut request.topics else {
        // All topics: forward as is and filter the answer.
        if acl.is_open() {
            return Decision::forward();
        }
        let merge = MetadataMerge { acl: acl.clone(), denied: Vec::new(), no_create: HashSet::new() };
        return Decision {
            outcome: Outcome::Forward { rewritten: false, merge: Some(Merge::Metadata(merge)) },
            denied: 0,
        };
    };
    let denied = split(topics, |topic| {
        let error = match &topic.name {
            Some(name) => ctx.topic_error(name, Default::default(), Operation::Describe),
            None => ctx.topic_error(&TopicName::default(), topic.topic_id, Operation::Describe),
        }?;
        Some(
            MetadataResponseTopic::default()
                .with_error_code(error)
                .with_name(topic.name.clone())
                .with_topic_id(topic.topic_id)
                .with_topic_authorized_operations(i32::MIN),
        )
    });
    let mut rewritten = !denied.is_empty();
    let mut no_create = HashSet::new();
    // Before v4 auto-creation cannot be turned off per request; the broker's own config decides.
    if request.allow_auto_topic_creation && ctx.version >= 4 && !acl.allows_cluster(Operation::Create) {
        no_create = topics
            .iter()
            .filter_map(|t| t.name.clone())
            .filter(|n| !acl.allows(ResourceType::Topic, n, Operation::Create))
            .collect();
        if !no_create.is_empty() {
            request.allow_auto_topic_creation = false;
            rewritten = true;
        }
    }
    if !rewritten {
        return Decision::forward();
    }
    let count = denied.len();
    // Even with every topic denied the client still needs brokers and the controller, so forward; an empty list
    // asks for no topics from v1 on (v0 would mean all, which the Describe filter then trims).
    let merge = MetadataMerge { acl: acl.clone(), denied, no_create };
    Decision { outcome: Outcome::Forward { rewritten: true, merge: Some(Merge::Metadata(merge)) }, denied: count }
}

/// What a DescribeTopicPartitions response needs: the denied topics named, or (all topics asked for) the ACLs to
/// leave out what the pod may not Describe.
#[derive(Debug)]
pub struct DescribeTopicPartitionsMerge {
    filter: Option<Authorizer>,
    denied: Inserts<DescribeTopicPartitionsResponseTopic>,
}

impl DescribeTopicPartitionsMerge {
    pub(super) fn apply(self, response: &mut DescribeTopicPartitionsResponse) {
        if let Some(acl) = &self.filter {
            response
                .topics
                .retain(|t| t.name.as_ref().is_none_or(|n| acl.allows(ResourceType::Topic, n, Operation::Describe)));
        }
        insert(&mut response.topics, self.denied);
    }
}

/// DescribeTopicPartitions (KIP-966): Describe per topic named; with none named (all topics) the broker lists only
/// the Describe-able ones without saying so, and so does the sidecar.
pub(super) fn describe_topic_partitions(ctx: &Ctx, request: &mut DescribeTopicPartitionsRequest) -> Decision {
    if request.topics.is_empty() {
        let merge = DescribeTopicPartitionsMerge { filter: Some(ctx.acl.clone()), denied: Vec::new() };
        return Decision {
            outcome: Outcome::Forward { rewritten: false, merge: Some(Merge::DescribeTopicPartitions(merge)) },
            denied: 0,
        };
    }
    let denied = split(&mut request.topics, |topic| {
        let error = ctx.topic_error(&topic.name, Default::default(), Operation::Describe)?;
        Some(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(topic.name.clone()))
                .with_error_code(error)
                .with_topic_authorized_operations(i32::MIN),
        )
    });
    let left = !request.topics.is_empty();
    let count = denied.len();
    let merge = Merge::DescribeTopicPartitions(DescribeTopicPartitionsMerge { filter: None, denied });
    let empty = ResponseKind::DescribeTopicPartitions(DescribeTopicPartitionsResponse::default());
    Decision::split(count, left, merge, empty)
}
