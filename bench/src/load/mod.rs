//! `kproxy-bench-load`: a Kafka-protocol load generator for benchmarks: pipelined produce and idle connections.

pub mod client;
pub mod fetch;
pub mod idle;
pub mod produce;
pub mod report;

pub use fetch::{FetchOptions, FetchReport, run_fetch};
pub use idle::{IdleOptions, run_idle};
pub use produce::{ProduceOptions, run_produce};
pub use report::{IdleReport, Latency, ProduceReport, Timeline};
