//! Outbound pacing, pure: a sender's messages per second, and Meta's pair
//! rate to one recipient (one message per 6 s, bursts of up to 45 borrowed
//! from future quota — reference §3). Each limit is a GCRA: one number per
//! key, the theoretical arrival time (`tat`), which the store keeps in a row
//! shared by every replica. "Not yet" is an answer with a slot, so the job is
//! rescheduled, never slept on; a backlog costs O(1) work per send.

use std::time::Duration;

/// Meta's pair rate: one message per 6 s on average…
const PAIR_INTERVAL: Duration = Duration::from_secs(6);
/// …after a burst of up to 45.
const PAIR_BURST: u32 = 45;

/// A rate with the burst it tolerates, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    interval_us: i64,
    tolerance_us: i64,
}

impl Rate {
    fn new(interval: Duration, burst: u32) -> Self {
        let interval_us = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX).max(1);
        Self { interval_us, tolerance_us: interval_us.saturating_mul(i64::from(burst.max(1) - 1)) }
    }

    /// `count` a second, with a burst of at most one second's worth.
    pub fn per_second(count: u32) -> Self {
        let count = count.max(1);
        Self::new(Duration::from_secs(1) / count, count)
    }

    /// Meta's limit on messages from one sender to one recipient.
    pub fn pair() -> Self {
        Self::new(PAIR_INTERVAL, PAIR_BURST)
    }

    /// The send slot of one message asked for at `now_us` against the key's
    /// `tat` (0 for a key never used): the first time at or after `now_us`
    /// the rate lets it go (`now_us` itself when it may go at once), and the
    /// key's `tat` once it is counted. A message put off keeps its slot, so
    /// the next one put off is given the slot after.
    pub fn slot(self, tat: i64, now_us: i64) -> (i64, i64) {
        (now_us.max(tat - self.tolerance_us), tat.max(now_us) + self.interval_us)
    }
}

/// The limits every send is held to.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub sender: Rate,
    pub pair: Rate,
}

impl Pacing {
    pub fn new(sender_per_second: u32) -> Self {
        Self { sender: Rate::per_second(sender_per_second), pair: Rate::pair() }
    }
}

/// The pacing row of a sender.
pub fn sender_key(sender: &str) -> String {
    format!("s:{sender}")
}

/// The pacing row of a sender's messages to one recipient.
pub fn pair_key(sender: &str, recipient: &str) -> String {
    format!("p:{sender}:{recipient}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    /// The slots of `count` messages asked for at once, in µs from 0.
    fn slots(rate: Rate, count: usize) -> Vec<i64> {
        let mut tat = 0;
        (0..count)
            .map(|_| {
                let (at, next) = rate.slot(tat, 0);
                tat = next;
                at
            })
            .collect()
    }

    #[test]
    fn a_sender_is_held_to_its_messages_per_second() {
        let slots = slots(Rate::per_second(5), 8);
        assert_eq!(slots, [0, 0, 0, 0, 0, 200_000, 400_000, 600_000], "one second's worth at once, then one each 200 ms");
        assert_eq!(Rate::per_second(5).slot(0, 0), (0, 200_000), "another key starts full");
    }

    #[test]
    fn a_burst_to_one_recipient_is_spread_at_one_per_six_seconds() {
        let times = slots(Rate::pair(), 50);
        assert!(times[..45].iter().all(|at| *at == 0), "Meta's burst of 45 goes at once");
        let gaps: Vec<i64> = times[44..].windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|gap| *gap == 6 * SECOND), "then one per 6 s: {gaps:?}");
    }

    #[test]
    fn a_message_asked_for_at_its_slot_goes_then() {
        let rate = Rate::per_second(5);
        let (mut tat, mut at) = (0, 0);
        for _ in 0..6 {
            (at, tat) = rate.slot(tat, 0);
        }
        assert_eq!(at, 200_000);
        // A slot kept moved `tat` already: asked for again then, the next one is later.
        assert_eq!(rate.slot(tat, at).0, 400_000);
    }

    #[test]
    fn a_quiet_key_refills_to_its_burst_and_no_more() {
        let rate = Rate::per_second(10);
        let mut tat = 0;
        for _ in 0..30 {
            tat = rate.slot(tat, tat).1;
        }
        let after = tat + 60 * SECOND;
        let mut at_once = 0;
        for _ in 0..30 {
            let (at, next) = rate.slot(tat, after);
            if at == after {
                at_once += 1;
                tat = next;
            }
        }
        assert_eq!(at_once, 10, "a minute idle gives back one second's worth, not a minute's");
    }

    #[test]
    fn keys_name_the_sender_and_the_pair() {
        assert_eq!(sender_key("650"), "s:650");
        assert_eq!(pair_key("650", "1281"), "p:650:1281");
    }
}
