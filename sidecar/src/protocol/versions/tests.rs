//! What clients are offered when several brokers (of several clusters and Kafka releases) answered.

use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey, SupportedFeatureKey};
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::{Book, Versions};

fn broker(apis: &[(ApiKey, i16, i16)], tv: Option<i16>, epoch: i64) -> Versions {
    let api_keys = apis
        .iter()
        .map(|&(k, min, max)| ApiVersion::default().with_api_key(k as i16).with_min_version(min).with_max_version(max))
        .collect();
    let mut r = ApiVersionsResponse::default().with_api_keys(api_keys).with_finalized_features_epoch(epoch);
    if let Some(level) = tv {
        let name = StrBytes::from_static_str("transaction.version");
        r.supported_features =
            vec![SupportedFeatureKey::default().with_name(name.clone()).with_min_version(0).with_max_version(level)];
        r.finalized_features = vec![
            FinalizedFeatureKey::default().with_name(name).with_min_version_level(0).with_max_version_level(level),
        ];
    }
    Versions::from_broker(r)
}

/// Ranges as Kafka 4.1 and 3.9 brokers answer them (Produce, Fetch, Metadata, DescribeQuorum).
fn kafka_4_1() -> Versions {
    let apis = [
        (ApiKey::Produce, 3, 13),
        (ApiKey::Fetch, 4, 17),
        (ApiKey::Metadata, 0, 13),
        (ApiKey::DescribeQuorum, 0, 2),
        (ApiKey::ApiVersions, 0, 4),
    ];
    broker(&apis, Some(2), 7)
}

fn kafka_3_9() -> Versions {
    let apis =
        [(ApiKey::Produce, 0, 11), (ApiKey::Fetch, 0, 17), (ApiKey::Metadata, 0, 12), (ApiKey::ApiVersions, 0, 4)];
    broker(&apis, None, 3)
}

#[test]
fn the_intersection_takes_the_narrowest_range_and_only_shared_apis_and_features() {
    let both = Versions::intersect([&kafka_4_1(), &kafka_3_9()]).unwrap();
    assert_eq!(both.range(ApiKey::Produce as i16), Some((3, 11)));
    assert_eq!(both.range(ApiKey::Fetch as i16), Some((4, 17)));
    assert_eq!(both.range(ApiKey::Metadata as i16), Some((0, 12)));
    assert_eq!(both.range(ApiKey::DescribeQuorum as i16), None, "3.9 here does not offer it");
    let (version, body) = both.answer(3).unwrap();
    let r = ApiVersionsResponse::decode(&mut body.freeze(), version).unwrap();
    assert!(r.finalized_features.is_empty() && r.supported_features.is_empty(), "{r:?}");
    assert_eq!(r.finalized_features_epoch, 7);
    assert!(Versions::intersect(std::iter::empty()).is_none());
    let tv1 = broker(&[(ApiKey::Produce, 3, 12)], Some(1), 1);
    let r = Versions::intersect([&kafka_4_1(), &tv1]).unwrap();
    assert_eq!(r.broker.finalized_features[0].max_version_level, 1);
    assert_eq!(r.broker.supported_features[0].max_version, 1);
}

#[test]
fn the_book_follows_every_broker_of_every_cluster_and_forgets_a_retired_one() {
    let book = Book::default();
    assert!(book.current().is_none());
    assert!(book.learn(1, "east-1:9092", kafka_4_1()));
    assert!(!book.learn(1, "east-1:9092", kafka_4_1()), "the same answer again changes nothing");
    assert_eq!(book.current().unwrap().range(ApiKey::Produce as i16), Some((3, 13)));
    // A second broker of the same cluster, still on an older release during a rolling upgrade.
    let older = broker(&[(ApiKey::Produce, 3, 12), (ApiKey::Fetch, 4, 17), (ApiKey::Metadata, 0, 13)], Some(2), 7);
    assert!(book.learn(1, "east-2:9092", older));
    assert_eq!(book.current().unwrap().range(ApiKey::Produce as i16), Some((3, 12)));
    // Another cluster behind the same bootstrap.
    assert!(book.learn(2, "legacy-1:9092", kafka_3_9()));
    let now = book.current().unwrap();
    assert_eq!(now.range(ApiKey::Produce as i16), Some((3, 11)));
    assert_eq!(now.range(ApiKey::Metadata as i16), Some((0, 12)));
    assert!(book.forget(2));
    assert_eq!(book.current().unwrap().range(ApiKey::Produce as i16), Some((3, 12)));
    assert!(!book.forget(2));
}
