//! Cost of the sidecar's per-request hot paths: header peek, correlation-id rewrite, Metadata address rewrite and
//! the pipeline's decision (ACL and route internals are benchmarked in kproxy-policy's own benches).

use std::hint::black_box;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, MetadataResponse, ProduceRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kproxy_api::config::SidecarConfig;
use kproxy_sidecar::buffer::Pool;
use kproxy_sidecar::pipeline::{self, request::Ctx, sasl};
use kproxy_sidecar::protocol::request::Request;
use kproxy_sidecar::protocol::rewrite::{self, Addresses};
use kproxy_sidecar::protocol::versions::Versions;
use kproxy_sidecar::protocol::{self, Header};
use kproxy_sidecar::state::{Snapshot, Store};
use kproxy_sidecar::upstream::Upstream;

const PRODUCE_VERSION: i16 = 9;
const METADATA_VERSION: i16 = 12;

/// A Produce request frame (length prefix included) carrying `batch_bytes` of opaque record batch.
fn produce_frame(batch_bytes: usize) -> BytesMut {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(PRODUCE_VERSION)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("bench-producer")));
    let data = PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(vec![0u8; batch_bytes])));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("orders.eu")))
        .with_partition_data(vec![data]);
    let body = ProduceRequest::default().with_acks(1).with_timeout_ms(30_000).with_topic_data(vec![topic]);
    frame(|b| {
        header.encode(b, ApiKey::Produce.request_header_version(PRODUCE_VERSION)).unwrap();
        body.encode(b, PRODUCE_VERSION).unwrap();
    })
}

/// A Metadata response frame: 3 brokers, 20 topics of 6 partitions (a mid-sized client's view).
fn metadata_frame() -> BytesMut {
    let brokers = (0..3)
        .map(|i| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(i))
                .with_host(StrBytes::from_string(format!("kafka-{i}.kafka.svc.cluster.local")))
                .with_port(9093)
        })
        .collect();
    let topics = (0..20)
        .map(|t| {
            let partitions = (0..6)
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p)
                        .with_leader_id(BrokerId(p % 3))
                        .with_replica_nodes(vec![BrokerId(0), BrokerId(1), BrokerId(2)])
                        .with_isr_nodes(vec![BrokerId(0), BrokerId(1), BrokerId(2)])
                })
                .collect();
            MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(format!("orders.topic-{t}")))))
                .with_partitions(partitions)
        })
        .collect();
    let body = MetadataResponse::default().with_brokers(brokers).with_controller_id(BrokerId(0)).with_topics(topics);
    frame(|b| {
        ResponseHeader::default()
            .with_correlation_id(7)
            .encode(b, ApiKey::Metadata.response_header_version(METADATA_VERSION))
            .unwrap();
        body.encode(b, METADATA_VERSION).unwrap();
    })
}

fn frame(fill: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32(0);
    fill(&mut b);
    let len = (b.len() - 4) as i32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b
}

/// The broker map as the rewriter sees it, without binding listeners: a fixed virtual id and port per broker.
struct FixedMap;

impl Addresses for FixedMap {
    fn broker(&mut self, node: i32, _host: &str, _port: i32) -> (i32, String, i32) {
        (node, "127.0.0.1".to_string(), 19092 + node)
    }

    fn node(&mut self, node: i32) -> i32 {
        node
    }
}

fn header_peek(c: &mut Criterion) {
    let frame = produce_frame(16 * 1024);
    c.bench_function("frame header peek (produce)", |b| {
        b.iter(|| {
            let h = Header::peek(black_box(&frame)).unwrap();
            let api = h.api().unwrap();
            black_box(protocol::request_body_offset(&frame, api, h.api_version))
        })
    });
    c.bench_function("expects response + long-poll lane (produce)", |b| {
        let h = Header::peek(&frame).unwrap();
        b.iter(|| black_box((protocol::expects_response(&frame, &h), protocol::is_long_poll(&frame, &h))))
    });
}

fn correlation_rewrite(c: &mut Criterion) {
    let mut request = produce_frame(1024);
    let mut response = metadata_frame();
    let mut id = 0i32;
    c.bench_function("correlation id rewrite (request out, response back)", |b| {
        b.iter(|| {
            id = id.wrapping_add(1);
            protocol::set_request_correlation(black_box(&mut request), id);
            let upstream = protocol::response_correlation(black_box(&response)).unwrap();
            protocol::set_response_correlation(&mut response, upstream ^ 1);
        })
    });
}

fn address_rewrite(c: &mut Criterion) {
    let frame = metadata_frame();
    let pool = Pool::new(64 * 1024 * 1024);
    let mut group = c.benchmark_group("response address rewrite");
    group.bench_function("metadata v12, 3 brokers, 20 topics x 6 partitions", |b| {
        b.iter_batched_ref(
            || {
                let mut buf = pool.get(frame.len());
                buf.extend_from_slice(&frame);
                buf
            },
            |buf| rewrite::rewrite(buf, ApiKey::Metadata, METADATA_VERSION, &mut FixedMap).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("needs_rewrite (produce v9, passes untouched)", |b| {
        b.iter(|| black_box(rewrite::needs_rewrite(black_box(ApiKey::Produce), black_box(PRODUCE_VERSION))))
    });
    group.finish();
}

fn pipeline_decision(c: &mut Criterion) {
    let yaml = "clusters:\n  - name: east\n    bootstrapServers: [\"127.0.0.1:9092\"]\n  - name: west\n    \
         bootstrapServers: [\"127.0.0.1:9093\"]\nroutes:\n  - match: {topicPrefix: \"orders.\"}\n    cluster: east\n";
    let config = SidecarConfig::parse(yaml).unwrap();
    let registry = prometheus::Registry::new();
    let store = Store::new(Snapshot::new(config.clone(), yaml, 1), &registry).unwrap();
    let pool = Pool::new(1 << 24);
    let metrics = std::sync::Arc::new(kproxy_sidecar::metrics::Metrics::new().unwrap());
    let dir = std::env::temp_dir();
    let up =
        Upstream::new(config.clusters[0].clone(), Default::default(), metrics, pool.clone(), dir, Default::default());
    let keys = ApiKey::iter()
        .map(|k| {
            let r = k.valid_versions();
            kafka_protocol::messages::api_versions_response::ApiVersion::default()
                .with_api_key(k as i16)
                .with_min_version(r.min)
                .with_max_version(r.max)
        })
        .collect();
    let versions = Versions::from_broker(kafka_protocol::messages::ApiVersionsResponse::default().with_api_keys(keys));
    let frame = produce_frame(16 * 1024);
    let request = |frame: &[u8]| {
        let mut buf = pool.get(frame.len());
        buf.extend_from_slice(frame);
        Request::new(buf).unwrap_or_else(|_| panic!("a request"))
    };
    let listen = "127.0.0.1:9092".parse().unwrap();
    c.bench_function("pipeline decision (produce, 16 KiB batch, routes)", |b| {
        let snapshot = store.snapshot();
        let health = store.health.view();
        let ctx = Ctx {
            snapshot: &snapshot,
            live: &store.live,
            health: &health,
            versions: &versions,
            own: up.endpoint(),
            now: std::time::Instant::now(),
        };
        let mut sasl = sasl::Local::new(listen, listen);
        b.iter(|| black_box(pipeline::decide(&ctx, &mut sasl, request(black_box(&frame)))))
    });
    c.bench_function("request body decode for a policy (produce, 16 KiB batch)", |b| {
        b.iter(|| black_box(request(black_box(&frame)).body().is_ok()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = header_peek, correlation_rewrite, address_rewrite, pipeline_decision
}
criterion_main!(benches);
