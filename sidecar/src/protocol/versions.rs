//! Version negotiation: the ApiVersions answer the sidecar gives locally, and UNSUPPORTED_VERSION replies.
//!
//! The sidecar advertises, per API, the intersection of what kafka-protocol parses and what the upstream
//! brokers support, minus the APIs it must not forward (client SASL: the sidecar authenticates upstream itself).

use bytes::BytesMut;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Message};

use crate::{Error, Result};

/// Kafka's UNSUPPORTED_VERSION error code.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// APIs never advertised: SASL is done by the sidecar upstream, and share-group responses carry broker
/// addresses in places the sidecar does not rewrite yet.
const NOT_FORWARDED: [ApiKey; 4] =
    [ApiKey::SaslHandshake, ApiKey::SaslAuthenticate, ApiKey::ShareFetch, ApiKey::ShareAcknowledge];

/// Highest API key number kafka-protocol knows, plus one.
const KEYS: usize = 128;

/// What a cluster's brokers support, intersected with what the sidecar parses.
#[derive(Clone, Debug)]
pub struct Versions {
    ranges: Vec<Option<(i16, i16)>>,
    /// The broker's own answer, whose feature fields are passed on as they are.
    broker: ApiVersionsResponse,
}

impl Versions {
    /// Builds the advertised ranges from a broker's ApiVersions response.
    pub fn from_broker(broker: ApiVersionsResponse) -> Self {
        let mut ranges = vec![None; KEYS];
        for theirs in &broker.api_keys {
            let Ok(api) = ApiKey::try_from(theirs.api_key) else { continue };
            // APIs the policy cannot authorize are refused, so they are not offered either.
            if NOT_FORWARDED.contains(&api) || !kproxy_policy::authorizable(api) {
                continue;
            }
            let ours = api.valid_versions();
            let (min, max) = (ours.min.max(theirs.min_version), ours.max.min(theirs.max_version));
            if min <= max
                && let Some(slot) = ranges.get_mut(theirs.api_key as usize)
            {
                *slot = Some((min, max));
            }
        }
        Versions { ranges, broker }
    }

    /// The advertised range of an API, if it is forwarded at all.
    pub fn range(&self, api_key: i16) -> Option<(i16, i16)> {
        self.ranges.get(usize::try_from(api_key).ok()?).copied().flatten()
    }

    pub fn allows(&self, api_key: i16, version: i16) -> bool {
        self.range(api_key).is_some_and(|(min, max)| (min..=max).contains(&version))
    }

    /// The ApiVersions response body to send for a request of `version`, and the version it is encoded at.
    /// A version newer than the sidecar knows gets a v0 UNSUPPORTED_VERSION answer, as the broker does, so the
    /// client retries with one it finds in the list.
    pub fn answer(&self, version: i16) -> Result<(i16, BytesMut)> {
        let mut response = self.broker.clone();
        response.api_keys = self
            .ranges
            .iter()
            .enumerate()
            .filter_map(|(key, range)| {
                let (min, max) = (*range)?;
                Some(ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max))
            })
            .collect();
        response.error_code = 0;
        response.throttle_time_ms = 0;
        let version = if ApiVersionsResponse::VERSIONS.max < version {
            response.error_code = UNSUPPORTED_VERSION;
            0
        } else {
            version.max(0)
        };
        let mut out = BytesMut::new();
        response.encode(&mut out, version).map_err(|e| Error::protocol("encoding ApiVersions", e))?;
        Ok((version, out))
    }
}

/// Decodes an ApiVersions response body from a broker.
pub fn decode_broker_answer(body: &[u8], version: i16) -> Result<ApiVersionsResponse> {
    let mut b = body;
    ApiVersionsResponse::decode(&mut b, version).map_err(|e| Error::protocol("decoding broker ApiVersions", e))
}

/// An UNSUPPORTED_VERSION response body for APIs whose response has a top-level error code, at `version`
/// when kafka-protocol can encode it. `None` means the only honest answer is closing the connection.
pub fn unsupported_version(api: ApiKey, version: i16) -> Option<BytesMut> {
    macro_rules! error_body {
        ($ty:ty) => {{
            if !(<$ty>::VERSIONS.min..=<$ty>::VERSIONS.max).contains(&version) {
                return None;
            }
            let mut out = BytesMut::new();
            <$ty>::default().with_error_code(UNSUPPORTED_VERSION).encode(&mut out, version).ok()?;
            Some(out)
        }};
    }
    match api {
        // v4+ reports errors per coordinator key, which needs the request: not answerable generically.
        ApiKey::FindCoordinator if version < 4 => error_body!(FindCoordinatorResponse),
        ApiKey::JoinGroup => error_body!(JoinGroupResponse),
        ApiKey::Heartbeat => error_body!(HeartbeatResponse),
        ApiKey::LeaveGroup => error_body!(LeaveGroupResponse),
        ApiKey::SyncGroup => error_body!(SyncGroupResponse),
        ApiKey::ListGroups => error_body!(ListGroupsResponse),
        ApiKey::InitProducerId => error_body!(InitProducerIdResponse),
        ApiKey::EndTxn => error_body!(EndTxnResponse),
        ApiKey::DescribeCluster => error_body!(DescribeClusterResponse),
        ApiKey::DescribeAcls => error_body!(DescribeAclsResponse),
        _ => None,
    }
}
