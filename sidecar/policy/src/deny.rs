//! Whole-request error responses: what a broker answers when the one resource a request is about is denied.
//!
//! Per-entity APIs (Produce, Fetch, Metadata…) build theirs by merging the denied entities into an empty response;
//! this module covers the APIs that name a single group, transactional id or the cluster.

use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, ResponseKind};
use kafka_protocol::protocol::StrBytes;

/// Sets the top-level error of a single-resource response, with the "no result" values a broker puts next to it
/// (producer id -1, node -1, generation -1…). Other responses are returned unchanged.
pub fn with_error(response: ResponseKind, error: i16) -> ResponseKind {
    use ResponseKind as R;
    match response {
        R::JoinGroup(r) => R::JoinGroup(r.with_error_code(error).with_generation_id(-1)),
        R::SyncGroup(r) => R::SyncGroup(r.with_error_code(error)),
        R::Heartbeat(r) => R::Heartbeat(r.with_error_code(error)),
        R::LeaveGroup(r) => R::LeaveGroup(r.with_error_code(error)),
        R::ListGroups(r) => R::ListGroups(r.with_error_code(error)),
        R::OffsetDelete(r) => R::OffsetDelete(r.with_error_code(error)),
        R::FindCoordinator(r) => R::FindCoordinator(
            r.with_error_code(error).with_node_id((-1).into()).with_host(StrBytes::new()).with_port(-1),
        ),
        R::InitProducerId(r) => {
            R::InitProducerId(r.with_error_code(error).with_producer_id((-1).into()).with_producer_epoch(-1))
        }
        R::AddOffsetsToTxn(r) => R::AddOffsetsToTxn(r.with_error_code(error)),
        R::EndTxn(r) => R::EndTxn(r.with_error_code(error).with_producer_id((-1).into()).with_producer_epoch(-1)),
        R::DescribeCluster(r) => R::DescribeCluster(r.with_error_code(error)),
        R::DescribeQuorum(r) => R::DescribeQuorum(r.with_error_code(error)),
        other => other,
    }
}

/// OffsetFetch (before v8) for a denied group: v2+ carry a top-level error; v1 only has per-partition errors.
pub fn offset_fetch_group(version: i16, request: &OffsetFetchRequest, error: i16) -> ResponseKind {
    let mut response = OffsetFetchResponse::default();
    if version >= 2 {
        response.error_code = error;
    } else if let Some(topics) = &request.topics {
        response.topics = topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partition_indexes
                    .iter()
                    .map(|&p| {
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(-1)
                            .with_metadata(Some(StrBytes::new()))
                            .with_error_code(error)
                    })
                    .collect();
                OffsetFetchResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions)
            })
            .collect();
    }
    ResponseKind::OffsetFetch(response)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::{ApiKey, ResponseKind};

    use super::*;
    use crate::code;

    fn empty(api: ApiKey) -> ResponseKind {
        use ResponseKind as R;
        match api {
            ApiKey::JoinGroup => R::JoinGroup(Default::default()),
            ApiKey::SyncGroup => R::SyncGroup(Default::default()),
            ApiKey::Heartbeat => R::Heartbeat(Default::default()),
            ApiKey::LeaveGroup => R::LeaveGroup(Default::default()),
            ApiKey::ListGroups => R::ListGroups(Default::default()),
            ApiKey::OffsetDelete => R::OffsetDelete(Default::default()),
            ApiKey::FindCoordinator => R::FindCoordinator(Default::default()),
            ApiKey::InitProducerId => R::InitProducerId(Default::default()),
            ApiKey::AddOffsetsToTxn => R::AddOffsetsToTxn(Default::default()),
            ApiKey::EndTxn => R::EndTxn(Default::default()),
            ApiKey::DescribeCluster => R::DescribeCluster(Default::default()),
            ApiKey::DescribeQuorum => R::DescribeQuorum(Default::default()),
            _ => unreachable!(),
        }
    }

    /// Every whole-request error encodes at every version and decodes back with the error.
    #[test]
    fn whole_request_errors_encode_at_every_version() {
        let cases = [
            (ApiKey::JoinGroup, code::GROUP_AUTHORIZATION_FAILED),
            (ApiKey::SyncGroup, code::GROUP_AUTHORIZATION_FAILED),
            (ApiKey::Heartbeat, code::GROUP_AUTHORIZATION_FAILED),
            (ApiKey::LeaveGroup, code::GROUP_AUTHORIZATION_FAILED),
            (ApiKey::ListGroups, code::CLUSTER_AUTHORIZATION_FAILED),
            (ApiKey::OffsetDelete, code::GROUP_AUTHORIZATION_FAILED),
            (ApiKey::FindCoordinator, code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
            (ApiKey::InitProducerId, code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
            (ApiKey::AddOffsetsToTxn, code::GROUP_AUTHORIZATION_FAILED),
            (ApiKey::EndTxn, code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
            (ApiKey::DescribeCluster, code::CLUSTER_AUTHORIZATION_FAILED),
            (ApiKey::DescribeQuorum, code::CLUSTER_AUTHORIZATION_FAILED),
        ];
        for (api, error) in cases {
            let range = api.valid_versions();
            // FindCoordinator v4+ reports per key; its top-level error only exists before.
            let max = if api == ApiKey::FindCoordinator { 3 } else { range.max };
            for version in range.min..=max {
                let response = with_error(empty(api), error);
                let mut buf = BytesMut::new();
                response.encode(&mut buf, version).unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"));
                let decoded = ResponseKind::decode(api, &mut buf.freeze(), version).unwrap();
                assert_eq!(crate::enforce::tests::top_error(&decoded), Some(error), "{api:?} v{version}");
            }
        }
    }

    #[test]
    fn offset_fetch_group_denial_encodes_at_every_pre_v8_version() {
        let request =
            OffsetFetchRequest::default().with_group_id(StrBytes::from_static_str("g").into()).with_topics(Some(vec![
                kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(StrBytes::from_static_str("t").into())
                    .with_partition_indexes(vec![0, 1]),
            ]));
        for version in 1..8 {
            let response = offset_fetch_group(version, &request, code::GROUP_AUTHORIZATION_FAILED);
            let mut buf = BytesMut::new();
            response.encode(&mut buf, version).unwrap();
            let ResponseKind::OffsetFetch(r) =
                ResponseKind::decode(ApiKey::OffsetFetch, &mut buf.freeze(), version).unwrap()
            else {
                unreachable!()
            };
            if version >= 2 {
                assert_eq!(r.error_code, code::GROUP_AUTHORIZATION_FAILED);
            } else {
                assert!(r.topics[0].partitions.iter().all(|p| p.error_code == code::GROUP_AUTHORIZATION_FAILED));
            }
        }
    }
}
