//! The ACL table: for every Kafka API key, the (resource, operation) pairs a Kafka broker's authorizer checks.
//!
//! Read this table to know what a policy must allow for a client to work. It follows Apache Kafka's request
//! handlers (`KafkaApis`, `ControllerApis`, the group and transaction coordinators). APIs marked `Unsupported` are
//! refused by the sidecar (it closes the connection, as a broker does for an API it does not offer) and are left
//! out of its ApiVersions answer, so well-behaved clients never send them.
//!
//! | API | checks |
//! | --- | --- |
//! | Produce | Topic Write per topic; TransactionalId Write when transactional |
//! | Fetch | Topic Read per topic (consumer); Cluster ClusterAction (follower) |
//! | ListOffsets, OffsetForLeaderEpoch | Topic Describe per topic |
//! | Metadata | Topic Describe per topic; Cluster Create or Topic Create to auto-create |
//! | OffsetCommit | Group Read; Topic Read per topic |
//! | OffsetFetch | Group Describe; Topic Describe per topic |
//! | FindCoordinator | Group Describe (group/share keys); TransactionalId Describe (transaction keys) |
//! | JoinGroup, SyncGroup, Heartbeat, LeaveGroup | Group Read |
//! | DescribeGroups | Group Describe per group |
//! | ListGroups | Cluster Describe, else only Describe-able groups are listed |
//! | CreateTopics | Cluster Create or Topic Create per topic |
//! | DeleteTopics, DeleteRecords | Topic Delete per topic |
//! | InitProducerId | TransactionalId Write; without one, Cluster IdempotentWrite or Write on any topic (KIP-679) |
//! | AddPartitionsToTxn | TransactionalId Write; Topic Write per topic |
//! | AddOffsetsToTxn | TransactionalId Write; Group Read |
//! | EndTxn | TransactionalId Write |
//! | TxnOffsetCommit | TransactionalId Write; Group Read; Topic Read per topic |
//! | DescribeConfigs | Topic DescribeConfigs per topic; Cluster DescribeConfigs per broker |
//! | OffsetDelete | Group Delete; Topic Read per topic |
//! | DeleteGroups | Group Delete per group |
//! | DescribeCluster, DescribeQuorum | Cluster Describe |
//! | CreatePartitions | Topic Alter per topic |
//! | AlterConfigs, IncrementalAlterConfigs | Topic AlterConfigs per topic; Group AlterConfigs per group; Cluster AlterConfigs per broker, broker logger or client-metrics resource |
//! | DescribeAcls, DescribeLogDirs, ListPartitionReassignments, DescribeUserScramCredentials | Cluster Describe |
//! | CreateAcls, DeleteAcls, AlterReplicaLogDirs, ElectLeaders, AlterPartitionReassignments, AlterUserScramCredentials, UpdateFeatures | Cluster Alter |
//! | DescribeClientQuotas, ListConfigResources | Cluster DescribeConfigs |
//! | AlterClientQuotas | Cluster AlterConfigs |
//! | DescribeProducers | Topic Read per topic |
//! | DescribeTransactions | TransactionalId Describe per id; listed topics filtered by Topic Describe |
//! | ListTransactions | none; only Describe-able transactional ids are listed |
//! | ConsumerGroupHeartbeat | Group Read; Topic Describe on every subscribed topic |
//! | ConsumerGroupDescribe | Group Describe per group; a group with a member's topic the pod may not Describe is TOPIC_AUTHORIZATION_FAILED |
//! | DescribeTopicPartitions | Topic Describe per topic (all topics: only Describe-able ones are listed) |
//! | ApiVersions, Get/PushTelemetry | none |
//! | everything else | see [`row`]: not authorizable by the sidecar |

use kafka_protocol::messages::ApiKey;
use kproxy_api::policy::{Operation, ResourceType};

