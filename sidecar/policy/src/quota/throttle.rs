//! Where a response carries `throttle_time_ms`, and which clients throttle themselves (KIP-219).

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, ResponseKind};

/// Whether a client at this request version throttles itself on `throttle_time_ms` (KIP-219, Kafka 2.0). Then the
/// response goes out at once and the connection's next request is held; older clients expect the broker to delay
/// the response itself.
pub fn client_throttles(api: ApiKey, version: i16) -> bool {
    // The first version of each API that KIP-219 bumped; APIs not listed were born after it.
    let first = match api {
        ApiKey::Produce => 6,
        ApiKey::Fetch => 8,
        ApiKey::ListOffsets => 3,
        ApiKey::Metadata => 6,
        ApiKey::OffsetCommit | ApiKey::OffsetFetch => 4,
        ApiKey::FindCoordinator
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::SyncGroup
        | ApiKey::DescribeGroups
        | ApiKey::ListGroups
        | ApiKey::ApiVersions
        | ApiKey::DeleteTopics => 2,
        ApiKey::JoinGroup | ApiKey::CreateTopics => 3,
        ApiKey::SaslHandshake => 0,
        ApiKey::DeleteRecords
        | ApiKey::InitProducerId
        | ApiKey::AddPartitionsToTxn
        | ApiKey::AddOffsetsToTxn
        | ApiKey::EndTxn
        | ApiKey::TxnOffsetCommit
        | ApiKey::DescribeAcls
        | ApiKey::CreateAcls
        | ApiKey::DeleteAcls
        | ApiKey::DescribeConfigs
        | ApiKey::AlterConfigs
        | ApiKey::AlterReplicaLogDirs
        | ApiKey::DescribeLogDirs
        | ApiKey::CreatePartitions
        | ApiKey::CreateDelegationToken
        | ApiKey::RenewDelegationToken
        | ApiKey::ExpireDelegationToken
        | ApiKey::DescribeDelegationToken
        | ApiKey::DeleteGroups => 1,
        _ => 0,
    };
    version >= first
}

/// Sets `throttle_time_ms` in an encoded response body (after the response header), in place, without decoding
/// the body. Returns false when this API/version has no such field or its position is not fixed; the caller then
/// decodes, sets it with [`set_in`] and re-encodes, or leaves the response alone.
pub fn set_throttle_time(api: ApiKey, version: i16, body: &mut [u8], throttle_ms: i32) -> bool {
    let Some(at) = position(api, version) else { return false };
    let len = body.len();
    let start = match at {
        Position::First => 0,
        Position::Last => match len.checked_sub(4) {
            Some(s) => s,
            None => return false,
        },
    };
    match body.get_mut(start..start + 4) {
        Some(slot) => {
            slot.copy_from_slice(&throttle_ms.to_be_bytes());
            true
        }
        None => false,
    }
}

