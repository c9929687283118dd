//! Outbound pacing, pure: a sender's messages per second, and Meta's pair
//! rate to one recipient (one message per 6 s, bursts of up to 45 borrowed
//! from future quota — reference §3), plus 131056's back-off. "Not yet" is an
//! answer with a wait, so the worker reschedules the job instead of sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::retry::pair_backoff;

const PAIR_INTERVAL: Duration = Duration::from_secs(6);
const PAIR_BURST: f64 = 45.0;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(capacity: f64, now: Instant) -> Self {
        Self { tokens: capacity, updated: now }
    }

    /// Refills to `now`; the wait until one token is there, zero when it is.
    fn wait(&mut self, per_second: f64, capacity: f64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(capacity);
        self.updated = now;
        if self.tokens >= 1.0 { Duration::ZERO } else { Duration::from_secs_f64((1.0 - self.tokens) / per_second) }
    }
}

#[derive(Default)]
struct Pair {
    bucket: Option<Bucket>,
    refusals: u32,
    backoff_until: Option<Instant>,
}

pub struct Pacer {
    sender_per_second: f64,
    senders: HashMap<String, Bucket>,
    pairs: HashMap<(String, String), Pair>,
}

impl Pacer {
    pub fn new(sender_per_second: u32) -> Self {
        Self { sender_per_second: f64::from(sender_per_second.max(1)), senders: HashMap::new(), pairs: HashMap::new() }
    }

    /// Takes a send slot for `sender` → `recipient`, or says how long to wait.
    /// Both limits must allow it; a refusal takes nothing from either.
    pub fn admit(&mut self, sender: &str, recipient: &str, now: Instant) -> Result<(), Duration> {
        let pair_rate = 1.0 / PAIR_INTERVAL.as_secs_f64();
        let pair = self.pairs.entry((sender.to_owned(), recipient.to_owned())).or_default();
        if let Some(until) = pair.backoff_until.filter(|until| *until > now) {
            return Err(until - now);
        }
        let pair_bucket = pair.bucket.get_or_insert_with(|| Bucket::full(PAIR_BURST, now));
        let pair_wait = pair_bucket.wait(pair_rate, PAIR_BURST, now);
        let capacity = self.sender_per_second;
        let sender_bucket = self.senders.entry(sender.to_owned()).or_insert_with(|| Bucket::full(capacity, now));
        let sender_wait = sender_bucket.wait(capacity, capacity, now);
        let wait = pair_wait.max(sender_wait);
        if wait > Duration::ZERO {
            return Err(wait);
        }
        pair_bucket.tokens -= 1.0;
        sender_bucket.tokens -= 1.0;
        Ok(())
    }

    /// Meta answered 131056 for this pair: back off 4^n s, n counting refusals.
    pub fn pair_refused(&mut self, sender: &str, recipient: &str, now: Instant) -> Duration {
        let pair = self.pairs.entry((sender.to_owned(), recipient.to_owned())).or_default();
        let wait = pair_backoff(pair.refusals);
        pair.refusals += 1;
        pair.backoff_until = Some(now + wait);
        wait
    }

    /// Meta took a message for this pair: its refusal count starts over.
    pub fn pair_accepted(&mut self, sender: &str, recipient: &str) {
        if let Some(pair) = self.pairs.get_mut(&(sender.to_owned(), recipient.to_owned())) {
            pair.refusals = 0;
            pair.backoff_until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_is_held_to_its_messages_per_second() {
        let mut pacer = Pacer::new(5);
        let start = Instant::now();
        let admitted = (0..20).filter(|i| pacer.admit("s", &format!("r{i}"), start).is_ok()).count();
        assert_eq!(admitted, 5, "one second's worth at once");
        let wait = pacer.admit("s", "r99", start).unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        assert!(pacer.admit("s", "r99", start + Duration::from_millis(200)).is_ok());
        assert!(pacer.admit("other", "r1", start).is_ok(), "senders are paced apart");
    }

    #[test]
    fn a_burst_to_one_recipient_is_spread_at_one_per_six_seconds() {
        let mut pacer = Pacer::new(1000);
        let start = Instant::now();
        let mut now = start;
        let mut sent_at = Vec::new();
        while sent_at.len() < 50 {
            match pacer.admit("s", "r", now) {
                Ok(()) => sent_at.push(now - start),
                Err(wait) => now += wait,
            }
        }
        assert!(sent_at[44] < Duration::from_millis(100), "Meta's burst of 45 goes at once");
        let gaps: Vec<u64> = sent_at[45..].windows(2).map(|w| (w[1] - w[0]).as_millis() as u64).collect();
        assert!(gaps.iter().all(|gap| (5_990..=6_010).contains(gap)), "then one per 6 s: {gaps:?}");
        assert!(pacer.admit("s", "another", now).is_ok(), "other recipients are unaffected");
    }

    #[test]
    fn pair_refusals_back_off_four_to_the_n_and_reset_on_acceptance() {
        let mut pacer = Pacer::new(80);
        let now = Instant::now();
        assert_eq!(pacer.pair_refused("s", "r", now), Duration::from_secs(1));
        assert_eq!(pacer.pair_refused("s", "r", now), Duration::from_secs(4));
        assert_eq!(pacer.admit("s", "r", now + Duration::from_secs(1)).unwrap_err(), Duration::from_secs(3));
        assert!(pacer.admit("s", "other", now).is_ok());
        pacer.pair_accepted("s", "r");
        assert!(pacer.admit("s", "r", now).is_ok());
        assert_eq!(pacer.pair_refused("s", "r", now), Duration::from_secs(1), "the count starts over");
    }
}