/// Which names of a request a check applies to, and when it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    /// Every topic the request names.
    EachTopic,
    /// The request's group id.
    Group,
    /// Every group the request names.
    EachGroup,
    /// The request's transactional id, when it has one.
    TransactionalId,
    /// The cluster.
    Cluster,
    /// The cluster, for a replica (follower or broker) request.
    ClusterFromReplica,
    /// Every topic the request asks to auto-create.
    AutoCreatedTopic,
    /// Every topic config resource named.
    EachTopicConfig,
    /// Every broker config resource named.
    EachBrokerConfig,
    /// The coordinator key of a group (or share group) lookup.
    GroupKey,
    /// The coordinator key of a transaction lookup.
    TransactionKey,
    /// Any one topic: the check passes if the operation is allowed on at least one topic.
    AnyTopic,
    /// Every transactional id the request names (or the response lists).
    EachTransactionalId,
    /// Every group config resource named.
    EachGroupConfig,
    /// Every topic the broker's answer lists: those the pod may not Describe are left out (or fail their entry).
    ListedTopic,
    /// Every transactional id the broker's answer lists: those the pod may not Describe are left out.
    ListedTransactionalId,
}

/// One authorizer check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    pub resource: ResourceType,
    pub operation: Operation,
    pub on: On,
    /// An alternative that also satisfies this check (Kafka tries the cluster first, then the topic).
    pub or: Option<(ResourceType, Operation, On)>,
}

/// Why an API is not offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// Sent between brokers and controllers only; a client has no business sending it.
    InterBroker,
    /// Authentication happens between the sidecar and the brokers, not with the client.
    Authentication,
    /// Checks resources outside the policy model (users, delegation tokens).
    OutsideModel,
    /// Changes the cluster's membership (unregistering a broker, adding or removing a KRaft voter).
    Membership,
    /// APIs the sidecar does not inspect yet; refused rather than forwarded unchecked.
    NotInspected,
}

/// How the sidecar treats an API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// The listed checks are enforced per request.
    Enforced(&'static [Check]),
    /// The broker checks nothing; forwarded as is.
    Open,
    Unsupported(Unsupported),
}

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub api: ApiKey,
    pub support: Support,
}

const fn check(resource: ResourceType, operation: Operation, on: On) -> Check {
    Check { resource, operation, on, or: None }
}

use Operation as O;
use ResourceType as R;

const TOPIC_WRITE: Check = check(R::Topic, O::Write, On::EachTopic);
const TOPIC_READ: Check = check(R::Topic, O::Read, On::EachTopic);
const TOPIC_DESCRIBE: Check = check(R::Topic, O::Describe, On::EachTopic);
const GROUP_READ: Check = check(R::Group, O::Read, On::Group);
const TXN_WRITE: Check = check(R::TransactionalId, O::Write, On::TransactionalId);

const PRODUCE: &[Check] = &[TOPIC_WRITE, TXN_WRITE];
const FETCH: &[Check] = &[TOPIC_READ, check(R::Cluster, O::ClusterAction, On::ClusterFromReplica)];
const PER_TOPIC_DESCRIBE: &[Check] = &[TOPIC_DESCRIBE];
const METADATA: &[Check] = &[
    TOPIC_DESCRIBE,
    Check {
        resource: R::Cluster,
        operation: O::Create,
        on: On::Cluster,
        or: Some((R::Topic, O::Create, On::AutoCreatedTopic)),
    },
];
const OFFSET_COMMIT: &[Check] = &[GROUP_READ, TOPIC_READ];
const OFFSET_FETCH: &[Check] = &[check(R::Group, O::Describe, On::Group), TOPIC_DESCRIBE];
const FIND_COORDINATOR: &[Check] =
    &[check(R::Group, O::Describe, On::GroupKey), check(R::TransactionalId, O::Describe, On::TransactionKey)];
