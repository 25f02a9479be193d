//! The lane's dial sharing, on virtual time: concurrent callers never queue behind one another's dial.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::*;

#[derive(Default)]
struct Fake {
    closed: AtomicBool,
    retired: AtomicBool,
    clients: AtomicUsize,
}

impl Member for Fake {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
    fn retire(self: &Arc<Self>) {
        self.retired.store(true, Ordering::Relaxed);
    }
}

/// A dial taking `took` that succeeds or fails, counting itself.
fn dial(dials: &Arc<AtomicUsize>, took: Duration, ok: bool) -> impl Future<Output = Result<Arc<Fake>, String>> + use<> {
    let dials = dials.clone();
    async move {
        dials.fetch_add(1, Ordering::Relaxed);
        sleep(took).await;
        if ok { Ok(Arc::new(Fake::default())) } else { Err("refused".into()) }
    }
}

/// The lease rule: the least-claimed connection if it is free or the lane is full.
fn lease(bound: usize) -> impl FnOnce(&[Arc<Fake>]) -> Option<Arc<Fake>> {
    move |conns| {
        let best = conns.iter().min_by_key(|c| c.clients.load(Ordering::Relaxed))?;
        (best.clients.load(Ordering::Relaxed) == 0 || conns.len() >= bound).then(|| best.clone())
    }
}

#[tokio::test(start_paused = true)]
async fn callers_needing_a_connection_share_one_dial_instead_of_queueing() {
    let (lane, dials) = (Arc::new(Lane::<Fake>::default()), Arc::new(AtomicUsize::new(0)));
    let start = Instant::now();
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let (lane, dials) = (lane.clone(), dials.clone());
            tokio::spawn(async move { lane.get(|_| None, dial(&dials, Duration::from_secs(5), true)).await })
        })
        .collect();
    let mut got = Vec::new();
    for c in callers {
        got.push(c.await.unwrap().unwrap());
    }
    assert_eq!(start.elapsed(), Duration::from_secs(5), "all served by the one dial, none after another");
    assert_eq!(dials.load(Ordering::Relaxed), 1);
    assert!(got.iter().all(|c| Arc::ptr_eq(c, &got[0])));
    assert_eq!(lane.conns().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_dial_fails_every_waiter_at_once_and_the_next_caller_dials_again() {
    let (lane, dials) = (Arc::new(Lane::<Fake>::default()), Arc::new(AtomicUsize::new(0)));
    let start = Instant::now();
    let callers: Vec<_> = (0..5)
        .map(|_| {
            let (lane, dials) = (lane.clone(), dials.clone());
            tokio::spawn(async move { lane.get(|_| None, dial(&dials, Duration::from_secs(3), false)).await })
        })
        .collect();
    for c in callers {
        assert_eq!(c.await.unwrap().err().as_deref(), Some("refused"));
    }
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(dials.load(Ordering::Relaxed), 1);
    assert!(lane.get(|_| None, dial(&dials, Duration::ZERO, true)).await.is_ok());
    assert_eq!(dials.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn a_caller_served_by_an_open_connection_does_not_wait_for_a_dial() {
    let (lane, dials) = (Arc::new(Lane::<Fake>::default()), Arc::new(AtomicUsize::new(0)));
    let first = lane.get(|_| None, dial(&dials, Duration::ZERO, true)).await.unwrap();
    let slow = {
        let (lane, dials) = (lane.clone(), dials.clone());
        tokio::spawn(async move { lane.get(|_| None, dial(&dials, Duration::from_secs(60), true)).await })
    };
    sleep(Duration::from_millis(1)).await;
    let start = Instant::now();
    let got = lane.get(|c| c.first().cloned(), dial(&dials, Duration::ZERO, true)).await.unwrap();
    assert!(Arc::ptr_eq(&got, &first));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(slow.await.unwrap().is_ok());
    assert_eq!(dials.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn many_concurrent_leases_stay_within_the_bound() {
    let (lane, dials) = (Arc::new(Lane::<Fake>::default()), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..50)
        .map(|i| {
            let (lane, dials) = (lane.clone(), dials.clone());
            tokio::spawn(async move {
                sleep(Duration::from_millis(i * 7)).await;
                let c = lane.get(lease(3), dial(&dials, Duration::from_millis(100), true)).await?;
                c.clients.fetch_add(1, Ordering::Relaxed);
                Ok::<_, String>(c)
            })
        })
        .collect();
    for c in callers {
        c.await.unwrap().unwrap();
    }
    assert_eq!(lane.conns().len(), 3);
    assert_eq!(dials.load(Ordering::Relaxed), 3);
    // A closed connection leaves the lane and frees its place.
    lane.conns()[0].closed.store(true, Ordering::Relaxed);
    assert_eq!(lane.conns().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_dial_outlives_the_caller_that_gave_up_and_a_late_one_after_retirement_is_retired() {
    let (lane, dials) = (Arc::new(Lane::<Fake>::default()), Arc::new(AtomicUsize::new(0)));
    let gave_up =
        tokio::time::timeout(Duration::from_secs(1), lane.get(|_| None, dial(&dials, Duration::from_secs(2), true)));
    assert!(gave_up.await.is_err());
    sleep(Duration::from_secs(2)).await;
    assert_eq!(lane.conns().len(), 1, "the dial went on and its connection joined the lane");

    let late = {
        let (lane, dials) = (lane.clone(), dials.clone());
        tokio::spawn(async move { lane.get(|_| None, dial(&dials, Duration::from_secs(2), true)).await })
    };
    sleep(Duration::from_millis(1)).await;
    assert_eq!(lane.take().len(), 1);
    let late = late.await.unwrap().unwrap();
    assert!(late.retired.load(Ordering::Relaxed));
    assert!(lane.conns().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_caller_wanting_another_connection_takes_an_open_one_when_the_dial_hangs() {
    let (lane, dials) = (Arc::new(Lane::<Fake>::default()), Arc::new(AtomicUsize::new(0)));
    let first = lane.get(|_| None, dial(&dials, Duration::ZERO, true)).await.unwrap();
    let start = Instant::now();
    let got = lane.get(|_| None, dial(&dials, Duration::from_secs(30), false)).await.unwrap();
    assert!(Arc::ptr_eq(&got, &first), "served by the open connection");
    assert_eq!(start.elapsed(), PATIENCE, "after the patience, not the dial's timeout");
    // A healthy dial within the patience still gives the caller a connection of its own.
    let own = lane.get(|_| None, dial(&dials, Duration::from_millis(10), true));
    sleep(Duration::from_secs(30)).await;
    let own = own.await.unwrap();
    assert!(!Arc::ptr_eq(&own, &first));
}
