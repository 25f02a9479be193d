//! A raw Kafka client for the few e2e checks no client library exposes: one request of any API and version
//! (e.g. a Produce naming exactly the topics a test chooses) on a connection the test keeps open, its answer decoded.

use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::{Result, bail};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// Produce version used: old enough for every broker in the environment, new enough to carry topic names.
pub const PRODUCE_VERSION: i16 = 9;

/// A v2 record batch holding one record with `value`.
pub fn record_batch(value: &str) -> Result<Bytes> {
    keyed_record_batch(None, Bytes::copy_from_slice(value.as_bytes()))
}

/// A v2 record batch holding one record with `key` and `value`.
pub fn keyed_record_batch(key: Option<Bytes>, value: Bytes) -> Result<Bytes> {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 0,
        key,
        value: Some(value),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, [&record], &options)?;
    Ok(buf.freeze())
}

/// Sends one acks=all Produce naming each `(topic, value)` (partition 0) on `stream` and returns the response.
pub fn produce(
    stream: &mut TcpStream,
    correlation_id: i32,
    client_id: &'static str,
    records: &[(&str, &str)],
) -> Result<ProduceResponse> {
    let data = records
        .iter()
        .map(|(topic, value)| {
            Ok(TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default().with_index(0).with_records(Some(record_batch(value)?)),
                ]))
        })
        .collect::<Result<Vec<_>>>()?;
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(data);
    call(stream, ApiKey::Produce, PRODUCE_VERSION, correlation_id, client_id, &request)
}

/// One request as it goes on the wire: length prefix, header, body.
pub fn frame<Q: Encodable>(api: ApiKey, version: i16, id: i32, client_id: &'static str, body: &Q) -> Result<Vec<u8>> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(id)
        .with_client_id(Some(StrBytes::from_static_str(client_id)));
    let mut b = BytesMut::new();
    header.encode(&mut b, api.request_header_version(version))?;
    body.encode(&mut b, version)?;
    let mut frame = BytesMut::with_capacity(b.len() + 4);
    frame.put_i32(i32::try_from(b.len())?);
    frame.extend_from_slice(&b);
    Ok(frame.to_vec())
}

/// Sends one request on `stream` and decodes its response (any version kafka-protocol knows).
pub fn call<Q: Encodable, R: Decodable>(
    stream: &mut TcpStream,
    api: ApiKey,
    version: i16,
    id: i32,
    client_id: &'static str,
    body: &Q,
) -> Result<R> {
    stream.write_all(&frame(api, version, id, client_id, body)?)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut response = vec![0u8; usize::try_from(i32::from_be_bytes(len))?];
    stream.read_exact(&mut response)?;
    let mut response = Bytes::from(response);
    // ApiVersions answers always carry header v0, so a client can read it whatever it asked.
    let header_version = if api == ApiKey::ApiVersions { 0 } else { api.response_header_version(version) };
    let header = ResponseHeader::decode(&mut response, header_version)?;
    if header.correlation_id != id {
        bail!("correlation id {} for request {id}", header.correlation_id);
    }
    let decoded = R::decode(&mut response, version)?;
    if response.remaining() != 0 {
        bail!("{} bytes left after the {api:?} v{version} response", response.remaining());
    }
    Ok(decoded)
}
