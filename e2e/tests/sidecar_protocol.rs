//! Protocol edges through the sidecar against the real brokers: Kafka's metadata-quorum tool sees only the
//! sidecar's addresses, ApiVersions offers what every routed cluster speaks (Kafka 4.1 and 3.9 together), and a
//! request at a version outside that range is answered UNSUPPORTED_VERSION per entity on a connection that stays
//! usable.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Result, bail};
use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kproxy_e2e::sidecar::{Sidecar, config, java};
use kproxy_e2e::wire::{self, record_batch};
use kproxy_e2e::{Env, env, unique, wait_for};

fn quorum(env: &Env, bootstrap: &str, what: &str) -> String {
    let mut cmd = java(env, "org.apache.kafka.tools.MetadataQuorumCommand");
    cmd.args(["--bootstrap-server", bootstrap, "describe", what]);
    let out = env.run(&mut cmd, Duration::from_secs(120)).unwrap();
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The ports in `host:port` endpoints of a quorum description ("CONTROLLER://127.0.0.1:31268").
fn endpoint_ports(text: &str) -> Vec<String> {
    text.split("://")
        .skip(1)
        .filter_map(|s| s.split(['"', ']', ',']).next()?.rsplit(':').next().map(str::to_string))
        .collect()
}

#[test]
fn metadata_quorum_tool_through_the_sidecar_shows_no_real_address() {
    let Some(env) = env() else { return };
    let direct = quorum(env, env.kafka_east(), "--status");
    let controller_ports = endpoint_ports(&direct);
    assert!(!controller_ports.is_empty(), "the broker shows its controllers directly:\n{direct}");
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &[]).unwrap();
    let status = quorum(env, &sidecar.listen, "--status");
    let replication = quorum(env, &sidecar.listen, "--replication");
    assert!(status.contains("LeaderId:") && status.contains("CurrentVoters:"), "{status}");
    assert!(replication.contains("NodeId") && replication.contains("Leader"), "{replication}");
    let real: Vec<String> = [env.kafka_east(), env.var("KPROXY_KAFKA_EAST_SASL")]
        .iter()
        .filter_map(|a| a.rsplit(':').next().map(str::to_string))
        .chain(controller_ports)
        .collect();
    for text in [&status, &replication] {
        for port in &real {
            assert!(!text.contains(&format!(":{port}")), "real port {port} leaked through the sidecar:\n{text}");
        }
    }
    eprintln!("through the sidecar:\n{status}{replication}");
}

