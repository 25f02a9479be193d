//! Consumer group APIs: membership (classic and KIP-848), offsets, coordinator lookup, describe/list/delete.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::offset_commit_response::OffsetCommitResponsePartition;
use kafka_protocol::messages::offset_commit_response::OffsetCommitResponseTopic;
use kafka_protocol::messages::offset_delete_response::OffsetDeleteResponsePartition;
use kafka_protocol::messages::offset_delete_response::OffsetDeleteResponseTopic;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest, DeleteGroupsRequest,
    DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, ResponseKind, consumer_group_describe_response,
};
use kafka_protocol::protocol::StrBytes;
use kproxy_api::policy::{Operation, ResourceType};

use super::{Ctx, Decision, Inserts, Merge, Outcome, insert, split};
use crate::acl::Authorizer;

/// FindCoordinator key types.
const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;
const KEY_SHARE: i8 = 2;

/// JoinGroup, SyncGroup, Heartbeat and LeaveGroup: Read on the group or GROUP_AUTHORIZATION_FAILED.
pub(super) fn membership(ctx: &Ctx, group: &GroupId) -> Decision {
    match ctx.group_error(group, Operation::Read) {
        None => Decision::forward(),
        Some(error) => Decision::deny(error),
    }
}

pub(super) fn offset_commit(ctx: &Ctx, request: &mut OffsetCommitRequest) -> Decision {
    let group_error = ctx.group_error(&request.group_id, Operation::Read);
    let denied = split(&mut request.topics, |topic| {
        let error = group_error.or_else(|| ctx.topic_error(&topic.name, topic.topic_id, Operation::Read))?;
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(error)
            })
            .collect();
        Some(
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions),
        )
    });
    let count = denied.iter().map(|(_, t)| t.partitions.len()).sum::<usize>().max(group_error.is_some() as usize);
    let left = !request.topics.is_empty();
    let empty = ResponseKind::OffsetCommit(OffsetCommitResponse::default());
    Decision::split(count, left, Merge::OffsetCommit(denied), empty)
}

pub(super) fn offset_delete(ctx: &Ctx, request: &mut OffsetDeleteRequest) -> Decision {
    if let Some(error) = ctx.group_error(&request.group_id, Operation::Delete) {
        return Decision::respond(
            ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_error_code(error)),
            1,
        );
    }
    let denied = split(&mut request.topics, |topic| {
        let error = ctx.topic_error(&topic.name, Default::default(), Operation::Read)?;
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                OffsetDeleteResponsePartition::default().with_partition_index(p.partition_index).with_error_code(error)
            })
            .collect();
        Some(OffsetDeleteResponseTopic::default().with_name(topic.name.clone()).with_partitions(partitions))
    });
    let count = denied.iter().map(|(_, t)| t.partitions.len()).sum();
    let left = !request.topics.is_empty();
    let empty = ResponseKind::OffsetDelete(OffsetDeleteResponse::default());
    Decision::split(count, left, Merge::OffsetDelete(denied), empty)
}

/// Denied groups and topics of an OffsetFetch, and the ACLs to filter "all topics" answers with.
#[derive(Debug, Default)]
pub struct OffsetFetchMerge {
    /// Set when a group asked for all its topics: those the pod may not Describe are dropped, as a broker does.
    filter: Option<Authorizer>,
    /// Before v8: denied topics of the single group.
    topics: Inserts<OffsetFetchResponseTopic>,
    /// From v8: denied groups, and denied topics of allowed groups.
    groups: Inserts<OffsetFetchResponseGroup>,
    group_topics: Vec<(GroupId, Inserts<OffsetFetchResponseTopics>)>,
}

impl OffsetFetchMerge {
    pub(super) fn apply(self, response: &mut OffsetFetchResponse) {
        if let Some(acl) = &self.filter {
            let visible = |name: &str| acl.allows(ResourceType::Topic, name, Operation::Describe);
            response.topics.retain(|t| visible(&t.name));
            for group in &mut response.groups {
                group.topics.retain(|t| t.name.is_empty() || visible(&t.name));
            }
        }
        insert(&mut response.topics, self.topics);
        for (group_id, inserts) in self.group_topics {
            if let Some(group) = response.groups.iter_mut().find(|g| g.group_id == group_id) {
                insert(&mut group.topics, inserts);
            }
        }
        insert(&mut response.groups, self.groups);
    }
}

