//! Routing, failover and cross-cluster rules.

use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponseTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kproxy_api::config::SidecarConfig;

use super::{Health, Kind, Routes, Switches, cross_cluster, merge_metadata};

fn config() -> SidecarConfig {
    SidecarConfig::parse(
        r#"
clusters:
- {name: east, bootstrapServers: ["127.0.0.1:1"]}
- {name: west, bootstrapServers: ["127.0.0.1:2"]}
- {name: north, bootstrapServers: ["127.0.0.1:3"]}
defaultCluster: east
routes:
- {match: {topic: "orders.special"}, cluster: north}
- {match: {topicPrefix: "orders."}, cluster: east, failover: [west, north]}
- {match: {topic: "audit"}, cluster: west}
- {match: {topicPrefix: "orders.sp"}, cluster: west}
- {match: {groupPrefix: "audit-"}, cluster: west}
- {match: {transactionalId: "tx-west"}, cluster: west}
"#,
    )
    .unwrap()
}

#[test]
fn first_match_wins_then_the_default() {
    let r = Routes::compile(&config());
    let h = Health::new(Duration::from_secs(5));
    assert_eq!(r.cluster(Kind::Topic, "orders.special", &h), "north");
    assert_eq!(r.cluster(Kind::Topic, "orders.spam", &h), "east", "the earlier prefix route wins");
    assert_eq!(r.cluster(Kind::Topic, "audit", &h), "west");
    assert_eq!(r.cluster(Kind::Topic, "audit2", &h), "east");
    assert_eq!(r.cluster(Kind::Group, "audit-readers", &h), "west");
    assert_eq!(r.cluster(Kind::Group, "audit", &h), "east", "topic routes do not route groups");
    assert_eq!(r.cluster(Kind::TransactionalId, "tx-west", &h), "west");
}

#[test]
fn failover_moves_after_the_configured_time_and_comes_back() {
    let r = Routes::compile(&config());
    let mut h = Health::new(Duration::from_secs(5));
    let mut switches = Switches::default();
    assert!(switches.observe(&r, &h).is_empty());
    let t0 = Instant::now();
    assert_eq!(h.failure("east", t0), None);
    assert_eq!(h.failure("east", t0 + Duration::from_secs(4)), None);
    assert_eq!(r.cluster(Kind::Topic, "orders.eu", &h), "east", "not yet unreachable");
    let t = h.failure("east", t0 + Duration::from_secs(5)).unwrap();
    assert!(!t.reachable);
    assert_eq!(r.cluster(Kind::Topic, "orders.eu", &h), "west");
    let s = switches.observe(&r, &h);
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].from.as_str(), s[0].to.as_str(), s[0].direction()), ("east", "west", "fallback"));
    // The default cluster has no fallback: unrouted names stay on east.
    assert_eq!(r.cluster(Kind::Topic, "misc", &h), "east");
    // West fails too: the next fallback.
    h.failure("west", t0);
    assert_eq!(h.tick(t0 + Duration::from_secs(6)).len(), 1);
    assert_eq!(r.cluster(Kind::Topic, "orders.eu", &h), "north");
    // East returns.
    assert!(h.success("east").unwrap().reachable);
    assert_eq!(r.cluster(Kind::Topic, "orders.eu", &h), "east");
    let s = switches.observe(&r, &h);
    assert!(s.iter().any(|s| s.to == "east" && s.direction() == "primary"), "{s:?}");
}

#[test]
fn a_timed_out_probe_counts_its_failure_from_when_it_was_sent() {
    let mut h = Health::new(Duration::from_secs(3));
    let t0 = Instant::now();
    // Sent at t0, timed out at t0+1.5 s; the next one, sent at t0+2 s, times out at t0+3.5 s: 3.5 s unanswered.
    assert_eq!(h.failure_since("east", t0, t0 + Duration::from_millis(1500)), None);
    let t = h.failure_since("east", t0 + Duration::from_secs(2), t0 + Duration::from_millis(3500)).unwrap();
    assert!(!t.reachable);
}

fn topic(name: &'static str) -> MetadataResponseTopic {
    MetadataResponseTopic::default().with_name(Some(TopicName(StrBytes::from_static_str(name))))
}

#[test]
fn metadata_merges_topics_by_route_and_brokers_from_all() {
    let r = Routes::compile(&config());
    let h = Health::new(Duration::from_secs(5));
    let broker = |id: i32| MetadataResponseBroker::default().with_node_id(id.into());
    let east = MetadataResponse::default()
        .with_brokers(vec![broker(1)])
        .with_controller_id(1.into())
        .with_topics(vec![topic("orders.eu"), topic("audit")]);
    let west =
        MetadataResponse::default().with_brokers(vec![broker(2)]).with_topics(vec![topic("audit"), topic("orders.eu")]);
    let merged = merge_metadata(vec![("west", west), ("east", east)], &r, &h);
    let mut names: Vec<_> = merged.topics.iter().map(|t| t.name.as_ref().unwrap().as_str().to_string()).collect();
    names.sort();
    assert_eq!(names, ["audit", "orders.eu"]);
    assert_eq!(merged.brokers.len(), 2);
    assert_eq!(merged.controller_id.0, 1, "controller from the default cluster");
}

#[test]
fn a_group_or_transaction_spanning_clusters_is_refused_with_a_reason() {
    let r = Routes::compile(&config());
    let commit = |group: &'static str, topics: &[&'static str]| {
        RequestKind::OffsetCommit(
            OffsetCommitRequest::default().with_group_id(GroupId(StrBytes::from_static_str(group))).with_topics(
                topics
                    .iter()
                    .map(|t| {
                        offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_static_str(t)))
                    })
                    .collect(),
            ),
        )
    };
    assert_eq!(cross_cluster(&commit("app", &["orders.eu", "misc"]), &r), None);
    let why = cross_cluster(&commit("app", &["orders.eu", "audit"]), &r).unwrap();
    assert!(why.contains("\"audit\"") && why.contains("west") && why.contains("span"), "{why}");
    let txn = RequestKind::AddOffsetsToTxn(
        AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str("tx-west")))
            .with_group_id(GroupId(StrBytes::from_static_str("app"))),
    );
    assert!(cross_cluster(&txn, &r).is_some());
}

#[test]
fn a_produce_for_a_topic_routed_elsewhere_is_answered_not_leader() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let request = RequestKind::Produce(ProduceRequest::default().with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("orders.eu")))
            .with_partition_data(vec![PartitionProduceData::default().with_index(2)]),
    ]));
    assert!(super::steer(&request, |t| t == "audit").is_none());
    let Some(ResponseKind::Produce(r)) = super::steer(&request, |t| t == "orders.eu") else { panic!() };
    assert_eq!(r.responses[0].partition_responses[0].error_code, super::NOT_LEADER_OR_FOLLOWER);
    let mut buf = bytes::BytesMut::new();
    ResponseKind::Produce(r).encode(&mut buf, 9).unwrap();
}
