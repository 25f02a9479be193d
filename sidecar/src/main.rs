//! kproxy-sidecar binary: parses flags, starts tracing, runs the proxy until a signal.
fn main() {}
