//! Admin requests across routed clusters: which go whole, which are split, and how the answers come back.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kproxy_api::config::SidecarConfig;

use super::{Plan, merge, plan, plans, to_default};
use crate::route::{Health, Routes};

fn routes() -> Routes {
    Routes::compile(
        &SidecarConfig::parse(
            r#"
clusters:
- {name: east, bootstrapServers: ["127.0.0.1:1"]}
- {name: west, bootstrapServers: ["127.0.0.1:2"]}
defaultCluster: west
routes:
- {match: {topicPrefix: "orders."}, cluster: east, failover: [west]}
- {match: {groupPrefix: "orders-"}, cluster: east}
"#,
        )
        .unwrap(),
    )
}

fn health() -> Health {
    Health::new(std::time::Duration::from_secs(5))
}

fn t(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn create_partitions(topics: &[&str]) -> RequestKind {
    RequestKind::CreatePartitions(
        CreatePartitionsRequest::default().with_timeout_ms(5_000).with_validate_only(true).with_topics(
            topics
                .iter()
                .map(|n| create_partitions_request::CreatePartitionsTopic::default().with_name(t(n)).with_count(4))
                .collect(),
        ),
    )
}

#[test]
fn a_request_whose_topics_all_live_in_one_cluster_goes_there_whole() {
    let (r, h) = (routes(), health());
    assert!(matches!(plan(&create_partitions(&["orders.eu", "orders.us"]), &r, &h, "east"), Plan::Own));
    let Plan::Elsewhere(c) = plan(&create_partitions(&["orders.eu"]), &r, &h, "west") else { panic!() };
    assert_eq!(c, "east");
    assert!(matches!(plan(&create_partitions(&["audit"]), &r, &h, "west"), Plan::Own));
    // While east is unreachable its route's fallback serves orders.*: the request follows.
    let mut down = Health::new(std::time::Duration::ZERO);
    let now = std::time::Instant::now();
    down.failure("east", now);
    assert!(!down.reachable("east"));
    let Plan::Elsewhere(c) = plan(&create_partitions(&["orders.eu"]), &r, &down, "east") else { panic!() };
    assert_eq!(c, "west");
}

#[test]
fn topics_of_two_clusters_are_split_keeping_the_other_fields() {
    let Plan::Split { parts, order } =
        plan(&create_partitions(&["audit", "orders.eu", "misc", "orders.us"]), &routes(), &health(), "east")
    else {
        panic!("split")
    };
    let names = |r: &RequestKind| match r {
        RequestKind::CreatePartitions(r) => {
            assert!(r.validate_only && r.timeout_ms == 5_000);
            r.topics.iter().map(|t| t.name.to_string()).collect::<Vec<_>>()
        }
        _ => unreachable!(),
    };
    assert_eq!(parts.len(), 2);
    assert_eq!((parts[0].0.as_str(), names(&parts[0].1)), ("west", vec!["audit".to_string(), "misc".into()]));
    assert_eq!((parts[1].0.as_str(), names(&parts[1].1)), ("east", vec!["orders.eu".to_string(), "orders.us".into()]));
    // The answers, west's after east's, merge back in the client's order.
    let answer = |names: &[&str], throttle| {
        ResponseKind::CreatePartitions(
            CreatePartitionsResponse::default().with_throttle_time_ms(throttle).with_results(
                names
                    .iter()
                    .map(|n| create_partitions_response::CreatePartitionsTopicResult::default().with_name(t(n)))
                    .collect(),
            ),
        )
    };
    let merged = merge(vec![answer(&["orders.eu", "orders.us"], 0), answer(&["audit", "misc"], 20)], &order);
    let Some(ResponseKind::CreatePartitions(r)) = merged else { panic!() };
    let names: Vec<_> = r.results.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["audit", "orders.eu", "misc", "orders.us"]);
    assert_eq!(r.throttle_time_ms, 20);
}

