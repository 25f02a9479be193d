//! The memory budget: bytes of frames in flight, reserved before they are allocated and released when they have
//! been written out.
//!
//! One global [`Budget`] (the process's share of its container's memory) and one per client connection (its
//! share of the global one). A client connection reserves a request's bytes from both as soon as the frame's
//! length prefix is read, before the body is; when either has no room the connection stops reading from its
//! client — the client waits, nothing is dropped, and other connections are affected only through the global
//! budget. The reservation travels with the frame's buffer ([`crate::buffer::Buf`]) and is released when the
//! buffer is dropped after its last write. A Fetch also reserves room for its response before it is sent
//! ([`Credit`]), so that reading the response never waits: the upstream reader, shared by many clients, must
//! never block on one client's budget.
//!
//! Invariants:
//! - Waiters are served in order: while anyone waits, nobody takes bytes past them, so a large reservation is
//!   not starved by a stream of small ones.
//! - A reservation larger than the whole limit is granted once nothing else is reserved (it then runs alone),
//!   so no frame the size limits accept waits forever.
//! - Forced charges (a response larger than its credit, already read) may take the budget past its limit; the
//!   next reservations wait until it is back under.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// A byte budget: a limit, what is reserved, and the reservations waiting for room, oldest first.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    reserved: AtomicUsize,
    /// Set while `queue` is not empty: reservations then take the slow path, behind the waiters.
    waiting: AtomicBool,
    queue: Mutex<VecDeque<Waiter>>,
    /// Where reserved bytes are reported (the global budget's gauge); `None` for connection shares.
    gauge: Option<prometheus::IntGauge>,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    bytes: usize,
    grant: oneshot::Sender<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit: limit.max(1),
            reserved: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
            queue: Mutex::default(),
            gauge: None,
        })
    }

    /// A budget that reports its reserved bytes on `gauge`.
    pub fn with_gauge(limit: usize, gauge: prometheus::IntGauge) -> Arc<Budget> {
        let budget = Budget::new(limit);
        let mut b = Arc::try_unwrap(budget).unwrap_or_else(|_| unreachable!("just created"));
        b.gauge = Some(gauge);
        Arc::new(b)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn reserved(&self) -> usize {
        self.reserved.load(Ordering::SeqCst)
    }

    /// Bytes that can be reserved right now without waiting.
    pub fn available(&self) -> usize {
        self.limit.saturating_sub(self.reserved())
    }

    fn report(&self) {
        if let Some(g) = &self.gauge {
            g.set(self.reserved.load(Ordering::Relaxed) as i64);
        }
    }

    /// Takes `bytes` if they fit (or nothing at all is reserved); never waits.
    fn take(&self, bytes: usize) -> bool {
        let mut current = self.reserved.load(Ordering::SeqCst);
        loop {
            if current != 0 && current.saturating_add(bytes) > self.limit {
                return false;
            }
            match self.reserved.compare_exchange_weak(current, current + bytes, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// Takes up to `want` bytes (at least `floor`, or `want` when nothing is reserved) without waiting; the
    /// bytes taken, or `None`.
    fn take_up_to(&self, want: usize, floor: usize) -> Option<usize> {
        let mut current = self.reserved.load(Ordering::SeqCst);
        loop {
            let got = if current == 0 { want } else { want.min(self.limit.saturating_sub(current)) };
            if got < floor.min(want) {
                return None;
            }
            match self.reserved.compare_exchange_weak(current, current + got, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Some(got),
                Err(now) => current = now,
            }
        }
    }

    /// Reserves `bytes` now if no one waits and they fit.
    pub fn try_reserve(&self, bytes: usize) -> bool {
        let ok = !self.waiting.load(Ordering::SeqCst) && self.take(bytes);
        if ok {
            self.report();
        }
        ok
    }

    /// Reserves `bytes`, waiting in line for room. Returns whether it had to wait. Cancel-safe: a reservation
    /// granted to a dropped future is given back.
    pub async fn reserve(self: &Arc<Self>, bytes: usize) -> bool {
        if self.try_reserve(bytes) {
            return false;
        }
        static IDS: AtomicU64 = AtomicU64::new(0);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let (grant, granted) = oneshot::channel();
        {
            let mut queue = lock(&self.queue);
            queue.push_back(Waiter { id, bytes, grant });
            self.waiting.store(true, Ordering::SeqCst);
            // A release that came just before we queued saw nobody waiting: serve the queue ourselves.
            self.serve(&mut queue);
        }
        let mut guard = Queued { budget: self, id, bytes, granted: Some(granted) };
        if let Some(granted) = guard.granted.as_mut() {
            let _ = granted.await;
        }
        guard.granted = None;
        true
    }

    /// Reserves up to `want` bytes: what fits now, but at least `floor` (waiting for that much if need be).
    /// Returns the bytes reserved and whether it waited.
    pub async fn reserve_up_to(self: &Arc<Self>, want: usize, floor: usize) -> (usize, bool) {
        if !self.waiting.load(Ordering::SeqCst)
            && let Some(got) = self.take_up_to(want, floor)
        {
            self.report();
            return (got, false);
        }
        let floor = floor.min(want);
        let waited = self.reserve(floor).await;
        (floor, waited)
    }

    /// Charges `bytes` whatever the limit (bytes already allocated, such as a response larger than its credit).
    pub fn force(&self, bytes: usize) {
        self.reserved.fetch_add(bytes, Ordering::SeqCst);
        self.report();
    }

    /// Gives `bytes` back and lets the waiters that now fit go, in order.
    pub fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.reserved.fetch_sub(bytes, Ordering::SeqCst);
        self.report();
        if self.waiting.load(Ordering::SeqCst) {
            self.serve(&mut lock(&self.queue));
        }
    }

    /// Grants the waiters at the head of the queue that fit (called with the queue locked).
    fn serve(&self, queue: &mut VecDeque<Waiter>) {
        while let Some(head) = queue.front() {
            if head.grant.is_closed() {
                queue.pop_front();
                continue;
            }
            if !self.take(head.bytes) {
                break;
            }
            let Some(head) = queue.pop_front() else { break };
            if head.grant.send(()).is_err() {
                // Its future was dropped between the check and the send: the bytes go back.
                self.reserved.fetch_sub(head.bytes, Ordering::SeqCst);
            }
        }
        self.report();
        if queue.is_empty() {
            self.waiting.store(false, Ordering::SeqCst);
        }
    }
}

/// A place in a budget's queue; leaving it (the future dropped) removes the waiter, or gives back a grant that
/// came too late.
struct Queued<'a> {
    budget: &'a Arc<Budget>,
    id: u64,
    bytes: usize,
    granted: Option<oneshot::Receiver<()>>,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let Some(mut granted) = self.granted.take() else { return };
        let mut queue = lock(&self.budget.queue);
        if let Some(i) = queue.iter().position(|w| w.id == self.id) {
            queue.remove(i);
            self.budget.serve(&mut queue);
        } else if granted.try_recv().is_ok() {
            drop(queue);
            self.budget.release(self.bytes);
        }
    }
}

