//! Request header decoding: peeking at api key, version and correlation id, locating the body and reading the
//! client id must never panic or point outside the frame, whatever a client sends.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::protocol::Decodable;
use kproxy_sidecar::protocol::{self, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The fuzzer's bytes are the frame after its length prefix, as the proxy holds it.
    let mut frame = (data.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(data);
    let Some(header) = Header::peek(&frame) else { return };
    let _ = protocol::is_long_poll(&frame, &header);
    let _ = protocol::expects_response(&frame, &header);
    let Some(api) = header.api() else { return };
    let valid = api.valid_versions();
    if header.api_version < valid.min || header.api_version > valid.max {
        return;
    }
    let offset = protocol::request_body_offset(&frame, api, header.api_version);
    if let Some(at) = offset {
        assert!(at <= frame.len());
    }
    let _ = protocol::request::client_id(&frame);
    // kafka-protocol's own header decoder agrees with the proxy's offset on valid headers.
    let mut bytes = Bytes::copy_from_slice(&frame[4..]);
    let before = bytes.len();
    if let Ok(decoded) = RequestHeader::decode(&mut bytes, api.request_header_version(header.api_version)) {
        assert_eq!(decoded.correlation_id, header.correlation_id);
        if let Some(at) = offset {
            assert_eq!(at - 4, before - bytes.len(), "body offset of {api:?} v{}", header.api_version);
        }
    }
});
