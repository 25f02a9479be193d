//! Pipelined produce: C connections, each with up to M requests in flight, one pre-encoded request re-sent with a
//! fresh correlation id, so the generator spends its time on the socket and not on encoding.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::{Semaphore, mpsc};

use super::client::{CLIENT_ID, Client, plan};
use super::report::{Latency, ProduceReport, Timeline};
use crate::frame::{peek_response_correlation, request, response_body};
use crate::upstream::record_batch;
use crate::{Error, Result};

/// How a produce run is shaped.
#[derive(Clone, Debug)]
pub struct ProduceOptions {
    pub bootstrap: String,
    pub topic: String,
    pub record_bytes: usize,
    pub records_per_request: usize,
    pub acks: i16,
    pub connections: usize,
    pub in_flight: usize,
    /// Length of the measured window (ignored when `requests` is set).
    pub duration: Duration,
    /// Sending before the measured window, so connections and pools are warm.
    pub warmup: Duration,
    /// A fixed number of requests over the whole run instead of a duration (every one is measured).
    pub requests: Option<u64>,
    /// Total requests per second across connections; `None` sends as fast as responses come back.
    pub rate: Option<f64>,
    pub timeline: Option<Duration>,
}

/// When the measured window opens and closes.
#[derive(Clone, Copy)]
struct Window {
    t0: Instant,
    from: Instant,
    until: Option<Instant>,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.from && self.until.is_none_or(|u| t < u)
    }
}

/// Per-connection tallies, merged at the end.
struct Tally {
    sent: u64,
    responses: u64,
    errors: u64,
    measured: u64,
    latency: Histogram<u64>,
    timeline: Vec<u64>,
}

impl Tally {
    fn new() -> Self {
        // 1 µs to 10 min at 3 significant digits: constant bounds that hdrhistogram accepts.
        let latency = Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid");
        Tally { sent: 0, responses: 0, errors: 0, measured: 0, latency, timeline: Vec::new() }
    }
}

/// A connection that stops answering for this long is counted as failed.
const STALL: Duration = Duration::from_secs(30);

/// Runs the load and reports it; failures of single connections are counted in the report, not returned.
pub async fn run_produce(opts: ProduceOptions) -> Result<ProduceReport> {
    if opts.acks == 0 {
        return Err(Error::Protocol("acks=0 has no responses to measure; use 1 or -1".into()));
    }
    let plan = plan(&opts.bootstrap, &opts.topic, Duration::from_secs(60)).await?;
    let batch = record_batch(opts.records_per_request.max(1), opts.record_bytes)?;
    let connections = opts.connections.max(1);
    let start_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    let t0 = Instant::now();
    let window = match opts.requests {
        Some(_) => Window { t0, from: t0, until: None },
        None => Window { t0, from: t0 + opts.warmup, until: Some(t0 + opts.warmup + opts.duration) },
    };
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let partition = i % plan.leaders.len();
        let template = produce_frame(&opts, plan.produce_version, partition as i32, batch.clone())?;
        let budget = opts.requests.map(|n| n / connections as u64 + u64::from((i as u64) < n % connections as u64));
        let conn = Conn {
            addr: plan.leaders[partition].clone(),
            template,
            version: plan.produce_version,
            in_flight: opts.in_flight.max(1),
            interval: opts.rate.map(|r| Duration::from_secs_f64(connections as f64 / r.max(0.001))),
            budget,
            window,
            bucket: opts.timeline,
        };
        tasks.push(tokio::spawn(conn.run()));
    }
    let mut total = Tally::new();
    let mut failed = 0;
    let mut first_failure = None;
    for task in tasks {
        let (tally, failure) = task.await.map_err(|e| Error::Protocol(format!("connection task: {e}")))?;
        if let Some(f) = failure {
            failed += 1;
            first_failure.get_or_insert(f);
        }
        merge(&mut total, tally)?;
    }
    let elapsed = match window.until {
        Some(u) => u.saturating_duration_since(window.from),
        None => t0.elapsed(),
    }
    .as_secs_f64()
    .max(1e-9);
    let request_len = 4 + request_len(&opts, plan.produce_version, &batch)?;
    let payload = (opts.record_bytes * opts.records_per_request.max(1)) as u64;
    Ok(ProduceReport {
        mode: "produce",
        bootstrap: opts.bootstrap.clone(),
        topic: opts.topic.clone(),
        produce_version: plan.produce_version,
        connections,
        in_flight: opts.in_flight,
        record_bytes: opts.record_bytes,
        records_per_request: opts.records_per_request.max(1),
        acks: opts.acks,
        rate: opts.rate,
        total_sent: total.sent,
        total_responses: total.responses,
        errors: total.errors,
        failed_connections: failed,
        first_failure,
        duration_s: elapsed,
        requests: total.measured,
        request_bytes: total.measured * request_len as u64,
        payload_bytes: total.measured * payload,
        requests_per_s: total.measured as f64 / elapsed,
        records_per_s: (total.measured * opts.records_per_request.max(1) as u64) as f64 / elapsed,
        mb_per_s: (total.measured * payload) as f64 / elapsed / (1024.0 * 1024.0),
        latency_us: Latency::of(&total.latency),
        timeline: opts.timeline.map(|b| Timeline {
            start_unix_ms,
            bucket_ms: b.as_millis() as u64,
            responses: total.timeline.clone(),
        }),
    })
}

