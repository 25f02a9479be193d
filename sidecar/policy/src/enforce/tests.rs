//! Splitting and merging, per API, against what a broker answers.

use kafka_protocol::messages::ResponseKind;

/// The top-level error code of a single-resource response.
pub(crate) fn top_error(response: &ResponseKind) -> Option<i16> {
    use ResponseKind as R;
    Some(match response {
        R::JoinGroup(r) => r.error_code,
        R::SyncGroup(r) => r.error_code,
        R::Heartbeat(r) => r.error_code,
        R::LeaveGroup(r) => r.error_code,
        R::ListGroups(r) => r.error_code,
        R::OffsetDelete(r) => r.error_code,
        R::FindCoordinator(r) => r.error_code,
        R::InitProducerId(r) => r.error_code,
        R::AddOffsetsToTxn(r) => r.error_code,
        R::EndTxn(r) => r.error_code,
        R::DescribeCluster(r) => r.error_code,
        _ => return None,
    })
}