const GROUP_MEMBERSHIP: &[Check] = &[GROUP_READ];
const DESCRIBE_GROUPS: &[Check] = &[check(R::Group, O::Describe, On::EachGroup)];
const LIST_GROUPS: &[Check] = &[Check {
    resource: R::Cluster,
    operation: O::Describe,
    on: On::Cluster,
    or: Some((R::Group, O::Describe, On::EachGroup)),
}];
const CREATE_TOPICS: &[Check] = &[Check {
    resource: R::Cluster,
    operation: O::Create,
    on: On::Cluster,
    or: Some((R::Topic, O::Create, On::EachTopic)),
}];
const TOPIC_DELETE: &[Check] = &[check(R::Topic, O::Delete, On::EachTopic)];
const INIT_PRODUCER_ID: &[Check] = &[
    TXN_WRITE,
    Check {
        resource: R::Cluster,
        operation: O::IdempotentWrite,
        on: On::Cluster,
        or: Some((R::Topic, O::Write, On::AnyTopic)),
    },
];
const ADD_PARTITIONS_TO_TXN: &[Check] = &[TXN_WRITE, TOPIC_WRITE];
const ADD_OFFSETS_TO_TXN: &[Check] = &[TXN_WRITE, GROUP_READ];
const END_TXN: &[Check] = &[TXN_WRITE];
const TXN_OFFSET_COMMIT: &[Check] = &[TXN_WRITE, GROUP_READ, TOPIC_READ];
const DESCRIBE_CONFIGS: &[Check] = &[
    check(R::Topic, O::DescribeConfigs, On::EachTopicConfig),
    check(R::Cluster, O::DescribeConfigs, On::EachBrokerConfig),
];
const OFFSET_DELETE: &[Check] = &[check(R::Group, O::Delete, On::Group), TOPIC_READ];
const DELETE_GROUPS: &[Check] = &[check(R::Group, O::Delete, On::EachGroup)];
const DESCRIBE_CLUSTER: &[Check] = &[check(R::Cluster, O::Describe, On::Cluster)];
const ALTER_CLUSTER: &[Check] = &[check(R::Cluster, O::Alter, On::Cluster)];
const DESCRIBE_CLUSTER_CONFIGS: &[Check] = &[check(R::Cluster, O::DescribeConfigs, On::Cluster)];
const ALTER_CLUSTER_CONFIGS: &[Check] = &[check(R::Cluster, O::AlterConfigs, On::Cluster)];
const CREATE_PARTITIONS: &[Check] = &[check(R::Topic, O::Alter, On::EachTopic)];
const ALTER_CONFIGS: &[Check] = &[
    check(R::Topic, O::AlterConfigs, On::EachTopicConfig),
    check(R::Group, O::AlterConfigs, On::EachGroupConfig),
    check(R::Cluster, O::AlterConfigs, On::EachBrokerConfig),
];
const DESCRIBE_PRODUCERS: &[Check] = &[TOPIC_READ];
const LISTED_TOPIC_DESCRIBE: Check = check(R::Topic, O::Describe, On::ListedTopic);
const DESCRIBE_TRANSACTIONS: &[Check] =
    &[check(R::TransactionalId, O::Describe, On::EachTransactionalId), LISTED_TOPIC_DESCRIBE];
const LIST_TRANSACTIONS: &[Check] = &[check(R::TransactionalId, O::Describe, On::ListedTransactionalId)];
const CONSUMER_GROUP_HEARTBEAT: &[Check] = &[GROUP_READ, TOPIC_DESCRIBE];
const CONSUMER_GROUP_DESCRIBE: &[Check] = &[check(R::Group, O::Describe, On::EachGroup), LISTED_TOPIC_DESCRIBE];