fn merge(total: &mut Tally, t: Tally) -> Result<()> {
    total.sent += t.sent;
    total.responses += t.responses;
    total.errors += t.errors;
    total.measured += t.measured;
    total.latency.add(&t.latency).map_err(|e| Error::Protocol(e.to_string()))?;
    if total.timeline.len() < t.timeline.len() {
        total.timeline.resize(t.timeline.len(), 0);
    }
    for (a, b) in total.timeline.iter_mut().zip(t.timeline) {
        *a += b;
    }
    Ok(())
}

fn produce_body(opts: &ProduceOptions, partition: i32, batch: Bytes) -> ProduceRequest {
    let data = PartitionProduceData::default().with_index(partition).with_records(Some(batch));
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(opts.topic.clone())))
        .with_partition_data(vec![data]);
    ProduceRequest::default().with_acks(opts.acks).with_timeout_ms(30_000).with_topic_data(vec![topic])
}

fn produce_frame(opts: &ProduceOptions, version: i16, partition: i32, batch: Bytes) -> Result<BytesMut> {
    let frame = request(ApiKey::Produce, version, 0, CLIENT_ID, &produce_body(opts, partition, batch))?;
    Ok(BytesMut::from(frame.as_ref()))
}

fn request_len(opts: &ProduceOptions, version: i16, batch: &Bytes) -> Result<usize> {
    Ok(produce_frame(opts, version, 0, batch.clone())?.len() - 4)
}

/// One connection's share of the load.
struct Conn {
    addr: String,
    /// The whole request frame; bytes 8..12 (the correlation id) change per send.
    template: BytesMut,
    version: i16,
    in_flight: usize,
    interval: Option<Duration>,
    budget: Option<u64>,
    window: Window,
    bucket: Option<Duration>,
}

impl Conn {
    /// Never fails: a broken connection is reported with what it managed before breaking.
    async fn run(self) -> (Tally, Option<String>) {
        let mut tally = Tally::new();
        let failure = self.drive(&mut tally).await.err().map(|e| format!("{}: {e}", self.addr));
        (tally, failure)
    }

    async fn drive(&self, tally: &mut Tally) -> Result<()> {
        let mut client = Client::connect(&self.addr).await?;
        client.api_versions().await?;
        let Client { mut reader, writer, .. } = client;
        let permits = Arc::new(Semaphore::new(self.in_flight));
        let (tx, mut rx) = mpsc::unbounded_channel::<(i32, Instant)>();
        let writer_permits = permits.clone();
        let mut template = self.template.clone();
        let (interval, budget, window) = (self.interval, self.budget, self.window);
        let write = async move {
            let mut out = BufWriter::with_capacity(256 * 1024, writer);
            let mut sent = 0u64;
            let mut correlation = 1_000i32;
            let mut due = Instant::now();
            loop {
                if budget.is_some_and(|b| sent >= b) || window.until.is_some_and(|u| Instant::now() >= u) {
                    break;
                }
                if let Some(every) = interval {
                    due += every;
                    tokio::time::sleep_until(due.into()).await;
                }
                let permit = writer_permits.acquire().await.map_err(|_| Error::Closed)?;
                permit.forget();
                correlation = correlation.wrapping_add(1);
                template[8..12].copy_from_slice(&correlation.to_be_bytes());
                if tx.send((correlation, Instant::now())).is_err() {
                    return Err(Error::Closed);
                }
                out.write_all(&template).await?;
                sent += 1;
                if interval.is_some() || writer_permits.available_permits() == 0 {
                    out.flush().await?;
                }
            }
            out.flush().await?;
            Ok::<u64, Error>(sent)
        };
        let version = self.version;
        let (t0, bucket) = (window.t0, self.bucket);
        let read = async {
            while let Some((correlation, sent_at)) = rx.recv().await {
                let frame = tokio::time::timeout(STALL, reader.next())
                    .await
                    .map_err(|_| Error::Protocol(format!("no response for {STALL:?}")))??;
                let now = Instant::now();
                let got = peek_response_correlation(&frame)?;
                if got != correlation {
                    return Err(Error::Protocol(format!("response correlation id {got}, expected {correlation}")));
                }
                tally.responses += 1;
                tally.errors += produce_errors(&frame, version)?;
                if window.contains(sent_at) {
                    tally.measured += 1;
                    let micros = now.duration_since(sent_at).as_micros().max(1) as u64;
                    tally.latency.saturating_record(micros);
                }
                if let Some(b) = bucket {
                    let i = (now.duration_since(t0).as_millis() / b.as_millis().max(1)) as usize;
                    if tally.timeline.len() <= i {
                        tally.timeline.resize(i + 1, 0);
                    }
                    tally.timeline[i] += 1;
                }
                permits.add_permits(1);
            }
            Ok::<(), Error>(())
        };
        let (sent, read) = tokio::join!(write, read);
        // Count what was written even when one side failed, so lost responses show up as sent > responses.
        tally.sent = match &sent {
            Ok(n) => *n,
            Err(_) => tally.responses,
        };
        sent?;
        read
    }
}

/// Partitions answered with an error code other than 0.
fn produce_errors(frame: &Bytes, version: i16) -> Result<u64> {
    let mut body = response_body(frame, ApiKey::Produce, version)?;
    let resp = ProduceResponse::decode(&mut body, version).map_err(|e| Error::protocol("produce response", e))?;
    Ok(resp.responses.iter().flat_map(|t| &t.partition_responses).filter(|p| p.error_code != 0).count() as u64)
}