#[test]
fn config_resources_follow_topic_and_group_routes_brokers_stay_and_client_metrics_go_to_the_default() {
    let resource = |kind: i8, name: &str| {
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(StrBytes::from_string(name.to_string()))
    };
    let request = RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
        resource(2, "orders.eu"),
        resource(4, "1"),
        resource(32, "orders-app"),
        resource(16, "all-clients"),
        resource(2, "audit"),
    ]));
    let Plan::Split { parts, order } = plan(&request, &routes(), &health(), "east") else { panic!() };
    let keys = |r: &RequestKind| match r {
        RequestKind::DescribeConfigs(r) => {
            r.resources.iter().map(|c| format!("{}/{}", c.resource_type, c.resource_name)).collect::<Vec<_>>()
        }
        _ => unreachable!(),
    };
    assert_eq!(parts[0].0, "east");
    assert_eq!(keys(&parts[0].1), ["2/orders.eu", "4/1", "32/orders-app"]);
    assert_eq!(parts[1].0, "west");
    assert_eq!(keys(&parts[1].1), ["16/all-clients", "2/audit"]);
    let result = |kind: i8, name: &str| {
        describe_configs_response::DescribeConfigsResult::default()
            .with_resource_type(kind)
            .with_resource_name(StrBytes::from_string(name.to_string()))
    };
    let west = ResponseKind::DescribeConfigs(
        DescribeConfigsResponse::default().with_results(vec![result(2, "audit"), result(16, "all-clients")]),
    );
    let east = ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(vec![
        result(32, "orders-app"),
        result(2, "orders.eu"),
        result(4, "1"),
    ]));
    let Some(ResponseKind::DescribeConfigs(r)) = merge(vec![west, east], &order) else { panic!() };
    let got: Vec<_> = r.results.iter().map(|c| format!("{}/{}", c.resource_type, c.resource_name)).collect();
    assert_eq!(got, ["2/orders.eu", "4/1", "32/orders-app", "16/all-clients", "2/audit"]);
}

#[test]
fn cluster_wide_admin_goes_to_the_default_cluster() {
    let (r, h) = (routes(), health());
    for request in [
        RequestKind::CreateAcls(Default::default()),
        RequestKind::DescribeAcls(Default::default()),
        RequestKind::DeleteAcls(Default::default()),
        RequestKind::DescribeClientQuotas(Default::default()),
        RequestKind::AlterClientQuotas(Default::default()),
        RequestKind::DescribeUserScramCredentials(Default::default()),
        RequestKind::AlterUserScramCredentials(Default::default()),
        RequestKind::UpdateFeatures(Default::default()),
        RequestKind::ListConfigResources(Default::default()),
    ] {
        assert!(to_default(&request));
        let Plan::Elsewhere(c) = plan(&request, &r, &h, "east") else { panic!("{request:?}") };
        assert_eq!(c, "west");
        assert!(matches!(plan(&request, &r, &h, "west"), Plan::Own));
    }
    // Requests bound to a broker or a coordinator stay where the client sent them.
    for request in [
        RequestKind::DescribeLogDirs(Default::default()),
        RequestKind::ConsumerGroupDescribe(Default::default()),
        RequestKind::ElectLeaders(Default::default()),
        RequestKind::ListPartitionReassignments(Default::default()),
    ] {
        assert!(matches!(plan(&request, &r, &h, "east"), Plan::Own), "{request:?}");
    }
    assert!(plans(ApiKey::CreateTopics) && plans(ApiKey::DescribeTopicPartitions) && !plans(ApiKey::Produce));
}

