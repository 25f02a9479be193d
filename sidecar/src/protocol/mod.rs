//! Kafka wire framing: reading length-prefixed frames into pooled buffers and peeking at headers without decoding.
//!
//! A frame buffer always holds the 4-byte length prefix followed by the message, so an unchanged frame is written
//! out with a single write, and correlation ids are patched in place.

pub mod errors;
pub mod hints;
pub mod reader;
pub mod request;
pub mod rewrite;
pub mod versions;

#[cfg(test)]
mod tests;

use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::buffer::{Buf, Pool};

/// Offset of the request correlation id inside a frame (after length, api key and version).
const REQUEST_CORRELATION_AT: usize = 8;
/// Offset of the response correlation id inside a frame (right after the length).
const RESPONSE_CORRELATION_AT: usize = 4;

/// Why a frame could not be read; each closes only its own connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("negative frame length {0}")]
    NegativeLength(i32),
    #[error("frame of {0} bytes exceeds the limit of {1} bytes")]
    Oversized(usize, usize),
    #[error("frame of {0} bytes is too short for a header")]
    TooShort(usize),
    #[error("frame not completed within {0:?}")]
    PartialTimeout(Duration),
    #[error("no request for {0:?}")]
    Idle(Duration),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The `reason` label of `kproxy_frames_rejected_total`; `None` for ordinary ends of a connection.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            FrameError::NegativeLength(_) => Some("negative_length"),
            FrameError::Oversized(..) => Some("oversized"),
            FrameError::TooShort(_) => Some("too_short"),
            FrameError::PartialTimeout(_) => Some("partial_timeout"),
            FrameError::Truncated => Some("truncated"),
            FrameError::Idle(_) | FrameError::Io(_) => None,
        }
    }
}

/// Reads one frame and not a byte beyond it, for one-off exchanges after which the stream is handed on (probes,
/// relays); connection read loops use [`reader::FrameReader`], which reads ahead. `Ok(None)` is a clean close
/// between frames. `idle` bounds the wait for the first byte, `partial` the time from there to the last one.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    pool: &std::sync::Arc<Pool>,
    max: usize,
    min: usize,
    idle: Duration,
    partial: Duration,
) -> Result<Option<Buf>, FrameError> {
    let mut len = [0u8; 4];
    let first = match tokio::time::timeout(idle, r.read(&mut len)).await {
        Err(_) => return Err(FrameError::Idle(idle)),
        Ok(Ok(0)) => return Ok(None),
        Ok(res) => res?,
    };
    let rest = async {
        if first < 4 {
            r.read_exact(&mut len[first..]).await.map_err(eof_is_truncated)?;
        }
        let n = frame_length(len, max, min)?;
        let mut buf = pool.get(n + 4);
        buf.extend_from_slice(&len);
        let mut body = r.take(n as u64);
        while buf.len() < n + 4 {
            if body.read_buf(&mut *buf).await? == 0 {
                return Err(FrameError::Truncated);
            }
        }
        Ok(buf)
    };
    match tokio::time::timeout(partial, rest).await {
        Err(_) => Err(FrameError::PartialTimeout(partial)),
        Ok(res) => res.map(Some),
    }
}

/// The body length a frame's 4-byte prefix announces, within `min..=max`.
fn frame_length(prefix: [u8; 4], max: usize, min: usize) -> Result<usize, FrameError> {
    let n = i32::from_be_bytes(prefix);
    let Ok(n) = usize::try_from(n) else { return Err(FrameError::NegativeLength(n)) };
    if n > max {
        return Err(FrameError::Oversized(n, max));
    }
    if n < min {
        return Err(FrameError::TooShort(n));
    }
    Ok(n)
}

fn eof_is_truncated(e: std::io::Error) -> FrameError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof { FrameError::Truncated } else { FrameError::Io(e) }
}

/// The fixed part of a request header, read from bytes 4..12 of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Smallest request frame body: api key, version and correlation id.
pub const MIN_REQUEST: usize = 8;
/// Smallest response frame body: the correlation id.
pub const MIN_RESPONSE: usize = 4;

