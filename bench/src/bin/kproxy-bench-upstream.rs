//! kproxy-bench-upstream: a minimal Kafka responder for benchmarks only (never a broker); see the library docs.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Parser;
use kproxy_bench::upstream::{Options, Responder};

/// A minimal Kafka broker-protocol responder used only by kproxy's benchmarks. It stores nothing.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on stdout as JSON).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address announced in Metadata as the one broker (default: the bound address).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Records in the batch returned by every Fetch.
    #[arg(long, default_value_t = 100)]
    fetch_records: usize,
    /// Value size of those records.
    #[arg(long, default_value_t = 1024)]
    fetch_record_bytes: usize,
    /// Most batches in one Fetch answer: as many as the request's max_bytes allows (at least one, as a broker).
    #[arg(long, default_value_t = 1)]
    fetch_batches: usize,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    runtime.block_on(async {
        let options = Options {
            advertise: args.advertise,
            partitions: args.partitions,
            fetch_records: args.fetch_records,
            fetch_record_bytes: args.fetch_record_bytes,
            fetch_batches: args.fetch_batches,
        };
        let responder = Responder::bind(args.listen, options).await.context("binding")?;
        let state = responder.state();
        println!("{}", serde_json::json!({ "listening": responder.local_addr()?.to_string() }));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = responder.run() => r.context("accept loop")?,
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let requests = state.requests.load(std::sync::atomic::Ordering::Relaxed);
        println!("{}", serde_json::json!({ "requests": requests }));
        Ok(())
    })
}
