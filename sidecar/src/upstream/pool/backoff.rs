//! Reconnect backoff of one broker's pool: after a failed dial, further dials wait, doubling up to a cap, so a
//! broker that is down is not hammered by every client's reconnect (and the log does not grow with each).

use std::time::{Duration, Instant};

/// Wait after the first failure (Kafka clients' reconnect.backoff.ms is 50 ms).
const FIRST: Duration = Duration::from_millis(100);
/// Longest wait between dials (Kafka clients' reconnect.backoff.max.ms is 1 s).
const MAX: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct Backoff {
    /// No dial before this instant.
    until: Option<Instant>,
    /// The wait the next failure sets.
    next: Duration,
    /// Why the last dial failed, repeated to the callers turned away meanwhile.
    last: String,
}

impl Backoff {
    /// `Some(why)` while dials must wait.
    pub fn wait(&self, now: Instant) -> Option<String> {
        let until = self.until.filter(|u| *u > now)?;
        Some(format!("reconnecting in {:?} after: {}", until - now, self.last))
    }

    pub fn failed(&mut self, now: Instant, why: String) -> Duration {
        let delay = self.next.max(FIRST);
        self.until = Some(now + delay);
        self.next = (delay * 2).min(MAX);
        self.last = why;
        delay
    }

    pub fn succeeded(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_reset_on_success() {
        let (mut b, t) = (Backoff::default(), Instant::now());
        assert!(b.wait(t).is_none());
        let delays: Vec<_> = (0..7).map(|_| b.failed(t, "refused".into())).collect();
        assert_eq!(delays[..3], [FIRST, FIRST * 2, FIRST * 4]);
        assert_eq!(delays[6], MAX);
        assert!(b.wait(t).is_some_and(|w| w.contains("refused")));
        assert!(b.wait(t + MAX).is_none());
        b.succeeded();
        assert!(b.wait(t).is_none());
        assert_eq!(b.failed(t, "again".into()), FIRST);
    }
}