pub(super) fn offset_fetch(ctx: &Ctx, request: &mut OffsetFetchRequest) -> Decision {
    let mut merge = OffsetFetchMerge::default();
    let mut count = 0;
    if ctx.version < 8 {
        if let Some(error) = ctx.group_error(&request.group_id, Operation::Describe) {
            return Decision::deny(error);
        }
        match &mut request.topics {
            None => merge.filter = (!ctx.acl.is_open()).then(|| ctx.acl.clone()),
            Some(topics) => {
                merge.topics = split(topics, |topic| {
                    let error = ctx.topic_error(&topic.name, Default::default(), Operation::Describe)?;
                    let partitions = topic
                        .partition_indexes
                        .iter()
                        .map(|&p| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(-1)
                                .with_metadata(Some(StrBytes::default()))
                                .with_error_code(error)
                        })
                        .collect();
                    count += topic.partition_indexes.len();
                    Some(OffsetFetchResponseTopic::default().with_name(topic.name.clone()).with_partitions(partitions))
                });
            }
        }
    } else {
        merge.groups = split(&mut request.groups, |group| {
            let error = ctx.group_error(&group.group_id, Operation::Describe)?;
            count += 1;
            Some(OffsetFetchResponseGroup::default().with_group_id(group.group_id.clone()).with_error_code(error))
        });
        for group in &mut request.groups {
            let Some(topics) = &mut group.topics else {
                merge.filter = (!ctx.acl.is_open()).then(|| ctx.acl.clone());
                continue;
            };
            let denied = split(topics, |topic| {
                let error = ctx.topic_error(&topic.name, topic.topic_id, Operation::Describe)?;
                let partitions = topic
                    .partition_indexes
                    .iter()
                    .map(|&p| {
                        OffsetFetchResponsePartitions::default()
                            .with_partition_index(p)
                            .with_committed_offset(-1)
                            .with_metadata(Some(StrBytes::default()))
                            .with_error_code(error)
                    })
                    .collect();
                count += topic.partition_indexes.len();
                Some(
                    OffsetFetchResponseTopics::default()
                        .with_name(topic.name.clone())
                        .with_topic_id(topic.topic_id)
                        .with_partitions(partitions),
                )
            });
            if !denied.is_empty() {
                merge.group_topics.push((group.group_id.clone(), denied));
            }
        }
        if request.groups.is_empty() && count > 0 {
            let mut response = OffsetFetchResponse::default();
            merge.apply(&mut response);
            return Decision::respond(ResponseKind::OffsetFetch(response), count);
        }
    }
    if count == 0 && merge.filter.is_none() {
        return Decision::forward();
    }
    Decision {
        outcome: Outcome::Forward { rewritten: count > 0, merge: Some(Merge::OffsetFetch(merge)) },
        denied: count,
    }
}

fn coordinator_error(ctx: &Ctx, key_type: i8, key: &str) -> Option<i16> {
    match key_type {
        KEY_TRANSACTION => ctx.txn_error(key, Operation::Describe),
        KEY_GROUP | KEY_SHARE => ctx.group_error(key, Operation::Describe),
        _ => Some(crate::code::INVALID_REQUEST),
    }
}

pub(super) fn find_coordinator(ctx: &Ctx, request: &mut FindCoordinatorRequest) -> Decision {
    let key_type = request.key_type;
    if ctx.version < 4 {
        return match coordinator_error(ctx, key_type, &request.key) {
            None => Decision::forward(),
            Some(error) => Decision::deny(error),
        };
    }
    let denied = split(&mut request.coordinator_keys, |key| {
        let error = coordinator_error(ctx, key_type, key)?;
        Some(
            Coordinator::default().with_key(key.clone()).with_node_id((-1).into()).with_port(-1).with_error_code(error),
        )
    });
    let left = !request.coordinator_keys.is_empty();
    let empty = ResponseKind::FindCoordinator(FindCoordinatorResponse::default());
    Decision::split(denied.len(), left, Merge::FindCoordinator(denied), empty)
}

