//! Reads a connection's frames through one read buffer: each read takes whatever the socket holds, and every
//! complete frame in it is handed out, so pipelined requests (or responses) cost one system call between them
//! instead of two each (length, then body).
//!
//! Zero copy where it pays: a small frame that arrived whole is copied once out of the read buffer into a pooled
//! buffer of its size class; a large one at the head of the buffer leaves in it. A frame larger than the room left in the read buffer (a large produce request's
//! record batches, a fetch response) gets a pooled buffer of its own, takes the bytes already read, and has the
//! rest read straight into it. No byte of a frame is copied twice.
//!
//! With a memory-budget [`Share`] (client connections), a frame's bytes are reserved as soon as its length prefix
//! is in, before its body is read or a buffer allocated for it; while the reservation waits nothing more is
//! read from the connection, so the client is held back by TCP. The wait counts against neither the idle nor
//! the partial-frame timeout (the client is not the one being slow), and the frame carries its charge.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{FrameError, frame_length};
use crate::budget::{Charge, Share};
use crate::buffer::{Buf, Pool};

/// Capacity of a connection's read buffer (a pool size class): dozens of small frames per read, and a large
/// frame announces its length in the first one.
pub const READ_BYTES: usize = 64 * 1024;

/// Frames from this size on leave in the read buffer they arrived in rather than be copied out of it: here a
/// copy starts to cost about what the system call it saved did, and the buffer is at most 8 times the frame.
const LEND_MIN: usize = READ_BYTES / 8;

/// What a connection accepts: the limits of [`super::read_frame`].
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest frame body.
    pub max: usize,
    /// Smallest frame body (a request or response header).
    pub min: usize,
    /// Longest wait for the first byte of a frame.
    pub idle: Duration,
    /// Longest time from a frame's first byte to its last.
    pub partial: Duration,
}