/// Bytes held in a connection's share and the global budget; given back to both when dropped.
#[derive(Debug)]
pub struct Charge {
    budgets: Arc<Pair>,
    bytes: usize,
}

impl Charge {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Makes this charge exactly `bytes`: gives back what is above, forces what is beyond (the bytes exist).
    pub fn resize(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.budgets.release(self.bytes - bytes);
        } else if bytes > self.bytes {
            self.budgets.force(bytes - self.bytes);
        }
        self.bytes = bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budgets.release(self.bytes);
    }
}

/// Room reserved for a response before its request is sent (a Fetch's `max_bytes`): the upstream reader turns
/// it into the response buffer's charge without waiting.
pub type Credit = Charge;

/// A connection's share and the global budget it draws from, with the connection's pause accounting.
#[derive(Debug)]
pub struct Pair {
    pub share: Arc<Budget>,
    pub global: Arc<Budget>,
    paused: Option<prometheus::Counter>,
}

impl Pair {
    fn release(&self, bytes: usize) {
        self.share.release(bytes);
        self.global.release(bytes);
    }

    fn force(&self, bytes: usize) {
        self.share.force(bytes);
        self.global.force(bytes);
    }
}

/// What a client connection reserves through: its share, then the global budget.
#[derive(Clone, Debug)]
pub struct Share(Arc<Pair>);

