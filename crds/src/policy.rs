//! Policy building blocks shared by the CRD spec and the rendered sidecar config: routes, ACLs and quotas.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which topics, groups or transactional ids a route applies to. Exactly one field is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.topic), has(self.topicPrefix), has(self.group), has(self.groupPrefix), has(self.transactionalId), has(self.transactionalIdPrefix)].filter(x, x).size() == 1",
    "message": "exactly one of topic, topicPrefix, group, groupPrefix, transactionalId, transactionalIdPrefix must be set"
}]))]
pub struct RouteMatch {
    /// Exactly this topic name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Every topic whose name starts with this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_prefix: Option<String>,
    /// Exactly this consumer group (its coordinator, offsets and membership requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Every consumer group whose id starts with this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_prefix: Option<String>,
    /// Exactly this transactional id (its coordinator and transaction requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
    /// Every transactional id that starts with this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactional_id_prefix: Option<String>,
}

/// Sends matching topics/groups/transactional ids to one cluster; first match wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// What the route applies to: exactly one of topic, topicPrefix, group, groupPrefix, transactionalId or
    /// transactionalIdPrefix.
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    /// Name of the cluster that serves this route.
    #[schemars(length(max = 63))]
    pub cluster: String,
    /// Clusters to use, in order, while `cluster` is unreachable. They must already hold the same topics and
    /// group offsets (for example through MirrorMaker 2 with the identity replication policy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 63)))]
    pub failover: Vec<String>,
}

/// What a rule or the default does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Action {
    Allow,
    #[default]
    Deny,
}

/// Kafka resource types an ACL rule can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

/// How a rule's resource name matches, as in Kafka; a literal `*` matches every name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PatternType {
    #[default]
    Literal,
    Prefixed,
}

/// Kafka ACL operations; `All` implies every other one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

/// The resource an ACL rule is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// Kafka resource type: Topic, Group, Cluster or TransactionalId.
    #[serde(rename = "type")]
    pub kind: ResourceType,
    /// Resource name; `kafka-cluster` (or anything) for `Cluster`, `*` for every name.
    #[serde(default = "wildcard")]
    pub name: String,
    /// How `name` matches: Literal (the exact name, or every name for `*`) or Prefixed (names starting with it).
    #[serde(default)]
    pub pattern_type: PatternType,
}

fn wildcard() -> String {
    "*".to_string()
}

/// One ACL rule: these operations on this resource are allowed or denied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The Kafka resource (type, name, pattern) the rule is about.
    pub resource: Resource,
    /// Kafka ACL operations the rule covers (Read, Write, Create, Delete, Alter, Describe, ClusterAction,
    /// DescribeConfigs, AlterConfigs, IdempotentWrite, or All), mapped from each request as the broker does.
    #[schemars(length(min = 1))]
    pub operations: Vec<Operation>,
    /// Allow or Deny these operations on the resource; a matching Deny beats any Allow.
    pub effect: Action,
}

/// ACLs with Kafka semantics: a matching Deny beats any Allow; with no match the default applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Acls {
    /// What happens to an operation no rule matches: Allow or Deny (the default).
    #[serde(default)]
    pub default_action: Action,
    /// The rules; order does not matter (Deny wins over Allow).
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// Rates for one client id, replacing the pod-wide ones it sets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientQuota {
    /// The Kafka client id (`client.id`) these rates apply to.
    pub client_id: String,
    /// Produce bytes per second for this client id; absent: the pod-wide rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub producer_byte_rate: Option<u64>,
    /// Fetch bytes per second for this client id; absent: the pod-wide rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consumer_byte_rate: Option<u64>,
    /// Requests per second for this client id; absent: the pod-wide rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub request_rate: Option<u64>,
}

/// Pod-wide quotas with Kafka (KIP-219) semantics: throttle, never drop. Absent means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quotas {
    /// Produce bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub producer_byte_rate: Option<u64>,
    /// Fetch bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consumer_byte_rate: Option<u64>,
    /// Requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub request_rate: Option<u64>,
    /// Rates for particular client ids, replacing the pod-wide ones each sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_id_overrides: Vec<ClientQuota>,
}
