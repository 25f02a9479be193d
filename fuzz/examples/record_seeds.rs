//! Records the committed seed corpus from a real broker: sends the requests the sidecar inspects (and those whose
//! responses it rewrites) to a broker's PLAINTEXT listener and stores every frame in each target's input format.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example record_seeds -- 127.0.0.1:<port>` (test environment up).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// The apis of `fuzz_targets/response_rewrite.rs`, in its order.
const REWRITTEN: [ApiKey; 6] = [
    ApiKey::Metadata,
    ApiKey::FindCoordinator,
    ApiKey::DescribeCluster,
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::DescribeQuorum,
];

struct Recorder {
    conn: TcpStream,
    corpus: &'static Path,
    next_id: i32,
    stream: Vec<u8>,
}

impl Recorder {
    fn save(&self, target: &str, name: &str, data: &[u8]) {
        let dir = self.corpus.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    }

    /// Sends one request, records both frames, returns the response body.
    fn call<M: Encodable>(&mut self, api: ApiKey, version: i16, body: &M) -> Bytes {
        self.next_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.next_id)
            .with_client_id(Some(StrBytes::from_static_str("kproxy-seeds")));
        let mut frame = BytesMut::new();
        header.encode(&mut frame, api.request_header_version(version)).unwrap();
        body.encode(&mut frame, version).unwrap();
        let name = format!("{api:?}-v{version}");
        self.save("request_header", &name, &frame);
        self.save("request_body", &name, &frame);
        let mut wire = (frame.len() as i32).to_be_bytes().to_vec();
        wire.extend_from_slice(&frame);
        if self.stream.len() < 8192 {
            self.stream.extend_from_slice(&wire);
        }
        self.conn.write_all(&wire).unwrap();

        let mut len = [0u8; 4];
        self.conn.read_exact(&mut len).unwrap();
        let mut response = vec![0u8; i32::from_be_bytes(len) as usize];
        self.conn.read_exact(&mut response).unwrap();
        if let Some(index) = REWRITTEN.iter().position(|a| *a == api) {
            let low = api.valid_versions().min;
            let mut seed = vec![index as u8, (version - low) as u8];
            seed.extend_from_slice(&response);
            self.save("response_rewrite", &name, &seed);
        }
        let mut response = Bytes::from(response);
        ResponseHeader::decode(&mut response, api.response_header_version(version)).unwrap();
        response
    }
}

fn main() {
    let addr = std::env::args().nth(1).expect("usage: record_seeds <broker host:port> [corpus dir]");
    // A second argument writes the seeds elsewhere, to pick from them.
    let corpus =
        std::env::args().nth(2).map(Into::into).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let corpus: &'static Path = Box::leak(corpus.into_boxed_path());
    let conn = TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = Recorder { conn, corpus, next_id: 0, stream: Vec::new() };
    let topic = StrBytes::from_string(format!("fuzz-seeds-{}", std::process::id()));

    let versions = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("kproxy-seeds"))
        .with_client_software_version(StrBytes::from_static_str("0.1.0"));
    r.call(ApiKey::ApiVersions, 3, &versions);
    r.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default());

    // Creates the topic and waits for its leader.
    let wanted = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic.clone().into()))]))
        .with_allow_auto_topic_creation(true);
    let topic_id = loop {
        let mut body = r.call(ApiKey::Metadata, 12, &wanted);
        let m = MetadataResponse::decode(&mut body, 12).unwrap();
        let t = &m.topics[0];
        if t.error_code == 0 && t.partitions.first().is_some_and(|p| p.leader_id.0 >= 0) {
            break t.topic_id;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for version in [1, 4, 9, 13] {
        r.call(ApiKey::Metadata, version, &wanted);
    }

    let records: Vec<Record> = (0..3)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: -1,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut batch = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut batch, &records, &options).unwrap();
    let partition = PartitionProduceData::default().with_index(0).with_records(Some(batch.freeze()));
    for version in [3, 9, 11, 12] {
        let data =
            TopicProduceData::default().with_name(topic.clone().into()).with_partition_data(vec![partition.clone()]);
        let produce = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![data]);
        r.call(ApiKey::Produce, version, &produce);
    }

    for version in [4, 12, 13, 16, 17] {
        let part = FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 16);
        let fetch_topic = FetchTopic::default().with_partitions(vec![part]);
        let fetch_topic = if version >= 13 {
            fetch_topic.with_topic_id(topic_id)
        } else {
            fetch_topic.with_topic(topic.clone().into())
        };
        let fetch = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![fetch_topic]);
        r.call(ApiKey::Fetch, version, &fetch);
    }

    let group = StrBytes::from_string(format!("fuzz-seeds-{}", std::process::id()));
    for version in [0, 3] {
        r.call(ApiKey::FindCoordinator, version, &FindCoordinatorRequest::default().with_key(group.clone()));
    }
    let keys = FindCoordinatorRequest::default().with_coordinator_keys(vec![group.clone()]);
    r.call(ApiKey::FindCoordinator, 4, &keys);
    for version in [0, 1] {
        r.call(ApiKey::DescribeCluster, version, &DescribeClusterRequest::default());
    }
    let quorum = DescribeQuorumRequest::default().with_topics(vec![
        describe_quorum_request::TopicData::default()
            .with_topic_name(StrBytes::from_static_str("__cluster_metadata").into())
            .with_partitions(vec![describe_quorum_request::PartitionData::default().with_partition_index(0)]),
    ]);
    for version in [0, 1, 2] {
        r.call(ApiKey::DescribeQuorum, version, &quorum);
    }
    let list = ListOffsetsRequest::default().with_replica_id((-1).into()).with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(topic.clone().into())
            .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1)]),
    ]);
    r.call(ApiKey::ListOffsets, 7, &list);
    let offsets = OffsetFetchRequest::default().with_group_id(group.clone().into()).with_topics(Some(vec![
        OffsetFetchRequestTopic::default().with_name(topic.clone().into()).with_partition_indexes(vec![0]),
    ]));
    r.call(ApiKey::OffsetFetch, 7, &offsets);

    let stream = std::mem::take(&mut r.stream);
    r.save("frame", "client-stream", &stream);
    // Edge cases of framing next to the real stream: lengths of 0, -1 and 2^31-1, and a cut-off frame.
    let mut edges = BytesMut::new();
    for len in [0i32, -1, i32::MAX] {
        edges.put_i32(len);
    }
    r.save("frame", "hostile-lengths", &edges);
    r.save("frame", "truncated", &stream[..stream.len().min(40)]);
    println!("seed corpus written to {}", corpus.display());
}