impl Share {
    /// A connection's share of `share_bytes` of `global`; time spent waiting adds to `paused`.
    pub fn new(global: Arc<Budget>, share_bytes: usize, paused: Option<prometheus::Counter>) -> Share {
        Share(Arc::new(Pair { share: Budget::new(share_bytes), global, paused }))
    }

    /// Reserves `bytes` from the share and then the global budget, waiting for each in line; the caller has
    /// stopped reading its client meanwhile.
    pub async fn reserve(&self, bytes: usize) -> Charge {
        if let Some(charge) = self.try_reserve(bytes) {
            return charge;
        }
        let started = Instant::now();
        let mut waited = self.0.share.reserve(bytes).await;
        // Dropped while waiting for the global budget: the share's bytes go back with it.
        let share = HeldInShare(&self.0.share, bytes);
        waited |= self.0.global.reserve(bytes).await;
        std::mem::forget(share);
        if waited {
            self.account(started.elapsed());
        }
        Charge { budgets: self.0.clone(), bytes }
    }

    /// Reserves `bytes` from both if they fit now and nobody waits; never waits (nor reads the clock).
    pub fn try_reserve(&self, bytes: usize) -> Option<Charge> {
        if !self.0.share.try_reserve(bytes) {
            return None;
        }
        if !self.0.global.try_reserve(bytes) {
            self.0.share.release(bytes);
            return None;
        }
        Some(Charge { budgets: self.0.clone(), bytes })
    }

    /// Reserves up to `want` bytes (at least `floor`) from both: as much as fits now.
    pub async fn reserve_up_to(&self, want: usize, floor: usize) -> Charge {
        let started = Instant::now();
        let (got, mut waited) = self.0.share.reserve_up_to(want, floor).await;
        let share = HeldInShare(&self.0.share, got);
        let (global, w) = self.0.global.reserve_up_to(got, floor).await;
        std::mem::forget(share);
        waited |= w;
        self.0.share.release(got - global);
        if waited {
            self.account(started.elapsed());
        }
        Charge { budgets: self.0.clone(), bytes: global }
    }

    /// A charge of `bytes` taken whatever the limits (bytes that exist already).
    pub fn force(&self, bytes: usize) -> Charge {
        if bytes > 0 {
            self.0.force(bytes);
        }
        Charge { budgets: self.0.clone(), bytes }
    }

    /// Bytes this connection holds: its frames not yet written and the room reserved for its responses.
    pub fn held(&self) -> usize {
        self.0.share.reserved()
    }

    /// Waits until the connection holds nothing (its last frames written), at most `within`.
    pub async fn drained(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.held() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    fn account(&self, waited: Duration) {
        if let Some(c) = &self.0.paused {
            c.inc_by(waited.as_secs_f64());
        }
    }
}

/// A share reservation given back if the global one is never had (the future dropped while waiting).
struct HeldInShare<'a>(&'a Arc<Budget>, usize);

impl Drop for HeldInShare<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// The default global budget: half the container's memory limit when one is set, else 512 MiB.
pub fn default_limit() -> usize {
    match cgroup_memory_limit() {
        Some(limit) => (limit / 2) as usize,
        None => 512 << 20,
    }
}

/// The memory limit of this process's cgroup: cgroup v2 `memory.max`, else v1 `memory.limit_in_bytes`; `None`
/// when unlimited or unknown.
pub fn cgroup_memory_limit() -> Option<u64> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    parse_limit(&v2.or_else(v1)?)
}

/// A cgroup memory limit file's value: "max" (v2) and the v1 "no limit" value (a page-rounded i64::MAX) are
/// unlimited.
fn parse_limit(text: &str) -> Option<u64> {
    let n: u64 = text.trim().parse().ok()?;
    (n < (1 << 60)).then_some(n)
}

#[cfg(test)]
mod tests;
