//! kproxy-bench-load: Kafka-protocol load for benchmarks (pipelined produce, idle connections), JSON on stdout.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kproxy_bench::load::{FetchOptions, IdleOptions, ProduceOptions, run_fetch, run_idle, run_produce};

#[derive(Parser, Debug)]
#[command(version, about = "Kafka-protocol load generator for kproxy's benchmarks")]
struct Args {
    /// Runtime worker threads.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Pipelined Produce requests; prints one JSON report.
    Produce {
        #[arg(long)]
        bootstrap: String,
        #[arg(long, default_value = "kproxy-bench")]
        topic: String,
        /// Value size of each record.
        #[arg(long, default_value_t = 1024)]
        record_bytes: usize,
        /// Records in each request's batch.
        #[arg(long, default_value_t = 1)]
        records_per_request: usize,
        /// 1 or -1 (all).
        #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
        acks: i16,
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Requests awaiting a response per connection.
        #[arg(long, default_value_t = 16)]
        in_flight: usize,
        /// Measured seconds after the warm-up.
        #[arg(long, default_value_t = 5.0)]
        duration_s: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup_s: f64,
        /// A fixed number of requests instead of a duration.
        #[arg(long)]
        requests: Option<u64>,
        /// Fixed total request rate per second (default: as fast as responses come back).
        #[arg(long)]
        rate: Option<f64>,
        /// Also report responses per bucket of this many milliseconds.
        #[arg(long)]
        timeline_ms: Option<u64>,
    },
    /// Consumers catching up: one Fetch at a time per connection with a large max_bytes; prints one JSON report.
    Fetch {
        #[arg(long)]
        bootstrap: String,
        #[arg(long, default_value = "kproxy-bench")]
        topic: String,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// max_bytes (and partition_max_bytes) of every Fetch.
        #[arg(long, default_value_t = 50 << 20)]
        max_bytes: i32,
        #[arg(long, default_value_t = 5.0)]
        duration_s: f64,
    },
    /// Opens idle connections, prints a JSON report once all are open, then holds them.
    Idle {
        #[arg(long)]
        bootstrap: String,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
        /// Seconds to hold the connections (0: until SIGTERM or SIGINT).
        #[arg(long, default_value_t = 0.0)]
        hold_s: f64,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    runtime.block_on(run(args.mode))
}

async fn run(mode: Mode) -> Result<()> {
    match mode {
        Mode::Produce {
            bootstrap,
            topic,
            record_bytes,
            records_per_request,
            acks,
            connections,
            in_flight,
            duration_s,
            warmup_s,
            requests,
            rate,
            timeline_ms,
        } => {
            let opts = ProduceOptions {
                bootstrap,
                topic,
                record_bytes,
                records_per_request,
                acks,
                connections,
                in_flight,
                duration: Duration::from_secs_f64(duration_s.max(0.0)),
                warmup: Duration::from_secs_f64(warmup_s.max(0.0)),
                requests,
                rate,
                timeline: timeline_ms.map(Duration::from_millis),
            };
            let report = run_produce(opts).await.context("produce run")?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Mode::Fetch { bootstrap, topic, connections, max_bytes, duration_s } => {
            let duration = Duration::from_secs_f64(duration_s.max(0.0));
            let report = run_fetch(FetchOptions { bootstrap, topic, connections, max_bytes, duration }).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Mode::Idle { bootstrap, connections, concurrency, hold_s } => {
            let (report, clients) = run_idle(IdleOptions { bootstrap, connections, concurrency }).await?;
            println!("{}", serde_json::to_string(&report)?);
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let hold = async {
                if hold_s > 0.0 {
                    tokio::time::sleep(Duration::from_secs_f64(hold_s)).await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                _ = hold => {}
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            drop(clients);
        }
    }
    Ok(())
}
