//! Byte-level golden frames for framing, header peeking and response rewriting.

use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::rewrite::{self, Addresses};
use super::versions::{UNSUPPORTED_VERSION, Versions};
use super::*;
use crate::buffer::Pool;

/// Produce v3 with client id "ab", transactional id null, acks 0.
const PRODUCE_V3_ACKS0: [u8; 22] = [
    0, 0, 0, 18, // length
    0, 0, 0, 3, // api key 0, version 3
    0, 0, 0, 7, // correlation id
    0, 2, b'a', b'b', // client id
    0xff, 0xff, // transactional id: null
    0, 0, // acks
    0, 0, // (start of timeout)
];

/// Fetch v15 (flexible header): client id "c", no tags, max_wait_ms 500.
const FETCH_V15_WAIT: [u8; 20] = [0, 0, 0, 16, 0, 1, 0, 15, 0, 0, 0, 9, 0, 1, b'c', 0, 0, 0, 1, 0xf4];

#[test]
fn header_is_peeked_from_bytes() {
    let h = Header::peek(&PRODUCE_V3_ACKS0).unwrap();
    assert_eq!(h, Header { api_key: 0, api_version: 3, correlation_id: 7 });
    assert_eq!(h.api(), Some(ApiKey::Produce));
    assert_eq!(request_body_offset(&PRODUCE_V3_ACKS0, ApiKey::Produce, 3), Some(16));
    assert!(!expects_response(&PRODUCE_V3_ACKS0, &h));
    let mut acks1 = PRODUCE_V3_ACKS0;
    acks1[19] = 1;
    assert!(expects_response(&acks1, &h));
    assert!(!is_long_poll(&PRODUCE_V3_ACKS0, &h));
}

#[test]
fn fetch_with_wait_is_long_poll_and_without_is_not() {
    let h = Header::peek(&FETCH_V15_WAIT).unwrap();
    assert_eq!(request_body_offset(&FETCH_V15_WAIT, ApiKey::Fetch, 15), Some(16));
    assert!(is_long_poll(&FETCH_V15_WAIT, &h));
    let mut no_wait = FETCH_V15_WAIT;
    no_wait[18] = 0;
    no_wait[19] = 0;
    assert!(!is_long_poll(&no_wait, &h));
}

#[test]
fn correlation_ids_are_patched_in_place() {
    let mut f = PRODUCE_V3_ACKS0;
    set_request_correlation(&mut f, 0x01020304);
    assert_eq!(&f[8..12], &[1, 2, 3, 4]);
    let mut r = [0u8, 0, 0, 4, 0, 0, 0, 9];
    assert_eq!(response_correlation(&r), Some(9));
    set_response_correlation(&mut r, 5);
    assert_eq!(r, [0, 0, 0, 4, 0, 0, 0, 5]);
}

async fn read(bytes: &[u8]) -> Result<Option<crate::buffer::Buf>, FrameError> {
    let pool = Pool::new(1 << 20);
    let mut r = bytes;
    let t = Duration::from_millis(200);
    read_frame(&mut r, &pool, 1000, MIN_REQUEST, t, t).await
}

#[tokio::test]
async fn bad_frames_are_refused_with_a_reason() {
    assert_eq!(read(&PRODUCE_V3_ACKS0[..22]).await.unwrap().unwrap().len(), 22);
    assert!(read(&[]).await.unwrap().is_none());
    let cases: [(&[u8], &str); 4] = [
        (&[0xff, 0xff, 0xff, 0xf0, 1, 2], "negative_length"),
        (&[0x7f, 0xff, 0xff, 0xff], "oversized"),
        (&[0, 0, 0, 3, 1, 2, 3], "too_short"),
        (&[0, 0, 0, 40, 0, 0, 0, 3], "truncated"),
    ];
    for (bytes, reason) in cases {
        let e = read(bytes).await.unwrap_err();
        assert_eq!(e.reason(), Some(reason), "{e}");
    }
}

#[tokio::test]
async fn a_frame_cut_mid_way_times_out() {
    let (mut client, mut server) = tokio::io::duplex(64);
    tokio::io::AsyncWriteExt::write_all(&mut client, &[0, 0, 0, 40, 0, 0]).await.unwrap();
    let pool = Pool::new(1 << 20);
    let t = Duration::from_millis(50);
    let e = read_frame(&mut server, &pool, 1000, MIN_REQUEST, t, t).await.unwrap_err();
    assert_eq!(e.reason(), Some("partial_timeout"));
}

fn broker_versions() -> Versions {
    let api = |k: ApiKey, min, max| {
        api_versions_response::ApiVersion::default().with_api_key(k as i16).with_min_version(min).with_max_version(max)
    };
    Versions::from_broker(ApiVersionsResponse::default().with_api_keys(vec![
        api(ApiKey::Produce, 0, 99),
        api(ApiKey::Metadata, 0, 8),
        api(ApiKey::SaslHandshake, 0, 1),
        api(ApiKey::ApiVersions, 0, 4),
    ]))
}

