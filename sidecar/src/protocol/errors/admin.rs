//! Error answers of the admin APIs (configs, partitions, ACLs, quotas, credentials, features, producers,
//! transactions, KIP-848 group descriptions, topic partitions): the entries of [`super::TABLE`] beyond the data,
//! group and transaction APIs.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Fill;

/// CreateAcls and DeleteAcls: one result per creation or filter.
pub(super) fn acls(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    Some(match request {
        RequestKind::CreateAcls(r) => {
            let results = r.creations.iter().map(|_| {
                create_acls_response::AclCreationResult::default()
                    .with_error_code(f.code)
                    .with_error_message(f.message())
            });
            ResponseKind::CreateAcls(CreateAclsResponse::default().with_results(results.collect()))
        }
        RequestKind::DeleteAcls(r) => {
            let results = r.filters.iter().map(|_| {
                delete_acls_response::DeleteAclsFilterResult::default()
                    .with_error_code(f.code)
                    .with_error_message(f.message())
            });
            ResponseKind::DeleteAcls(DeleteAclsResponse::default().with_filter_results(results.collect()))
        }
        _ => return None,
    })
}

/// AlterConfigs and IncrementalAlterConfigs: one result per resource.
pub(super) fn alter_configs(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    Some(match request {
        RequestKind::AlterConfigs(r) => {
            let responses = r.resources.iter().map(|c| {
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(c.resource_type)
                    .with_resource_name(c.resource_name.clone())
                    .with_error_code(f.code)
                    .with_error_message(f.message())
            });
            ResponseKind::AlterConfigs(AlterConfigsResponse::default().with_responses(responses.collect()))
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            let responses = r.resources.iter().map(|c| {
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(c.resource_type)
                    .with_resource_name(c.resource_name.clone())
                    .with_error_code(f.code)
                    .with_error_message(f.message())
            });
            let response = IncrementalAlterConfigsResponse::default().with_responses(responses.collect());
            ResponseKind::IncrementalAlterConfigs(response)
        }
        _ => return None,
    })
}

pub(super) fn alter_replica_log_dirs(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use alter_replica_log_dirs_response::{AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult};
    let RequestKind::AlterReplicaLogDirs(r) = request else { return None };
    let results = r.dirs.iter().flat_map(|d| &d.topics).map(|t| {
        let partitions = t
            .partitions
            .iter()
            .map(|&p| AlterReplicaLogDirPartitionResult::default().with_partition_index(p).with_error_code(f.code));
        AlterReplicaLogDirTopicResult::default().with_topic_name(t.name.clone()).with_partitions(partitions.collect())
    });
    Some(ResponseKind::AlterReplicaLogDirs(AlterReplicaLogDirsResponse::default().with_results(results.collect())))
}

pub(super) fn create_partitions(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    let RequestKind::CreatePartitions(r) = request else { return None };
    let results = r.topics.iter().map(|t| {
        create_partitions_response::CreatePartitionsTopicResult::default()
            .with_name(t.name.clone())
            .with_error_code(f.code)
            .with_error_message(f.message())
    });
    Some(ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(results.collect())))
}

/// ElectLeaders: every partition named and (v1+) the top-level error; asked for all partitions, the top-level
/// error alone.
pub(super) fn elect_leaders(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use elect_leaders_response::{PartitionResult, ReplicaElectionResult};
    let RequestKind::ElectLeaders(r) = request else { return None };
    let results = r.topic_partitions.iter().flatten().map(|t| {
        let partitions = t.partitions.iter().map(|&p| {
            PartitionResult::default().with_partition_id(p).with_error_code(f.code).with_error_message(f.message())
        });
        ReplicaElectionResult::default().with_topic(t.topic.clone()).with_partition_result(partitions.collect())
    });
    let top = if f.version >= 1 { f.code } else { 0 };
    let response = ElectLeadersResponse::default().with_error_code(top);
    Some(ResponseKind::ElectLeaders(response.with_replica_election_results(results.collect())))
}

pub(super) fn alter_partition_reassignments(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use alter_partition_reassignments_response::{ReassignablePartitionResponse, ReassignableTopicResponse};
    let RequestKind::AlterPartitionReassignments(r) = request else { return None };
    let topics = r.topics.iter().map(|t| {
        let partitions = t.partitions.iter().map(|p| {
            ReassignablePartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_error_code(f.code)
                .with_error_message(f.message())
        });
        ReassignableTopicResponse::default().with_name(t.name.clone()).with_partitions(partitions.collect())
    });
    let response = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(r.allow_replication_factor_change)
        .with_error_code(f.code)
        .with_error_message(f.message());
    Some(ResponseKind::AlterPartitionReassignments(response.with_responses(topics.collect())))
}

