//! The filter seam: per request, after the header is peeked, the policy decides what happens to it.
//!
//! `check` is called once per client request with the request (body decoded only if asked for) and the config
//! snapshot taken for that request. Invariants the caller keeps: every request that gets a `Forward` or
//! `RespondLocally` receives exactly one response, in order; `Close` drops the client connection after the
//! responses already due are written. ApiVersions and version checks happen before the filter and never
//! reach it.

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, RequestKind};

use crate::protocol::{self, Header};
use crate::reload::Snapshot;
use crate::{Error, Result};

/// What to do with one request.
#[derive(Debug)]
pub enum Verdict {
    /// Send the original bytes upstream.
    Forward,
    /// Answer without the broker: a response body encoded at the request's version (no header; the proxy adds
    /// it with the client's correlation id).
    RespondLocally(BytesMut),
    /// Drop the client connection, logging the reason.
    Close(String),
}

/// One client request as the filters see it.
pub struct Request<'a> {
    pub header: Header,
    pub api: ApiKey,
    /// The whole frame, length prefix included.
    frame: &'a [u8],
}

impl<'a> Request<'a> {
    pub fn new(header: Header, api: ApiKey, frame: &'a [u8]) -> Self {
        Request { header, api, frame }
    }

    /// The client id from the request header.
    pub fn client_id(&self) -> Option<&'a str> {
        let len = i16::from_be_bytes(self.frame.get(12..14)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        std::str::from_utf8(self.frame.get(14..14 + len)?).ok()
    }

    /// Decodes the body; only filters that need topic or group names should call it. Record batches stay
    /// views into the frame only when decoding from `Bytes`; this copies, so keep it off the produce hot path
    /// unless a policy needs it.
    pub fn body(&self) -> Result<RequestKind> {
        let v = self.header.api_version;
        let at = protocol::request_body_offset(self.frame, self.api, v)
            .ok_or_else(|| Error::Protocol(format!("{:?} v{v} request header is truncated", self.api)))?;
        let mut bytes = bytes::Bytes::copy_from_slice(&self.frame[at..]);
        RequestKind::decode(self.api, &mut bytes, v)
            .map_err(|e| Error::protocol(&format!("decoding {:?}", self.api), e))
    }
}

/// The filter chain (ACL → quota → route once the policy engine plugs in). Today everything is forwarded.
pub fn check(request: &Request<'_>, snapshot: &Snapshot) -> Verdict {
    let _ = (request, snapshot);
    Verdict::Forward
}