/// One request on `stream` under this test's client id.
fn call<Q: Encodable, R: Decodable>(stream: &mut TcpStream, api: ApiKey, version: i16, id: i32, body: &Q) -> Result<R> {
    wire::call(stream, api, version, id, "e2e-protocol", body)
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// (min, max) per API key from an ApiVersions v3 answer at `addr`.
fn api_versions(addr: &str) -> Result<std::collections::BTreeMap<i16, (i16, i16)>> {
    let mut s = connect(addr);
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("e2e"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    let r: ApiVersionsResponse = call(&mut s, ApiKey::ApiVersions, 3, 1, &request)?;
    if r.error_code != 0 {
        bail!("ApiVersions error {}", r.error_code);
    }
    Ok(r.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect())
}

/// East (Kafka 4.1) and legacy (3.9) behind one bootstrap, a route sending one prefix to legacy.
fn east_and_legacy(env: &Env, run: &str) -> String {
    format!(
        "clusters:\n- name: east\n  bootstrapServers: [\"{}\"]\n- name: legacy\n  bootstrapServers: [\"{}\"]\n\
         defaultCluster: east\nroutes:\n- {{match: {{topicPrefix: \"{run}-old.\"}}, cluster: legacy}}\n",
        env.kafka_east(),
        env.kafka_legacy()
    )
}

const CHECKED: [ApiKey; 3] = [ApiKey::Produce, ApiKey::Fetch, ApiKey::Metadata];

#[test]
fn api_versions_through_a_routed_sidecar_offer_no_more_than_the_kafka_3_9_broker() {
    let Some(env) = env() else { return };
    let east = api_versions(env.kafka_east()).unwrap();
    let legacy = api_versions(env.kafka_legacy()).unwrap();
    let run = unique("versions");
    let sidecar = Sidecar::start(env, &east_and_legacy(env, &run), &[]).unwrap();
    // Metadata for a topic routed to legacy makes the sidecar talk to it (it probes routed clusters anyway).
    let mut s = connect(&sidecar.listen);
    let topics = vec![
        metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(format!("{run}-old.t"))))),
    ];
    let _: MetadataResponse =
        call(&mut s, ApiKey::Metadata, 12, 1, &MetadataRequest::default().with_topics(Some(topics))).unwrap();
    let offered = wait_for("the sidecar to offer what legacy speaks", Duration::from_secs(30), || {
        let offered = api_versions(&sidecar.listen)?;
        let within = CHECKED.iter().all(|api| {
            let k = *api as i16;
            matches!((offered.get(&k), legacy.get(&k)), (Some(o), Some(l)) if o.1 <= l.1 && o.0 >= l.0)
        });
        Ok(within.then_some(offered))
    })
    .unwrap();
    for api in CHECKED {
        let k = api as i16;
        eprintln!("{api:?}: east {:?}, legacy {:?}, through the sidecar {:?}", east[&k], legacy[&k], offered[&k]);
    }
    // Kafka 4.1 speaks newer Produce and Metadata than 3.9; the sidecar must not offer them.
    let produce = ApiKey::Produce as i16;
    assert!(east[&produce].1 > legacy[&produce].1, "the environment's brokers differ: {east:?} {legacy:?}");
    assert_eq!(offered[&produce].1, legacy[&produce].1);
    // Every API offered is one both clusters offer.
    for (k, (min, max)) in &offered {
        let (e, l) = (east.get(k), legacy.get(k));
        assert!(e.is_some_and(|e| e.0 <= *min && *max <= e.1), "api {k}: {min}..{max} vs east {e:?}");
        assert!(l.is_some_and(|l| l.0 <= *min && *max <= l.1), "api {k}: {min}..{max} vs legacy {l:?}");
    }
}

