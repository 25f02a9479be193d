//! Client connections in-process, through the whole sidecar (server, pipeline, pools) against the benchmark
//! responder: what a client sees with pipelining, acks=0, a memory budget smaller than what it pushes, and a
//! client that stops reading.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kproxy_api::config::SidecarConfig;
use kproxy_bench::load::{ProduceOptions, ProduceReport, run_produce};
use kproxy_bench::upstream::{Options, Responder, State, record_batch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::buffer::Pool;
use crate::protocol;
use crate::server::Server;
use crate::settings::Settings;
use crate::state::Snapshot;

/// A sidecar in front of the benchmark responder, ready.
struct Harness {
    server: Arc<Server>,
    listen: SocketAddr,
    responder: Arc<State>,
    _dir: tempfile::TempDir,
}

async fn start(tune: impl FnOnce(&mut Settings)) -> Harness {
    let responder = Responder::bind("127.0.0.1:0".parse().unwrap(), Options::default()).await.unwrap();
    let upstream = responder.local_addr().unwrap();
    let state = responder.state();
    tokio::spawn(responder.run());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, format!("clusters:\n- name: bench\n  bootstrapServers: [\"{upstream}\"]\n")).unwrap();
    let (config, text) = SidecarConfig::load(&path).unwrap();
    let mut settings = Settings::local(path);
    tune(&mut settings);
    let server = Server::new(settings, Snapshot::new(config, &text, 1)).unwrap();
    let running = server.start().await.unwrap();
    for _ in 0..500 {
        if server.ready.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(server.ready.load(Ordering::Relaxed), "the responder answered the readiness probe");
    Harness { server, listen: running.listen, responder: state, _dir: dir }
}

fn produce(
    h: &Harness,
    record_bytes: usize,
    records: usize,
    connections: usize,
    in_flight: usize,
    n: u64,
) -> ProduceOptions {
    ProduceOptions {
        bootstrap: h.listen.to_string(),
        topic: "t".into(),
        record_bytes,
        records_per_request: records,
        acks: 1,
        connections,
        in_flight,
        duration: Duration::ZERO,
        warmup: Duration::ZERO,
        requests: Some(n),
        rate: None,
        timeline: None,
    }
}

fn assert_complete(report: &ProduceReport) {
    assert_eq!(report.total_sent, report.total_responses, "every request answered: {:?}", report.first_failure);
    assert_eq!((report.errors, report.failed_connections), (0, 0), "{:?}", report.first_failure);
}

fn metric(h: &Harness, name: &str) -> f64 {
    let text = h.server.metrics.render();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with([' ', '{']) || name.ends_with('}'))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_on_many_connections_are_all_answered_in_order() {
    let h = start(|_| {}).await;
    let report = run_produce(produce(&h, 100, 1, 4, 16, 4000)).await.unwrap();
    assert_complete(&report);
    assert_eq!(report.total_responses, 4000);
    // The load generator checks each connection's correlation ids come back in order.
    assert!(metric(&h, "kproxy_requests_total{api=\"Produce\",result=\"forwarded\"}") >= 4000.0);
    assert_eq!(metric(&h, "kproxy_memory_reserved_bytes"), 0.0, "every charge given back");
}

/// A Produce v9 frame for topic `t` partition 0 with `acks`.
fn produce_frame(acks: i16, correlation: i32) -> bytes::Bytes {
    let data =
        TopicProduceData::default().with_name(TopicName(StrBytes::from_static_str("t"))).with_partition_data(vec![
            PartitionProduceData::default().with_index(0).with_records(Some(record_batch(1, 100).unwrap())),
        ]);
    let request = ProduceRequest::default().with_acks(acks).with_timeout_ms(5000).with_topic_data(vec![data]);
    kproxy_bench::frame::request(ApiKey::Produce, 9, correlation, "test", &request).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_produce_is_written_upstream_before_shutdown_returns() {
    let h = start(|s| s.limits.shutdown_grace = Duration::from_secs(5)).await;
    let before = h.responder.requests.load(Ordering::Relaxed);
    let mut client = TcpStream::connect(h.listen).await.unwrap();
    let frames: Vec<u8> = (0..500).flat_map(|i| produce_frame(0, i).to_vec()).collect();
    client.write_all(&frames).await.unwrap();
    client.shutdown().await.unwrap();
    // Give the sidecar time to read what was sent before it stops accepting reads.
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.server.shutdown().await;
    for _ in 0..200 {
        if h.responder.requests.load(Ordering::Relaxed) - before >= 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.responder.requests.load(Ordering::Relaxed) - before, 500, "no acks=0 frame dropped");
    let counted = metric(&h, "kproxy_request_bytes_total{api=\"Produce\",cluster=\"bench\"}");
    assert_eq!(counted, frames.len() as f64, "every acks=0 frame's bytes counted");
}

/// Reads one response frame; its correlation id.
async fn correlation_of_next_answer(client: &mut TcpStream) -> i32 {
    let t = Duration::from_secs(10);
    let frame = protocol::read_frame(client, &Pool::new(0), 1 << 20, 4, t, t).await.unwrap().expect("an answer");
    protocol::response_correlation(&frame).expect("a correlation id")
}

// One thread, so that the shutdown is seen before the request's bytes: the reader's next poll finds its
// cancellation first, as it did when a SIGTERM and a request arrived together.
#[tokio::test]
async fn a_request_sent_just_before_shutdown_is_answered_before_the_connection_closes() {
    let h = start(|s| s.limits.shutdown_grace = Duration::from_secs(5)).await;
    let before = h.responder.requests.load(Ordering::Relaxed);
    let mut client = TcpStream::connect(h.listen).await.unwrap();
    client.write_all(&produce_frame(1, 1)).await.unwrap();
    assert_eq!(correlation_of_next_answer(&mut client).await, 1);
    client.write_all(&produce_frame(1, 2)).await.unwrap();
    h.server.shutdown().await;
    assert_eq!(correlation_of_next_answer(&mut client).await, 2, "the request in the socket was answered");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "then the connection closed: {rest:?}");
    assert_eq!(h.responder.requests.load(Ordering::Relaxed) - before, 2, "both requests went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_smaller_than_what_clients_push_holds_them_back_and_loses_nothing() {
    let h = start(|s| {
        s.limits.memory_budget_bytes = 1 << 20;
        s.limits.connection_memory_bytes = 300 << 10;
    })
    .await;
    // 2 connections x 16 in flight x 256 KiB = 8 MiB pushed at a 1 MiB budget.
    let report = run_produce(produce(&h, 64 << 10, 4, 2, 16, 300)).await.unwrap();
    assert_complete(&report);
    assert!(metric(&h, "kproxy_client_paused_seconds_total") > 0.0, "clients were held back");
    assert_eq!(metric(&h, "kproxy_memory_reserved_bytes"), 0.0, "every charge given back");
}

/// A Fetch v12 frame for topic `t` partition 0.
fn fetch_frame(correlation: i32, max_bytes: i32) -> bytes::Bytes {
    let topic = FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_static_str("t")))
        .with_partitions(vec![FetchPartition::default().with_partition(0).with_partition_max_bytes(max_bytes)]);
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(max_bytes)
        .with_topics(vec![topic])
        .with_replica_id((-1).into());
    kproxy_bench::frame::request(ApiKey::Fetch, 12, correlation, "test", &request).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_answers_is_closed_at_the_write_timeout() {
    let h = start(|s| s.limits.frame_timeout = Duration::from_secs(1)).await;
    let mut client = TcpStream::connect(h.listen).await.unwrap();
    // Each answer carries the responder's 100 KiB batch; the client reads none of them.
    let frames: Vec<u8> = (0..300).flat_map(|i| fetch_frame(i, 1 << 20).to_vec()).collect();
    let writer = tokio::spawn(async move {
        let _ = client.write_all(&frames).await;
        client
    });
    let mut closed = false;
    for _ in 0..100 {
        if metric(&h, "kproxy_client_connections") == 0.0
            && metric(&h, "kproxy_client_connections_accepted_total") == 1.0
        {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "the connection was closed");
    assert_eq!(metric(&h, "kproxy_memory_reserved_bytes"), 0.0, "its answers' memory given back");
    let mut client = writer.await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_budget_lowers_a_fetch_to_the_room_there_is() {
    let h = start(|s| {
        s.limits.memory_budget_bytes = 4 << 20;
        s.limits.connection_memory_bytes = 512 << 10;
    })
    .await;
    let mut client = TcpStream::connect(h.listen).await.unwrap();
    let request = fetch_frame(7, 50 << 20);
    client.write_all(&request).await.unwrap();
    let mut len = [0u8; 4];
    client.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    client.read_exact(&mut body).await.unwrap();
    assert_eq!(i32::from_be_bytes([body[0], body[1], body[2], body[3]]), 7);
    assert_eq!(metric(&h, "kproxy_fetch_max_bytes_lowered_total"), 1.0, "50 MiB lowered to the connection's share");
    let series = "{api=\"Fetch\",cluster=\"bench\"}";
    assert_eq!(metric(&h, &format!("kproxy_request_bytes_total{series}")), request.len() as f64);
    assert_eq!(metric(&h, &format!("kproxy_response_bytes_total{series}")), (4 + body.len()) as f64);
}
