//! A one-request-at-a-time Kafka client for the load generator's set-up: version negotiation and leader lookup.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::frame::{Reader, peek_response_correlation, request, response_body};
use crate::{Error, Result};

/// Client id every benchmark request carries.
pub const CLIENT_ID: &str = "kproxy-bench-load";

/// One connection used for request/response exchanges outside the measured loop.
pub struct Client {
    pub(crate) reader: Reader<OwnedReadHalf>,
    pub(crate) writer: OwnedWriteHalf,
    next_correlation: i32,
}

impl Client {
    pub async fn connect(addr: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, writer) = stream.into_split();
        Ok(Client { reader: Reader::new(read), writer, next_correlation: 1 })
    }

    /// Sends one request and returns the response body.
    pub async fn call(&mut self, key: ApiKey, version: i16, body: &impl Encodable) -> Result<Bytes> {
        let correlation = self.next_correlation;
        self.next_correlation += 1;
        self.writer.write_all(&request(key, version, correlation, CLIENT_ID, body)?).await?;
        let frame = self.reader.next().await?;
        let got = peek_response_correlation(&frame)?;
        if got != correlation {
            return Err(Error::Protocol(format!("response correlation id {got}, expected {correlation}")));
        }
        response_body(&frame, key, version)
    }

    /// ApiVersions v3 (v0 when refused), as clients open every connection; returns each key's version range.
    pub async fn api_versions(&mut self) -> Result<HashMap<i16, (i16, i16)>> {
        // Brokers refuse v3 without a client software name and version (INVALID_REQUEST).
        let v3 = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut body = self.call(ApiKey::ApiVersions, 3, &v3).await?;
        let mut resp = ApiVersionsResponse::decode(&mut body, 3).map_err(|e| Error::protocol("api versions", e))?;
        if resp.error_code == 35 {
            let mut body = self.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default()).await?;
            resp = ApiVersionsResponse::decode(&mut body, 0).map_err(|e| Error::protocol("api versions v0", e))?;
        }
        if resp.error_code != 0 {
            return Err(Error::Protocol(format!("ApiVersions error {}", resp.error_code)));
        }
        Ok(resp.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect())
    }
}

/// Where to send produce requests for a topic, learned from the bootstrap address.
#[derive(Debug, Clone)]
pub struct Plan {
    pub produce_version: i16,
    /// Leader address per partition index.
    pub leaders: Vec<String>,
}

/// Highest version both sides speak, capped at `cap`.
pub fn pick(versions: &HashMap<i16, (i16, i16)>, key: ApiKey, cap: i16) -> Result<i16> {
    let (min, max) =
        versions.get(&(key as i16)).copied().ok_or_else(|| Error::Protocol(format!("{key:?} not offered")))?;
    let ours = key.valid_versions();
    let version = max.min(cap).min(ours.max);
    if version < min.max(ours.min) {
        return Err(Error::Protocol(format!("no common {key:?} version (server {min}..{max})")));
    }
    Ok(version)
}

/// Asks `bootstrap` for `topic` until every partition has a leader (brokers create topics on first Metadata).
pub async fn plan(bootstrap: &str, topic: &str, timeout: Duration) -> Result<Plan> {
    let mut client = Client::connect(bootstrap).await?;
    let versions = client.api_versions().await?;
    // Produce v13 and Metadata v13 address topics by id; the generator names them.
    let produce_version = pick(&versions, ApiKey::Produce, 12)?;
    let metadata_version = pick(&versions, ApiKey::Metadata, 12)?;
    let deadline = Instant::now() + timeout;
    loop {
        let topic_req = MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(topic.into()))));
        let req = MetadataRequest::default().with_topics(Some(vec![topic_req])).with_allow_auto_topic_creation(true);
        let mut body = client.call(ApiKey::Metadata, metadata_version, &req).await?;
        let resp = MetadataResponse::decode(&mut body, metadata_version).map_err(|e| Error::protocol("metadata", e))?;
        if let Some(leaders) = leaders(&resp, topic) {
            return Ok(Plan { produce_version, leaders });
        }
        if Instant::now() >= deadline {
            return Err(Error::Protocol(format!("no leaders for {topic} after {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn leaders(resp: &MetadataResponse, topic: &str) -> Option<Vec<String>> {
    let t = resp.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))?;
    if t.error_code != 0 || t.partitions.is_empty() {
        return None;
    }
    let mut partitions: Vec<_> = t.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition_index);
    partitions
        .into_iter()
        .map(|p| {
            let broker = resp.brokers.iter().find(|b| b.node_id == p.leader_id)?;
            Some(format!("{}:{}", broker.host.as_str(), broker.port))
        })
        .collect()
}
