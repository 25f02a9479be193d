//! Whether a cluster answers at all: a cluster of several brokers is reachable while any one of them answers, so
//! losing one broker (a rolling restart, a crash) is not a failover. The broker that answered last is asked first
//! and alone, so a healthy cluster costs one request per probe; the others are asked together once it fails or
//! is slow to answer.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

/// The addresses to ask, each once: the one that answered last, then the configured bootstrap servers, then the
/// brokers the cluster's Metadata named (bootstrap servers may name only some of them, or none still running).
pub fn candidates(last: Option<&str>, bootstrap: &[String], brokers: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(bootstrap.len() + brokers.len() + 1);
    for addr in last.into_iter().chain(bootstrap.iter().map(String::as_str)).chain(brokers.iter().map(String::as_str)) {
        if !addr.is_empty() && !out.iter().any(|a| a == addr) {
            out.push(addr.to_string());
        }
    }
    out
}

/// The first of `candidates` that `ask` finds answering within `timeout`, or `None` when none does. The first
/// candidate is asked alone; the rest are asked together as soon as it fails or has not answered within
/// `hedge`. Questions still open when an answer comes (or the time is up) are dropped.
pub async fn first_answer<F, Fut>(candidates: &[String], hedge: Duration, timeout: Duration, ask: F) -> Option<String>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let (first, rest) = candidates.split_first()?;
    let started = Instant::now();
    let mut asking = JoinSet::new();
    let start = |asking: &mut JoinSet<(String, bool)>, addr: &String| {
        let question = ask(addr.clone());
        let addr = addr.clone();
        asking.spawn(async move { (addr, question.await) });
    };
    start(&mut asking, first);
    let mut waiting = Some(rest);
    loop {
        tokio::select! {
            done = asking.join_next() => match done {
                Some(Ok((addr, true))) => return Some(addr),
                // A refusal (or a question that panicked): nothing to wait for any more.
                Some(_) => {
                    for addr in waiting.take().unwrap_or_default() {
                        start(&mut asking, addr);
                    }
                }
                None => match waiting.take() {
                    Some(rest) if !rest.is_empty() => rest.iter().for_each(|addr| start(&mut asking, addr)),
                    _ => return None,
                },
            },
            _ = tokio::time::sleep_until(started + hedge), if waiting.is_some() => {
                for addr in waiting.take().unwrap_or_default() {
                    start(&mut asking, addr);
                }
            }
            _ = tokio::time::sleep_until(started + timeout) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    fn addrs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Brokers that answer (`true`) or refuse after a delay; an address missing from the map never answers.
    /// Returns the answer and the addresses asked, in order.
    async fn probe(brokers: &[(&str, u64, bool)], candidates: &[&str]) -> (Option<String>, Vec<String>, Duration) {
        let behaviour: HashMap<String, (Duration, bool)> =
            brokers.iter().map(|(a, ms, ok)| (a.to_string(), (Duration::from_millis(*ms), *ok))).collect();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let answer = first_answer(&addrs(candidates), Duration::from_millis(250), Duration::from_secs(1), |addr| {
            asked.lock().unwrap().push(addr.clone());
            let behaviour = behaviour.get(&addr).copied();
            async move {
                match behaviour {
                    Some((delay, ok)) => {
                        tokio::time::sleep(delay).await;
                        ok
                    }
                    None => std::future::pending().await,
                }
            }
        })
        .await;
        let asked = asked.lock().unwrap().clone();
        (answer, asked, started.elapsed())
    }

    #[test]
    fn candidates_put_the_last_answer_first_and_name_every_address_once() {
        let bootstrap = addrs(&["b1:9092", "b2:9092"]);
        let brokers = addrs(&["b1:9092", "b2:9092", "b3:9092", "b4:9092"]);
        assert_eq!(candidates(Some("b3:9092"), &bootstrap, &brokers), ["b3:9092", "b1:9092", "b2:9092", "b4:9092"]);
        assert_eq!(candidates(None, &bootstrap, &[]), ["b1:9092", "b2:9092"]);
        assert_eq!(candidates(Some(""), &[], &addrs(&["b2:9092"])), ["b2:9092"]);
        assert!(candidates(None, &[], &[]).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_first_broker_is_the_only_one_asked() {
        let (answer, asked, _) = probe(&[("b1", 5, true), ("b2", 5, true)], &["b1", "b2", "b3"]).await;
        assert_eq!(answer.as_deref(), Some("b1"));
        assert_eq!(asked, ["b1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn one_dead_broker_of_three_leaves_the_cluster_reachable_without_waiting_for_the_hedge() {
        // b1 refuses at once (connection refused); b2 is gone too; b3 answers.
        let (answer, asked, took) =
            probe(&[("b1", 1, false), ("b2", 1, false), ("b3", 10, true)], &["b1", "b2", "b3"]).await;
        assert_eq!(answer.as_deref(), Some("b3"));
        assert_eq!(asked, ["b1", "b2", "b3"]);
        assert!(took < Duration::from_millis(250), "the others were asked as soon as the first refused: {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_first_broker_is_hedged_and_another_answers_within_the_timeout() {
        // b1 never answers (a stopped process keeps its connections open).
        let (answer, asked, took) = probe(&[("b2", 20, true), ("b3", 30, true)], &["b1", "b2", "b3"]).await;
        assert_eq!(answer.as_deref(), Some("b2"));
        assert_eq!(asked, ["b1", "b2", "b3"]);
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(1), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cluster_is_unreachable_only_when_no_broker_answers() {
        let (answer, asked, took) =
            probe(&[("b1", 1, false), ("b2", 1, false), ("b3", 1, false)], &["b1", "b2", "b3"]).await;
        assert_eq!((answer, asked.len()), (None, 3));
        assert!(took < Duration::from_millis(250), "every refusal is in: no need to wait for the timeout: {took:?}");
        // Hung brokers: no answer by the timeout.
        let (answer, asked, took) = probe(&[], &["b1", "b2"]).await;
        assert_eq!((answer, asked.len(), took), (None, 2, Duration::from_secs(1)));
        // Nothing known to ask.
        assert_eq!(probe(&[], &[]).await.0, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_broker_that_refuses_is_unreachable_at_once() {
        let (answer, asked, took) = probe(&[("b1", 1, false)], &["b1"]).await;
        assert_eq!((answer, asked.len()), (None, 1));
        assert!(took < Duration::from_millis(250), "{took:?}");
    }
}
