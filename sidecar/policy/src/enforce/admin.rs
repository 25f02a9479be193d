//! Topic and config administration: CreateTopics, DeleteTopics, DeleteRecords, CreatePartitions, DescribeConfigs,
//! AlterConfigs, IncrementalAlterConfigs, DescribeProducers and DescribeCluster.

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_response::DeleteRecordsPartitionResult;
use kafka_protocol::messages::delete_records_response::DeleteRecordsTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse, DescribeProducersRequest,
    DescribeProducersResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ResponseKind,
    TopicName, alter_configs_response, create_partitions_response, describe_producers_response,
    incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;
use kproxy_api::policy::Operation;

use super::{Ctx, Decision, Merge, split};
use crate::code;

/// DescribeConfigs/AlterConfigs resource type codes (`ConfigResource.Type`).
const CONFIG_TOPIC: i8 = 2;
const CONFIG_BROKER: i8 = 4;
const CONFIG_BROKER_LOGGER: i8 = 8;
const CONFIG_CLIENT_METRICS: i8 = 16;
const CONFIG_GROUP: i8 = 32;

pub(super) fn create_topics(ctx: &Ctx, request: &mut CreateTopicsRequest) -> Decision {
    if ctx.acl.allows_cluster(Operation::Create) {
        return Decision::forward();
    }
    let denied = split(&mut request.topics, |topic| {
        let error = ctx.topic_error(&topic.name, Default::default(), Operation::Create)?;
        let mut result = CreatableTopicResult::default()
            .with_name(topic.name.clone())
            .with_error_code(error)
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        if ctx.version >= 5 {
            result.topic_config_error_code = error;
        }
        Some(result)
    });
    let left = !request.topics.is_empty();
    let empty = ResponseKind::CreateTopics(CreateTopicsResponse::default());
    Decision::split(denied.len(), left, Merge::CreateTopics(denied), empty)
}

pub(super) fn delete_topics(ctx: &Ctx, request: &mut DeleteTopicsRequest) -> Decision {
    let error_for = |name: &TopicName| ctx.topic_error(name, Default::default(), Operation::Delete);
    let (denied, left) = if ctx.version >= 6 {
        let denied = split(&mut request.topics, |topic| {
            let error = match &topic.name {
                Some(name) => error_for(name),
                None => ctx.topic_error(&TopicName::default(), topic.topic_id, Operation::Delete),
            }?;
            Some(
                DeletableTopicResult::default()
                    .with_name(topic.name.clone())
                    .with_topic_id(topic.topic_id)
                    .with_error_code(error),
            )
        });
        (denied, !request.topics.is_empty())
    } else {
        let denied = split(&mut request.topic_names, |name| {
            let error = error_for(name)?;
            Some(DeletableTopicResult::default().with_name(Some(name.clone())).with_error_code(error))
        });
        (denied, !request.topic_names.is_empty())
    };
    let empty = ResponseKind::DeleteTopics(DeleteTopicsResponse::default());
    Decision::split(denied.len(), left, Merge::DeleteTopics(denied), empty)
}

pub(super) fn delete_records(ctx: &Ctx, request: &mut DeleteRecordsRequest) -> Decision {
    let denied = split(&mut request.topics, |topic| {
        let error = ctx.topic_error(&topic.name, Default::default(), Operation::Delete)?;
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(-1)
                    .with_error_code(error)
            })
            .collect();
        Some(DeleteRecordsTopicResult::default().with_name(topic.name.clone()).with_partitions(partitions))
    });
    let count = denied.iter().map(|(_, t)| t.partitions.len()).sum();
    let left = !request.topics.is_empty();
    let empty = ResponseKind::DeleteRecords(DeleteRecordsResponse::default());
    Decision::split(count, left, Merge::DeleteRecords(denied), empty)
}

/// The error for a config resource the pod may not do `op` on (DescribeConfigs or AlterConfigs), as Kafka's
/// `configsAuthorizationApiError` gives it: per topic, group, or the cluster for broker, broker-logger and
/// client-metrics resources; an unknown resource type is INVALID_REQUEST.
fn config_error(ctx: &Ctx, kind: i8, name: &StrBytes, op: Operation) -> Option<i16> {
    match kind {
        CONFIG_TOPIC => ctx.topic_error(&TopicName(name.clone()), Default::default(), op),
        CONFIG_GROUP => ctx.group_error(name, op),
        CONFIG_BROKER | CONFIG_BROKER_LOGGER | CONFIG_CLIENT_METRICS => {
            (!ctx.acl.allows_cluster(op)).then_some(code::CLUSTER_AUTHORIZATION_FAILED)
        }
        _ => Some(code::INVALID_REQUEST),
    }
}