#[test]
fn delete_topics_by_id_stays_and_by_name_is_split_at_every_version() {
    let (r, h) = (routes(), health());
    let by_id =
        RequestKind::DeleteTopics(DeleteTopicsRequest::default().with_topics(vec![
            delete_topics_request::DeleteTopicState::default().with_topic_id(uuid::Uuid::from_u128(1)),
        ]));
    assert!(matches!(plan(&by_id, &r, &h, "east"), Plan::Own));
    let old = RequestKind::DeleteTopics(DeleteTopicsRequest::default().with_topic_names(vec![t("orders.a"), t("b")]));
    assert!(matches!(plan(&old, &r, &h, "east"), Plan::Split { .. }));
    let new = RequestKind::DeleteTopics(DeleteTopicsRequest::default().with_topics(vec![
        delete_topics_request::DeleteTopicState::default().with_name(Some(t("orders.a"))),
        delete_topics_request::DeleteTopicState::default().with_name(Some(t("b"))),
    ]));
    let Plan::Split { parts, .. } = plan(&new, &r, &h, "east") else { panic!() };
    let RequestKind::DeleteTopics(east) = &parts[0].1 else { panic!() };
    assert_eq!(east.topics.len(), 1);
}

#[test]
fn elect_leaders_and_reassignments_merge_their_top_level_errors() {
    let elect = |topics: &[&str]| {
        RequestKind::ElectLeaders(
            ElectLeadersRequest::default().with_topic_partitions(Some(
                topics
                    .iter()
                    .map(|n| {
                        elect_leaders_request::TopicPartitions::default().with_topic(t(n)).with_partitions(vec![0])
                    })
                    .collect(),
            )),
        )
    };
    let Plan::Split { order, .. } = plan(&elect(&["orders.a", "b"]), &routes(), &health(), "west") else { panic!() };
    let answer = |name: &str, error| {
        ResponseKind::ElectLeaders(
            ElectLeadersResponse::default().with_error_code(error).with_replica_election_results(vec![
                elect_leaders_response::ReplicaElectionResult::default().with_topic(t(name)),
            ]),
        )
    };
    let Some(ResponseKind::ElectLeaders(r)) = merge(vec![answer("b", 0), answer("orders.a", 31)], &order) else {
        panic!()
    };
    assert_eq!(r.error_code, 31);
    let names: Vec<_> = r.replica_election_results.iter().map(|t| t.topic.as_str()).collect();
    assert_eq!(names, ["orders.a", "b"]);
}

#[test]
fn a_paged_describe_topic_partitions_is_cut_at_the_earliest_cursor() {
    use describe_topic_partitions_response::{
        Cursor, DescribeTopicPartitionsResponsePartition as P, DescribeTopicPartitionsResponseTopic as T,
    };
    let request = RequestKind::DescribeTopicPartitions(
        DescribeTopicPartitionsRequest::default().with_topics(
            ["a", "orders.b", "z", "orders.d"]
                .iter()
                .map(|n| describe_topic_partitions_request::TopicRequest::default().with_name(t(n)))
                .collect(),
        ),
    );
    let Plan::Split { order, .. } = plan(&request, &routes(), &health(), "east") else { panic!() };
    let topic = |name: &str, partitions: &[i32]| {
        T::default()
            .with_name(Some(t(name)))
            .with_partitions(partitions.iter().map(|&p| P::default().with_partition_index(p)).collect())
    };
    // East ran out of room in orders.b after partition 1; west answered a and z whole.
    let east = ResponseKind::DescribeTopicPartitions(
        DescribeTopicPartitionsResponse::default()
            .with_topics(vec![topic("orders.b", &[0, 1])])
            .with_next_cursor(Some(Cursor::default().with_topic_name(t("orders.b")).with_partition_index(2))),
    );
    let west = ResponseKind::DescribeTopicPartitions(
        DescribeTopicPartitionsResponse::default().with_topics(vec![topic("a", &[0]), topic("z", &[0])]),
    );
    let Some(ResponseKind::DescribeTopicPartitions(r)) = merge(vec![east, west], &order) else { panic!() };
    let got: Vec<_> = r.topics.iter().map(|t| (t.name.as_ref().unwrap().to_string(), t.partitions.len())).collect();
    // "z" sorts after the cursor: the next page (which starts at orders.b partition 2) brings it.
    assert_eq!(got, [("a".to_string(), 1), ("orders.b".to_string(), 2)]);
    assert_eq!(r.next_cursor.unwrap().partition_index, 2);
}
