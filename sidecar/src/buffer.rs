//! A bounded, size-classed pool of frame buffers, shared by every connection and kept across reloads.
//!
//! Frames are read straight into pooled `BytesMut`s and written out from them, so steady traffic allocates
//! nothing. Idle buffers are capped per class and in total; anything above the cap is freed. Frames above the
//! largest class get an exact allocation, so a buffer never holds much more memory than its frame and the memory
//! budget ([`crate::budget`]) can charge a frame its buffer's capacity: a buffer carries its [`Charge`] and gives
//! it back when dropped, after its last write.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::{Bytes, BytesMut};

use crate::budget::Charge;

/// Capacities of the pooled classes; larger frames get an exact, unpooled allocation. 64 KiB is the
/// per-connection read buffer of [`crate::protocol::reader`].
const CLASSES: [usize; 5] = [1 << 9, 1 << 12, 1 << 15, 1 << 16, 1 << 18];

/// The shared pool; clone the `Arc` to hand it around.
pub struct Pool {
    classes: [Mutex<Vec<BytesMut>>; CLASSES.len()],
    /// Upper bound on idle bytes kept per class, so one burst of huge frames cannot pin memory.
    max_idle_per_class: usize,
    idle_bytes: AtomicI64,
    in_use_bytes: AtomicI64,
}

impl Pool {
    /// A pool keeping at most `max_idle_bytes` of idle buffers in total.
    pub fn new(max_idle_bytes: usize) -> Arc<Self> {
        Arc::new(Pool {
            classes: Default::default(),
            max_idle_per_class: max_idle_bytes / CLASSES.len(),
            idle_bytes: AtomicI64::new(0),
            in_use_bytes: AtomicI64::new(0),
        })
    }

    /// The capacity [`Pool::get`] gives a buffer for `len` bytes: what a frame of that size costs in memory.
    pub fn footprint(len: usize) -> usize {
        CLASSES.iter().copied().find(|&c| c >= len).unwrap_or(len)
    }

    /// An empty buffer with room for at least `len` bytes.
    pub fn get(self: &Arc<Self>, len: usize) -> Buf {
        let buf = match CLASSES.iter().position(|&c| c >= len) {
            Some(i) => {
                let popped = lock(&self.classes[i]).pop();
                match popped {
                    Some(b) => {
                        self.idle_bytes.fetch_sub(b.capacity() as i64, Ordering::Relaxed);
                        b
                    }
                    None => BytesMut::with_capacity(CLASSES[i]),
                }
            }
            None => BytesMut::with_capacity(len),
        };
        self.in_use_bytes.fetch_add(buf.capacity() as i64, Ordering::Relaxed);
        Buf { inner: buf, pool: self.clone(), charge: None }
    }

    fn give_back(&self, mut buf: BytesMut) {
        let cap = buf.capacity() as i64;
        self.in_use_bytes.fetch_sub(cap, Ordering::Relaxed);
        // Only exact class sizes come back: a buffer that grew or shrank would break the size promise of get().
        let Some(i) = CLASSES.iter().position(|&c| c == buf.capacity()) else { return };
        buf.clear();
        let mut class = lock(&self.classes[i]);
        if (class.len() + 1) * CLASSES[i] <= self.max_idle_per_class.max(CLASSES[i]) {
            class.push(buf);
            self.idle_bytes.fetch_add(cap, Ordering::Relaxed);
        }
    }

    /// Bytes held by idle buffers waiting for reuse.
    pub fn idle_bytes(&self) -> i64 {
        self.idle_bytes.load(Ordering::Relaxed)
    }

    /// Bytes held by buffers currently carrying frames.
    pub fn in_use_bytes(&self) -> i64 {
        self.in_use_bytes.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A buffer on loan from the pool; it goes back when dropped, and its memory-budget charge with it.
pub struct Buf {
    inner: BytesMut,
    pool: Arc<Pool>,
    /// The budget bytes this frame holds until it has been written out.
    charge: Option<Charge>,
}

impl Buf {
    /// Makes the buffer hold `charge` until it is dropped (replacing any it held).
    pub fn set_charge(&mut self, charge: Charge) {
        self.charge = Some(charge);
    }

    /// The charge the buffer holds, taken out (to carry it on, or give it back early).
    pub fn take_charge(&mut self) -> Option<Charge> {
        self.charge.take()
    }

    /// Budget bytes the buffer holds.
    pub fn charged(&self) -> usize {
        self.charge.as_ref().map_or(0, Charge::bytes)
    }

    /// Lends the bytes out as `Bytes` (for decoding, which slices instead of copying) and takes them back.
    /// If a slice escaped `f`, the buffer cannot be reused and a copy is kept instead.
    pub fn with_frozen<R>(&mut self, f: impl FnOnce(&Bytes) -> R) -> R {
        let frozen = std::mem::take(&mut self.inner).freeze();
        let out = f(&frozen);
        self.inner = match frozen.try_into_mut() {
            Ok(b) => b,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        out
    }

    /// Replaces the contents, keeping the pooled allocation when it fits.
    pub fn replace_with(&mut self, bytes: &[u8]) {
        self.inner.clear();
        self.inner.extend_from_slice(bytes);
    }
}

impl Deref for Buf {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        &self.inner
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.inner
    }
}

impl AsRef<[u8]> for Buf {
    fn as_ref(&self) -> &[u8] {
        &self.inner
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.inner));
        // The charge (if any) is released after the memory is back in the pool or freed.
        self.charge.take();
    }
}

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buf({} bytes)", self.inner.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_counted() {
        let pool = Pool::new(1 << 20);
        let mut b = pool.get(100);
        b.extend_from_slice(b"hello");
        assert_eq!(b.capacity(), 512);
        assert_eq!(pool.in_use_bytes(), 512);
        drop(b);
        assert_eq!(pool.in_use_bytes(), 0);
        assert_eq!(pool.idle_bytes(), 512);
        let b = pool.get(300);
        assert!(b.is_empty());
        assert_eq!(pool.idle_bytes(), 0);
    }

    #[test]
    fn idle_bytes_are_bounded_and_huge_frames_unpooled() {
        let pool = Pool::new(6 * 4096);
        let bufs: Vec<_> = (0..10).map(|_| pool.get(4000)).collect();
        drop(bufs);
        assert_eq!(pool.idle_bytes(), 4096);
        drop(pool.get(100 << 20));
        assert_eq!(pool.idle_bytes(), 4096);
        assert_eq!(pool.in_use_bytes(), 0);
    }

    #[test]
    fn frozen_loans_come_back_without_copy() {
        let pool = Pool::new(1 << 20);
        let mut b = pool.get(10);
        b.extend_from_slice(b"0123456789");
        let ptr = b.as_ptr();
        let n = b.with_frozen(|bytes| bytes.slice(2..4).len());
        assert_eq!(n, 2);
        assert_eq!(b.as_ptr(), ptr);
        assert_eq!(b.capacity(), 512);
    }
}