pub(super) fn alter_client_quotas(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use alter_client_quotas_response::{EntityData, EntryData};
    let RequestKind::AlterClientQuotas(r) = request else { return None };
    let entries = r.entries.iter().map(|e| {
        let entity = e.entity.iter().map(|x| {
            EntityData::default().with_entity_type(x.entity_type.clone()).with_entity_name(x.entity_name.clone())
        });
        EntryData::default().with_error_code(f.code).with_error_message(f.message()).with_entity(entity.collect())
    });
    Some(ResponseKind::AlterClientQuotas(AlterClientQuotasResponse::default().with_entries(entries.collect())))
}

/// DescribeUserScramCredentials (the top-level error and one result per user asked for) and
/// AlterUserScramCredentials (one result per user named, once).
pub(super) fn scram_credentials(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    Some(match request {
        RequestKind::DescribeUserScramCredentials(r) => {
            let results = r.users.iter().flatten().map(|u| {
                describe_user_scram_credentials_response::DescribeUserScramCredentialsResult::default()
                    .with_user(u.name.clone())
                    .with_error_code(f.code)
                    .with_error_message(f.message())
            });
            let response = DescribeUserScramCredentialsResponse::default()
                .with_error_code(f.code)
                .with_error_message(f.message())
                .with_results(results.collect());
            ResponseKind::DescribeUserScramCredentials(response)
        }
        RequestKind::AlterUserScramCredentials(r) => {
            let mut users: Vec<&StrBytes> = Vec::new();
            for name in r.deletions.iter().map(|d| &d.name).chain(r.upsertions.iter().map(|u| &u.name)) {
                if !users.contains(&name) {
                    users.push(name);
                }
            }
            let results = users.into_iter().map(|u| {
                alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default()
                    .with_user(u.clone())
                    .with_error_code(f.code)
                    .with_error_message(f.message())
            });
            let response = AlterUserScramCredentialsResponse::default().with_results(results.collect());
            ResponseKind::AlterUserScramCredentials(response)
        }
        _ => return None,
    })
}

pub(super) fn update_features(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    let RequestKind::UpdateFeatures(r) = request else { return None };
    let results = r.feature_updates.iter().map(|u| {
        update_features_response::UpdatableFeatureResult::default()
            .with_feature(u.feature.clone())
            .with_error_code(f.code)
            .with_error_message(f.message())
    });
    let response = UpdateFeaturesResponse::default().with_error_code(f.code).with_error_message(f.message());
    Some(ResponseKind::UpdateFeatures(response.with_results(results.collect())))
}

pub(super) fn describe_producers(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    use describe_producers_response::{PartitionResponse, TopicResponse};
    let RequestKind::DescribeProducers(r) = request else { return None };
    let topics = r.topics.iter().map(|t| {
        let partitions = t.partition_indexes.iter().map(|&p| {
            PartitionResponse::default().with_partition_index(p).with_error_code(f.code).with_error_message(f.message())
        });
        TopicResponse::default().with_name(t.name.clone()).with_partitions(partitions.collect())
    });
    Some(ResponseKind::DescribeProducers(DescribeProducersResponse::default().with_topics(topics.collect())))
}

pub(super) fn describe_transactions(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    let RequestKind::DescribeTransactions(r) = request else { return None };
    let states = r.transactional_ids.iter().map(|id| {
        describe_transactions_response::TransactionState::default()
            .with_transactional_id(id.clone())
            .with_error_code(f.code)
    });
    let response = DescribeTransactionsResponse::default().with_transaction_states(states.collect());
    Some(ResponseKind::DescribeTransactions(response))
}

pub(super) fn consumer_group_describe(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    let RequestKind::ConsumerGroupDescribe(r) = request else { return None };
    let groups = r.group_ids.iter().map(|g| {
        consumer_group_describe_response::DescribedGroup::default()
            .with_group_id(g.clone())
            .with_error_code(f.code)
            .with_error_message(f.message())
    });
    Some(ResponseKind::ConsumerGroupDescribe(ConsumerGroupDescribeResponse::default().with_groups(groups.collect())))
}

pub(super) fn describe_topic_partitions(request: &RequestKind, f: &Fill) -> Option<ResponseKind> {
    let RequestKind::DescribeTopicPartitions(r) = request else { return None };
    let topics = r.topics.iter().map(|t| {
        describe_topic_partitions_response::DescribeTopicPartitionsResponseTopic::default()
            .with_name(Some(t.name.clone()))
            .with_error_code(f.code)
            .with_topic_authorized_operations(i32::MIN)
    });
    let response = DescribeTopicPartitionsResponse::default().with_topics(topics.collect());
    Some(ResponseKind::DescribeTopicPartitions(response))
}
