//! Consumers catching up: C connections, each sending one Fetch at a time (as a consumer does per broker) with a
//! large `max_bytes`, for a duration; reports fetches and bytes fetched. Against the benchmark responder started
//! with big `--fetch-batches`, every Fetch is answered with as much as `max_bytes` allows.

use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

use super::client::{Client, pick};
use crate::Result;

#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub bootstrap: String,
    pub topic: String,
    pub connections: usize,
    /// `max_bytes` of each Fetch (and `partition_max_bytes`).
    pub max_bytes: i32,
    pub duration: Duration,
}

/// A fetch run.
#[derive(Debug, Default, Serialize)]
pub struct FetchReport {
    pub mode: &'static str,
    pub connections: usize,
    pub max_bytes: i32,
    pub fetches: u64,
    pub bytes: u64,
    pub failed_connections: u64,
    pub first_failure: Option<String>,
    pub duration_s: f64,
    pub mb_per_s: f64,
}

pub async fn run_fetch(opts: FetchOptions) -> Result<FetchReport> {
    let started = Instant::now();
    let until = started + opts.duration;
    let mut tasks = Vec::new();
    for _ in 0..opts.connections.max(1) {
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&opts.bootstrap).await?;
            let versions = client.api_versions().await?;
            let version = pick(&versions, ApiKey::Fetch, 12)?;
            let (mut fetches, mut bytes, mut offset) = (0u64, 0u64, 0i64);
            while Instant::now() < until {
                let topic = FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(opts.topic.clone())))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(opts.max_bytes),
                    ]);
                let request = FetchRequest::default()
                    .with_replica_id((-1).into())
                    .with_max_wait_ms(500)
                    .with_min_bytes(1)
                    .with_max_bytes(opts.max_bytes)
                    .with_topics(vec![topic]);
                let body = client.call(ApiKey::Fetch, version, &request).await?;
                fetches += 1;
                bytes += body.len() as u64;
                offset += 1;
            }
            Ok::<_, crate::Error>((fetches, bytes))
        }));
    }
    let mut report =
        FetchReport { mode: "fetch", connections: opts.connections, max_bytes: opts.max_bytes, ..Default::default() };
    for task in tasks {
        match task.await {
            Ok(Ok((f, b))) => {
                report.fetches += f;
                report.bytes += b;
            }
            Ok(Err(e)) => {
                report.failed_connections += 1;
                report.first_failure.get_or_insert(e.to_string());
            }
            Err(e) => {
                report.failed_connections += 1;
                report.first_failure.get_or_insert(e.to_string());
            }
        }
    }
    report.duration_s = started.elapsed().as_secs_f64();
    report.mb_per_s = report.bytes as f64 / (1 << 20) as f64 / report.duration_s.max(1e-9);
    Ok(report)
}
