//! Request bodies the sidecar decodes for its policies and routes. What must hold is the sidecar's own contract:
//! decoding any bytes fails cleanly or yields a request; deciding it with the ACLs never panics; and whatever the
//! sidecar re-encodes (a body the ACLs trimmed, a Metadata request split per cluster, a local answer) either
//! fails to encode, so the connection is closed, or decodes back to exactly the value it meant to send.
//!
//! Requests the sidecar forwards unchanged are not re-encoded, so kafka-protocol's encoder is not judged on them.
#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, MetadataRequest, RequestKind};
use kafka_protocol::protocol::Decodable;
use kproxy_api::config::SidecarConfig;
use kproxy_policy::{Outcome, Policy, TopicIds, route};
use kproxy_sidecar::buffer::Pool;
use kproxy_sidecar::protocol::request::Request;
use kproxy_sidecar::protocol::{self, Header};
use libfuzzer_sys::fuzz_target;

/// Deny by default, allow names starting with `f` (the recorded seeds use `fuzz-seeds-*`): a request naming
/// several topics or groups is then easily split into allowed and denied parts, which is what makes the
/// sidecar re-encode it.
const CONFIG: &str = r#"
clusters:
- {name: east, bootstrapServers: ["127.0.0.1:1"]}
acls:
  defaultAction: Deny
  rules:
  - resource: {type: Topic, name: "f", patternType: Prefixed}
    operations: [All]
    effect: Allow
  - resource: {type: Group, name: "f", patternType: Prefixed}
    operations: [All]
    effect: Allow
  - resource: {type: TransactionalId, name: "f", patternType: Prefixed}
    operations: [All]
    effect: Allow
  - resource: {type: Cluster}
    operations: [Describe, IdempotentWrite]
    effect: Allow
"#;

fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| Policy::from_config(&SidecarConfig::parse(CONFIG).unwrap()))
}

/// Names the fuzzer can steer into or out of the allowed set.
fn elsewhere(name: &str) -> bool {
    !name.starts_with('f')
}

/// The sidecar's re-encode contract for a request body: an encode error is a clean refusal, anything encoded
/// decodes back to the same value.
fn round_trip(api: ApiKey, version: i16, sent: &RequestKind, what: &str) {
    let mut out = BytesMut::new();
    if sent.encode(&mut out, version).is_err() {
        return;
    }
    let again = RequestKind::decode(api, &mut out.freeze(), version)
        .unwrap_or_else(|e| panic!("{what}: re-encoded {api:?} v{version} request does not decode: {e}"));
    assert_eq!(format!("{sent:?}"), format!("{again:?}"), "{what}: {api:?} v{version} changed in a round trip");
}

fuzz_target!(|data: &[u8]| {
    let mut frame = (data.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(data);
    let Some(header) = Header::peek(&frame) else { return };
    let Some(api) = header.api() else { return };
    let valid = api.valid_versions();
    let version = header.api_version;
    // The proxy refuses versions outside what both it and the broker support before any body is decoded.
    if version < valid.min || version > valid.max {
        return;
    }
    static POOL: std::sync::LazyLock<std::sync::Arc<Pool>> = std::sync::LazyLock::new(|| Pool::new(1 << 20));
    let mut buf = POOL.get(frame.len());
    buf.extend_from_slice(&frame);
    let Ok(mut request) = Request::new(buf) else { return };
    let Ok(body) = request.body() else { return };
    let mut body = body.clone();
    let decoded = body.clone();

    // Routes: a Metadata request is decoded again from the frame and re-encoded with only one cluster's topics.
    if api == ApiKey::Metadata
        && let Some(at) = protocol::request_body_offset(&frame, api, version)
        && let Ok(mut metadata) = MetadataRequest::decode(&mut &frame[at..], version)
    {
        if let Some(topics) = &mut metadata.topics {
            topics.retain(|t| t.name.as_ref().is_none_or(|n| !elsewhere(n)));
        }
        round_trip(api, version, &RequestKind::Metadata(metadata), "metadata split");
    }
    // Routes: a Produce or Fetch for a topic routed away is answered locally.
    if let Some(response) = route::steer(&decoded, elsewhere) {
        let _ = response.encode(&mut BytesMut::new(), version);
    }

    // ACLs: a trimmed body is re-encoded; a denial is answered locally.
    if !policy().decides(api) {
        return;
    }
    let decision = policy().authorize(&TopicIds::default(), version, &mut body);
    match decision.outcome {
        Outcome::Forward { rewritten: true, .. } => round_trip(api, version, &body, "acl rewrite"),
        Outcome::Respond(response) => {
            let _ = response.encode(&mut BytesMut::new(), version);
        }
        Outcome::Deny(code) => {
            let _ = protocol::errors::encode(&body, &protocol::errors::Fill { version, code, message: None });
        }
        Outcome::Forward { rewritten: false, .. } | Outcome::Close => {}
    }
});
