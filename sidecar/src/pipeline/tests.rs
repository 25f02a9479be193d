//! The pipeline as plain functions: a request frame and a snapshot in, one step out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kproxy_api::config::SidecarConfig;

use super::request::Ctx;
use super::{Step, decide, sasl};
use crate::buffer::Pool;
use crate::metrics::Metrics;
use crate::protocol::request::Request;
use crate::protocol::versions::Versions;
use crate::settings::Limits;
use crate::state::{Snapshot, Store};
use crate::upstream::Upstream;

const ONE: &str = "clusters:\n- name: east\n  bootstrapServers: [\"127.0.0.1:1\"]\n";

const ACLS: &str = r#"clusters:
- name: east
  bootstrapServers: ["127.0.0.1:1"]
acls:
  defaultAction: Deny
  rules:
  - resource: {type: Topic, name: "allowed-", patternType: Prefixed}
    operations: [All]
    effect: Allow
"#;

const ROUTED: &str = r#"clusters:
- name: east
  bootstrapServers: ["127.0.0.1:1"]
- name: west
  bootstrapServers: ["127.0.0.1:2"]
defaultCluster: west
routes:
- {match: {topicPrefix: "orders."}, cluster: east}
"#;

/// Everything the request side reads, for one config.
struct World {
    store: Store,
    up: Arc<Upstream>,
    versions: Versions,
    pool: Arc<Pool>,
    _dir: tempfile::TempDir,
}

impl World {
    fn new(yaml: &str) -> World {
        World::offering(yaml, |_| true)
    }

    /// A world whose brokers offer the APIs `offered` keeps, at every version kafka-protocol parses.
    fn offering(yaml: &str, offered: impl Fn(ApiKey) -> bool) -> World {
        let config = SidecarConfig::parse(yaml).unwrap();
        let metrics = Metrics::new().unwrap();
        let store = Store::new(Snapshot::new(config.clone(), yaml, 1), &metrics.registry).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::new(1 << 20);
        let cluster = config.clusters[0].clone();
        let up = Upstream::new(
            cluster,
            Limits::default(),
            Arc::new(metrics),
            pool.clone(),
            dir.path().into(),
            Default::default(),
        );
        let keys = ApiKey::iter()
            .filter(|k| offered(*k))
            .map(|k| {
                let r = crate::protocol::versions::parsed(k);
                ApiVersion::default().with_api_key(k as i16).with_min_version(r.min).with_max_version(r.max)
            })
            .collect();
        let versions = Versions::from_broker(ApiVersionsResponse::default().with_api_keys(keys));
        World { store, up, versions, pool, _dir: dir }
    }

    fn decide(&self, frame: &[u8]) -> Step {
        let snapshot = self.store.snapshot();
        let health = self.store.health.view();
        let ctx = Ctx {
            snapshot: &snapshot,
            live: &self.store.live,
            health: &health,
            versions: &self.versions,
            own: self.up.endpoint(),
            now: Instant::now(),
        };
        let listen = "127.0.0.1:9092".parse().unwrap();
        let mut sasl = sasl::Local::new(listen, listen);
        decide(&ctx, &mut sasl, self.request(frame))
    }

    fn request(&self, frame: &[u8]) -> Request {
        let mut buf = self.pool.get(frame.len());
        buf.extend_from_slice(frame);
        Request::new(buf).unwrap_or_else(|_| panic!("a request"))
    }
}

fn frame(api: ApiKey, version: i16, body: &impl Encodable) -> Vec<u8> {
    kproxy_bench::frame::request(api, version, 5, "test", body).unwrap().to_vec()
}

fn produce(topic: &'static str, acks: i16, timeout_ms: i32) -> ProduceRequest {
    use produce_request::{PartitionProduceData, TopicProduceData};
    let batch = kproxy_bench::upstream::record_batch(1, 10).unwrap();
    ProduceRequest::default().with_acks(acks).with_timeout_ms(timeout_ms).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(topic)))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch))]),
    ])
}

fn decode_response<R: Decodable>(body: &BytesMut, version: i16) -> R {
    R::decode(&mut body.clone().freeze(), version).unwrap()
}