impl Header {
    /// Reads the header of a request frame (length prefix included) without decoding anything else.
    pub fn peek(frame: &[u8]) -> Option<Header> {
        let b = frame.get(4..12)?;
        Some(Header {
            api_key: i16::from_be_bytes([b[0], b[1]]),
            api_version: i16::from_be_bytes([b[2], b[3]]),
            correlation_id: i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }

    pub fn api(&self) -> Option<ApiKey> {
        ApiKey::try_from(self.api_key).ok()
    }
}

/// Where the request body starts: after client id and, for flexible headers, the tagged fields.
pub fn request_body_offset(frame: &[u8], api: ApiKey, version: i16) -> Option<usize> {
    let header_version = api.request_header_version(version);
    let mut at = 12;
    if header_version >= 1 {
        let len = i16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?);
        at += 2 + usize::try_from(len.max(0)).ok()?;
    }
    if header_version >= 2 {
        at = skip_tagged_fields(frame, at)?;
    }
    (at <= frame.len()).then_some(at)
}

/// Where a response body starts.
pub fn response_body_offset(frame: &[u8], api: ApiKey, version: i16) -> Option<usize> {
    let at = 8;
    let at = if api.response_header_version(version) >= 1 { skip_tagged_fields(frame, at)? } else { at };
    (at <= frame.len()).then_some(at)
}

fn skip_tagged_fields(b: &[u8], mut at: usize) -> Option<usize> {
    let (count, n) = uvarint(b.get(at..)?)?;
    at += n;
    for _ in 0..count {
        let (_tag, n) = uvarint(b.get(at..)?)?;
        at += n;
        let (size, n) = uvarint(b.get(at..)?)?;
        at += n + size as usize;
    }
    Some(at)
}

/// Decodes an unsigned varint, returning the value and the bytes it took.
pub fn uvarint(b: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0u32;
    for (i, byte) in b.iter().enumerate().take(5) {
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

pub fn set_request_correlation(frame: &mut [u8], id: i32) {
    frame[REQUEST_CORRELATION_AT..REQUEST_CORRELATION_AT + 4].copy_from_slice(&id.to_be_bytes());
}

pub fn response_correlation(frame: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(frame.get(RESPONSE_CORRELATION_AT..RESPONSE_CORRELATION_AT + 4)?.try_into().ok()?))
}

pub fn set_response_correlation(frame: &mut [u8], id: i32) {
    frame[RESPONSE_CORRELATION_AT..RESPONSE_CORRELATION_AT + 4].copy_from_slice(&id.to_be_bytes());
}

/// Writes a complete response frame: length, correlation id, an empty tagged-field section when the api's
/// response header is flexible, then the body.
pub fn response_frame(buf: &mut Buf, api: ApiKey, version: i16, correlation_id: i32, body: &[u8]) {
    let flexible = api.response_header_version(version) >= 1;
    let len = 4 + usize::from(flexible) + body.len();
    buf.clear();
    buf.extend_from_slice(&(len as i32).to_be_bytes());
    buf.extend_from_slice(&correlation_id.to_be_bytes());
    if flexible {
        buf.extend_from_slice(&[0]);
    }
    buf.extend_from_slice(body);
}

/// Whether the request must not share an upstream connection with produce: the broker may hold it for a long
/// time, or it keeps a group member alive.
pub fn is_long_poll(frame: &[u8], h: &Header) -> bool {
    match h.api() {
        Some(ApiKey::Fetch) => fetch_max_wait(frame, h).is_none_or(|w| w > 0),
        // KIP-848 heartbeats are answered at once, but they carry the group's liveness: they must never wait
        // behind produce requests on a shared upstream connection.
        Some(
            ApiKey::JoinGroup
            | ApiKey::ConsumerGroupHeartbeat
            | ApiKey::ShareGroupHeartbeat
            | ApiKey::SyncGroup
            | ApiKey::CreateTopics
            | ApiKey::DeleteTopics
            | ApiKey::CreatePartitions
            | ApiKey::DeleteRecords
            | ApiKey::ElectLeaders
            | ApiKey::AlterPartitionReassignments
            | ApiKey::ShareFetch,
        ) => true,
        _ => false,
    }
}

fn fetch_max_wait(frame: &[u8], h: &Header) -> Option<i32> {
    let at = request_body_offset(frame, ApiKey::Fetch, h.api_version)?;
    // replica_id precedes max_wait_ms until version 15 moved it into a tagged field.
    let at = if h.api_version < 15 { at + 4 } else { at };
    Some(i32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?))
}

/// Where a Fetch request's `max_bytes` (the bound of its whole response, v3+) sits in the frame, and its value.
pub fn fetch_max_bytes(frame: &[u8], h: &Header) -> Option<(usize, i32)> {
    if h.api_key != ApiKey::Fetch as i16 || h.api_version < 3 {
        return None;
    }
    let at = request_body_offset(frame, ApiKey::Fetch, h.api_version)?;
    // replica_id (until v15), max_wait_ms and min_bytes come first.
    let at = if h.api_version < 15 { at + 12 } else { at + 8 };
    Some((at, i32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?)))
}

