//! The memory budget under hostile-but-valid load against the real broker: a client pipelining large produce
//! requests, consumers catching up with large fetches, many idle connections, and a hung upstream under
//! pipelined 4 MiB produce requests. In each, the sidecar runs with a budget smaller than what the clients push
//! at it: no connection is dropped and every record arrives (the sets of keys are compared). Peak RSS and the
//! time clients spent paused are printed (benchmark figures, not assertions).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kproxy_e2e::hostile::{Relay, RssWatch, api_versions, metadata, read_response};
use kproxy_e2e::sidecar::{Sidecar, config, create_topic_on_first_broker};
use kproxy_e2e::wire::{PRODUCE_VERSION, frame, keyed_record_batch};
use kproxy_e2e::{Env, env, unique};

const MIB: usize = 1 << 20;

/// The test's topics live on broker 1 (see `create_topic_on_first_broker`): the raw producers send on the
/// bootstrap connection.
fn create_topic(env: &Env, bootstrap: &str, topic: &str, partitions: u32, max_message_bytes: usize) {
    let config = format!("max.message.bytes={max_message_bytes}");
    create_topic_on_first_broker(env, bootstrap, topic, partitions, &[&config]).unwrap();
}

/// An acks=all Produce frame (length prefix included) of one record batch with one record: `key`, and a value of
/// `value_bytes` bytes.
fn produce_frame(topic: &str, partition: i32, key: &str, value_bytes: usize, correlation_id: i32) -> Vec<u8> {
    let batch =
        keyed_record_batch(Some(Bytes::copy_from_slice(key.as_bytes())), Bytes::from(vec![b'v'; value_bytes])).unwrap();
    let data = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(batch))]);
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(60_000).with_topic_data(vec![data]);
    frame(ApiKey::Produce, PRODUCE_VERSION, correlation_id, "kproxy-e2e-memory", &request).unwrap()
}

/// One connection pipelining `frames` (every one written without waiting for answers, up to what TCP takes)
/// while reading the answers: each must come back in order with no error. Returns the answers read; an error
/// if the connection was closed or an answer failed.
fn pipeline(addr: &str, frames: Vec<Vec<u8>>, first_id: i32) -> Result<usize, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(180))).map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let n = frames.len();
    let sending = std::thread::spawn(move || {
        for f in frames {
            writer.write_all(&f)?;
        }
        Ok::<_, std::io::Error>(())
    });
    for i in 0..n {
        let id = first_id + i as i32;
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).map_err(|e| format!("answer {i} of {n}: {e}"))?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        stream.read_exact(&mut body).map_err(|e| format!("answer {i} of {n}: {e}"))?;
        let mut body = Bytes::from(body);
        let header_version = ApiKey::Produce.response_header_version(PRODUCE_VERSION);
        let header = ResponseHeader::decode(&mut body, header_version).map_err(|e| e.to_string())?;
        if header.correlation_id != id {
            return Err(format!("answer {i}: correlation id {} instead of {id}", header.correlation_id));
        }
        let response = ProduceResponse::decode(&mut body, PRODUCE_VERSION).map_err(|e| e.to_string())?;
        let codes: Vec<i16> =
            response.responses.iter().flat_map(|t| t.partition_responses.iter().map(|p| p.error_code)).collect();
        if codes.iter().any(|&c| c != 0) || body.remaining() != 0 {
            return Err(format!("answer {i}: error codes {codes:?}"));
        }
    }
    sending.join().map_err(|_| "writer panicked".to_string())?.map_err(|e| e.to_string())?;
    Ok(n)
}