#[test]
fn an_allowed_produce_is_forwarded_as_it_came_without_being_decoded() {
    let world = World::new(ONE);
    let f = frame(ApiKey::Produce, 9, &produce("t", -1, 30_000));
    let Step::Forward(forward) = world.decide(&f) else { panic!("forwarded") };
    assert!(forward.cluster.is_none() && forward.fanout.is_empty());
    assert!(forward.request.parsed().is_none(), "nothing needed its body");
    assert_eq!(&forward.request.into_frame().unwrap()[..], &f[..], "the very bytes that came");
}

#[test]
fn api_versions_are_answered_locally_with_the_sasl_apis() {
    let world = World::new(ONE);
    let Step::Respond { version, body, .. } =
        world.decide(&frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()))
    else {
        panic!("answered locally")
    };
    let r: ApiVersionsResponse = decode_response(&body, version);
    assert!(r.api_keys.iter().any(|k| k.api_key == ApiKey::SaslHandshake as i16));
    assert!(r.api_keys.iter().any(|k| k.api_key == ApiKey::Produce as i16));
}

#[test]
fn a_version_outside_what_is_offered_gets_unsupported_version_per_entity() {
    let world = World::offering(ONE, |k| k != ApiKey::Produce);
    let Step::Respond { version, body, .. } = world.decide(&frame(ApiKey::Produce, 9, &produce("t", 1, 100))) else {
        panic!("answered locally")
    };
    let r: ProduceResponse = decode_response(&body, version);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 35);
}

#[test]
fn a_denied_topic_is_answered_with_the_acls_code_and_an_allowed_one_forwarded() {
    let world = World::new(ACLS);
    let Step::Respond { version, body, .. } = world.decide(&frame(ApiKey::Produce, 9, &produce("secret", 1, 100)))
    else {
        panic!("answered locally")
    };
    let r: ProduceResponse = decode_response(&body, version);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 29, "TOPIC_AUTHORIZATION_FAILED");
    let Step::Forward(forward) = world.decide(&frame(ApiKey::Produce, 9, &produce("allowed-a", 1, 100))) else {
        panic!("forwarded")
    };
    assert!(forward.request.parsed().is_some(), "decoded once, for the ACLs");
}

#[test]
fn routed_metadata_asks_each_cluster_for_its_own_topics() {
    let world = World::new(ROUTED);
    let topics = ["orders.eu", "audit"].map(|t| {
        metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str(t))))
    });
    let request = MetadataRequest::default().with_topics(Some(topics.to_vec()));
    let Step::Forward(forward) = world.decide(&frame(ApiKey::Metadata, 12, &request)) else { panic!("forwarded") };
    // The connection is east's: it keeps orders.eu, west is asked for audit.
    assert_eq!(forward.fanout.len(), 1);
    assert_eq!(
        (forward.fanout[0].cluster.as_str(), &forward.fanout[0].topics[..]),
        ("west", &["audit".to_string()][..])
    );
    let frame = forward.request.into_frame().unwrap();
    let mut body = bytes::Bytes::copy_from_slice(
        &frame[crate::protocol::request_body_offset(&frame, ApiKey::Metadata, 12).unwrap()..],
    );
    let own = MetadataRequest::decode(&mut body, 12).unwrap();
    let names: Vec<_> = own.topics.unwrap().iter().map(|t| t.name.clone().unwrap().to_string()).collect();
    assert_eq!(names, ["orders.eu"]);
}

#[test]
fn deadlines_come_from_the_requests_own_fields() {
    let world = World::new(ONE);
    let wait = |f: Vec<u8>| world.request(&f).own_wait();
    assert_eq!(wait(frame(ApiKey::Produce, 9, &produce("t", 1, 5_000))), Duration::from_secs(5));
    assert_eq!(wait(frame(ApiKey::Produce, 3, &produce("t", 1, 7_000))), Duration::from_secs(7));
    let fetch = FetchRequest::default().with_max_wait_ms(500).with_replica_id((-1).into());
    assert_eq!(wait(frame(ApiKey::Fetch, 12, &fetch)), Duration::from_millis(500));
    assert_eq!(wait(frame(ApiKey::Fetch, 17, &fetch)), Duration::from_millis(500));
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(60_000);
    assert_eq!(wait(frame(ApiKey::JoinGroup, 5, &join)), Duration::from_secs(60));
    assert_eq!(wait(frame(ApiKey::JoinGroup, 7, &join)), Duration::from_secs(60));
    let create = CreateTopicsRequest::default().with_timeout_ms(12_000);
    assert_eq!(wait(frame(ApiKey::CreateTopics, 5, &create)), Duration::from_secs(12));
    assert_eq!(wait(frame(ApiKey::Metadata, 12, &MetadataRequest::default())), Duration::ZERO);
}

