//! Idle connections: open N client connections, finish an ApiVersions exchange on each (as a client does before
//! anything else), then hold them open so the proxy's memory per connection can be read.

use std::time::{Duration, Instant};

use std::sync::Arc;
use tokio::sync::Semaphore;

use super::client::Client;
use super::report::IdleReport;
use crate::Result;

#[derive(Clone, Debug)]
pub struct IdleOptions {
    pub bootstrap: String,
    pub connections: usize,
    /// Connections being opened at once; bounded so the listener's accept queue does not overflow.
    pub concurrency: usize,
}

/// Opens the connections and returns them with the report; dropping the `Vec` closes them.
pub async fn run_idle(opts: IdleOptions) -> Result<(IdleReport, Vec<Client>)> {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        let gate = gate.clone();
        let addr = opts.bootstrap.clone();
        tasks.push(tokio::spawn(async move {
            let _slot = gate.acquire_owned().await;
            let mut client = tokio::time::timeout(Duration::from_secs(60), Client::connect(&addr))
                .await
                .map_err(|_| crate::Error::Protocol("connect timed out".into()))??;
            tokio::time::timeout(Duration::from_secs(60), client.api_versions())
                .await
                .map_err(|_| crate::Error::Protocol("ApiVersions timed out".into()))??;
            Ok::<Client, crate::Error>(client)
        }));
    }
    let mut clients = Vec::with_capacity(opts.connections);
    let mut report = IdleReport {
        mode: "idle",
        bootstrap: opts.bootstrap.clone(),
        requested: opts.connections,
        ..Default::default()
    };
    for task in tasks {
        match task.await {
            Ok(Ok(c)) => clients.push(c),
            Ok(Err(e)) => {
                report.failed += 1;
                report.first_failure.get_or_insert(e.to_string());
            }
            Err(e) => {
                report.failed += 1;
                report.first_failure.get_or_insert(e.to_string());
            }
        }
    }
    report.connected = clients.len();
    report.open_ms = started.elapsed().as_millis();
    Ok((report, clients))
}
