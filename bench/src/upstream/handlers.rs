//! The responder's answers, one function per API; every other API closes the connection.

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, Record, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};

use super::State;
use crate::frame::{peek_request, request_body, response};
use crate::{Error, Result};

/// Highest versions answered. Produce and Fetch stop below the versions that address topics by id only, since
/// the responder names topics and has no ids to give.
const API_VERSIONS: [(ApiKey, i16, i16); 4] =
    [(ApiKey::Produce, 3, 12), (ApiKey::Fetch, 4, 12), (ApiKey::Metadata, 0, 12), (ApiKey::ApiVersions, 0, 4)];

/// The response frame for `frame`, or `None` when the request wants none (Produce with acks=0).
pub(super) fn answer(state: &State, frame: &Bytes) -> Result<Option<Bytes>> {
    let (key, version, correlation) = peek_request(frame)?;
    let api = ApiKey::try_from(key).map_err(|_| Error::Protocol(format!("unknown api key {key}")))?;
    let Some(&(_, min, max)) = API_VERSIONS.iter().find(|(k, _, _)| *k == api) else {
        return Err(Error::Protocol(format!("{api:?} is not answered by the benchmark responder")));
    };
    if api == ApiKey::ApiVersions {
        return api_versions(version, correlation).map(Some);
    }
    if version < min || version > max {
        return Err(Error::Protocol(format!("{api:?} v{version} outside v{min}..v{max}")));
    }
    let mut body = request_body(frame, api, version)?;
    match api {
        ApiKey::Metadata => {
            let request = MetadataRequest::decode(&mut body, version).map_err(|e| Error::protocol("metadata", e))?;
            response(api, version, correlation, &metadata(state, &request)).map(Some)
        }
        ApiKey::Produce => {
            let request = ProduceRequest::decode(&mut body, version).map_err(|e| Error::protocol("produce", e))?;
            if request.acks == 0 {
                return Ok(None);
            }
            response(api, version, correlation, &produce(state, &request)).map(Some)
        }
        _ => {
            let request = FetchRequest::decode(&mut body, version).map_err(|e| Error::protocol("fetch", e))?;
            response(api, version, correlation, &fetch(state, &request)).map(Some)
        }
    }
}

/// A client asking with a version above 4 gets the v0 error answer it is built to retry with, as Kafka does.
fn api_versions(version: i16, correlation: i32) -> Result<Bytes> {
    let keys = API_VERSIONS
        .iter()
        .map(|&(k, min, max)| ApiVersion::default().with_api_key(k as i16).with_min_version(min).with_max_version(max))
        .collect();
    let body = ApiVersionsResponse::default().with_api_keys(keys);
    if version > 4 {
        return response(ApiKey::ApiVersions, 0, correlation, &body.with_error_code(35));
    }
    response(ApiKey::ApiVersions, version, correlation, &body)
}

fn metadata(state: &State, request: &MetadataRequest) -> MetadataResponse {
    let names: Vec<String> = match &request.topics {
        Some(topics) => topics.iter().filter_map(|t| t.name.as_ref()).map(|n| n.0.as_str().to_string()).collect(),
        None => state.topics.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default(),
    };
    if let Ok(mut seen) = state.topics.lock() {
        seen.extend(names.iter().cloned());
    }
    let topics = names
        .into_iter()
        .map(|name| {
            let partitions = (0..state.partitions)
                .map(|i| {
                    MetadataResponsePartition::default()
                        .with_partition_index(i)
                        .with_leader_id(BrokerId(0))
                        .with_leader_epoch(0)
                        .with_replica_nodes(vec![BrokerId(0)])
                        .with_isr_nodes(vec![BrokerId(0)])
                })
                .collect();
            MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(name))))
                .with_partitions(partitions)
        })
        .collect();
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(0))
        .with_host(StrBytes::from_string(state.advertise.ip().to_string()))
        .with_port(i32::from(state.advertise.port()));
    MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(StrBytes::from_static_str("kproxy-bench-upstream")))
        .with_controller_id(BrokerId(0))
        .with_topics(topics)
}