fn create_partitions(topics: &[&'static str]) -> CreatePartitionsRequest {
    CreatePartitionsRequest::default().with_timeout_ms(10_000).with_topics(
        topics
            .iter()
            .map(|t| {
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(t)))
                    .with_count(3)
            })
            .collect(),
    )
}

/// A response frame as a broker sends it (correlation id 5).
fn answer(pool: &Arc<Pool>, api: ApiKey, version: i16, body: &impl Encodable) -> crate::buffer::Buf {
    let mut b = BytesMut::new();
    body.encode(&mut b, version).unwrap();
    let mut f = pool.get(b.len() + 16);
    crate::protocol::response_frame(&mut f, api, version, 5, &b);
    f
}

fn results(names: &[&'static str]) -> CreatePartitionsResponse {
    CreatePartitionsResponse::default().with_results(
        names
            .iter()
            .map(|n| {
                create_partitions_response::CreatePartitionsTopicResult::default()
                    .with_name(TopicName(StrBytes::from_static_str(n)))
            })
            .collect(),
    )
}

#[test]
fn an_admin_request_naming_topics_of_two_clusters_is_split_and_its_answers_merged_in_request_order() {
    use super::response::{self, Source};
    let world = World::new(ROUTED);
    let request = create_partitions(&["audit", "orders.eu", "misc"]);
    let Step::Forward(mut forward) = world.decide(&frame(ApiKey::CreatePartitions, 3, &request)) else {
        panic!("forwarded")
    };
    // The connection is east's: it keeps orders.eu, west gets audit and misc.
    assert!(forward.cluster.is_none());
    assert_eq!(forward.fanout.len(), 1);
    assert_eq!(forward.fanout[0].cluster, "west");
    let part = |f: &[u8]| {
        let at = crate::protocol::request_body_offset(f, ApiKey::CreatePartitions, 3).unwrap();
        let r = CreatePartitionsRequest::decode(&mut bytes::Bytes::copy_from_slice(&f[at..]), 3).unwrap();
        assert_eq!(r.timeout_ms, 10_000);
        r.topics.iter().map(|t| t.name.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(part(&forward.fanout[0].frame), ["audit", "misc"]);
    let owed = std::mem::take(&mut forward.owed);
    assert_eq!(part(&forward.request.into_frame().unwrap()), ["orders.eu"]);
    let (brokers, _listeners) = crate::broker_map::BrokerMap::new("127.0.0.1".into(), 0);
    let snapshot = world.store.snapshot();
    let health = world.store.health.view();
    let ctx = response::Ctx { snapshot: &snapshot, live: &world.store.live, health: &health, brokers: &brokers };
    let mut own = answer(&world.pool, ApiKey::CreatePartitions, 3, &results(&["orders.eu"]));
    let west = answer(&world.pool, ApiKey::CreatePartitions, 3, &results(&["misc", "audit"]));
    let source = Source::Upstream { cluster: "east", others: vec![("west".into(), Some(west), Vec::new())] };
    response::finish(&ctx, owed, ApiKey::CreatePartitions, 3, &mut own, source).unwrap();
    let at = crate::protocol::response_body_offset(&own, ApiKey::CreatePartitions, 3).unwrap();
    let merged = CreatePartitionsResponse::decode(&mut &own[at..], 3).unwrap();
    let names: Vec<_> = merged.results.iter().map(|r| (r.name.as_str(), r.error_code)).collect();
    assert_eq!(names, [("audit", 0), ("orders.eu", 0), ("misc", 0)]);
    assert_eq!(crate::protocol::response_correlation(&own), Some(5));
}

#[test]
fn a_cluster_that_does_not_answer_its_part_leaves_its_topics_timed_out() {
    use super::response::{self, Source};
    let world = World::new(ROUTED);
    let request = create_partitions(&["audit", "orders.eu"]);
    let Step::Forward(mut forward) = world.decide(&frame(ApiKey::CreatePartitions, 3, &request)) else { panic!() };
    let owed = std::mem::take(&mut forward.owed);
    let (brokers, _listeners) = crate::broker_map::BrokerMap::new("127.0.0.1".into(), 0);
    let (snapshot, health) = (world.store.snapshot(), world.store.health.view());
    let ctx = response::Ctx { snapshot: &snapshot, live: &world.store.live, health: &health, brokers: &brokers };
    let mut own = answer(&world.pool, ApiKey::CreatePartitions, 3, &results(&["orders.eu"]));
    let source = Source::Upstream { cluster: "east", others: vec![("west".into(), None, Vec::new())] };
    response::finish(&ctx, owed, ApiKey::CreatePartitions, 3, &mut own, source).unwrap();
    let at = crate::protocol::response_body_offset(&own, ApiKey::CreatePartitions, 3).unwrap();
    let merged = CreatePartitionsResponse::decode(&mut &own[at..], 3).unwrap();
    assert_eq!((merged.results[0].name.as_str(), merged.results[0].error_code), ("audit", 7), "REQUEST_TIMED_OUT");
    assert!(merged.results[0].error_message.as_ref().is_some_and(|m| m.contains("west")));
    assert_eq!((merged.results[1].name.as_str(), merged.results[1].error_code), ("orders.eu", 0));
}

#[test]
fn cluster_wide_admin_goes_to_the_default_cluster_and_topics_of_one_other_cluster_go_there_whole() {
    let world = World::new(ROUTED);
    let acl = CreateAclsRequest::default().with_creations(vec![create_acls_request::AclCreation::default()]);
    let Step::Forward(forward) = world.decide(&frame(ApiKey::CreateAcls, 3, &acl)) else { panic!() };
    assert_eq!(forward.cluster.as_deref(), Some("west"), "ACLs live in the default cluster");
    let Step::Forward(forward) = world.decide(&frame(ApiKey::CreatePartitions, 3, &create_partitions(&["audit"])))
    else {
        panic!()
    };
    assert_eq!(forward.cluster.as_deref(), Some("west"));
    assert!(forward.fanout.is_empty() && forward.owed.split.is_none());
    let f = frame(ApiKey::CreatePartitions, 3, &create_partitions(&["orders.eu"]));
    let Step::Forward(forward) = world.decide(&f) else { panic!() };
    assert!(forward.cluster.is_none());
    assert_eq!(&forward.request.into_frame().unwrap()[..], &f[..], "its own topics leave as they came");
}

#[test]
fn kip_848_heartbeats_never_share_a_connection_with_produce() {
    let world = World::new(ONE);
    let heartbeat = ConsumerGroupHeartbeatRequest::default().with_group_id(GroupId(StrBytes::from_static_str("g")));
    for version in 0..=1 {
        assert!(world.request(&frame(ApiKey::ConsumerGroupHeartbeat, version, &heartbeat)).is_long_poll());
    }
    assert!(!world.request(&frame(ApiKey::Produce, 9, &produce("t", 1, 100))).is_long_poll());
}

/// [`ROUTED`] with west as the fallback of `orders.` topics and of `orders-` groups.
fn groups_fail_over() -> World {
    let failover = ROUTED.replace("cluster: east}", "cluster: east, failover: [west]}");
    World::new(&format!("{failover}- {{match: {{groupPrefix: \"orders-\"}}, cluster: east, failover: [west]}}\n"))
}

fn heartbeat(group: &'static str, member: &'static str, epoch: i32) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str(group)))
        .with_member_id(StrBytes::from_static_str(member))
        .with_member_epoch(epoch)
}

