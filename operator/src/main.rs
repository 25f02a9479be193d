//! kproxy-operator binary: parses flags, starts tracing, runs the controller and webhook until a signal.
fn main() {}
