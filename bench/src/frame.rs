//! Kafka framing shared by the responder and the load generator: 4-byte length prefix, request/response headers.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{Error, Result};

/// Largest frame either tool accepts; far above anything a benchmark sends.
pub const MAX_FRAME: usize = 128 * 1024 * 1024;

/// Reads length-prefixed frames from one stream, reusing one buffer.
pub struct Reader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader { inner, buf: BytesMut::with_capacity(64 * 1024) }
    }

    /// Whether a whole frame is already buffered, so a caller can batch its writes before flushing.
    pub fn has_frame(&self) -> bool {
        self.buf.len() >= 4 && {
            let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
            usize::try_from(len).is_ok_and(|len| self.buf.len() >= 4 + len)
        }
    }

    /// The next frame without its length prefix; `Err(Closed)` at a clean end of stream.
    pub async fn next(&mut self) -> Result<Bytes> {
        loop {
            if self.buf.len() >= 4 {
                let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                let len = usize::try_from(len).map_err(|_| Error::Protocol(format!("negative frame length {len}")))?;
                if len > MAX_FRAME {
                    return Err(Error::Protocol(format!("frame of {len} bytes is too large")));
                }
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    return Ok(self.buf.split_to(len).freeze());
                }
                self.buf.reserve(4 + len - self.buf.len());
            } else if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Err(Error::Closed);
            }
        }
    }
}

/// The fixed part of a request header, read without decoding the body: (api key, version, correlation id).
pub fn peek_request(frame: &[u8]) -> Result<(i16, i16, i32)> {
    if frame.len() < 8 {
        return Err(Error::Protocol(format!("request frame of {} bytes has no header", frame.len())));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    Ok((key, version, correlation))
}

/// The correlation id at the start of a response frame.
pub fn peek_response_correlation(frame: &[u8]) -> Result<i32> {
    match frame.get(..4) {
        Some(b) => Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(Error::Protocol("response frame shorter than its header".into())),
    }
}

/// A whole request frame (length prefix, header, body).
pub fn request(key: ApiKey, version: i16, correlation: i32, client_id: &str, body: &impl Encodable) -> Result<Bytes> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let header_version = key.request_header_version(version);
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, header_version).map_err(|e| Error::protocol("encoding request header", e))?;
    body.encode(&mut buf, version).map_err(|e| Error::protocol("encoding request body", e))?;
    patch_length(&mut buf)?;
    Ok(buf.freeze())
}

/// A whole response frame (length prefix, header, body).
pub fn response(key: ApiKey, version: i16, correlation: i32, body: &impl Encodable) -> Result<Bytes> {
    let header = ResponseHeader::default().with_correlation_id(correlation);
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    header.encode(&mut buf, key.response_header_version(version)).map_err(|e| Error::protocol("response header", e))?;
    body.encode(&mut buf, version).map_err(|e| Error::protocol("encoding response body", e))?;
    patch_length(&mut buf)?;
    Ok(buf.freeze())
}

fn patch_length(buf: &mut BytesMut) -> Result<()> {
    let len = i32::try_from(buf.len() - 4).map_err(|_| Error::Protocol("frame too large".into()))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Skips the request header of `frame` (as `peek_request` read it), leaving the body.
pub fn request_body(frame: &Bytes, key: ApiKey, version: i16) -> Result<Bytes> {
    let mut rest = frame.clone();
    RequestHeader::decode_from(&mut rest, key.request_header_version(version))?;
    Ok(rest)
}

/// Skips the response header of `frame`, leaving the body.
pub fn response_body(frame: &Bytes, key: ApiKey, version: i16) -> Result<Bytes> {
    let mut rest = frame.clone();
    kafka_protocol::protocol::Decodable::decode(&mut rest, key.response_header_version(version))
        .map(|_: ResponseHeader| rest)
        .map_err(|e| Error::protocol("decoding response header", e))
}

/// Decoding a request header with the crate's error type.
trait DecodeFrom: Sized {
    fn decode_from(buf: &mut Bytes, version: i16) -> Result<Self>;
}

impl DecodeFrom for RequestHeader {
    fn decode_from(buf: &mut Bytes, version: i16) -> Result<Self> {
        kafka_protocol::protocol::Decodable::decode(buf, version).map_err(|e| Error::protocol("request header", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;

    #[test]
    fn request_frames_round_trip_through_peek_and_body() {
        let frame = request(ApiKey::ApiVersions, 3, 42, "bench", &ApiVersionsRequest::default()).unwrap();
        let len = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        let inner = frame.slice(4..);
        assert_eq!(peek_request(&inner).unwrap(), (ApiKey::ApiVersions as i16, 3, 42));
        let body = request_body(&inner, ApiKey::ApiVersions, 3).unwrap();
        assert!(!body.is_empty(), "v3 ApiVersions carries client software name and version");
    }

    #[tokio::test]
    async fn reader_splits_frames_and_reports_a_clean_close() {
        let a = request(ApiKey::Metadata, 1, 1, "x", &kafka_protocol::messages::MetadataRequest::default()).unwrap();
        let b = request(ApiKey::Metadata, 1, 2, "x", &kafka_protocol::messages::MetadataRequest::default()).unwrap();
        let stream: Vec<u8> = [a.as_ref(), b.as_ref()].concat();
        let mut reader = Reader::new(&stream[..]);
        assert_eq!(peek_request(&reader.next().await.unwrap()).unwrap().2, 1);
        assert_eq!(peek_request(&reader.next().await.unwrap()).unwrap().2, 2);
        assert!(matches!(reader.next().await, Err(Error::Closed)));
    }
}