/// The answer a cluster gives a heartbeat, run through the response side; what the client gets.
fn heartbeat_answered(world: &World, owed: super::Owed, cluster: &str, epoch: i32) -> ConsumerGroupHeartbeatResponse {
    let (brokers, _listeners) = crate::broker_map::BrokerMap::new("127.0.0.1".into(), 0);
    let (snapshot, health) = (world.store.snapshot(), world.store.health.view());
    let ctx = super::response::Ctx { snapshot: &snapshot, live: &world.store.live, health: &health, brokers: &brokers };
    let answer = ConsumerGroupHeartbeatResponse::default()
        .with_member_id(Some(StrBytes::from_static_str("m1")))
        .with_member_epoch(epoch)
        .with_heartbeat_interval_ms(5_000);
    let mut frame = answer_frame(world, &answer);
    let source = super::response::Source::Upstream { cluster, others: Vec::new() };
    super::response::finish(&ctx, owed, ApiKey::ConsumerGroupHeartbeat, 1, &mut frame, source).unwrap();
    assert_eq!(crate::protocol::response_correlation(&frame), Some(5));
    let at = crate::protocol::response_body_offset(&frame, ApiKey::ConsumerGroupHeartbeat, 1).unwrap();
    ConsumerGroupHeartbeatResponse::decode(&mut &frame[at..], 1).unwrap()
}