pub(super) fn describe_configs(ctx: &Ctx, request: &mut DescribeConfigsRequest) -> Decision {
    let denied = split(&mut request.resources, |resource| {
        let error = config_error(ctx, resource.resource_type, &resource.resource_name, Operation::DescribeConfigs)?;
        Some(
            DescribeConfigsResult::default()
                .with_error_code(error)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone()),
        )
    });
    let left = !request.resources.is_empty();
    let empty = ResponseKind::DescribeConfigs(DescribeConfigsResponse::default());
    Decision::split(denied.len(), left, Merge::DescribeConfigs(denied), empty)
}

pub(super) fn alter_configs(ctx: &Ctx, request: &mut AlterConfigsRequest) -> Decision {
    let denied = split(&mut request.resources, |resource| {
        let error = config_error(ctx, resource.resource_type, &resource.resource_name, Operation::AlterConfigs)?;
        Some(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone()),
        )
    });
    let left = !request.resources.is_empty();
    let empty = ResponseKind::AlterConfigs(AlterConfigsResponse::default());
    Decision::split(denied.len(), left, Merge::AlterConfigs(denied), empty)
}

pub(super) fn incremental_alter_configs(ctx: &Ctx, request: &mut IncrementalAlterConfigsRequest) -> Decision {
    let denied = split(&mut request.resources, |resource| {
        let error = config_error(ctx, resource.resource_type, &resource.resource_name, Operation::AlterConfigs)?;
        Some(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(error)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone()),
        )
    });
    let left = !request.resources.is_empty();
    let empty = ResponseKind::IncrementalAlterConfigs(IncrementalAlterConfigsResponse::default());
    Decision::split(denied.len(), left, Merge::IncrementalAlterConfigs(denied), empty)
}

/// CreatePartitions: Alter per topic, with the message Kafka gives a denied topic.
pub(super) fn create_partitions(ctx: &Ctx, request: &mut CreatePartitionsRequest) -> Decision {
    let denied = split(&mut request.topics, |topic| {
        let error = ctx.topic_error(&topic.name, Default::default(), Operation::Alter)?;
        Some(
            create_partitions_response::CreatePartitionsTopicResult::default()
                .with_name(topic.name.clone())
                .with_error_code(error)
                .with_error_message(Some(StrBytes::from_static_str("The topic authorization is failed."))),
        )
    });
    let left = !request.topics.is_empty();
    let empty = ResponseKind::CreatePartitions(CreatePartitionsResponse::default());
    Decision::split(denied.len(), left, Merge::CreatePartitions(denied), empty)
}

/// DescribeProducers: Read per topic; a denied topic's partitions are TOPIC_AUTHORIZATION_FAILED.
pub(super) fn describe_producers(ctx: &Ctx, request: &mut DescribeProducersRequest) -> Decision {
    use describe_producers_response::{PartitionResponse, TopicResponse};
    let denied = split(&mut request.topics, |topic| {
        let error = ctx.topic_error(&topic.name, Default::default(), Operation::Read)?;
        let partitions = topic
            .partition_indexes
            .iter()
            .map(|&p| PartitionResponse::default().with_partition_index(p).with_error_code(error))
            .collect();
        Some(TopicResponse::default().with_name(topic.name.clone()).with_partitions(partitions))
    });
    let count = denied.iter().map(|(_, t)| t.partitions.len().max(1)).sum();
    let left = !request.topics.is_empty();
    let empty = ResponseKind::DescribeProducers(DescribeProducersResponse::default());
    Decision::split(count, left, Merge::DescribeProducers(denied), empty)
}

pub(super) fn describe_cluster(ctx: &Ctx) -> Decision {
    if ctx.acl.allows_cluster(Operation::Describe) {
        return Decision::forward();
    }
    let response = DescribeClusterResponse::default().with_error_code(code::CLUSTER_AUTHORIZATION_FAILED);
    Decision::respond(ResponseKind::DescribeCluster(response), 1)
}