/// Sets `throttle_time_ms` in a decoded response.
pub fn set_in(response: &mut ResponseKind, throttle_ms: i32) {
    use ResponseKind as R;
    match response {
        R::Produce(r) => r.throttle_time_ms = throttle_ms,
        R::Fetch(r) => r.throttle_time_ms = throttle_ms,
        R::ListOffsets(r) => r.throttle_time_ms = throttle_ms,
        R::Metadata(r) => r.throttle_time_ms = throttle_ms,
        R::OffsetCommit(r) => r.throttle_time_ms = throttle_ms,
        R::OffsetFetch(r) => r.throttle_time_ms = throttle_ms,
        R::FindCoordinator(r) => r.throttle_time_ms = throttle_ms,
        R::JoinGroup(r) => r.throttle_time_ms = throttle_ms,
        R::Heartbeat(r) => r.throttle_time_ms = throttle_ms,
        R::LeaveGroup(r) => r.throttle_time_ms = throttle_ms,
        R::SyncGroup(r) => r.throttle_time_ms = throttle_ms,
        R::ApiVersions(r) => r.throttle_time_ms = throttle_ms,
        _ => {}
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// The first field of the body.
    First,
    /// The last four bytes (non-flexible Produce).
    Last,
}

/// An empty response of each API whose throttle field the sidecar sets on the hot path.
fn sample(api: ApiKey) -> Option<ResponseKind> {
    use ResponseKind as R;
    Some(match api {
        ApiKey::Produce => R::Produce(Default::default()),
        ApiKey::Fetch => R::Fetch(Default::default()),
        ApiKey::ListOffsets => R::ListOffsets(Default::default()),
        ApiKey::Metadata => R::Metadata(Default::default()),
        ApiKey::OffsetCommit => R::OffsetCommit(Default::default()),
        ApiKey::OffsetFetch => R::OffsetFetch(Default::default()),
        ApiKey::FindCoordinator => R::FindCoordinator(Default::default()),
        ApiKey::JoinGroup => R::JoinGroup(Default::default()),
        ApiKey::Heartbeat => R::Heartbeat(Default::default()),
        ApiKey::LeaveGroup => R::LeaveGroup(Default::default()),
        ApiKey::SyncGroup => R::SyncGroup(Default::default()),
        _ => return None,
    })
}

/// Finds the field by encoding an empty response with a marker throttle time, once per API and version.
fn position(api: ApiKey, version: i16) -> Option<Position> {
    static TABLE: OnceLock<HashMap<(i16, i16), Position>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        const MARK: i32 = 0x7a3c_5e11;
        let mut table = HashMap::new();
        for api in ApiKey::iter() {
            let range = api.valid_versions();
            for v in range.min..=range.max {
                let Some(mut response) = sample(api) else { continue };
                set_in(&mut response, MARK);
                let mut buf = BytesMut::new();
                if response.encode(&mut buf, v).is_err() {
                    continue;
                }
                let mark = MARK.to_be_bytes();
                if buf.get(..4) == Some(&mark[..]) {
                    table.insert((api as i16, v), Position::First);
                } else if buf.len() >= 4 && buf[buf.len() - 4..] == mark {
                    table.insert((api as i16, v), Position::Last);
                }
            }
        }
        table
    });
    table.get(&(api as i16, version)).copied()
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    #[test]
    fn throttle_time_lands_in_the_field_the_client_reads() {
        for (api, versions) in [(ApiKey::Produce, 3..=8), (ApiKey::Fetch, 4..=18), (ApiKey::Metadata, 3..=13)] {
            for v in versions {
                let response = sample(api).unwrap();
                let mut buf = BytesMut::new();
                response.encode(&mut buf, v).unwrap();
                assert!(set_throttle_time(api, v, &mut buf, 1234), "{api:?} v{v} has a known position");
                let decoded = ResponseKind::decode(api, &mut buf.freeze(), v).unwrap();
                let got = match decoded {
                    ResponseKind::Produce(r) => r.throttle_time_ms,
                    ResponseKind::Fetch(r) => r.throttle_time_ms,
                    ResponseKind::Metadata(r) => r.throttle_time_ms,
                    _ => unreachable!(),
                };
                assert_eq!(got, 1234, "{api:?} v{v}");
            }
        }
        assert!(!set_throttle_time(ApiKey::Metadata, 0, &mut [0u8; 8], 1), "Metadata v0 has no throttle field");
        assert!(!set_throttle_time(ApiKey::Produce, 9, &mut [0u8; 8], 1), "flexible Produce ends in tagged fields");
    }

    #[test]
    fn kip_219_versions() {
        assert!(!client_throttles(ApiKey::Produce, 5));
        assert!(client_throttles(ApiKey::Produce, 6));
        assert!(!client_throttles(ApiKey::Fetch, 7));
        assert!(client_throttles(ApiKey::Fetch, 8));
        assert!(client_throttles(ApiKey::DescribeCluster, 0));
    }
}
