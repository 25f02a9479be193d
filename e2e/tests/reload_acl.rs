//! A reload reaches connections that are already open: the next produce on the same connection is refused once
//! its topic is denied, and accepted again once the topic is allowed again.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use kproxy_e2e::sidecar::{Sidecar, sum_series};
use kproxy_e2e::{env, unique, wait_for};

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const VERSION: i16 = 9;

fn config(bootstrap: &str, deny: Option<&str>) -> String {
    let mut text = format!("clusters:\n- name: east\n  bootstrapServers: [\"{bootstrap}\"]\n");
    if let Some(topic) = deny {
        text += &format!(
            "acls:\n  defaultAction: Allow\n  rules:\n  - resource: {{type: Topic, name: \"{topic}\"}}\n    \
             operations: [Write]\n    effect: Deny\n"
        );
    }
    text
}

fn batch(value: &str) -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 0,
        key: None,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .unwrap();
    buf.freeze()
}

/// One Produce on an existing connection; returns the partition's error code.
fn produce(stream: &mut TcpStream, correlation_id: i32, topic: &str) -> i16 {
    let data = vec![
        TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch("v")))]),
    ];
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(data);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(VERSION)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("reload-e2e")));
    let mut body = BytesMut::new();
    header.encode(&mut body, ApiKey::Produce.request_header_version(VERSION)).unwrap();
    request.encode(&mut body, VERSION).unwrap();
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut response = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut response).unwrap();
    let mut response = Bytes::from(response);
    let header = ResponseHeader::decode(&mut response, ApiKey::Produce.response_header_version(VERSION)).unwrap();
    assert_eq!(header.correlation_id, correlation_id);
    let decoded = ProduceResponse::decode(&mut response, VERSION).unwrap();
    decoded.responses[0].partition_responses[0].error_code
}

#[test]
fn a_topic_denied_by_a_reload_is_refused_on_the_next_produce_of_an_open_connection() {
    let Some(env) = env() else { return };
    let bootstrap = env.kafka_east();
    let topic = unique("reload-acl");
    let sidecar = Sidecar::start(env, &config(bootstrap, None), &[]).unwrap();
    env.kcat_produce(&sidecar.listen, &topic, &["first".to_string()], &[]).unwrap();
    let mut stream = TcpStream::connect(&sidecar.listen).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    assert_eq!(produce(&mut stream, 1, &topic), 0);
    let accepted = || sum_series(&sidecar.metrics().unwrap(), "kproxy_client_connections_accepted_total", &[]);
    let accepted_before = accepted();
    let mut generation = 1.0;
    for (step, deny) in [(2, true), (3, false), (4, true), (5, false)] {
        sidecar.publish(&config(bootstrap, deny.then_some(topic.as_str()))).unwrap();
        generation += 1.0;
        wait_for("the reload", Duration::from_secs(10), || {
            Ok((sum_series(&sidecar.metrics()?, "kproxy_config_generation", &[]) >= generation).then_some(()))
        })
        .unwrap();
        let code = produce(&mut stream, step, &topic);
        let want = if deny { TOPIC_AUTHORIZATION_FAILED } else { 0 };
        assert_eq!(code, want, "step {step}: produce on the same connection after the reload");
    }
    assert_eq!(accepted(), accepted_before, "every step ran on the one connection; nothing reconnected");
}
