//! Responses the sidecar rewrites (everything naming brokers: Metadata, FindCoordinator, DescribeCluster,
//! DescribeQuorum, DescribeTopicPartitions, ListPartitionReassignments, and Produce/Fetch leader hints): a hostile
//! broker's bytes must be rewritten or refused, never crash the proxy, and a rewritten frame is what the client
//! must get: its length prefix right, and its body decoding to the broker's response with exactly the rewrite
//! applied. Throttle times are written into the same responses, in place or by re-encoding; both must stay inside
//! the frame.
#![no_main]

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use kproxy_policy::quota;
use kproxy_sidecar::buffer::Pool;
use kproxy_sidecar::protocol::response_body_offset;
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

    fn controller(&mut self, node: i32) -> (i32, String, u16) {
        (self.node(node), "127.0.0.1".to_string(), 0)
    }
}

const APIS: [ApiKey; 8] = [
    ApiKey::Metadata,
    ApiKey::FindCoordinator,
    ApiKey::DescribeCluster,
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::DescribeQuorum,
    ApiKey::DescribeTopicPartitions,
    ApiKey::ListPartitionReassignments,
];

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
    let original = frame.to_vec();
    if let Ok(true) = rewrite::rewrite(&mut frame, api, version, &mut Loopback) {
        let len = i32::from_be_bytes(frame[..4].try_into().unwrap());
        assert_eq!(frame.len(), len as usize + 4, "a rewritten frame keeps its length prefix right");
        let expected = expected(&original, api, version).expect("a rewritten response decoded before");
        let got = decode(&frame, api, version)
            .unwrap_or_else(|| panic!("the rewritten {api:?} v{version} response does not decode"));
        assert_eq!(format!("{expected:?}"), format!("{got:?}"), "{api:?} v{version} rewritten wrongly");
    }
    throttle(&frame, api, version);
});

fn decode(frame: &[u8], api: ApiKey, version: i16) -> Option<ResponseKind> {
    let at = response_body_offset(frame, api, version)?;
    ResponseKind::decode(api, &mut Bytes::copy_from_slice(&frame[at..]), version).ok()
}

/// The broker's response with the rewrite applied to the decoded value.
fn expected(frame: &[u8], api: ApiKey, version: i16) -> Option<ResponseKind> {
    let mut r = decode(frame, api, version)?;
    let addrs = &mut Loopback;
    match &mut r {
        ResponseKind::Metadata(r) => rewrite::metadata(r, addrs),
        ResponseKind::FindCoordinator(r) => rewrite::find_coordinator(r, version, addrs),
        ResponseKind::DescribeCluster(r) => rewrite::describe_cluster(r, addrs),
        ResponseKind::DescribeQuorum(r) => rewrite::describe_quorum(r, addrs),
        ResponseKind::Produce(r) => _ = rewrite::produce(r, addrs),
        ResponseKind::Fetch(r) => _ = rewrite::fetch(r, addrs),
        ResponseKind::DescribeTopicPartitions(r) => rewrite::describe_topic_partitions(r, addrs),
        ResponseKind::ListPartitionReassignments(r) => _ = rewrite::list_partition_reassignments(r, addrs),
        _ => return None,
    }
    Some(r)
}

/// A quota's throttle time: written in place when the response has a fixed slot for it, otherwise the response is
/// decoded, changed and re-encoded, and what is re-encoded decodes back to the changed value.
fn throttle(frame: &[u8], api: ApiKey, version: i16) {
    let Some(at) = response_body_offset(frame, api, version) else { return };
    let mut body = frame[at..].to_vec();
    let before = body.len();
    let _ = quota::set_throttle_time(api, version, &mut body, 1234);
    assert_eq!(body.len(), before);
    let Ok(mut response) = ResponseKind::decode(api, &mut Bytes::copy_from_slice(&frame[at..]), version) else {
        return;
    };
    quota::set_throttle_in(&mut response, 1234);
    let mut out = BytesMut::new();
    if response.encode(&mut out, version).is_err() {
        return;
    }
    let mut again = ResponseKind::decode(api, &mut out.freeze(), version)
        .unwrap_or_else(|e| panic!("a re-encoded {api:?} v{version} response does not decode: {e}"));
    // Versions without a throttle field drop it on encoding (those clients are delayed instead).
    quota::set_throttle_in(&mut again, 1234);
    assert_eq!(format!("{response:?}"), format!("{again:?}"), "{api:?} v{version} changed in a round trip");
}