#[test]
fn api_versions_advertise_the_intersection() {
    let v = broker_versions();
    assert_eq!(v.range(0), Some((3, ApiKey::Produce.valid_versions().max)));
    assert_eq!(v.range(3), Some((0, 8)));
    assert_eq!(v.range(17), None, "client SASL is never forwarded");
    assert!(!v.allows(3, 9));
    let (version, body) = v.answer(3).unwrap();
    assert_eq!(version, 3);
    let r = ApiVersionsResponse::decode(&mut body.freeze(), 3).unwrap();
    assert_eq!(r.error_code, 0);
    assert_eq!(r.api_keys.len(), 3);
    let (version, body) = v.answer(99).unwrap();
    assert_eq!(version, 0);
    assert_eq!(ApiVersionsResponse::decode(&mut body.freeze(), 0).unwrap().error_code, UNSUPPORTED_VERSION);
}

struct Fixed;
impl Addresses for Fixed {
    fn broker(&mut self, node: i32, _host: &str, _port: i32) -> (i32, String, i32) {
        (node + 100, "127.0.0.1".into(), 40000 + node)
    }
    fn node(&mut self, node: i32) -> i32 {
        if node < 0 { node } else { node + 100 }
    }
}

fn framed(api: ApiKey, version: i16, body: &impl Encodable) -> crate::buffer::Buf {
    let mut b = BytesMut::new();
    body.encode(&mut b, version).unwrap();
    let pool = Pool::new(1 << 20);
    let mut f = pool.get(b.len() + 16);
    response_frame(&mut f, api, version, 42, &b);
    f
}

#[test]
fn metadata_brokers_and_partition_ids_are_rewritten_at_every_version() {
    for version in ApiKey::Metadata.valid_versions().min..=ApiKey::Metadata.valid_versions().max {
        let r = MetadataResponse::default()
            .with_brokers(vec![
                metadata_response::MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("kafka-1.internal"))
                    .with_port(9093),
            ])
            .with_controller_id(BrokerId(1))
            .with_topics(vec![
                metadata_response::MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
                    .with_partitions(vec![
                        metadata_response::MetadataResponsePartition::default()
                            .with_leader_id(BrokerId(1))
                            .with_replica_nodes(vec![BrokerId(1)])
                            .with_isr_nodes(vec![BrokerId(1)]),
                    ]),
            ]);
        let mut f = framed(ApiKey::Metadata, version, &r);
        assert!(rewrite::rewrite(&mut f, ApiKey::Metadata, version, &mut Fixed).unwrap());
        assert_eq!(response_correlation(&f), Some(42));
        let at = response_body_offset(&f, ApiKey::Metadata, version).unwrap();
        assert_eq!(i32::from_be_bytes(f[..4].try_into().unwrap()) as usize, f.len() - 4);
        let out = MetadataResponse::decode(&mut &f[at..], version).unwrap();
        assert_eq!(out.brokers[0].node_id, BrokerId(101));
        assert_eq!(out.brokers[0].host.as_str(), "127.0.0.1");
        assert_eq!(out.brokers[0].port, 40001);
        assert_eq!(out.topics[0].partitions[0].leader_id, BrokerId(101));
        assert_eq!(out.topics[0].partitions[0].replica_nodes, vec![BrokerId(101)]);
        if version >= 1 {
            assert_eq!(out.controller_id, BrokerId(101));
        }
    }
}

#[test]
fn find_coordinator_is_rewritten_in_both_shapes() {
    for version in 0..=6 {
        let mut r = FindCoordinatorResponse::default();
        if version < 4 {
            r = r.with_node_id(BrokerId(2)).with_host(StrBytes::from_static_str("real")).with_port(9);
        } else {
            r = r.with_coordinators(vec![
                find_coordinator_response::Coordinator::default()
                    .with_key(StrBytes::from_static_str("g"))
                    .with_node_id(BrokerId(2))
                    .with_host(StrBytes::from_static_str("real"))
                    .with_port(9),
            ]);
        }
        let mut f = framed(ApiKey::FindCoordinator, version, &r);
        rewrite::rewrite(&mut f, ApiKey::FindCoordinator, version, &mut Fixed).unwrap();
        let at = response_body_offset(&f, ApiKey::FindCoordinator, version).unwrap();
        let out = FindCoordinatorResponse::decode(&mut &f[at..], version).unwrap();
        let (id, host, port) = if version < 4 {
            (out.node_id, out.host, out.port)
        } else {
            let c = &out.coordinators[0];
            (c.node_id, c.host.clone(), c.port)
        };
        assert_eq!((id, host.as_str(), port), (BrokerId(102), "127.0.0.1", 40002), "v{version}");
    }
}

