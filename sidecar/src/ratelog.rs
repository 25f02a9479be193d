//! Rate-limited warnings: a flood of bad connections or failed requests writes a few log lines that say how many
//! were left out, not one line each (the metrics count every one).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Lets one line through per interval and counts the ones held back.
pub struct Gate {
    interval_ms: u64,
    /// Milliseconds since process start before which lines are held back.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Gate {
    pub const fn every_ms(interval_ms: u64) -> Gate {
        Gate { interval_ms, next_ms: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// `Some(lines held back since the last one written)` when a line may be written now, else `None`.
    pub fn allow(&self) -> Option<u64> {
        let now = now_ms();
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self.next_ms.compare_exchange(next, now + self.interval_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::Gate;

    #[test]
    fn one_line_per_interval_then_the_count_of_those_held_back() {
        let gate = Gate::every_ms(60_000);
        assert_eq!(gate.allow(), Some(0));
        assert_eq!((0..99).filter_map(|_| gate.allow()).count(), 0);
        let short = Gate::every_ms(0);
        assert_eq!(short.allow(), Some(0));
        assert_eq!(short.allow(), Some(0));
        assert_eq!(gate.suppressed.load(std::sync::atomic::Ordering::Relaxed), 99);
    }
}