pub(super) fn describe_groups(ctx: &Ctx, request: &mut DescribeGroupsRequest) -> Decision {
    let denied = split(&mut request.groups, |group| {
        let error = ctx.group_error(group, Operation::Describe)?;
        Some(
            DescribedGroup::default()
                .with_error_code(error)
                .with_group_id(group.clone())
                .with_authorized_operations(i32::MIN),
        )
    });
    let left = !request.groups.is_empty();
    let empty = ResponseKind::DescribeGroups(DescribeGroupsResponse::default());
    Decision::split(denied.len(), left, Merge::DescribeGroups(denied), empty)
}

pub(super) fn list_groups(ctx: &Ctx) -> Decision {
    if ctx.acl.allows_cluster(Operation::Describe) {
        return Decision::forward();
    }
    Decision {
        outcome: Outcome::Forward { rewritten: false, merge: Some(Merge::ListGroups(ctx.acl.clone())) },
        denied: 0,
    }
}

pub(super) fn delete_groups(ctx: &Ctx, request: &mut DeleteGroupsRequest) -> Decision {
    let denied = split(&mut request.groups_names, |group| {
        let error = ctx.group_error(group, Operation::Delete)?;
        Some(DeletableGroupResult::default().with_group_id(group.clone()).with_error_code(error))
    });
    let left = !request.groups_names.is_empty();
    let empty = ResponseKind::DeleteGroups(DeleteGroupsResponse::default());
    Decision::split(denied.len(), left, Merge::DeleteGroups(denied), empty)
}

/// ConsumerGroupHeartbeat (KIP-848): Read on the group, then Describe on every subscribed topic when the member
/// names them (a heartbeat repeating an unchanged subscription sends none); any topic denied fails the heartbeat
/// with TOPIC_AUTHORIZATION_FAILED, as the broker answers.
pub(super) fn consumer_group_heartbeat(ctx: &Ctx, request: &ConsumerGroupHeartbeatRequest) -> Decision {
    if let Some(error) = ctx.group_error(&request.group_id, Operation::Read) {
        return Decision::deny(error);
    }
    let topics = request.subscribed_topic_names.iter().flatten();
    if let Some(error) = topics.filter_map(|t| ctx.topic_error(t, Default::default(), Operation::Describe)).next() {
        return Decision::deny(error);
    }
    Decision::forward()
}

/// Denied groups of a ConsumerGroupDescribe, and the ACLs the described groups' topics are checked against.
#[derive(Debug)]
pub struct ConsumerGroupDescribeMerge {
    denied: Inserts<consumer_group_describe_response::DescribedGroup>,
    acl: Authorizer,
}

impl ConsumerGroupDescribeMerge {
    /// A described group with an assigned (or target) topic the pod may not Describe is replaced by that error,
    /// as Kafka's handler does, so a group never discloses topics the client could not see.
    pub(super) fn apply(self, response: &mut ConsumerGroupDescribeResponse) {
        use consumer_group_describe_response::DescribedGroup;
        let visible = |name: &str| self.acl.allows(ResourceType::Topic, name, Operation::Describe);
        for group in &mut response.groups {
            let hidden = group
                .members
                .iter()
                .flat_map(|m| m.assignment.topic_partitions.iter().chain(&m.target_assignment.topic_partitions))
                .any(|tp| !visible(&tp.topic_name));
            if group.error_code == 0 && hidden {
                *group = DescribedGroup::default()
                    .with_group_id(group.group_id.clone())
                    .with_error_code(crate::code::TOPIC_AUTHORIZATION_FAILED)
                    .with_error_message(Some(StrBytes::from_static_str(
                        "The group has assigned topic partitions that the client is not authorized to describe.",
                    )));
            }
        }
        insert(&mut response.groups, self.denied);
    }
}

pub(super) fn consumer_group_describe(ctx: &Ctx, request: &mut ConsumerGroupDescribeRequest) -> Decision {
    let denied = split(&mut request.group_ids, |group| {
        let error = ctx.group_error(group, Operation::Describe)?;
        Some(
            consumer_group_describe_response::DescribedGroup::default()
                .with_group_id(group.clone())
                .with_error_code(error),
        )
    });
    let count = denied.len();
    let merge = Merge::ConsumerGroupDescribe(ConsumerGroupDescribeMerge { denied, acl: ctx.acl.clone() });
    let empty = ResponseKind::ConsumerGroupDescribe(ConsumerGroupDescribeResponse::default());
    Decision::filtered(count, !request.group_ids.is_empty(), merge, empty)
}