#[test]
fn produce_responses_without_leader_hints_stay_byte_identical() {
    struct Same;
    impl Addresses for Same {
        fn broker(&mut self, node: i32, _: &str, _: i32) -> (i32, String, i32) {
            (node, "127.0.0.1".into(), 1)
        }
        fn node(&mut self, node: i32) -> i32 {
            node
        }
    }
    let r = ProduceResponse::default()
        .with_responses(vec![produce_response::TopicProduceResponse::default().with_partition_responses(vec![
            produce_response::PartitionProduceResponse::default().with_base_offset(5),
        ])]);
    let mut f = framed(ApiKey::Produce, 11, &r);
    let before = f.to_vec();
    assert!(!rewrite::rewrite(&mut f, ApiKey::Produce, 11, &mut Same).unwrap());
    assert_eq!(&f[..], &before[..]);
    let r = r.with_node_endpoints(vec![
        produce_response::NodeEndpoint::default()
            .with_node_id(BrokerId(3))
            .with_host(StrBytes::from_static_str("real")),
    ]);
    let mut f = framed(ApiKey::Produce, 11, &r);
    assert!(rewrite::rewrite(&mut f, ApiKey::Produce, 11, &mut Same).unwrap());
    assert!(!f.windows(4).any(|w| w == b"real"));
}

#[test]
fn describe_quorum_ids_and_controller_listeners_are_rewritten_at_every_version() {
    use describe_quorum_response::{Listener, Node, PartitionData, ReplicaState, TopicData};
    let replica = |id| ReplicaState::default().with_replica_id(BrokerId(id)).with_log_end_offset(7);
    for version in ApiKey::DescribeQuorum.valid_versions().min..=ApiKey::DescribeQuorum.valid_versions().max {
        let mut r = DescribeQuorumResponse::default().with_topics(vec![
            TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
                .with_partitions(vec![
                    PartitionData::default()
                        .with_leader_id(BrokerId(1))
                        .with_current_voters(vec![replica(1)])
                        .with_observers(vec![replica(2)]),
                ]),
        ]);
        if version >= 2 {
            r = r.with_nodes(vec![Node::default().with_node_id(BrokerId(1)).with_listeners(vec![
                Listener::default()
                    .with_name(StrBytes::from_static_str("CONTROLLER"))
                    .with_host(StrBytes::from_static_str("controller-1.internal"))
                    .with_port(9094),
            ])]);
        }
        let mut f = framed(ApiKey::DescribeQuorum, version, &r);
        assert!(rewrite::needs_rewrite(ApiKey::DescribeQuorum, version));
        assert!(rewrite::rewrite(&mut f, ApiKey::DescribeQuorum, version, &mut Fixed).unwrap());
        assert!(!f.windows(8).any(|w| w == b"internal"), "v{version}: a real host is left");
        let at = response_body_offset(&f, ApiKey::DescribeQuorum, version).unwrap();
        let out = DescribeQuorumResponse::decode(&mut &f[at..], version).unwrap();
        let p = &out.topics[0].partitions[0];
        assert_eq!(p.leader_id, BrokerId(101));
        assert_eq!((p.current_voters[0].replica_id, p.observers[0].replica_id), (BrokerId(101), BrokerId(102)));
        assert_eq!(p.current_voters[0].log_end_offset, 7);
        if version >= 2 {
            let l = &out.nodes[0].listeners[0];
            assert_eq!(
                (out.nodes[0].node_id, l.name.as_str(), l.host.as_str(), l.port),
                (BrokerId(101), "CONTROLLER", "127.0.0.1", 0)
            );
        }
    }
}

/// The APIs whose responses, in kafka-protocol's generated messages, carry a broker id (`BrokerId`) or a
/// host: read from the vendored sources, so a new API (or a new kafka-protocol) cannot slip past the rewrite.
fn responses_naming_brokers() -> Vec<ApiKey> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vendor/kafka-protocol/src/messages");
    let camel = |snake: &str| -> String {
        snake.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect::<Vec<_>>().concat()
    };
    let mut apis = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = file.strip_suffix("_response.rs") else { continue };
        // An ACL's `host` is the client host pattern the ACL applies to, not a broker address.
        if matches!(stem, "describe_acls" | "delete_acls") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("BrokerId") || text.contains("pub host: ") {
            let name = camel(stem);
            let api = ApiKey::iter().find(|k| format!("{k:?}") == name);
            apis.push(api.unwrap_or_else(|| panic!("{file}: no ApiKey {name}")));
        }
    }
    apis
}

