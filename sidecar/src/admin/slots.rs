//! Connection slots of one admin listener: a fixed number of connections at once, and a new connection displaces
//! the oldest one that has not yet sent a complete request head.
//!
//! Why displace instead of making the newcomer wait: the admin port is reachable from the pod network, and a
//! plain cap lets anyone who holds the cap with half-sent requests starve kubelet's probes until the header-read
//! timeout frees a slot (the probes time out first and the pod is restarted). Only a connection that sent part of
//! its request and then stopped, or sent nothing for [`SILENT_GRACE`], is displaced: a probe sends its whole
//! request right after connecting, so it is answered before it could become a candidate, even when its connection
//! is first read before its bytes arrive, or not read at all while a flood of newer connections is accepted. A
//! connection whose request is being answered is never displaced.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How long a connection that sent nothing at all keeps its slot against newcomers: far longer than a probe
/// takes to send its request after connecting, far shorter than the probes' timeout.
pub const SILENT_GRACE: Duration = Duration::from_millis(250);

/// The slots of one listener.
pub struct Slots {
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    /// Open connections, oldest first.
    open: VecDeque<Entry>,
}

struct Entry {
    id: u64,
    opened: Instant,
    busy: Arc<AtomicBool>,
    waiting: Arc<AtomicBool>,
    displaced: CancellationToken,
}

/// One admitted connection; its slot is free again when dropped.
pub struct Slot {
    id: u64,
    slots: Arc<Slots>,
    /// Set once the connection sent a complete request head: it is then never displaced.
    busy: Arc<AtomicBool>,
    /// Set once part of the request arrived and a read found it incomplete: it may be displaced from then on.
    waiting: Arc<AtomicBool>,
    /// Cancelled when a newer connection took the slot.
    pub displaced: CancellationToken,
}

impl Slots {
    pub fn new(cap: usize) -> Arc<Slots> {
        Arc::new(Slots { cap: cap.max(1), inner: Mutex::default() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection, displacing the oldest one still waiting for its request when all are taken;
    /// `None` when every open connection is being answered or is younger than [`SILENT_GRACE`] without a byte
    /// read (the newcomer is closed; both last milliseconds, so this is rare).
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        self.admit_at(Instant::now())
    }

    fn admit_at(self: &Arc<Self>, now: Instant) -> Option<Slot> {
        let mut inner = self.lock();
        if inner.open.len() >= self.cap {
            let idle = |e: &Entry| {
                !e.busy.load(Ordering::Relaxed)
                    && (e.waiting.load(Ordering::Relaxed) || now.saturating_duration_since(e.opened) >= SILENT_GRACE)
            };
            let oldest_idle = inner.open.iter().position(idle)?;
            if let Some(e) = inner.open.remove(oldest_idle) {
                e.displaced.cancel();
            }
        }
        let id = inner.next;
        inner.next += 1;
        let (busy, waiting) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let displaced = CancellationToken::new();
        let entry =
            Entry { id, opened: now, busy: busy.clone(), waiting: waiting.clone(), displaced: displaced.clone() };
        inner.open.push_back(entry);
        Some(Slot { id, slots: self.clone(), busy, waiting, displaced })
    }

    /// Connections holding a slot now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }
}

impl Slot {
    /// Marks the connection as answering a request.
    pub fn busy(&self) {
        self.busy.store(true, Ordering::Relaxed);
    }

    /// Marks the connection as having sent part of its request and still waiting for the rest.
    pub fn waiting(&self) {
        self.waiting.store(true, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.slots.lock();
        if let Some(at) = inner.open.iter().position(|e| e.id == self.id) {
            inner.open.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_listener_displaces_its_oldest_idle_connection_never_a_busy_one() {
        let slots = Slots::new(3);
        let a = slots.admit().unwrap();
        let b = slots.admit().unwrap();
        let c = slots.admit().unwrap();
        [&a, &b, &c].iter().for_each(|s| s.waiting());
        a.busy();
        let d = slots.admit().unwrap();
        d.waiting();
        assert!(!a.displaced.is_cancelled(), "a connection being answered stays");
        assert!(b.displaced.is_cancelled(), "the oldest idle one makes room");
        assert!(!c.displaced.is_cancelled() && !d.displaced.is_cancelled());
        assert_eq!(slots.open(), 3);
        drop(b);
        assert_eq!(slots.open(), 3, "a displaced connection no longer counts");
        drop(c);
        assert_eq!(slots.open(), 2);
        let _e = slots.admit().unwrap();
        assert!(!d.displaced.is_cancelled(), "room left: nobody is displaced");
    }

    #[test]
    fn a_connection_not_read_yet_is_never_displaced() {
        let slots = Slots::new(2);
        let fresh = slots.admit().unwrap();
        let read = slots.admit().unwrap();
        read.waiting();
        let _newcomer = slots.admit().unwrap();
        assert!(read.displaced.is_cancelled(), "the one read and still waiting makes room");
        assert!(!fresh.displaced.is_cancelled(), "a connection not read yet keeps its slot");
        assert!(slots.admit().is_none(), "nothing left to displace: the next newcomer is closed");
    }

    #[test]
    fn a_connection_that_sends_nothing_is_displaced_once_its_grace_is_over() {
        let slots = Slots::new(1);
        let start = Instant::now();
        let silent = slots.admit_at(start).unwrap();
        assert!(slots.admit_at(start + SILENT_GRACE / 2).is_none(), "within its grace it keeps the slot");
        assert!(!silent.displaced.is_cancelled());
        let _newcomer = slots.admit_at(start + SILENT_GRACE).unwrap();
        assert!(silent.displaced.is_cancelled(), "silent past its grace: it makes room");
    }

    #[test]
    fn with_every_connection_busy_a_newcomer_is_refused() {
        let slots = Slots::new(2);
        let held: Vec<_> = (0..2).map(|_| slots.admit().unwrap()).collect();
        held.iter().for_each(Slot::waiting);
        held.iter().for_each(Slot::busy);
        assert!(slots.admit().is_none());
        drop(held);
        assert_eq!(slots.open(), 0);
        assert!(slots.admit().is_some());
    }
}
