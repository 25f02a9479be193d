//! The few request/response round trips this crate makes itself (ApiVersions and SASL), each bounded in time and
//! size so a silent or hostile broker cannot hang or exhaust the caller.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{ApiVersionsRequest, RequestHeader, ResponseHeader, SaslHandshakeRequest};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Error, Result};

/// Responses to the requests made here are small; anything larger is not a Kafka broker answering them.
const MAX_RESPONSE: usize = 1 << 20;

/// One connection's sequence of request/response round trips.
pub(crate) struct Exchange<'a, S> {
    pub stream: &'a mut S,
    pub addr: &'a str,
    pub client_id: &'a str,
    pub timeout: Duration,
    pub correlation_id: i32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Exchange<'_, S> {
    /// Sends `request` at `version` and waits for its response.
    pub async fn call<R: Request>(&mut self, what: &'static str, request: &R, version: i16) -> Result<R::Response> {
        let correlation_id = self.correlation_id;
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let frame = encode(request, version, correlation_id, self.client_id).map_err(|e| self.protocol(what, e))?;
        let addr = self.addr;
        let round_trip = async {
            self.stream.write_all(&frame).await?;
            self.stream.flush().await?;
            let len = self.stream.read_i32().await?;
            if !(0..=MAX_RESPONSE as i32).contains(&len) {
                return Ok(Err(not_kafka(what, len)));
            }
            let mut body = BytesMut::zeroed(len as usize);
            self.stream.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(Ok(body))
        };
        let body = match tokio::time::timeout(self.timeout, round_trip).await {
            Err(_) => return Err(Error::Timeout { addr: addr.to_string(), what, after: self.timeout }),
            Ok(Err(source)) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(Error::Protocol {
                    addr: addr.to_string(),
                    reason: format!("the broker closed the connection during {what} (is this its SASL listener?)"),
                });
            }
            Ok(Err(source)) => return Err(Error::Io { addr: addr.to_string(), source }),
            Ok(Ok(Err(reason))) => return Err(Error::Protocol { addr: addr.to_string(), reason }),
            Ok(Ok(Ok(body))) => body,
        };
        plausible(&body, R::KEY).map_err(|e| self.protocol(what, e))?;
        decode::<R::Response>(body, version, correlation_id).map_err(|e| self.protocol(what, e))
    }

    fn protocol(&self, what: &str, reason: String) -> Error {
        Error::Protocol { addr: self.addr.to_string(), reason: format!("{what}: {reason}") }
    }
}

/// Explains a nonsensical response size; a TLS record (content type 20..=23, version 3.x) means the listener
/// expects TLS.
fn not_kafka(what: &str, len: i32) -> String {
    let [kind, major, ..] = len.to_be_bytes();
    if (20..=23).contains(&kind) && major == 3 {
        format!("{what}: the broker answered with TLS; this listener needs the cluster's tls settings")
    } else {
        format!("{what} response claims {len} bytes; not a Kafka broker speaking this protocol?")
    }
}

/// Refuses a response whose array claims more elements than its bytes can hold, before decoding it:
/// kafka-protocol 0.18 reserves room for a decoded array's length up front, so a hostile or confused peer could
/// otherwise make one small frame ask for gigabytes and abort the process. Covers the two responses with arrays
/// read here (ApiVersions v0 and SaslHandshake, whose array follows the v0 header and the error code).
fn plausible(body: &[u8], api_key: i16) -> Result<(), String> {
    let smallest = match api_key {
        k if k == ApiVersionsRequest::KEY => 6,
        k if k == SaslHandshakeRequest::KEY => 2,
        _ => return Ok(()),
    };
    let Some(count) = body.get(6..10).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])) else { return Ok(()) };
    let room = (body.len() - 10) / smallest;
    if count > 0 && count as usize > room {
        return Err(format!("the response claims {count} entries in {} bytes", body.len()));
    }
    Ok(())
}

/// A whole request frame: size, header, body.
pub(crate) fn encode<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &str,
) -> Result<BytesMut, String> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut buf = BytesMut::with_capacity(128);
    buf.put_i32(0);
    header.encode(&mut buf, R::header_version(version)).map_err(|e| format!("encoding request header: {e:#}"))?;
    request.encode(&mut buf, version).map_err(|e| format!("encoding request: {e:#}"))?;
    let len = i32::try_from(buf.len() - 4).map_err(|_| "request too large".to_string())?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// A response body (after the size prefix), checked against the correlation id it answers.
pub(crate) fn decode<T: Decodable + HeaderVersion>(
    body: BytesMut,
    version: i16,
    correlation_id: i32,
) -> Result<T, String> {
    let mut body = body.freeze();
    let header = ResponseHeader::decode(&mut body, T::header_version(version))
        .map_err(|e| format!("decoding response header: {e:#}"))?;
    if header.correlation_id != correlation_id {
        return Err(format!(
            "response to correlation id {} while {correlation_id} was expected",
            header.correlation_id
        ));
    }
    let response = T::decode(&mut body, version).map_err(|e| format!("decoding response: {e:#}"))?;
    if body.has_remaining() {
        tracing::debug!(extra = body.remaining(), "ignoring trailing bytes after a response");
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};

    #[test]
    fn frames_round_trip_and_mismatches_are_refused() {
        let request = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
        let frame = encode(&request, 1, 7, "kproxy").unwrap();
        assert_eq!(i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize, frame.len() - 4);
        assert_eq!(&frame[4..12], &[0, 17, 0, 1, 0, 0, 0, 7]);

        let mut body = BytesMut::new();
        ResponseHeader::default().with_correlation_id(7).encode(&mut body, 0).unwrap();
        SaslHandshakeResponse::default().with_error_code(33).encode(&mut body, 1).unwrap();
        let response: SaslHandshakeResponse = decode(body.clone(), 1, 7).unwrap();
        assert_eq!(response.error_code, 33);
        assert!(decode::<SaslHandshakeResponse>(body.clone(), 1, 8).unwrap_err().contains("correlation id 7"));
        assert!(decode::<SaslHandshakeResponse>(body.split_to(5), 1, 7).is_err());
    }

    #[test]
    fn arrays_longer_than_their_bytes_are_refused_before_decoding() {
        // Correlation id, error code 0, then an array of i32::MAX ApiVersions entries in 6 bytes.
        let mut body = vec![0, 0, 0, 1, 0, 0, 0x7f, 0xff, 0xff, 0xff];
        body.extend_from_slice(&[0, 18, 0, 0, 0, 3]);
        let err = plausible(&body, ApiVersionsRequest::KEY).unwrap_err();
        assert!(err.contains("2147483647 entries"), "{err}");
        body[6..10].copy_from_slice(&1i32.to_be_bytes());
        plausible(&body, ApiVersionsRequest::KEY).unwrap();
        assert!(plausible(&[0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 2], SaslHandshakeRequest::KEY).is_err());
    }

    #[test]
    fn a_tls_answer_is_recognised() {
        // A TLS alert record: type 21, version 3.3.
        assert!(not_kafka("ApiVersions", i32::from_be_bytes([21, 3, 3, 0])).contains("answered with TLS"));
        assert!(not_kafka("ApiVersions", -1).contains("claims -1 bytes"));
    }
}
