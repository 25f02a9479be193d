//! Admin requests naming topics (or config resources) of several clusters: split per cluster, the answers merged
//! back into the one response the client expects; and cluster-wide admin APIs sent to the default cluster.
//!
//! Every entity of these APIs is handled on its own by the broker (a topic created, a config altered, a
//! partition's producers described), so a request whose entities routes put in different clusters is served by
//! sending each cluster the part routed to it. Requests bound to one broker (a partition leader, a group or
//! transaction coordinator, a broker's own configs or log dirs) already reach the right cluster through the
//! virtual broker the client dialled, and are left alone.

use kafka_protocol::messages::{RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{Health, Kind, Routes};

/// Config resource types (`ConfigResource.Type`).
const CONFIG_TOPIC: i8 = 2;
const CONFIG_CLIENT_METRICS: i8 = 16;
const CONFIG_GROUP: i8 = 32;

/// Where a request goes.
#[derive(Debug)]
pub enum Plan {
    /// To the connection's own cluster, unchanged.
    Own,
    /// Whole, to another cluster.
    Elsewhere(String),
    /// In parts, one per cluster, in the order the clusters first appear in the request; `order` puts the merged
    /// answer back in the request's order.
    Split { parts: Vec<(String, RequestKind)>, order: Order },
}

/// The keys of a split request's entities in request order; merged answers are sorted by it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Order(Vec<String>);

impl Order {
    fn position(&self, key: &str) -> usize {
        self.0.iter().position(|k| k == key).unwrap_or(usize::MAX)
    }
}

/// Whether this API's requests go to the default cluster whatever connection they arrive on: cluster-wide state
/// (ACLs, client quotas, SCRAM credentials, features, client-metrics resources) that has no route of its own.
pub fn to_default(request: &RequestKind) -> bool {
    use RequestKind as K;
    matches!(
        request,
        K::DescribeAcls(_)
            | K::CreateAcls(_)
            | K::DeleteAcls(_)
            | K::DescribeClientQuotas(_)
            | K::AlterClientQuotas(_)
            | K::DescribeUserScramCredentials(_)
            | K::AlterUserScramCredentials(_)
            | K::UpdateFeatures(_)
            | K::ListConfigResources(_)
    )
}

/// Whether a request of this API may be split or sent elsewhere ([`plan`] needs its body).
pub fn plans(api: kafka_protocol::messages::ApiKey) -> bool {
    use kafka_protocol::messages::ApiKey as A;
    matches!(
        api,
        A::CreateTopics
            | A::DeleteTopics
            | A::CreatePartitions
            | A::DescribeConfigs
            | A::AlterConfigs
            | A::IncrementalAlterConfigs
            | A::ElectLeaders
            | A::AlterPartitionReassignments
            | A::ListPartitionReassignments
            | A::DescribeProducers
            | A::DescribeTopicPartitions
            | A::DescribeAcls
            | A::CreateAcls
            | A::DeleteAcls
            | A::DescribeClientQuotas
            | A::AlterClientQuotas
            | A::DescribeUserScramCredentials
            | A::AlterUserScramCredentials
            | A::UpdateFeatures
            | A::ListConfigResources
    )
}

/// Decides where a request goes, given the connection's own cluster.
pub fn plan(request: &RequestKind, routes: &Routes, health: &Health, own: &str) -> Plan {
    if to_default(request) {
        let default = routes.default_cluster();
        return if default == own { Plan::Own } else { Plan::Elsewhere(default.to_string()) };
    }
    let topic = |name: &TopicName| (name.to_string(), routes.cluster(Kind::Topic, name, health).to_string());
    // A config resource: topics and groups by their routes, client-metrics resources in the default cluster,
    // brokers (and anything else) where the client sent them.
    let config = |kind: i8, name: &StrBytes| {
        let cluster = match kind {
            CONFIG_TOPIC => routes.cluster(Kind::Topic, name, health),
            CONFIG_GROUP => routes.cluster(Kind::Group, name, health),
            CONFIG_CLIENT_METRICS => routes.default_cluster(),
            _ => own,
        };
        (format!("{kind}/{name}"), cluster.to_string())
    };
    use RequestKind as K;
    let keyed: Vec<(String, String)> = match request {
        K::CreateTopics(r) => r.topics.iter().map(|t| topic(&t.name)).collect(),
        // By id (v6+ may name topics by id only), a topic's route is not known: left where the client sent it.
        K::DeleteTopics(r) if r.topics.iter().any(|t| t.name.is_none()) => return Plan::Own,
        K::DeleteTopics(r) if !r.topics.is_empty() => {
            r.topics.iter().flat_map(|t| t.name.as_ref()).map(topic).collect()
        }
        K::DeleteTopics(r) => r.topic_names.iter().map(topic).collect(),
        K::CreatePartitions(r) => r.topics.iter().map(|t| topic(&t.name)).collect(),
        K::DescribeConfigs(r) => r.resources.iter().map(|c| config(c.resource_type, &c.resource_name)).collect(),
        K::AlterConfigs(r) => r.resources.iter().map(|c| config(c.resource_type, &c.resource_name)).collect(),
        K::IncrementalAlterConfigs(r) => {
            r.resources.iter().map(|c| config(c.resource_type, &c.resource_name)).collect()
        }
        K::ElectLeaders(r) => match &r.topic_partitions {
            Some(topics) => topics.iter().map(|t| topic(&t.topic)).collect(),
            None => return Plan::Own,
        },
        K::AlterPartitionReassignments(r) => r.topics.iter().map(|t| topic(&t.name)).collect(),
        K::ListPartitionReassignments(r) => match &r.topics {
            Some(topics) => topics.iter().map(|t| topic(&t.name)).collect(),
            None => return Plan::Own,
        },
        K::DescribeProducers(r) => r.topics.iter().map(|t| topic(&t.name)).collect(),
        K::DescribeTopicPartitions(r) => r.topics.iter().map(|t| topic(&t.name)).collect(),
        _ => return Plan::Own,
    };
    let mut clusters: Vec<&str> = Vec::new();
    for (_, c) in &keyed {
        if !clusters.contains(&c.as_str()) {
            clusters.push(c);
        }
    }
    match clusters.as_slice() {
        [] => Plan::Own,
        [only] if *only == own => Plan::Own,
        [only] => Plan::Elsewhere(only.to_string()),
        _ => {
            let parts = clusters
                .iter()
                .map(|c| {
                    let mut keep = keyed.iter().map(|(_, k)| k == c);
                    (c.to_string(), part(request, &mut keep))
                })
                .collect();
            Plan::Split { parts, order: Order(keyed.iter().map(|(k, _)| k.clone()).collect()) }
        }
    }
}

/// A copy of `request` with only the entities `keep` yields true for, in the order [`plan`] keyed them.
fn part(request: &RequestKind, keep: &mut dyn Iterator<Item = bool>) -> RequestKind {
    fn only<T: Clone>(items: &[T], keep: &mut dyn Iterator<Item = bool>) -> Vec<T> {
        items.iter().filter(|_| keep.next().unwrap_or(false)).cloned().collect()
    }
    use RequestKind as K;
    let mut out = request.clone();
    match &mut out {
        K::CreateTopics(r) => r.topics = only(&r.topics, keep),
        K::DeleteTopics(r) if !r.topics.is_empty() => r.topics = only(&r.topics, keep),
        K::DeleteTopics(r) => r.topic_names = only(&r.topic_names, keep),
        K::CreatePartitions(r) => r.topics = only(&r.topics, keep),
        K::DescribeConfigs(r) => r.resources = only(&r.resources, keep),
        K::AlterConfigs(r) => r.resources = only(&r.resources, keep),
        K::IncrementalAlterConfigs(r) => r.resources = only(&r.resources, keep),
        K::ElectLeaders(r) => r.topic_partitions = r.topic_partitions.as_ref().map(|t| only(t, keep)),
        K::AlterPartitionReassignments(r) => r.topics = only(&r.topics, keep),
        K::ListPartitionReassignments(r) => r.topics = r.topics.as_ref().map(|t| only(t, keep)),
        K::DescribeProducers(r) => r.topics = only(&r.topics, keep),
        K::DescribeTopicPartitions(r) => r.topics = only(&r.topics, keep),
        _ => {}
    }
    out
}

/// Merges the answers to the parts of a split request (in any order) into one, its entities in request order:
/// throttle the longest, a top-level error the first one set, a DescribeTopicPartitions page cut at the earliest
/// cursor of any part (so the next page repeats nothing and skips nothing).
pub fn merge(parts: Vec<ResponseKind>, order: &Order) -> Option<ResponseKind> {
    let mut parts = parts.into_iter();
    let mut merged = parts.next()?;
    for part in parts {
        absorb(&mut merged, part);
    }
    sort(&mut merged, order);
    Some(merged)
}

fn absorb(into: &mut ResponseKind, part: ResponseKind) {
    use ResponseKind as R;
    /// The longest throttle, and the part's entities after the others'.
    fn join<T>(throttle: (&mut i32, i32), into: &mut Vec<T>, from: Vec<T>) {
        *throttle.0 = (*throttle.0).max(throttle.1);
        into.extend(from);
    }
    /// The first top-level error any part had, with its message.
    fn first_error<M>(mine: (&mut i16, &mut M), theirs: (i16, M)) {
        if *mine.0 == 0 {
            (*mine.0, *mine.1) = theirs;
        }
    }
    match (into, part) {
        (R::CreateTopics(a), R::CreateTopics(b)) => {
            join((&mut a.throttle_time_ms, b.throttle_time_ms), &mut a.topics, b.topics)
        }
        (R::DeleteTopics(a), R::DeleteTopics(b)) => {
            join((&mut a.throttle_time_ms, b.throttle_time_ms), &mut a.responses, b.responses)
        }
        (R::CreatePartitions(a), R::CreatePartitions(b)) => {
            join((&mut a.throttle_time_ms, b.throttle_time_ms), &mut a.results, b.results)
        }
        (R::DescribeConfigs(a), R::DescribeConfigs(b)) => {
            join((&mut a.throttle_time_ms, b.throttle_time_ms), &mut a.results, b.results)
        }
        (R::AlterConfigs(a), R::AlterConfigs(b)) => {
            join((&mut a.throttle_time_ms, b.throttle_time_ms), &mut a.responses, b.responses)
        }
        (R::IncrementalAlterConfigs(a), R::IncrementalAlterConfigs(b)) => {
            join((&mut a.throttle_time_ms, b.throttle_time_ms), &mut a.responses, b.responses)
        }
        (R::ElectLeaders(a), R::ElectLeaders(b)) => {
            first_error((&mut a.error_code, &mut ()), (b.error_code, ()));
            let results = (&mut a.replica_election_results, b.replica_election_results);
            join((&mut a.throttle_time_ms, b.throttle_time_ms), results.0, results.1);
        }
        (R::AlterPartitionReassignments(a), R::AlterPartitionReassignments(b)) => {
            first_error((&mut a.error_code, &mut a.error_message), (b.error_code, b.error_message));
            join((&mut a.throttle_time_ms, b.throttle_time_ms), &mut a.responses, b.responses);
        }
        (R::ListPartitionReassignments(a), R::ListPartitionReassignments(b)) => {
            first_error((&mut a.error_code, &mut a.error_message), (b.error_code, b.error_message));
            join((&mut a.throttle_time_ms, b.throttle_time_ms), &mut a.topics, b.topics);
        }
        (R::DescribeProducers(a), R::DescribeProducers(b)) => {
            join((&mut a.throttle_time_ms, b.throttle_time_ms), &mut a.topics, b.topics)
        }
        (R::DescribeTopicPartitions(a), R::DescribeTopicPartitions(b)) => {
            join((&mut a.throttle_time_ms, b.throttle_time_ms), &mut a.topics, b.topics);
            a.next_cursor = match (a.next_cursor.take(), b.next_cursor) {
                (Some(x), Some(y)) => {
                    Some(if (y.topic_name.as_str(), y.partition_index) < (x.topic_name.as_str(), x.partition_index) {
                        y
                    } else {
                        x
                    })
                }
                (x, y) => x.or(y),
            };
        }
        _ => {}
    }
}

/// Puts entities back in request order (unknown keys last, in the order they came) and cuts a paged answer at its
/// cursor.
fn sort(response: &mut ResponseKind, order: &Order) {
    use ResponseKind as R;
    let at = |key: &str| order.position(key);
    let config = |kind: i8, name: &StrBytes| at(&format!("{kind}/{name}"));
    match response {
        R::CreateTopics(r) => r.topics.sort_by_key(|t| at(&t.name)),
        R::DeleteTopics(r) => r.responses.sort_by_key(|t| t.name.as_deref().map_or(usize::MAX, |n| at(n))),
        R::CreatePartitions(r) => r.results.sort_by_key(|t| at(&t.name)),
        R::DescribeConfigs(r) => r.results.sort_by_key(|c| config(c.resource_type, &c.resource_name)),
        R::AlterConfigs(r) => r.responses.sort_by_key(|c| config(c.resource_type, &c.resource_name)),
        R::IncrementalAlterConfigs(r) => r.responses.sort_by_key(|c| config(c.resource_type, &c.resource_name)),
        R::ElectLeaders(r) => r.replica_election_results.sort_by_key(|t| at(&t.topic)),
        R::AlterPartitionReassignments(r) => r.responses.sort_by_key(|t| at(&t.name)),
        R::ListPartitionReassignments(r) => r.topics.sort_by_key(|t| at(&t.name)),
        R::DescribeProducers(r) => r.topics.sort_by_key(|t| at(&t.name)),
        R::DescribeTopicPartitions(r) => {
            if let Some(cursor) = &r.next_cursor {
                let (name, index) = (cursor.topic_name.as_str(), cursor.partition_index);
                r.topics.retain(|t| t.name.as_ref().is_none_or(|n| n.as_str() <= name));
                for t in &mut r.topics {
                    if t.name.as_ref().is_some_and(|n| n.as_str() == name) {
                        t.partitions.retain(|p| p.partition_index < index);
                    }
                }
            }
            r.topics.sort_by_key(|t| t.name.as_deref().map_or(usize::MAX, |n| at(n)));
        }
        _ => {}
    }
}

#[cfg(test)]
#[path = "split_tests.rs"]
mod tests;