/// Every offered response that carries broker ids or addresses is rewritten (at every offered version that has
/// the fields); the others are not offered.
#[test]
fn every_response_carrying_addresses_is_rewritten_or_not_offered() {
    let everything = ApiVersionsResponse::default().with_api_keys(
        ApiKey::iter()
            .map(|k| {
                let r = k.valid_versions();
                api_versions_response::ApiVersion::default()
                    .with_api_key(k as i16)
                    .with_min_version(r.min)
                    .with_max_version(r.max)
            })
            .collect(),
    );
    let offered = Versions::from_broker(everything);
    let with_addresses = responses_naming_brokers();
    for api in [ApiKey::Metadata, ApiKey::DescribeTopicPartitions, ApiKey::ListPartitionReassignments, ApiKey::Vote] {
        assert!(with_addresses.contains(&api), "{api:?} not found in {with_addresses:?}");
    }
    for api in with_addresses {
        if let Some((min, max)) = offered.range(api as i16) {
            for v in min..=max {
                // Produce before v10 and Fetch before v16 have no endpoint fields.
                let has_endpoints = match api {
                    ApiKey::Produce => v >= 10,
                    ApiKey::Fetch => v >= 16,
                    _ => true,
                };
                assert!(!has_endpoints || rewrite::needs_rewrite(api, v), "{api:?} v{v} is offered unrewritten");
            }
        }
    }
    assert!(offered.range(ApiKey::DescribeQuorum as i16).is_some(), "kafka-metadata-quorum works through the sidecar");
    assert!(offered.range(ApiKey::Vote as i16).is_none());
}

#[test]
fn describe_topic_partitions_and_reassignments_show_virtual_broker_ids() {
    use describe_topic_partitions_response::{
        DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
    };
    let r = DescribeTopicPartitionsResponse::default().with_topics(vec![
        DescribeTopicPartitionsResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
            .with_partitions(vec![
                DescribeTopicPartitionsResponsePartition::default()
                    .with_leader_id(BrokerId(1))
                    .with_replica_nodes(vec![BrokerId(1), BrokerId(2)])
                    .with_isr_nodes(vec![BrokerId(2)])
                    .with_eligible_leader_replicas(Some(vec![BrokerId(3)]))
                    .with_last_known_elr(Some(vec![BrokerId(4)]))
                    .with_offline_replicas(vec![BrokerId(5)]),
            ]),
    ]);
    let mut f = framed(ApiKey::DescribeTopicPartitions, 0, &r);
    assert!(rewrite::rewrite(&mut f, ApiKey::DescribeTopicPartitions, 0, &mut Fixed).unwrap());
    let at = response_body_offset(&f, ApiKey::DescribeTopicPartitions, 0).unwrap();
    let out = DescribeTopicPartitionsResponse::decode(&mut &f[at..], 0).unwrap();
    let p = &out.topics[0].partitions[0];
    assert_eq!(p.leader_id, BrokerId(101));
    assert_eq!(p.replica_nodes, [BrokerId(101), BrokerId(102)]);
    assert_eq!(p.isr_nodes, [BrokerId(102)]);
    assert_eq!(p.eligible_leader_replicas.as_deref(), Some(&[BrokerId(103)][..]));
    assert_eq!(p.last_known_elr.as_deref(), Some(&[BrokerId(104)][..]));
    assert_eq!(p.offline_replicas, [BrokerId(105)]);

    use list_partition_reassignments_response::{OngoingPartitionReassignment, OngoingTopicReassignment};
    let none = ListPartitionReassignmentsResponse::default();
    let mut f = framed(ApiKey::ListPartitionReassignments, 0, &none);
    assert!(!rewrite::rewrite(&mut f, ApiKey::ListPartitionReassignments, 0, &mut Fixed).unwrap());
    let r = none.with_topics(vec![OngoingTopicReassignment::default().with_partitions(vec![
        OngoingPartitionReassignment::default()
            .with_replicas(vec![BrokerId(1), BrokerId(2)])
            .with_adding_replicas(vec![BrokerId(2)])
            .with_removing_replicas(vec![BrokerId(3)]),
    ])]);
    let mut f = framed(ApiKey::ListPartitionReassignments, 0, &r);
    assert!(rewrite::rewrite(&mut f, ApiKey::ListPartitionReassignments, 0, &mut Fixed).unwrap());
    let at = response_body_offset(&f, ApiKey::ListPartitionReassignments, 0).unwrap();
    let out = ListPartitionReassignmentsResponse::decode(&mut &f[at..], 0).unwrap();
    let p = &out.topics[0].partitions[0];
    assert_eq!(
        (p.replicas.clone(), p.adding_replicas.clone()),
        (vec![BrokerId(101), BrokerId(102)], vec![BrokerId(102)])
    );
    assert_eq!(p.removing_replicas, [BrokerId(103)]);
}
