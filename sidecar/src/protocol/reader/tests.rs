//! The frame reader against scripted streams: how frames are cut out of reads, how many reads they take, and
//! every limit of a single frame read.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::*;
use crate::buffer::Pool;

/// A stream that delivers the given chunks, each over as many reads as the reader's buffer needs, then ends
/// (or, with `hang`, never answers again). Counts the reads that returned bytes: the system calls a socket
/// would have taken.
struct Script {
    chunks: VecDeque<Vec<u8>>,
    hang: bool,
    reads: Arc<AtomicUsize>,
}

impl AsyncRead for Script {
    fn poll_read(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let Some(chunk) = self.chunks.front_mut() else {
            return if self.hang { Poll::Pending } else { Poll::Ready(Ok(())) };
        };
        let n = chunk.len().min(buf.remaining());
        buf.put_slice(&chunk[..n]);
        chunk.drain(..n);
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

fn limits(max: usize) -> Limits {
    Limits { max, min: 8, idle: Duration::from_secs(10), partial: Duration::from_secs(5) }
}

fn reader(chunks: Vec<Vec<u8>>, hang: bool) -> (FrameReader<Script>, Arc<AtomicUsize>, Arc<Pool>) {
    let reads = Arc::new(AtomicUsize::new(0));
    let pool = Pool::new(1 << 24);
    let script = Script { chunks: chunks.into(), hang, reads: reads.clone() };
    (FrameReader::new(script, pool.clone(), limits(1 << 24)), reads, pool)
}

/// A frame of `body` bytes, each byte its offset in the frame (mod 251) so misplaced bytes show.
fn frame(body: usize, seed: u8) -> Vec<u8> {
    let mut f = (body as i32).to_be_bytes().to_vec();
    f.extend((0..body).map(|i| (i % 251) as u8 ^ seed));
    f
}

async fn all(r: &mut FrameReader<Script>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(f) = r.next().await.unwrap() {
        out.push(f.to_vec());
    }
    out
}

#[tokio::test]
async fn many_frames_come_out_of_one_read() {
    let frames: Vec<_> = (0..20).map(|i| frame(100 + i, i as u8)).collect();
    let (mut r, reads, _) = reader(vec![frames.concat()], false);
    assert_eq!(all(&mut r).await, frames);
    assert_eq!(reads.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn frames_split_across_reads_are_joined() {
    let frames: Vec<_> = (0..10).map(|i| frame(8 + 37 * i, i as u8)).collect();
    for cut in [1, 3, 5, 64, 1000] {
        let chunks = frames.concat().chunks(cut).map(<[u8]>::to_vec).collect();
        let (mut r, _, _) = reader(chunks, false);
        assert_eq!(all(&mut r).await, frames, "cut every {cut} bytes");
    }
}

#[tokio::test]
async fn a_frame_larger_than_the_buffer_is_read_straight_into_its_own() {
    let frames = [frame(200_000, 1), frame(10, 2)];
    let (mut r, reads, _) = reader(vec![frames.concat()], false);
    let big = r.next().await.unwrap().unwrap();
    assert_eq!(big.capacity(), 1 << 18, "a buffer of its size class");
    assert_eq!(&big[..], &frames[0][..]);
    // The first 64 KiB through the read buffer, the rest in one read bounded to the frame.
    assert_eq!(reads.load(Ordering::Relaxed), 2);
    assert_eq!(all(&mut r).await, &frames[1..]);
}

#[tokio::test]
async fn a_frame_cut_by_the_end_of_the_buffer_moves_to_its_own() {
    // 70 frames of 1004 bytes: the 66th starts 276 bytes before the end of the first 64 KiB read.
    let frames: Vec<_> = (0..70).map(|i| frame(1000, i as u8)).collect();
    let (mut r, reads, _) = reader(vec![frames.concat()], false);
    assert_eq!(all(&mut r).await, frames);
    assert_eq!(reads.load(Ordering::Relaxed), 3);
    // A length prefix cut the same way.
    let mut frames: Vec<_> = (0..65).map(|i| frame(1000, i as u8)).collect();
    frames.push(frame(270, 9));
    frames.push(frame(100, 7));
    let (mut r, _, _) = reader(vec![frames.concat()], false);
    assert_eq!(all(&mut r).await, frames);
}

#[tokio::test]
async fn bad_lengths_are_refused_with_a_reason() {
    let cases: [(&[u8], &str); 6] = [
        (&[0xff, 0xff, 0xff, 0xf0, 1, 2], "negative_length"),
        (&[0x7f, 0xff, 0xff, 0xff], "oversized"),
        (&[0x01, 0, 0, 1], "oversized"),
        (&[0, 0, 0, 3, 1, 2, 3], "too_short"),
        (&[0, 0, 0, 40, 0, 0, 0, 3], "truncated"),
        (&[0, 0], "truncated"),
    ];
    for (bytes, reason) in cases {
        let (mut r, _, _) = reader(vec![bytes.to_vec()], false);
        let e = r.next().await.unwrap_err();
        assert_eq!(e.reason(), Some(reason), "{bytes:?}: {e}");
    }
    let (mut r, _, _) = reader(vec![], false);
    assert!(r.next().await.unwrap().is_none(), "a close between frames is clean");
}

#[tokio::test]
async fn a_bad_frame_after_good_ones_in_the_same_read_comes_after_them() {
    let good = frame(20, 0);
    let (mut r, _, _) = reader(vec![[&good[..], &[0xff, 0, 0, 0]].concat()], false);
    assert_eq!(&r.next().await.unwrap().unwrap()[..], &good[..]);
    assert_eq!(r.next().await.unwrap_err().reason(), Some("negative_length"));
}

#[tokio::test]
async fn a_large_frame_cut_mid_way_is_truncated() {
    let big = frame(100_000, 3);
    let (mut r, _, _) = reader(vec![big[..80_000].to_vec()], false);
    assert_eq!(r.next().await.unwrap_err().reason(), Some("truncated"));
}

#[tokio::test(start_paused = true)]
async fn silence_between_frames_is_idle_and_within_one_is_a_partial_timeout() {
    let (mut r, _, _) = reader(vec![frame(8, 0)], true);
    assert!(r.next().await.unwrap().is_some());
    let e = r.next().await.unwrap_err();
    assert!(matches!(e, FrameError::Idle(_)), "{e}");
    assert_eq!(e.reason(), None);
    for started in [vec![0, 0], vec![0, 0, 0, 40, 0, 0], frame(100_000, 0)[..70_000].to_vec()] {
        let (mut r, _, _) = reader(vec![started], true);
        assert_eq!(r.next().await.unwrap_err().reason(), Some("partial_timeout"));
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_holds_no_buffer() {
    let (mut r, _, pool) = reader(vec![frame(8, 0)], true);
    let f = r.next().await.unwrap().unwrap();
    drop(f);
    assert!(tokio::time::timeout(Duration::from_secs(1), r.next()).await.is_err());
    assert_eq!(pool.in_use_bytes(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_read_loses_nothing() {
    let (mut tx, rx) = tokio::io::duplex(1 << 20);
    let pool = Pool::new(1 << 24);
    let mut r = FrameReader::new(rx, pool, limits(1 << 24));
    let frames = [frame(150_000, 5), frame(30, 6)];
    let bytes = frames.concat();
    // Cancelled with a length prefix half in, then with the large frame half in.
    for part in [&bytes[..2], &bytes[2..100_000]] {
        tx.write_all(part).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(10), r.next()).await.is_err());
    }
    tx.write_all(&bytes[100_000..]).await.unwrap();
    for f in frames {
        assert_eq!(&r.next().await.unwrap().unwrap()[..], &f[..]);
    }
}

#[tokio::test]
async fn a_large_frame_that_arrived_whole_leaves_in_the_read_buffer() {
    let frames = [frame(20_000, 1), frame(100, 2), frame(9_000, 3)];
    let (mut r, reads, _) = reader(vec![frames.concat()], false);
    let first = r.next().await.unwrap().unwrap();
    assert_eq!(first.capacity(), READ_BYTES, "not copied out");
    assert_eq!(&first[..], &frames[0][..]);
    assert_eq!(all(&mut r).await, &frames[1..]);
    assert_eq!(reads.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn with_a_budget_a_frame_is_not_read_on_until_its_bytes_are_reserved() {
    use crate::budget::{Budget, Share};
    let frames: Vec<_> = vec![frame(300_000, 1), frame(300_000, 2), frame(100, 3)];
    for cut in [100, 1 << 20] {
        let chunks = frames.concat().chunks(cut).map(<[u8]>::to_vec).collect();
        let (r, reads, _) = reader(chunks, false);
        let global = Budget::new(1 << 20);
        let share = Share::new(global.clone(), 600_000, None);
        let mut r = r.with_budget(share.clone());
        let first = r.next().await.unwrap().unwrap();
        assert_eq!(first.charged(), Pool::footprint(300_004));
        assert_eq!(share.held(), first.charged());
        // The second frame does not fit beside the first in the connection's share: no byte of its body is read.
        let before = reads.load(Ordering::Relaxed);
        assert!(tokio::time::timeout(Duration::from_millis(50), r.next()).await.is_err(), "cut {cut}");
        assert!(reads.load(Ordering::Relaxed) - before <= 1, "cut {cut}: read on while waiting");
        drop(first);
        let second =
            tokio::time::timeout(Duration::from_secs(5), r.next()).await.expect("room again").unwrap().unwrap();
        assert_eq!(&second[..], &frames[1][..], "cut {cut}");
        let third = tokio::time::timeout(Duration::from_secs(5), r.next())
            .await
            .expect("fits beside the second")
            .unwrap()
            .unwrap();
        assert_eq!(&third[..], &frames[2][..]);
        drop((second, third));
        assert_eq!((share.held(), global.reserved()), (0, 0), "every charge given back");
    }
}

#[tokio::test]
async fn a_buffered_frame_comes_without_a_read_and_only_if_its_bytes_fit_now() {
    use crate::budget::{Budget, Share};
    let frames: Vec<_> = vec![frame(100, 1), frame(100, 2), frame(20_000, 3), frame(100, 4)];
    let (r, reads, _) = reader(vec![frames.concat()], false);
    let global = Budget::new(1 << 20);
    // Room for the first three, not for the fourth beside them.
    let share = Share::new(global.clone(), 2 * Pool::footprint(104) + Pool::footprint(20_004), None);
    let mut r = r.with_budget(share.clone());
    assert!(r.next_buffered().unwrap().is_none(), "nothing read yet: no frame, and no read made");
    assert_eq!(reads.load(Ordering::Relaxed), 0);
    let first = r.next().await.unwrap().unwrap();
    assert_eq!(&first[..], &frames[0][..]);
    let second = r.next_buffered().unwrap().expect("already read");
    assert_eq!(&second[..], &frames[1][..]);
    assert_eq!(share.held(), first.charged() + second.charged());
    let third = r.next_buffered().unwrap().expect("fits the share");
    assert_eq!(&third[..], &frames[2][..]);
    // The fourth does not fit beside the third: it is not handed out (nor reserved) until there is room.
    assert!(r.next_buffered().unwrap().is_none());
    assert_eq!(share.held(), first.charged() + second.charged() + third.charged());
    drop(third);
    let fourth = r.next_buffered().unwrap().expect("room again");
    assert_eq!(&fourth[..], &frames[3][..]);
    assert_eq!(reads.load(Ordering::Relaxed), 1, "one read for all four");
    drop((first, second, fourth));
    assert_eq!((share.held(), global.reserved()), (0, 0));
}
