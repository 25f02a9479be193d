//! Batched writes: frames ready together leave in one vectored write (one system call for a whole batch of
//! pipelined requests or responses, where one write per frame costs a kernel entry and, on loopback, a wake-up
//! of the receiver each).

use std::io::{self, IoSlice};

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// At most this many frames go into one write (well under every platform's IOV_MAX).
pub const MAX_FRAMES: usize = 64;

/// Writes every byte of `frames`, in order, with as few vectored writes as the socket takes.
pub async fn write_all<W, B>(w: &mut W, frames: &[B]) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
    B: AsRef<[u8]>,
{
    write_rest(w, frames, 0).await
}

/// Writes `frames` past their first `written` bytes (what an earlier write took), in order.
pub async fn write_rest<W, B>(w: &mut W, frames: &[B], written: usize) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
    B: AsRef<[u8]>,
{
    let (mut frame, mut offset) = (0, 0);
    let mut n = written;
    advance(frames, &mut frame, &mut offset, &mut n);
    while frame < frames.len() {
        let slices: Vec<IoSlice<'_>> = frames[frame..]
            .iter()
            .take(MAX_FRAMES)
            .enumerate()
            .map(|(i, f)| IoSlice::new(if i == 0 { &f.as_ref()[offset..] } else { f.as_ref() }))
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 && slices.iter().any(|s| !s.is_empty()) {
            return Err(io::ErrorKind::WriteZero.into());
        }
        advance(frames, &mut frame, &mut offset, &mut n);
    }
    Ok(())
}

/// The slices of at most [`MAX_FRAMES`] frames, for one vectored write.
pub fn slices<B: AsRef<[u8]>>(frames: &[B]) -> Vec<IoSlice<'_>> {
    frames.iter().take(MAX_FRAMES).map(|f| IoSlice::new(f.as_ref())).collect()
}

/// Moves (`frame`, `offset`) past `n` bytes written.
fn advance<B: AsRef<[u8]>>(frames: &[B], frame: &mut usize, offset: &mut usize, n: &mut usize) {
    while *frame < frames.len() {
        let left = frames[*frame].as_ref().len() - *offset;
        if *n < left {
            *offset += *n;
            break;
        }
        *n -= left;
        *frame += 1;
        *offset = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `chunk` bytes per call and records the calls.
    struct Trickle {
        out: Vec<u8>,
        chunk: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<io::Result<usize>> {
            self.calls += 1;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.chunk - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == self.chunk {
                    break;
                }
            }
            std::task::Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn every_byte_leaves_in_order_whatever_the_socket_takes() {
        let frames: Vec<Vec<u8>> = (0..200u8).map(|i| vec![i; 1 + i as usize % 7]).collect();
        let all: Vec<u8> = frames.concat();
        for chunk in [1, 3, 10, 1 << 20] {
            let mut w = Trickle { out: Vec::new(), chunk, calls: 0 };
            write_all(&mut w, &frames).await.unwrap();
            assert_eq!(w.out, all, "chunk {chunk}");
            if chunk == 1 << 20 {
                assert_eq!(w.calls, 200usize.div_ceil(MAX_FRAMES), "one call per batch of frames");
            }
        }
    }

    #[tokio::test]
    async fn the_rest_of_a_partly_written_batch_leaves_from_where_the_first_write_stopped() {
        let frames: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1 + i as usize % 5]).collect();
        let all: Vec<u8> = frames.concat();
        for done in [0, 1, 2, 7, all.len() - 1, all.len()] {
            let mut w = Trickle { out: all[..done].to_vec(), chunk: 4, calls: 0 };
            write_rest(&mut w, &frames, done).await.unwrap();
            assert_eq!(w.out, all, "{done} bytes written before");
        }
    }
}
