//! One client request as the pipeline carries it: raw → parsed → modified.
//!
//! The frame stays as read (raw); its header is peeked from bytes 4..12 without a decode; the body is decoded the
//! first time a stage needs it (parsed) and that decoded form is kept for every later stage, so no request is
//! decoded twice; a stage that changes the body marks it (modified) and the frame is re-encoded once, before it
//! is sent. An unmodified request leaves as the very bytes it arrived as.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind};

use super::{Header, request_body_offset};
use crate::buffer::Buf;
use crate::{Error, Result};

/// Why a frame is not a request the sidecar can carry; closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than a request header.
    Short,
    /// An API key kafka-protocol does not know.
    UnknownApi(i16),
}

/// A client request on its way through the pipeline.
pub struct Request {
    frame: Buf,
    pub header: Header,
    pub api: ApiKey,
    /// The decoded body, once a stage needed it (boxed: most requests never need it, and it is large).
    body: Option<Box<RequestKind>>,
    /// The body was changed: the frame is re-encoded from it before it leaves.
    modified: bool,
}

impl Request {
    /// A request from a frame (length prefix included), its header peeked.
    pub fn new(frame: Buf) -> Result<Request, (Malformed, Buf)> {
        let Some(header) = Header::peek(&frame) else { return Err((Malformed::Short, frame)) };
        let Some(api) = header.api() else { return Err((Malformed::UnknownApi(header.api_key), frame)) };
        Ok(Request { frame, header, api, body: None, modified: false })
    }

    pub fn version(&self) -> i16 {
        self.header.api_version
    }

    /// The frame as it is now (as read, or as re-encoded by [`Request::seal`]).
    pub fn frame(&self) -> &Buf {
        &self.frame
    }

    /// The raw frame for a change made in place (one that does not touch what the decoded body holds).
    pub fn frame_mut(&mut self) -> &mut Buf {
        &mut self.frame
    }

    /// The client id from the request header.
    pub fn client_id(&self) -> Option<&str> {
        client_id(&self.frame)
    }

    fn body_offset(&self) -> Result<usize> {
        let v = self.header.api_version;
        request_body_offset(&self.frame, self.api, v)
            .ok_or_else(|| Error::Protocol(format!("{:?} v{v} request header is truncated", self.api)))
    }

    /// The decoded body, decoded on the first call only.
    pub fn body(&mut self) -> Result<&RequestKind> {
        if self.body.is_none() {
            let at = self.body_offset()?;
            // Decoding slices the buffer it reads; a copy keeps the pooled frame free for reuse.
            let mut bytes = Bytes::copy_from_slice(&self.frame[at..]);
            let body = RequestKind::decode(self.api, &mut bytes, self.header.api_version)
                .map_err(|e| Error::protocol(&format!("decoding {:?}", self.api), e))?;
            self.body = Some(Box::new(body));
        }
        self.body.as_deref().ok_or_else(|| Error::Protocol("no body".into()))
    }

    /// The decoded body, to change; whoever changes it says so with [`Request::mark_modified`], and the frame is
    /// re-encoded before it leaves.
    pub fn body_mut(&mut self) -> Result<&mut RequestKind> {
        self.body()?;
        self.body.as_deref_mut().ok_or_else(|| Error::Protocol("no body".into()))
    }

    /// The decoded body was changed: re-encode the frame from it before it leaves.
    pub fn mark_modified(&mut self) {
        self.modified = true;
    }

    /// The decoded body if some stage decoded it.
    pub fn parsed(&self) -> Option<&RequestKind> {
        self.body.as_deref()
    }

    /// A frame with this request's header and another body.
    pub fn with_body(&self, body: &RequestKind) -> Result<BytesMut> {
        let at = self.body_offset()?;
        let mut out = BytesMut::with_capacity(self.frame.len());
        out.extend_from_slice(&self.frame[..at]);
        body.encode(&mut out, self.header.api_version)
            .map_err(|e| Error::protocol(&format!("encoding {:?}", self.api), e))?;
        let len = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        Ok(out)
    }

    /// Re-encodes the frame from the body if it was changed; afterwards the frame is what goes upstream.
    pub fn seal(&mut self) -> Result<()> {
        if !self.modified {
            return Ok(());
        }
        if let Some(body) = &self.body {
            let frame = self.with_body(body)?;
            self.frame.replace_with(&frame);
        }
        self.modified = false;
        Ok(())
    }

    /// The frame to send, re-encoded if the body changed.
    pub fn into_frame(mut self) -> Result<Buf> {
        self.seal()?;
        Ok(self.frame)
    }

    /// Whether the request gets a response (everything but Produce with acks=0).
    pub fn expects_response(&self) -> bool {
        super::expects_response(&self.frame, &self.header)
    }

    /// Whether the broker may hold the request for long (it must not share a connection with produce).
    pub fn is_long_poll(&self) -> bool {
        super::is_long_poll(&self.frame, &self.header)
    }

    /// How long the broker may hold the request by its own fields ([`super::own_wait`]); admin requests with a
    /// `timeout_ms` are decoded for it (they are rare).
    pub fn own_wait(&mut self) -> Duration {
        use RequestKind as K;
        let ms = match self.api {
            ApiKey::CreateTopics
            | ApiKey::DeleteTopics
            | ApiKey::CreatePartitions
            | ApiKey::DeleteRecords
            | ApiKey::ElectLeaders
            | ApiKey::AlterPartitionReassignments => match self.body() {
                Ok(K::CreateTopics(r)) => r.timeout_ms,
                Ok(K::DeleteTopics(r)) => r.timeout_ms,
                Ok(K::CreatePartitions(r)) => r.timeout_ms,
                Ok(K::DeleteRecords(r)) => r.timeout_ms,
                Ok(K::ElectLeaders(r)) => r.timeout_ms,
                Ok(K::AlterPartitionReassignments(r)) => r.timeout_ms,
                _ => 0,
            },
            _ => return super::own_wait(&self.frame, &self.header),
        };
        Duration::from_millis(ms.max(0) as u64)
    }
}

/// The client id of a request frame.
pub fn client_id(frame: &[u8]) -> Option<&str> {
    let len = i16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    std::str::from_utf8(frame.get(14..14 + len)?).ok()
}