#[test]
fn a_request_above_the_offered_versions_gets_unsupported_version_per_entity_and_the_connection_stays() {
    let Some(env) = env() else { return };
    let run = unique("unsupported");
    let sidecar = Sidecar::start(env, &east_and_legacy(env, &run), &[]).unwrap();
    let topic = format!("{run}-old.t");
    let name = || TopicName(StrBytes::from_string(topic.clone()));
    let mut s = connect(&sidecar.listen);
    // Learn the offered range the way a client does, after the sidecar has met the legacy cluster.
    let known: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        12,
        1,
        &MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name()))])),
    )
    .unwrap();
    let offered = wait_for("legacy's versions", Duration::from_secs(30), || {
        let o = api_versions(&sidecar.listen)?;
        Ok((o[&(ApiKey::Produce as i16)].1 <= 11).then_some(o))
    })
    .unwrap();
    let above = |api: ApiKey| offered[&(api as i16)].1 + 1;
    for api in [ApiKey::Produce, ApiKey::Metadata, ApiKey::ListOffsets, ApiKey::Fetch, ApiKey::TxnOffsetCommit] {
        eprintln!("{api:?}: offered up to v{}, sending v{}", above(api) - 1, above(api));
    }

    let v = above(ApiKey::Produce);
    let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
        produce_request::TopicProduceData::default().with_name(name()).with_partition_data(vec![
            produce_request::PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(record_batch("x").unwrap())),
            produce_request::PartitionProduceData::default()
                .with_index(1)
                .with_records(Some(record_batch("y").unwrap())),
        ]),
    ]);
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, v, 2, &produce).unwrap();
    let errors: Vec<_> =
        r.responses.iter().flat_map(|t| t.partition_responses.iter().map(|p| (p.index, p.error_code))).collect();
    assert_eq!(errors, vec![(0, 35), (1, 35)], "Produce v{v}");

    let v = above(ApiKey::Metadata);
    let r: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        v,
        3,
        &MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(name()))])),
    )
    .unwrap();
    assert_eq!(r.topics.iter().map(|t| t.error_code).collect::<Vec<_>>(), vec![35], "Metadata v{v}");
    assert!(r.brokers.is_empty());

    let v = above(ApiKey::ListOffsets);
    if v <= ApiKey::ListOffsets.valid_versions().max {
        let r: ListOffsetsResponse = call(
            &mut s,
            ApiKey::ListOffsets,
            v,
            4,
            &ListOffsetsRequest::default().with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(name())
                    .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default().with_timestamp(-1)]),
            ]),
        )
        .unwrap();
        assert_eq!(r.topics[0].partitions[0].error_code, 35, "ListOffsets v{v}");
    }

    // Fetch names topics by id from v13; the answer echoes the id with the error.
    let v = above(ApiKey::Fetch);
    assert!(v <= ApiKey::Fetch.valid_versions().max, "Fetch v{v}");
    let id = known.topics[0].topic_id;
    let fetch = FetchRequest::default().with_max_wait_ms(0).with_topics(vec![
        fetch_request::FetchTopic::default()
            .with_topic_id(id)
            .with_partitions(vec![fetch_request::FetchPartition::default().with_partition(0)]),
    ]);
    let r: FetchResponse = call(&mut s, ApiKey::Fetch, v, 5, &fetch).unwrap();
    assert_eq!(r.error_code, 35, "Fetch v{v}");
    assert_eq!((r.responses[0].topic_id, r.responses[0].partitions[0].error_code), (id, 35));

    // A transactional offset commit (group and topic entities) one version above what 3.9 speaks.
    let v = above(ApiKey::TxnOffsetCommit);
    if v <= ApiKey::TxnOffsetCommit.valid_versions().max {
        let commit = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(format!("{run}-tx"))))
            .with_group_id(GroupId(StrBytes::from_string(format!("{run}-g"))))
            .with_topics(vec![
                txn_offset_commit_request::TxnOffsetCommitRequestTopic::default().with_name(name()).with_partitions(
                    vec![txn_offset_commit_request::TxnOffsetCommitRequestPartition::default().with_partition_index(0)],
                ),
            ]);
        let r: TxnOffsetCommitResponse = call(&mut s, ApiKey::TxnOffsetCommit, v, 6, &commit).unwrap();
        assert_eq!(r.topics[0].partitions[0].error_code, 35, "TxnOffsetCommit v{v}");
    }

    // The same connection still works at an offered version.
    let r: MetadataResponse =
        call(&mut s, ApiKey::Metadata, 12, 7, &MetadataRequest::default().with_topics(None)).unwrap();
    assert!(!r.brokers.is_empty());
    let rejected = sidecar.metric("kproxy_frames_rejected_total", &["reason=\"unsupported_version\""]).unwrap_or(0.0);
    assert_eq!(rejected, 0.0, "no connection was closed for a version kafka-protocol encodes");

    // A version beyond what kafka-protocol encodes closes only that connection, counted.
    let mut other = connect(&sidecar.listen);
    let mut frame = BytesMut::new();
    let mut b = BytesMut::new();
    b.put_i16(ApiKey::Produce as i16);
    b.put_i16(ApiKey::Produce.valid_versions().max + 1);
    b.put_i32(7);
    b.put_i16(-1);
    b.put_u8(0);
    frame.put_i32(i32::try_from(b.len()).unwrap());
    frame.extend_from_slice(&b);
    other.write_all(&frame).unwrap();
    let mut buf = [0u8; 4];
    assert!(matches!(other.read(&mut buf), Ok(0) | Err(_)), "the connection is closed");
    let rejected = wait_for("the close to be counted", Duration::from_secs(10), || {
        let n = sidecar.metric("kproxy_frames_rejected_total", &["reason=\"unsupported_version\""])?;
        Ok((n >= 1.0).then_some(n))
    })
    .unwrap();
    assert_eq!(rejected, 1.0);
    let r: MetadataResponse =
        call(&mut s, ApiKey::Metadata, 12, 9, &MetadataRequest::default().with_topics(None)).unwrap();
    assert!(!r.brokers.is_empty(), "the first connection is unaffected");
}
