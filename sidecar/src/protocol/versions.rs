//! Version negotiation: the ApiVersions answer the sidecar gives locally, and UNSUPPORTED_VERSION replies.
//!
//! The sidecar advertises, per API, the intersection of what kafka-protocol parses and what the upstream
//! brokers support, minus the APIs it must not forward (client SASL: the sidecar authenticates upstream itself).
//! "The upstream brokers" are all of them: every broker of every configured cluster the sidecar has opened a
//! connection to, because routes put several clusters (of different Kafka releases) behind one bootstrap and a
//! client negotiates once per connection, not per topic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use bytes::BytesMut;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Message};

use crate::{Error, Result};

#[cfg(test)]
mod tests;

/// Kafka's UNSUPPORTED_VERSION error code.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// APIs never advertised: SASL is done by the sidecar upstream, and share-group responses carry broker
/// addresses in places the sidecar does not rewrite yet.
const NOT_FORWARDED: [ApiKey; 4] =
    [ApiKey::SaslHandshake, ApiKey::SaslAuthenticate, ApiKey::ShareFetch, ApiKey::ShareAcknowledge];

/// APIs whose request struct in kafka-protocol stops a version short of `ApiKey::valid_versions` (the newest
/// version of each is unstable in Kafka 4.1 and not generated): offering it would let a client send requests
/// the sidecar cannot read.
const REQUEST_MAX: [(ApiKey, i16); 3] =
    [(ApiKey::OffsetCommit, 9), (ApiKey::OffsetFetch, 9), (ApiKey::InitProducerId, 5)];

/// The versions of an API the sidecar can decode and encode, requests and responses alike.
pub fn parsed(api: ApiKey) -> kafka_protocol::protocol::VersionRange {
    let mut range = api.valid_versions();
    if let Some((_, max)) = REQUEST_MAX.iter().find(|(a, _)| *a == api) {
        range.max = range.max.min(*max);
    }
    range
}

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
            let ours = parsed(api);
            let (min, max) = (ours.min.max(theirs.min_version), ours.max.min(theirs.max_version));
            if min <= max
                && let Some(slot) = ranges.get_mut(theirs.api_key as usize)
            {
                *slot = Some((min, max));
            }
        }
        Versions { ranges, broker }
    }

    /// What every one of `all` supports: per API the narrowest range, and only the features all of them share
    /// (at the lowest level any of them has finalized). `None` when `all` is empty.
    pub fn intersect<'a>(all: impl IntoIterator<Item = &'a Versions>) -> Option<Versions> {
        let mut all = all.into_iter();
        let mut out = all.next()?.clone();
        for other in all {
            for (mine, theirs) in out.ranges.iter_mut().zip(&other.ranges) {
                *mine = match (*mine, *theirs) {
                    (Some((a, b)), Some((c, d))) if a.max(c) <= b.min(d) => Some((a.max(c), b.min(d))),
                    _ => None,
                };
            }
            let (r, o) = (&mut out.broker, &other.broker);
            r.supported_features.retain_mut(|f| {
                let Some(t) = o.supported_features.iter().find(|t| t.name == f.name) else { return false };
                f.min_version = f.min_version.max(t.min_version);
                f.max_version = f.max_version.min(t.max_version);
                f.min_version <= f.max_version
            });
            r.finalized_features.retain_mut(|f| {
                let Some(t) = o.finalized_features.iter().find(|t| t.name == f.name) else { return false };
                f.min_version_level = f.min_version_level.max(t.min_version_level);
                f.max_version_level = f.max_version_level.min(t.max_version_level);
                f.min_version_level <= f.max_version_level
            });
            // Epochs of different clusters are unrelated; the highest keeps a client's view moving forward.
            r.finalized_features_epoch = r.finalized_features_epoch.max(o.finalized_features_epoch);
            r.zk_migration_ready &= o.zk_migration_ready;
        }
        Some(out)
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

/// Every broker answer the sidecar holds and their intersection, shared by all clusters. The intersection is
/// computed when an answer is learnt or forgotten, so a request only loads a pointer.
#[derive(Default)]
pub struct Book {
    /// Broker answers by (owner, broker address); the owner is the cluster instance that learnt them, so a
    /// replaced or removed cluster's answers go with it.
    answers: Mutex<HashMap<(u64, String), Arc<Versions>>>,
    combined: ArcSwapOption<Versions>,
}

impl Book {
    /// What clients are offered now; `None` until some broker has answered.
    pub fn current(&self) -> Option<Arc<Versions>> {
        self.combined.load_full()
    }

    /// Records one broker's answer (again on every new connection: a broker may have been upgraded or
    /// downgraded in between). Returns whether what clients are offered changed.
    pub fn learn(&self, owner: u64, addr: &str, versions: Versions) -> bool {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        let key = (owner, addr.to_string());
        if answers.get(&key).is_some_and(|known| known.broker == versions.broker) {
            return false;
        }
        answers.insert(key, Arc::new(versions));
        self.recompute(&answers)
    }

    /// Drops the answers an owner learnt (its cluster was replaced or removed).
    pub fn forget(&self, owner: u64) -> bool {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        let before = answers.len();
        answers.retain(|(o, _), _| *o != owner);
        before != answers.len() && self.recompute(&answers)
    }

    fn recompute(&self, answers: &HashMap<(u64, String), Arc<Versions>>) -> bool {
        let next = Versions::intersect(answers.values().map(|v| &**v)).map(Arc::new);
        let changed = match (&*self.combined.load(), &next) {
            (Some(a), Some(b)) => a.ranges != b.ranges,
            (a, b) => a.is_some() != b.is_some(),
        };
        self.combined.store(next);
        changed
    }
}

/// Decodes an ApiVersions response body from a broker.
pub fn decode_broker_answer(body: &[u8], version: i16) -> Result<ApiVersionsResponse> {
    let mut b = body;
    ApiVersionsResponse::decode(&mut b, version).map_err(|e| Error::protocol("decoding broker ApiVersions", e))
}