/// The heartbeat a forwarded request carries.
fn forwarded_heartbeat(request: Request) -> ConsumerGroupHeartbeatRequest {
    let f = request.into_frame().unwrap();
    let at = crate::protocol::request_body_offset(&f, ApiKey::ConsumerGroupHeartbeat, 1).unwrap();
    ConsumerGroupHeartbeatRequest::decode(&mut bytes::Bytes::copy_from_slice(&f[at..]), 1).unwrap()
}

fn answer_frame(world: &World, body: &ConsumerGroupHeartbeatResponse) -> crate::buffer::Buf {
    answer(&world.pool, ApiKey::ConsumerGroupHeartbeat, 1, body)
}

/// The error code a locally answered heartbeat carries.
fn fenced(step: Step) -> (i16, String) {
    let Step::Respond { version, body, .. } = step else { panic!("answered locally") };
    let r: ConsumerGroupHeartbeatResponse = decode_response(&body, version);
    (r.error_code, r.error_message.map(|m| m.to_string()).unwrap_or_default())
}

#[test]
fn a_kip_848_member_epoch_granted_by_the_other_cluster_is_fenced_in_heartbeats_and_commits() {
    // The connection is east's; the member was granted epoch 4 by west while the route had failed over.
    let world = groups_fail_over();
    let Step::Forward(forward) =
        world.decide(&frame(ApiKey::ConsumerGroupHeartbeat, 1, &heartbeat("orders-g", "m1", 0)))
    else {
        panic!("a join is forwarded")
    };
    heartbeat_answered(&world, forward.owed, "west", 4);
    // East may still hold m1 from before the route left it: the heartbeat goes there as m1's leave, and the
    // client is fenced whatever east answers, so its rejoin (epoch 0) finds no older m1 there.
    let fenced_heartbeat = heartbeat("orders-g", "m1", 4).with_rebalance_timeout_ms(300_000);
    let Step::Forward(forward) = world.decide(&frame(ApiKey::ConsumerGroupHeartbeat, 1, &fenced_heartbeat)) else {
        panic!("the fenced heartbeat leaves east's group first")
    };
    assert!(forward.cluster.is_none(), "to the connection's own cluster, east");
    let leave = forwarded_heartbeat(forward.request);
    assert_eq!((leave.group_id.as_str(), leave.member_id.as_str(), leave.member_epoch), ("orders-g", "m1", -1));
    assert_eq!(leave.rebalance_timeout_ms, -1, "a bare leave");
    let got = heartbeat_answered(&world, forward.owed, "east", -1);
    assert_eq!(got.error_code, 110, "FENCED_MEMBER_EPOCH");
    let message = got.error_message.map(|m| m.to_string()).unwrap_or_default();
    assert!(message.contains("\"west\""), "{message}");
    let again = RequestKind::ConsumerGroupHeartbeat(fenced_heartbeat);
    let origin = world.store.live.foreign_epoch(&again, "east").map(|(c, _)| c);
    assert_eq!(origin, Some(110), "the leave's answer teaches nothing: west's epoch stays fenced here");
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("orders-g")))
        .with_member_id(StrBytes::from_static_str("m1"))
        .with_generation_id_or_member_epoch(4)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("orders.eu")))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default().with_committed_offset(120),
                ]),
        ]);
    let Step::Respond { version, body, .. } = world.decide(&frame(ApiKey::OffsetCommit, 9, &commit)) else {
        panic!("answered locally")
    };
    let r: OffsetCommitResponse = decode_response(&body, version);
    assert_eq!(
        r.topics[0].partitions[0].error_code, 110,
        "FENCED_MEMBER_EPOCH: west's positions are not written to east"
    );
    // The member rejoins with epoch 0; the epoch east grants is east's own from then on.
    let Step::Forward(forward) =
        world.decide(&frame(ApiKey::ConsumerGroupHeartbeat, 1, &heartbeat("orders-g", "m1", 0)))
    else {
        panic!("a rejoin is forwarded")
    };
    heartbeat_answered(&world, forward.owed, "east", 7);
    assert!(matches!(
        world.decide(&frame(ApiKey::ConsumerGroupHeartbeat, 1, &heartbeat("orders-g", "m1", 7))),
        Step::Forward(_)
    ));
    assert!(matches!(
        world.decide(&frame(ApiKey::OffsetCommit, 9, &commit.with_generation_id_or_member_epoch(7))),
        Step::Forward(_)
    ));
    let steered =
        |reason: &str| world.store.live.group_steered.with_label_values(&["ConsumerGroupHeartbeat", reason]).get();
    assert_eq!(steered("fenced_member_epoch"), 1);
    let commits = world.store.live.group_steered.with_label_values(&["OffsetCommit", "fenced_member_epoch"]).get();
    assert_eq!(commits, 1);
}

