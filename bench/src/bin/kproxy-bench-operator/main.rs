//! kproxy-bench-operator: the operator at scale against a real API server. In a namespace of its own it creates N
//! policies at once, starts the release operator (which also serves the webhook, as the chart runs it) and times
//! until every policy is Ready; reads the operator's RSS; times admission reviews sent to its webhook over TLS as
//! the API server sends them. Then, optionally, it grows the namespace to M policies and starts a fresh operator
//! again for the RSS with M. Prints one JSON object of figures on its last line and deletes the namespace.

mod cluster;
mod operator;
mod review;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use serde_json::{Value, json};

use crate::operator::Operator;

#[derive(Parser, Debug)]
#[command(name = "kproxy-bench-operator", about = "The kproxy operator and webhook at scale against a real API server")]
struct Args {
    /// The release operator binary.
    #[arg(long)]
    operator: PathBuf,
    /// Policies applied at once before the operator's cold start.
    #[arg(long, default_value_t = 1000)]
    policies: usize,
    /// Grow the namespace to this many policies for the second cold start and the RSS figure (0: skip).
    #[arg(long, default_value_t = 10_000)]
    rss_policies: usize,
    /// Timed admission reviews (after 100 untimed ones).
    #[arg(long, default_value_t = 2000)]
    reviews: usize,
    /// Policy create requests in flight at once.
    #[arg(long, default_value_t = 32)]
    create_concurrency: usize,
    /// Where the operator's logs go.
    #[arg(long)]
    log_dir: PathBuf,
    /// Longest wait for all policies to be Ready.
    #[arg(long, default_value_t = 600)]
    ready_timeout_seconds: u64,
    /// The API server's process id, to report the CPU it spends during each cold start.
    #[arg(long)]
    apiserver_pid: Option<u32>,
    /// Namespace to create (and delete at the end); default kproxy-opscale-<pid>.
    #[arg(long)]
    namespace: Option<String>,
}

const WARMUP_REVIEWS: usize = 100;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default().await?;
    let namespace = args.namespace.clone().unwrap_or_else(|| format!("kproxy-opscale-{}", std::process::id()));
    cluster::create_namespace(&client, &namespace).await?;
    let result = run(&args, &client, &namespace).await;
    if let Err(e) = cluster::delete_namespace(&client, &namespace).await {
        eprintln!("deleting namespace {namespace}: {e}");
    }
    let figures = result?;
    println!("{figures}");
    Ok(())
}

/// One cold start with `args.policies`, the review latency, then (optionally) one with `args.rss_policies`.
async fn run(args: &Args, client: &kube::Client, namespace: &str) -> Result<Value> {
    let timeout = Duration::from_secs(args.ready_timeout_seconds);
    let (mut ready, watch_task) = cluster::count_ready(client, namespace);
    let started = Instant::now();
    cluster::create_policies(client, namespace, 0..args.policies, args.create_concurrency).await?;
    let applied_s = started.elapsed().as_secs_f64();
    eprintln!("{} policies created in {applied_s:.1} s", args.policies);

    let mut figures = json!({"policies": args.policies, "apply_s": applied_s});
    let apiserver_cpu = || args.apiserver_pid.and_then(|pid| operator::cpu_seconds(pid).ok());
    let cpu_before = apiserver_cpu();
    let op = Operator::start(&args.operator, namespace, &args.log_dir, "first")?;
    let took = cluster::wait_ready(&mut ready, args.policies, op.started, timeout).await?;
    eprintln!("all {} Ready {:.1} s after the operator started", args.policies, took.as_secs_f64());
    figures["cold_start_ready_s"] = json!(took.as_secs_f64());
    figures["cpu_s"] = json!({"operator": op.cpu_seconds().ok(),
                              "apiserver": apiserver_cpu().zip(cpu_before).map(|(a, b)| a - b)});
    // Reconciles still queued (status events of the last writes) finish before memory is read.
    op.settle().await;
    figures["rss"] = op.memory()?;
    figures["reconciles"] = op.reconciles().await.unwrap_or_default();
    figures["writes"] = op.writes().await.unwrap_or_default();

    let ca = cluster::webhook_ca(client, namespace, operator::TLS_SECRET, timeout).await?;
    let h = review::latencies(op.webhook_port, &ca, namespace, args.policies, WARMUP_REVIEWS, args.reviews).await?;
    eprintln!(
        "reviews with {} policies: p50 {} µs, p99 {} µs",
        args.policies,
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99)
    );
    figures["review_us"] = percentiles(&h);
    drop(op);

    if args.rss_policies > args.policies {
        let started = Instant::now();
        cluster::create_policies(client, namespace, args.policies..args.rss_policies, args.create_concurrency).await?;
        eprintln!(
            "{} more policies created in {:.1} s",
            args.rss_policies - args.policies,
            started.elapsed().as_secs_f64()
        );
        let cpu_before = apiserver_cpu();
        let op = Operator::start(&args.operator, namespace, &args.log_dir, "second")?;
        let took = cluster::wait_ready(&mut ready, args.rss_policies, op.started, timeout).await?;
        let cpu = json!({"operator": op.cpu_seconds().ok(),
                         "apiserver": apiserver_cpu().zip(cpu_before).map(|(a, b)| a - b)});
        eprintln!("all {} Ready {:.1} s after the second operator started", args.rss_policies, took.as_secs_f64());
        op.settle().await;
        let h =
            review::latencies(op.webhook_port, &ca, namespace, args.rss_policies, WARMUP_REVIEWS, args.reviews).await?;
        figures["large"] = json!({
            "policies": args.rss_policies,
            "cold_start_ready_s": took.as_secs_f64(),
            "cpu_s": cpu,
            "rss": op.memory()?,
            "reconciles": op.reconciles().await.unwrap_or_default(),
            "writes": op.writes().await.unwrap_or_default(),
            "review_us": percentiles(&h),
        });
    }
    watch_task.abort();
    Ok(figures)
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> Value {
    json!({
        "n": h.len(), "p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999), "max": h.max(),
    })
}
