//! When to try a failed send again: exponential backoff from the configured
//! first delay, doubling each attempt, with ±20 % jitter so that retries of
//! one outage do not arrive together, and never more than five minutes.

use std::time::Duration;

pub const MAX_DELAY: Duration = Duration::from_secs(300);
const JITTER: f64 = 0.2;

/// The delay before attempt `attempts + 1`, after `attempts` tries.
/// `jitter` is a uniform draw in [-1, 1].
pub fn retry_delay(first: Duration, attempts: u32, jitter: f64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    let base = first.saturating_mul(1 << doublings).min(MAX_DELAY);
    // Capped after the jitter too: the cap bounds the wait itself.
    base.mul_f64(1.0 + JITTER * jitter.clamp(-1.0, 1.0)).min(MAX_DELAY)
}

/// Meta's rule for 131056 (pair rate limit): wait 4^n seconds after the n-th
/// consecutive refusal for that recipient, counting from 0.
pub fn pair_backoff(consecutive_refusals: u32) -> Duration {
    Duration::from_secs(4u64.saturating_pow(consecutive_refusals.min(6))).min(MAX_DELAY * 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_delay_and_caps() {
        let first = Duration::from_secs(1);
        assert_eq!(retry_delay(first, 1, 0.0), Duration::from_secs(1));
        assert_eq!(retry_delay(first, 2, 0.0), Duration::from_secs(2));
        assert_eq!(retry_delay(first, 4, 0.0), Duration::from_secs(8));
        assert_eq!(retry_delay(first, 30, 0.0), MAX_DELAY);
        assert_eq!(retry_delay(first, 30, 1.0), MAX_DELAY, "jitter never lifts a wait past the cap");
        assert_eq!(retry_delay(first, 30, -1.0), Duration::from_secs(240));
        assert_eq!(retry_delay(Duration::from_secs(600), 1, 0.5), MAX_DELAY, "nor does a first delay above it");
        assert_eq!(retry_delay(first, 3, 1.0), Duration::from_millis(4800));
        assert_eq!(retry_delay(first, 3, -1.0), Duration::from_millis(3200));
    }

    #[test]
    fn pair_backoff_is_four_to_the_n() {
        let seconds: Vec<u64> = (0..4).map(|n| pair_backoff(n).as_secs()).collect();
        assert_eq!(seconds, [1, 4, 16, 64]);
    }
}