/// Whether a request gets a response: everything but Produce with acks=0.
pub fn expects_response(frame: &[u8], h: &Header) -> bool {
    if h.api_key != ApiKey::Produce as i16 {
        return true;
    }
    produce_acks(frame, h.api_version).is_none_or(|acks| acks != 0)
}

fn produce_acks(frame: &[u8], version: i16) -> Option<i16> {
    let at = produce_acks_at(frame, version)?;
    Some(i16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?))
}

/// Where a Produce request's `acks` sits: after the transactional id (v3+); `timeout_ms` follows it.
fn produce_acks_at(frame: &[u8], version: i16) -> Option<usize> {
    let mut at = request_body_offset(frame, ApiKey::Produce, version)?;
    if version >= 9 {
        let (len, n) = uvarint(frame.get(at..)?)?;
        at += n + (len as usize).saturating_sub(1);
    } else if version >= 3 {
        let len = i16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?);
        at += 2 + usize::try_from(len.max(0)).ok()?;
    }
    Some(at)
}

/// How long the broker may hold a request by its own fields before answering: Produce `timeout_ms`, Fetch
/// `max_wait_ms`, JoinGroup `rebalance_timeout_ms` (v1+, `session_timeout_ms` before); zero for requests the
/// broker answers at once. Read from the frame without decoding it. Admin requests with a `timeout_ms` are read
/// by [`request::Request::own_wait`], which decodes them.
pub fn own_wait(frame: &[u8], h: &Header) -> Duration {
    let ms = match h.api() {
        Some(ApiKey::Produce) => produce_acks_at(frame, h.api_version)
            .and_then(|at| frame.get(at + 2..at + 6))
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        Some(ApiKey::Fetch) => fetch_max_wait(frame, h),
        Some(ApiKey::JoinGroup) => join_group_wait(frame, h.api_version),
        _ => None,
    };
    Duration::from_millis(ms.map_or(0, |ms| ms.max(0) as u64))
}

/// JoinGroup: group id, then `session_timeout_ms`, then (v1+) `rebalance_timeout_ms`.
fn join_group_wait(frame: &[u8], version: i16) -> Option<i32> {
    let mut at = request_body_offset(frame, ApiKey::JoinGroup, version)?;
    if version >= 6 {
        let (len, n) = uvarint(frame.get(at..)?)?;
        at += n + (len as usize).saturating_sub(1);
    } else {
        let len = i16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?);
        at += 2 + usize::try_from(len.max(0)).ok()?;
    }
    let at = if version >= 1 { at + 4 } else { at };
    Some(i32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?))
}

/// Encodes a request of the sidecar's own (ApiVersions, Metadata probes, leaves) into a frame.
pub fn request_frame<M: kafka_protocol::protocol::Encodable>(
    buf: &mut bytes::BytesMut,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
) -> crate::Result<()> {
    use kafka_protocol::messages::RequestHeader;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("kproxy-sidecar")));
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    let wrap = |e| crate::Error::protocol(&format!("encoding {api:?} request"), e);
    header.encode(buf, api.request_header_version(version)).map_err(wrap)?;
    body.encode(buf, version).map_err(wrap)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}