/// The keys stored in `topic`, read directly from the broker.
fn keys(env: &Env, bootstrap: &str, topic: &str, extra: &[&str]) -> BTreeSet<String> {
    let mut cmd = env.command("kcat");
    cmd.args(["-b", bootstrap, "-t", topic, "-C", "-o", "beginning", "-e", "-q", "-f", "%k\\n"]).args(extra);
    cmd.args(["-X", "fetch.message.max.bytes=67108864", "-X", "receive.message.max.bytes=200000000"]);
    let out = env.run(&mut cmd, Duration::from_secs(300)).unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

fn paused_seconds(sidecar: &Sidecar) -> f64 {
    sidecar.metric("kproxy_client_paused_seconds_total", &[]).unwrap()
}

/// (a) One client pipelining large produce requests. 100 MiB requests are scaled down to 16 MiB: the test
/// broker's heap is 384 MiB and its default `message.max.bytes` is 1 MiB, so the topic allows 17 MiB batches.
#[test]
fn one_client_pipelining_large_produce_requests_waits_for_the_budget_and_loses_nothing() {
    let Some(env) = env() else { return };
    let topic = unique("memory-large-produce");
    create_topic(env, env.kafka_east(), &topic, 1, 17 * MIB);
    let budget = (40 * MIB).to_string();
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &["--memory-budget-bytes", &budget]).unwrap();
    let rss = RssWatch::start(sidecar.pid());
    let started = Instant::now();
    let sent: Vec<String> = (0..8).map(|i| format!("large-{i}")).collect();
    let frames = sent.iter().enumerate().map(|(i, k)| produce_frame(&topic, 0, k, 16 * MIB, 100 + i as i32)).collect();
    let answered = pipeline(&sidecar.listen, frames, 100);
    let (elapsed, peak) = (started.elapsed(), rss.peak());
    let paused = paused_seconds(&sidecar);
    eprintln!(
        "8 x 16 MiB pipelined through a 40 MiB budget: {elapsed:?}, peak RSS {} MiB, clients paused {paused:.2} s",
        peak / 1024
    );
    assert_eq!(answered, Ok(8), "every request answered on the same connection");
    assert_eq!(keys(env, env.kafka_east(), &topic, &[]), sent.into_iter().collect(), "every record stored");
    assert!(paused > 0.0, "the client was held back: 128 MiB does not fit a 40 MiB budget");
    assert_eq!(sidecar.metric("kproxy_memory_reserved_bytes", &[]).unwrap(), 0.0, "everything given back");
}

/// (b) Several consumers catching up at once with `fetch.max.bytes` of 50 MiB through a 32 MiB budget: their
/// fetches are lowered to the room there is, and each consumer reads every record.
#[test]
fn consumers_catching_up_with_large_fetches_each_read_every_record() {
    let Some(env) = env() else { return };
    let topic = unique("memory-catch-up");
    create_topic(env, env.kafka_east(), &topic, 4, 2 * MIB);
    // 64 MiB in 16,384 records of 4 KiB, written straight to the broker.
    let lines: Vec<String> = (0..16_384).map(|i| format!("k{i:05}:{}", "x".repeat(4096))).collect();
    env.kcat_produce(env.kafka_east(), &topic, &lines, &["-K:", "-X", "linger.ms=50"]).unwrap();
    let expected: BTreeSet<String> = (0..16_384).map(|i| format!("k{i:05}")).collect();
    let budget = (32 * MIB).to_string();
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &["--memory-budget-bytes", &budget]).unwrap();
    let rss = RssWatch::start(sidecar.pid());
    let started = Instant::now();
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let (env, listen, topic) = (env.clone(), sidecar.listen.clone(), topic.clone());
            std::thread::spawn(move || {
                keys(&env, &listen, &topic, &["-X", "fetch.max.bytes=52428800", "-X", "fetch.wait.max.ms=500"])
            })
        })
        .collect();
    let got: Vec<BTreeSet<String>> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
    let (elapsed, peak) = (started.elapsed(), rss.peak());
    let lowered = sidecar.metric("kproxy_fetch_max_bytes_lowered_total", &[]).unwrap();
    eprintln!(
        "4 consumers x 64 MiB through a 32 MiB budget: {elapsed:?}, peak RSS {} MiB, {lowered} fetches lowered, \
         clients paused {:.2} s",
        peak / 1024,
        paused_seconds(&sidecar)
    );
    for (i, keys) in got.iter().enumerate() {
        assert_eq!(keys.len(), expected.len(), "consumer {i}");
        assert!(keys == &expected, "consumer {i} read a different set of records");
    }
    assert!(lowered > 0.0, "50 MiB fetches were lowered to the budget's room");
}