#[test]
fn classic_members_a_cluster_still_lists_from_before_a_route_switch_are_left_ahead_of_the_next_join() {
    // The connection is east's, the coordinator of "orders-g".
    let world = groups_fail_over();
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("orders-g")))
        .with_protocol_type(StrBytes::from_static_str("consumer"));
    let joined = |cluster: &str, member: &'static str| {
        let Step::Forward(forward) = world.decide(&frame(ApiKey::JoinGroup, 5, &join)) else { panic!("forwarded") };
        let before = forward.owed.before.clone();
        let (brokers, _listeners) = crate::broker_map::BrokerMap::new("127.0.0.1".into(), 0);
        let (snapshot, health) = (world.store.snapshot(), world.store.health.view());
        let ctx =
            super::response::Ctx { snapshot: &snapshot, live: &world.store.live, health: &health, brokers: &brokers };
        let given = JoinGroupResponse::default().with_member_id(StrBytes::from_static_str(member));
        let mut f = answer(&world.pool, ApiKey::JoinGroup, 5, &given);
        let source = super::response::Source::Upstream { cluster, others: Vec::new() };
        super::response::finish(&ctx, forward.owed, ApiKey::JoinGroup, 5, &mut f, source).unwrap();
        before
    };
    assert!(joined("east", "e1").is_none());
    assert!(joined("east", "e2").is_none(), "east gave the latest ids: nothing to leave");
    // The route moved to west for a while, and a member joined there (its answer came from west).
    assert!(joined("west", "w1").is_none());
    // Back at east, the group's next join goes after the leave of e1 and e2, on the same connection.
    let before = joined("east", "e3").expect("a leave first");
    let header = crate::protocol::Header::peek(&before).unwrap();
    assert_eq!(header.api_key, ApiKey::LeaveGroup as i16);
    let at = crate::protocol::request_body_offset(&before, ApiKey::LeaveGroup, header.api_version).unwrap();
    let leave =
        LeaveGroupRequest::decode(&mut bytes::Bytes::copy_from_slice(&before[at..]), header.api_version).unwrap();
    let mut members: Vec<_> = leave.members.iter().map(|m| m.member_id.to_string()).collect();
    members.sort();
    assert_eq!((leave.group_id.as_str(), members), ("orders-g", vec!["e1".to_string(), "e2".to_string()]));
    assert!(joined("east", "e3").is_none(), "left once");
    let left = world.store.live.group_steered.with_label_values(&["LeaveGroup", "stale_member"]).get();
    assert_eq!(left, 2);
}

#[test]
fn group_requests_reaching_a_cluster_their_route_does_not_use_are_sent_to_find_their_coordinator() {
    // The connection is east's; group "audit-g" has no route and lives in the default cluster, west.
    let world = groups_fail_over();
    let (code, _) = fenced(world.decide(&frame(ApiKey::ConsumerGroupHeartbeat, 1, &heartbeat("audit-g", "m1", 3))));
    assert_eq!(code, 16, "NOT_COORDINATOR");
    let classic = HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("audit-g")))
        .with_generation_id(3)
        .with_member_id(StrBytes::from_static_str("c1"));
    let Step::Respond { version, body, .. } = world.decide(&frame(ApiKey::Heartbeat, 4, &classic)) else {
        panic!("answered locally")
    };
    assert_eq!(decode_response::<HeartbeatResponse>(&body, version).error_code, 16, "classic groups alike");
    let own = classic.with_group_id(GroupId(StrBytes::from_static_str("orders-g")));
    assert!(matches!(world.decide(&frame(ApiKey::Heartbeat, 4, &own)), Step::Forward(_)), "its own group's");
}