/// The frames of one connection's reading half.
pub struct FrameReader<R> {
    io: R,
    pool: Arc<Pool>,
    limits: Limits,
    /// Bytes read and not yet handed out are `read[start..]`. A buffer is held only while a read completes or
    /// bytes wait in it, so an idle connection holds none.
    read: Option<Buf>,
    start: usize,
    /// A frame too large for the room left in `read`, with its total length, being filled from the socket. Kept
    /// here rather than in the future so that a cancelled read loses nothing.
    large: Option<(Buf, usize)>,
    /// Where frames reserve their bytes before they are read; `None` reads without a budget (upstream responses,
    /// whose room was reserved with their requests).
    share: Option<Share>,
    /// The reservation of the frame at the head of the read buffer, once its length is known.
    charge: Option<Charge>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R, pool: Arc<Pool>, limits: Limits) -> Self {
        FrameReader { io, pool, limits, read: None, start: 0, large: None, share: None, charge: None }
    }

    /// Reserves every frame's bytes in `share` (and the global budget behind it) before reading it.
    pub fn with_budget(mut self, share: Share) -> Self {
        self.share = Some(share);
        self
    }

    /// The next frame, length prefix included. `Ok(None)` is a clean close between frames. Cancel-safe: a frame
    /// half read when the future is dropped is completed by the next call.
    pub async fn next(&mut self) -> Result<Option<Buf>, FrameError> {
        loop {
            if let Some(bytes) = self.uncharged()?
                && let Some(share) = &self.share
            {
                self.charge = Some(share.reserve(bytes).await);
            }
            if let Some(frame) = self.split()? {
                return Ok(Some(frame));
            }
            if !self.started() {
                let idle = self.limits.idle;
                match tokio::time::timeout(idle, self.fill()).await {
                    Err(_) => return Err(FrameError::Idle(idle)),
                    Ok(Ok(0)) => return Ok(None),
                    Ok(read) => read?,
                };
                continue;
            }
            let partial = self.limits.partial;
            match tokio::time::timeout(partial, self.finish()).await {
                Err(_) => return Err(FrameError::PartialTimeout(partial)),
                Ok(Ok(Some(frame))) => return Ok(Some(frame)),
                // The frame's length just arrived: reserve it before reading on.
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// The next frame if it is whole in the read buffer and its bytes fit the budget now: no read, no wait. The
    /// caller then need not set up the select around [`Self::next`] for each of a batch of pipelined frames.
    pub fn next_buffered(&mut self) -> Result<Option<Buf>, FrameError> {
        if let Some(bytes) = self.uncharged()? {
            match self.share.as_ref().and_then(|share| share.try_reserve(bytes)) {
                Some(charge) => self.charge = Some(charge),
                None => return Ok(None),
            }
        }
        self.split()
    }

    /// The bytes the frame at the head of the read buffer must reserve before it is read on: `Some` when its
    /// length is known, the reader has a budget, and the frame holds no reservation yet.
    fn uncharged(&self) -> Result<Option<usize>, FrameError> {
        if self.share.is_none() || self.charge.is_some() || self.large.is_some() {
            return Ok(None);
        }
        Ok(self.head_len()?.map(Pool::footprint))
    }

    fn buffered(&self) -> &[u8] {
        self.read.as_ref().map_or(&[], |read| &read[self.start..])
    }

    /// Whether part of a frame has been read.
    fn started(&self) -> bool {
        self.large.is_some() || !self.buffered().is_empty()
    }

    /// The total length of the frame at the head of the read buffer, checked as soon as its prefix is in so
    /// that a bad frame is refused before its body arrives.
    fn head_len(&self) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = self.buffered().first_chunk::<4>() else { return Ok(None) };
        Ok(Some(4 + frame_length(*prefix, self.limits.max, self.limits.min)?))
    }

    /// Hands out the frame at the head of the read buffer if it is complete.
    fn split(&mut self) -> Result<Option<Buf>, FrameError> {
        let Some(total) = self.head_len()? else { return Ok(None) };
        let bytes = self.buffered();
        if bytes.len() < total {
            return Ok(None);
        }
        if self.start == 0 && total >= LEND_MIN && bytes.len() - total <= total {
            // A large frame at the head of the buffer leaves in it, uncopied; what follows it (less) is copied
            // into a fresh read buffer.
            let rest = (bytes.len() > total).then(|| {
                let mut fresh = self.pool.get(READ_BYTES);
                fresh.extend_from_slice(&bytes[total..]);
                fresh
            });
            let Some(mut frame) = std::mem::replace(&mut self.read, rest) else { return Ok(None) };
            frame.truncate(total);
            self.attach(&mut frame);
            return Ok(Some(frame));
        }
        // The copy of a smaller frame that arrived whole is a memcpy from cache; it replaces a read(2) per frame
        // (plus one for its length), each a kernel entry worth many times more, and it leaves the read buffer
        // with the connection while frames travel alone to their writers.
        let mut frame = self.pool.get(total);
        frame.extend_from_slice(&bytes[..total]);
        self.start += total;
        self.attach(&mut frame);
        Ok(Some(frame))
    }

    /// Hands the head frame's reservation to its buffer.
    fn attach(&mut self, frame: &mut Buf) {
        if let Some(charge) = self.charge.take() {
            frame.set_charge(charge);
        }
    }

    /// Reads until the started frame is complete; `None` as soon as its length is known and it must reserve.
    async fn finish(&mut self) -> Result<Option<Buf>, FrameError> {
        loop {
            if let Some((frame, total)) = &mut self.large {
                let want = *total - frame.len();
                if want > 0 {
                    // Bounded to the frame: what follows it belongs in the read buffer.
                    if (&mut self.io).take(want as u64).read_buf(&mut **frame).await? == 0 {
                        return Err(FrameError::Truncated);
                    }
                    continue;
                }
                if let Some((frame, _)) = self.large.take() {
                    return Ok(Some(frame));
                }
            }
            if self.uncharged()?.is_some() {
                return Ok(None);
            }
            if let Some(frame) = self.split()? {
                return Ok(Some(frame));
            }
            if let Some(total) = self.head_len()?
                && total > self.room()
            {
                self.start_large(total);
                continue;
            }
            if self.fill().await? == 0 {
                return Err(FrameError::Truncated);
            }
        }
    }

    /// Bytes the frame at the head of the read buffer may span without moving.
    fn room(&self) -> usize {
        self.read.as_ref().map_or(READ_BYTES, |read| read.capacity()) - self.start
    }

    /// Moves the started frame into a buffer of its own size, where the rest of it is read directly.
    fn start_large(&mut self, total: usize) {
        let mut frame = self.pool.get(total);
        frame.extend_from_slice(self.buffered());
        self.attach(&mut frame);
        if let Some(read) = &mut self.read {
            read.clear();
        }
        self.start = 0;
        self.large = Some((frame, total));
    }

    /// One read into the read buffer: the bytes read, 0 at the end of the stream.
    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let read = self.read.get_or_insert_with(|| self.pool.get(READ_BYTES));
        if self.start == read.len() {
            read.clear();
            self.start = 0;
        } else if self.start > 0 && read.len() - self.start < 4 {
            // A length prefix cut by the end of a read: its few bytes move to the front, so there is room after
            // them. (A frame whose prefix is in never moves: it gets a buffer of its own instead.)
            let len = read.len() - self.start;
            read.copy_within(self.start.., 0);
            read.truncate(len);
            self.start = 0;
        }
        let polled = pin!(self.io.read_buf(&mut **read)).poll(cx);
        if polled.is_pending() && read.is_empty() {
            // Nothing to keep while the connection waits: the buffer serves other connections meanwhile.
            self.read = None;
        }
        polled
    }
}

#[cfg(test)]
mod tests;