/// (c) Many idle connections hold no budget: a producer beside them is not held back, and every idle
/// connection still answers afterwards.
#[test]
fn many_idle_connections_hold_no_budget_and_all_stay_open() {
    let Some(env) = env() else { return };
    let budget = (16 * MIB).to_string();
    let sidecar = Sidecar::start(env, &config("east", env.kafka_east()), &["--memory-budget-bytes", &budget]).unwrap();
    let idle_rss = kproxy_e2e::hostile::rss_kib(sidecar.pid()).unwrap();
    let mut idle: Vec<TcpStream> = (0..2000)
        .map(|i| {
            let mut s = TcpStream::connect(&sidecar.listen).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            s.write_all(&api_versions(3, i)).unwrap();
            assert_eq!(read_response(&mut s).unwrap().0, i);
            s
        })
        .collect();
    let held_rss = kproxy_e2e::hostile::rss_kib(sidecar.pid()).unwrap();
    assert_eq!(sidecar.metric("kproxy_memory_reserved_bytes", &[]).unwrap(), 0.0, "idle connections hold nothing");
    let topic = unique("memory-idle");
    create_topic(env, env.kafka_east(), &topic, 1, MIB);
    let sent: Vec<String> = (0..64).map(|i| format!("idle-{i}")).collect();
    let frames = sent.iter().enumerate().map(|(i, k)| produce_frame(&topic, 0, k, 512 * 1024, i as i32)).collect();
    assert_eq!(pipeline(&sidecar.listen, frames, 0), Ok(64));
    for (i, s) in idle.iter_mut().enumerate() {
        let id = 10_000 + i as i32;
        s.write_all(&metadata(id)).unwrap();
        assert_eq!(read_response(s).unwrap().0, id, "idle connection {i} still served");
    }
    eprintln!(
        "2000 idle connections: RSS {} -> {} MiB ({:.1} KiB each)",
        idle_rss / 1024,
        held_rss / 1024,
        (held_rss - idle_rss) as f64 / 2000.0
    );
    assert_eq!(keys(env, env.kafka_east(), &topic, &[]), sent.into_iter().collect());
    assert_eq!(sidecar.metric("kproxy_client_connections", &[]).unwrap(), 2000.0);
}

/// (d) A hung upstream under pipelined 4 MiB produce requests: the sidecar stops reading its clients once the
/// budget is used up instead of growing, and when the upstream answers again every request is answered on its
/// original connection and every record is stored.
#[test]
fn a_hung_upstream_under_pipelined_4_mib_produces_pauses_clients_and_resumes_without_loss() {
    let Some(env) = env() else { return };
    let topic = unique("memory-hung");
    create_topic(env, env.kafka_east(), &topic, 4, 5 * MIB);
    let relay = Relay::start(env.kafka_east()).unwrap();
    let budget = (64 * MIB).to_string();
    // Clients use the bootstrap listener, whose upstream connection goes through the relay (the test broker has
    // one node, the leader of every partition, so Produce is served there).
    let sidecar = Sidecar::start(env, &config("east", &relay.addr), &["--memory-budget-bytes", &budget]).unwrap();
    let mut warm = TcpStream::connect(&sidecar.listen).unwrap();
    warm.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    warm.write_all(&metadata(1)).unwrap();
    assert_eq!(read_response(&mut warm).unwrap().0, 1);

    relay.set_silent(true);
    let rss = RssWatch::start(sidecar.pid());
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (listen, topic) = (sidecar.listen.clone(), topic.clone());
            let frames = (0..12)
                .map(|i| produce_frame(&topic, c, &format!("hung-{c}-{i}"), 4 * MIB, 1000 * c + i))
                .collect::<Vec<_>>();
            std::thread::spawn(move || pipeline(&listen, frames, 1000 * c))
        })
        .collect();
    // 192 MiB pushed at a 64 MiB budget while nothing goes upstream.
    std::thread::sleep(Duration::from_secs(5));
    let reserved = sidecar.metric("kproxy_memory_reserved_bytes", &[]).unwrap();
    let hung_peak = kproxy_e2e::hostile::rss_kib(sidecar.pid()).unwrap();
    let resumed = Instant::now();
    relay.set_silent(false);
    let answered: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let (elapsed, peak) = (resumed.elapsed(), rss.peak());
    eprintln!(
        "4 clients x 12 x 4 MiB with the upstream hung 5 s, 64 MiB budget: reserved {} MiB while hung, RSS {} MiB \
         while hung, peak {} MiB, all answered {elapsed:?} after resuming, clients paused {:.2} s",
        reserved as usize / MIB,
        hung_peak / 1024,
        peak / 1024,
        paused_seconds(&sidecar)
    );
    for (c, a) in answered.iter().enumerate() {
        assert_eq!(a, &Ok(12), "client {c}: every request answered on its connection");
    }
    assert!(reserved <= (64 * MIB + 8 * MIB) as f64, "the budget held while hung: {reserved} bytes reserved");
    let expected: BTreeSet<String> = (0..4).flat_map(|c| (0..12).map(move |i| format!("hung-{c}-{i}"))).collect();
    assert_eq!(keys(env, env.kafka_east(), &topic, &[]), expected, "every record stored");
}
