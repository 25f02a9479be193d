use std::time::Duration;

use super::*;

async fn pending<F: std::future::Future>(f: F) -> Option<F::Output> {
    tokio::time::timeout(Duration::from_millis(30), f).await.ok()
}

#[tokio::test]
async fn reservations_wait_for_room_and_are_served_in_order() {
    let b = Budget::new(100);
    assert!(!b.reserve(60).await, "fits: no wait");
    let (b1, b2) = (b.clone(), b.clone());
    let big = tokio::spawn(async move { b1.reserve(50).await });
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    // 10 bytes would fit, but a waiter is first in line.
    assert!(!b.try_reserve(10));
    let small = tokio::spawn(async move { b2.reserve(10).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!big.is_finished() && !small.is_finished());
    b.release(60);
    assert!(big.await.unwrap(), "the large waiter went first");
    assert!(small.await.unwrap());
    assert_eq!(b.reserved(), 60);
}

#[tokio::test]
async fn a_reservation_beyond_the_limit_runs_alone() {
    let b = Budget::new(100);
    assert!(b.try_reserve(10));
    assert!(pending(b.reserve(500)).await.is_none());
    b.release(10);
    assert!(pending(b.reserve(500)).await.is_some(), "granted once nothing else is held");
    assert_eq!(b.reserved(), 500);
    assert!(!b.try_reserve(1));
}

#[tokio::test]
async fn a_waiter_that_gives_up_leaves_the_line() {
    let b = Budget::new(100);
    assert!(b.try_reserve(100));
    assert!(pending(b.reserve(80)).await.is_none(), "dropped while waiting");
    let b2 = b.clone();
    let next = tokio::spawn(async move { b2.reserve(20).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    b.release(30);
    next.await.unwrap();
    assert_eq!(b.reserved(), 90, "the abandoned 80 were never taken");
}

#[tokio::test]
async fn up_to_takes_what_fits_and_waits_only_for_the_floor() {
    let b = Budget::new(100);
    assert!(b.try_reserve(70));
    assert_eq!(b.reserve_up_to(50, 10).await, (30, false));
    assert!(pending(b.reserve_up_to(50, 10)).await.is_none());
    b.release(15);
    assert_eq!(b.reserve_up_to(50, 10).await.0, 15);
}

#[tokio::test]
async fn a_connection_waits_for_its_own_share_and_charges_go_back_to_both() {
    let global = Budget::new(1000);
    let a = Share::new(global.clone(), 100, None);
    let b = Share::new(global.clone(), 100, None);
    let first = a.reserve(80).await;
    assert!(pending(a.reserve(40)).await.is_none(), "past its share");
    let other = b.reserve(90).await;
    assert_eq!(global.reserved(), 170);
    drop(first);
    let second = pending(a.reserve(40)).await.expect("room in its share again");
    assert_eq!((a.held(), global.reserved()), (40, 130));
    drop((second, other));
    assert_eq!(global.reserved(), 0);
    // One frame larger than the share still goes when the connection holds nothing else.
    let big = pending(a.reserve(300)).await.expect("alone in its share");
    assert_eq!(big.bytes(), 300);
}

#[tokio::test]
async fn a_short_budget_lowers_what_a_fetch_reserves() {
    let global = Budget::new(1000);
    let gate = Share::new(global.clone(), 600, None);
    let _other = Share::new(global.clone(), 1000, None).reserve(700).await;
    let credit = gate.reserve_up_to(500, 64).await;
    assert_eq!(credit.bytes(), 300, "what the global budget had left");
    let mut credit = credit;
    credit.resize(400);
    assert_eq!((gate.held(), global.reserved()), (400, 1100), "a larger response is forced in");
    credit.resize(10);
    assert_eq!(global.reserved(), 710);
}

#[tokio::test]
async fn paused_time_is_counted() {
    let counter = prometheus::Counter::new("paused", "paused").unwrap();
    let global = Budget::new(100);
    let gate = Share::new(global.clone(), 100, Some(counter.clone()));
    let held = gate.reserve(100).await;
    let g = gate.clone();
    let waiting = tokio::spawn(async move { g.reserve(50).await.bytes() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(held);
    assert_eq!(waiting.await.unwrap(), 50);
    assert!(counter.get() >= 0.04, "{}", counter.get());
}

#[test]
fn cgroup_limits_parse() {
    assert_eq!(parse_limit("268435456\n"), Some(256 << 20));
    assert_eq!(parse_limit("max\n"), None);
    assert_eq!(parse_limit("9223372036854771712"), None, "v1 unlimited");
}