/// The table row for an API key.
pub fn row(api: ApiKey) -> Row {
    use ApiKey as A;
    use Support::{Enforced, Open};
    use Unsupported::*;
    let support = match api {
        A::Produce => Enforced(PRODUCE),
        A::Fetch => Enforced(FETCH),
        A::ListOffsets | A::OffsetForLeaderEpoch => Enforced(PER_TOPIC_DESCRIBE),
        A::Metadata => Enforced(METADATA),
        A::OffsetCommit => Enforced(OFFSET_COMMIT),
        A::OffsetFetch => Enforced(OFFSET_FETCH),
        A::FindCoordinator => Enforced(FIND_COORDINATOR),
        A::JoinGroup | A::Heartbeat | A::LeaveGroup | A::SyncGroup => Enforced(GROUP_MEMBERSHIP),
        A::DescribeGroups => Enforced(DESCRIBE_GROUPS),
        A::ListGroups => Enforced(LIST_GROUPS),
        A::CreateTopics => Enforced(CREATE_TOPICS),
        A::DeleteTopics | A::DeleteRecords => Enforced(TOPIC_DELETE),
        A::InitProducerId => Enforced(INIT_PRODUCER_ID),
        A::AddPartitionsToTxn => Enforced(ADD_PARTITIONS_TO_TXN),
        A::AddOffsetsToTxn => Enforced(ADD_OFFSETS_TO_TXN),
        A::EndTxn => Enforced(END_TXN),
        A::TxnOffsetCommit => Enforced(TXN_OFFSET_COMMIT),
        A::DescribeConfigs => Enforced(DESCRIBE_CONFIGS),
        A::OffsetDelete => Enforced(OFFSET_DELETE),
        A::DeleteGroups => Enforced(DELETE_GROUPS),
        A::DescribeCluster | A::DescribeQuorum => Enforced(DESCRIBE_CLUSTER),
        A::CreatePartitions => Enforced(CREATE_PARTITIONS),
        A::AlterConfigs | A::IncrementalAlterConfigs => Enforced(ALTER_CONFIGS),
        A::DescribeAcls | A::DescribeLogDirs | A::ListPartitionReassignments | A::DescribeUserScramCredentials => {
            Enforced(DESCRIBE_CLUSTER)
        }
        A::CreateAcls
        | A::DeleteAcls
        | A::AlterReplicaLogDirs
        | A::ElectLeaders
        | A::AlterPartitionReassignments
        | A::AlterUserScramCredentials
        | A::UpdateFeatures => Enforced(ALTER_CLUSTER),
        A::DescribeClientQuotas | A::ListConfigResources => Enforced(DESCRIBE_CLUSTER_CONFIGS),
        A::AlterClientQuotas => Enforced(ALTER_CLUSTER_CONFIGS),
        A::DescribeProducers => Enforced(DESCRIBE_PRODUCERS),
        A::DescribeTransactions => Enforced(DESCRIBE_TRANSACTIONS),
        A::ListTransactions => Enforced(LIST_TRANSACTIONS),
        A::ConsumerGroupHeartbeat => Enforced(CONSUMER_GROUP_HEARTBEAT),
        A::ConsumerGroupDescribe => Enforced(CONSUMER_GROUP_DESCRIBE),
        A::DescribeTopicPartitions => Enforced(PER_TOPIC_DESCRIBE),
        A::ApiVersions | A::GetTelemetrySubscriptions | A::PushTelemetry => Open,
        A::SaslHandshake | A::SaslAuthenticate => Support::Unsupported(Authentication),
        // Delegation tokens are checked on User and DelegationToken resources, which policies cannot name; and a
        // token would be issued to the sidecar's upstream identity, not the pod's.
        A::CreateDelegationToken | A::RenewDelegationToken | A::ExpireDelegationToken | A::DescribeDelegationToken => {
            Support::Unsupported(OutsideModel)
        }
        A::WriteTxnMarkers
        | A::Vote
        | A::BeginQuorumEpoch
        | A::EndQuorumEpoch
        | A::AlterPartition
        | A::Envelope
        | A::FetchSnapshot
        | A::BrokerRegistration
        | A::BrokerHeartbeat
        | A::AllocateProducerIds
        | A::ControllerRegistration
        | A::AssignReplicasToDirs
        | A::UpdateRaftVoter
        | A::InitializeShareGroupState
        | A::ReadShareGroupState
        | A::WriteShareGroupState
        | A::DeleteShareGroupState
        | A::ReadShareGroupStateSummary => Support::Unsupported(InterBroker),
        // Changes to the cluster's own membership: done by its operators against the brokers, not by an
        // application through its sidecar.
        A::UnregisterBroker | A::AddRaftVoter | A::RemoveRaftVoter => Support::Unsupported(Membership),
        // Share groups (KIP-932): not inspected yet, so refused rather than forwarded unchecked.
        A::ShareGroupHeartbeat
        | A::ShareGroupDescribe
        | A::ShareFetch
        | A::ShareAcknowledge
        | A::DescribeShareGroupOffsets
        | A::AlterShareGroupOffsets
        | A::DeleteShareGroupOffsets => Support::Unsupported(NotInspected),
    };
    Row { api, support }
}

/// Whether the sidecar can authorize (or needs not authorize) this API; the rest are refused and not advertised.
pub fn authorizable(api: ApiKey) -> bool {
    !matches!(row(api).support, Support::Unsupported(_))
}

/// Whether deciding this API needs its request body decoded (to read topic, group or transactional ids).
pub fn needs_body(api: ApiKey) -> bool {
    match row(api).support {
        Support::Enforced(checks) => checks.iter().any(|c| c.on != On::Cluster || c.or.is_some()),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
