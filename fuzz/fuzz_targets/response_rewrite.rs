//! Responses the sidecar rewrites (everything naming brokers: Metadata, FindCoordinator, DescribeCluster, and
//! Produce/Fetch leader hints): a hostile broker's bytes must be rewritten or refused, never crash the proxy.
#![no_main]

use kafka_protocol::messages::ApiKey;
use kproxy_sidecar::buffer::Pool;
use kproxy_sidecar::protocol::rewrite::{self, Addresses};
use libfuzzer_sys::fuzz_target;

/// Maps every broker to one loopback listener, as the sidecar's broker map does.
struct Loopback;

impl Addresses for Loopback {
    fn broker(&mut self, node: i32, _host: &str, port: i32) -> (i32, String, i32) {
        (node.wrapping_add(1000), "127.0.0.1".to_string(), port & 0xffff)
    }

    fn node(&mut self, node: i32) -> i32 {
        if node < 0 { node } else { node.wrapping_add(1000) }
    }
}

const APIS: [ApiKey; 5] =
    [ApiKey::Metadata, ApiKey::FindCoordinator, ApiKey::DescribeCluster, ApiKey::Produce, ApiKey::Fetch];

fuzz_target!(|data: &[u8]| {
    // First byte picks the api, second its version (within what kafka-protocol parses); the rest is the frame
    // after its length prefix.
    let [which, version, rest @ ..] = data else { return };
    let api = APIS[usize::from(*which) % APIS.len()];
    let valid = api.valid_versions();
    let span = (valid.max - valid.min + 1) as u8;
    let version = valid.min + i16::from(version % span);
    if !rewrite::needs_rewrite(api, version) {
        return;
    }
    let pool = Pool::new(1 << 20);
    let mut frame = pool.get(rest.len() + 4);
    frame.extend_from_slice(&(rest.len() as i32).to_be_bytes());
    frame.extend_from_slice(rest);
    if let Ok(true) = rewrite::rewrite(&mut frame, api, version, &mut Loopback) {
        let len = i32::from_be_bytes(frame[..4].try_into().unwrap());
        assert_eq!(frame.len(), len as usize + 4, "a rewritten frame keeps its length prefix right");
    }
});