fn produce(state: &State, request: &ProduceRequest) -> ProduceResponse {
    let responses = request
        .topic_data
        .iter()
        .map(|topic| {
            let partitions = topic
                .partition_data
                .iter()
                .map(|p| {
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_base_offset(state.next_offset.fetch_add(1, Ordering::Relaxed))
                        .with_log_append_time_ms(-1)
                })
                .collect();
            TopicProduceResponse::default().with_name(topic.name.clone()).with_partition_responses(partitions)
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}

fn fetch(state: &State, request: &FetchRequest) -> FetchResponse {
    let responses = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    // As many batches as max_bytes allows, at least one (KIP-74).
                    let room = request.max_bytes.min(p.partition_max_bytes).max(0) as usize;
                    let n = (room / state.fetch_batch.len().max(1)).clamp(1, state.fetch_batches);
                    let records = if n == 1 {
                        batch_at(&state.fetch_batch, p.fetch_offset)
                    } else {
                        let mut all = BytesMut::with_capacity(n * state.fetch_batch.len());
                        for i in 0..n {
                            all.extend_from_slice(&batch_at(&state.fetch_batch, p.fetch_offset + i as i64));
                        }
                        all.freeze()
                    };
                    PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_high_watermark(i64::MAX / 2)
                        .with_last_stable_offset(i64::MAX / 2)
                        .with_records(Some(records))
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    FetchResponse::default().with_responses(responses)
}

/// The pre-built batch moved to `offset`: the base offset (bytes 0..8) is outside the batch CRC, so clients that
/// check offsets keep advancing without the batch being re-encoded.
fn batch_at(batch: &Bytes, offset: i64) -> Bytes {
    if offset == 0 || batch.len() < 8 {
        return batch.clone();
    }
    let mut moved = BytesMut::from(batch.as_ref());
    moved[..8].copy_from_slice(&offset.to_be_bytes());
    moved.freeze()
}

/// One uncompressed v2 record batch of `count` records with `value_bytes`-byte values, as a non-idempotent
/// producer writes it (no producer id, base sequence -1), stamped with the current time.
pub fn record_batch(count: usize, value_bytes: usize) -> Result<Bytes> {
    let value = Bytes::from(vec![b'x'; value_bytes]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch while offset - sequence stays constant.
            sequence: NO_SEQUENCE.wrapping_add(i as i32),
            timestamp: now,
            key: None,
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, &records, &options).map_err(|e| Error::protocol("record batch", e))?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{request, response_body};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiVersionsRequest, ProduceRequest};
    use kafka_protocol::records::RecordBatchDecoder;

    fn state() -> State {
        State {
            advertise: "127.0.0.1:19092".parse().unwrap(),
            partitions: 3,
            topics: Default::default(),
            fetch_batch: record_batch(2, 10).unwrap(),
            fetch_batches: 1,
            next_offset: Default::default(),
            requests: Default::default(),
        }
    }

    fn ask(state: &State, key: ApiKey, version: i16, body: &impl kafka_protocol::protocol::Encodable) -> Bytes {
        let frame = request(key, version, 7, "t", body).unwrap().slice(4..);
        let out = answer(state, &frame).unwrap().unwrap().slice(4..);
        assert_eq!(crate::frame::peek_response_correlation(&out).unwrap(), 7);
        response_body(&out, key, version).unwrap()
    }

    #[test]
    fn metadata_names_itself_and_creates_topics_on_demand() {
        let state = state();
        let topic = MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str("t1"))));
        let req = MetadataRequest::default().with_topics(Some(vec![topic]));
        let mut body = ask(&state, ApiKey::Metadata, 12, &req);
        let resp = MetadataResponse::decode(&mut body, 12).unwrap();
        assert_eq!(resp.brokers[0].port, 19092);
        assert_eq!(resp.topics[0].partitions.len(), 3);
        let mut all = ask(&state, ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(None));
        assert_eq!(MetadataResponse::decode(&mut all, 1).unwrap().topics.len(), 1, "all topics lists those seen");
    }

    #[test]
    fn produce_succeeds_and_acks_zero_gets_no_answer() {
        let state = state();
        let data = PartitionProduceData::default().with_index(2).with_records(Some(record_batch(1, 5).unwrap()));
        let topic = TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_data(vec![data]);
        let req = ProduceRequest::default().with_acks(1).with_topic_data(vec![topic]);
        let mut body = ask(&state, ApiKey::Produce, 9, &req);
        let resp = ProduceResponse::decode(&mut body, 9).unwrap();
        assert_eq!(resp.responses[0].partition_responses[0].index, 2);
        assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
        let silent = request(ApiKey::Produce, 9, 8, "t", &req.with_acks(0)).unwrap().slice(4..);
        assert!(answer(&state, &silent).unwrap().is_none());
    }

    #[test]
    fn fetch_returns_the_batch_moved_to_the_fetch_offset() {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        let state = state();
        let part = FetchPartition::default().with_partition(0).with_fetch_offset(40);
        let topic =
            FetchTopic::default().with_topic(TopicName(StrBytes::from_static_str("t"))).with_partitions(vec![part]);
        let mut body = ask(&state, ApiKey::Fetch, 11, &FetchRequest::default().with_topics(vec![topic]));
        let resp = FetchResponse::decode(&mut body, 11).unwrap();
        let mut records = resp.responses[0].partitions[0].records.clone().unwrap();
        let set = RecordBatchDecoder::decode(&mut records).unwrap();
        assert_eq!(set.records.len(), 2);
        assert_eq!(set.records[0].offset, 40);
    }

    #[test]
    fn api_versions_lists_what_is_answered() {
        let state = state();
        let mut body = ask(&state, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        let resp = ApiVersionsResponse::decode(&mut body, 3).unwrap();
        assert_eq!(resp.api_keys.len(), API_VERSIONS.len());
    }
}
