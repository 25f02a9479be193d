//! Simulated sidecars for the API server's cost of config watches: N watchers per ConfigMap, each following its
//! ConfigMap exactly as an injected sidecar does (kproxy-watch: get, then watch by name with a ServiceAccount
//! token), for a while; prints how many watches were up and, for every rendering received, the delay from the
//! operator's render time (`renderedAtMs`) to its arrival, as percentiles.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use hdrhistogram::Histogram;
use kproxy_watch::{Error, Sink, Target, Timing};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(name = "kproxy-bench-watches", about = "Many sidecar config watches against one API server")]
struct Args {
    /// API server `host:port` (a name or IP its certificate holds).
    #[arg(long)]
    server: String,
    #[arg(long)]
    ca_file: PathBuf,
    /// A ServiceAccount token that may get/watch the ConfigMaps.
    #[arg(long)]
    token_file: PathBuf,
    #[arg(long)]
    namespace: String,
    /// ConfigMaps to watch, comma-separated.
    #[arg(long, value_delimiter = ',')]
    config_maps: Vec<String>,
    /// Watchers per ConfigMap.
    #[arg(long, default_value_t = 10)]
    per_config_map: usize,
    /// How long to watch.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

/// One watcher's view: counts arrivals and their delays.
struct Watcher {
    up: Arc<AtomicI64>,
    delays_ms: Arc<Mutex<Histogram<u64>>>,
    /// The first object of each watcher is the get at start, not an edit.
    seen: Mutex<usize>,
}

impl Sink for Watcher {
    fn object(&self, value: Option<String>, _resource_version: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        *seen += 1;
        if *seen == 1 {
            return;
        }
        let rendered = value.as_deref().and_then(|text| {
            text.lines().find_map(|l| l.strip_prefix("renderedAtMs: ").and_then(|n| n.trim().parse::<u64>().ok()))
        });
        if let Some(at) = rendered {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let _ = self.delays_ms.lock().unwrap_or_else(|p| p.into_inner()).record(now.saturating_sub(at));
        }
    }

    fn connected(&self, up: bool) {
        self.up.fetch_add(if up { 1 } else { -1 }, Ordering::Relaxed);
    }

    fn failed(&self, error: &Error) {
        eprintln!("watch failed: {error}");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (host, port) = args.server.rsplit_once(':').ok_or_else(|| anyhow::anyhow!("--server is host:port"))?;
    let port: u16 = port.parse()?;
    let up = Arc::new(AtomicI64::new(0));
    let delays_ms = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let started = Instant::now();
    for name in &args.config_maps {
        for _ in 0..args.per_config_map {
            let target = Target {
                host: host.to_string(),
                port,
                namespace: args.namespace.clone(),
                name: name.clone(),
                key: "config.yaml".into(),
                token_file: args.token_file.clone(),
                ca_file: args.ca_file.clone(),
            };
            let sink = Watcher { up: up.clone(), delays_ms: delays_ms.clone(), seen: Mutex::new(0) };
            let shutdown = shutdown.clone();
            tasks
                .push(tokio::spawn(async move { kproxy_watch::run(target, Timing::default(), &sink, shutdown).await }));
        }
    }
    let total = tasks.len();
    let deadline = started + Duration::from_secs(args.seconds);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let d = delays_ms.lock().unwrap_or_else(|p| p.into_inner()).len();
        println!(
            "t={:>3}s watches up {}/{total}, edits received {d}",
            started.elapsed().as_secs(),
            up.load(Ordering::Relaxed)
        );
    }
    let up_at_end = up.load(Ordering::Relaxed);
    shutdown.cancel();
    for task in tasks {
        let _ = task.await;
    }
    let h = delays_ms.lock().unwrap_or_else(|p| p.into_inner()).clone();
    println!(
        "watches {total} (up at the end {up_at_end}); edits received {}: render -> arrival p50 {} ms, p99 {} ms, max {} ms",
        h.len(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
    Ok(())
}
