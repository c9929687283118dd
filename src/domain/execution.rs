//! An execution's status and the one rule for moving it: forward only.
//! Meta's events arrive out of order and more than once; a `read` before its
//! `delivered` is normal, and neither may ever undo a later status. The store
//! applies a move as a compare-and-set from `allowed_before(next)`, so two
//! replicas racing to move one execution cannot both succeed, nor go back.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Queued,
    Sending,
    /// The Graph API took the message and returned its wamid; not yet delivered.
    Accepted,
    Sent,
    Delivered,
    Read,
    /// The recipient answered the message.
    Replied,
    Failed,
    /// A mandatory execution got no reply before its deadline.
    Expired,
    Cancelled,
}

impl ExecutionStatus {
    pub const ALL: [ExecutionStatus; 10] = [
        Self::Queued,
        Self::Sending,
        Self::Accepted,
        Self::Sent,
        Self::Delivered,
        Self::Read,
        Self::Replied,
        Self::Failed,
        Self::Expired,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Accepted => "accepted",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Replied => "replied",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(input: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == input)
    }

    /// Replied, failed, expired and cancelled end an execution; nothing moves it after.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Failed | Self::Expired | Self::Cancelled | Self::Replied)
    }

    fn rank(self) -> u8 {
        match self {
            Self::Queued => 0,
            Self::Sending => 1,
            Self::Accepted => 2,
            Self::Sent => 3,
            Self::Delivered => 4,
            Self::Read => 5,
            Self::Replied => 6,
            Self::Failed | Self::Expired | Self::Cancelled => 7,
        }
    }

    /// Whether an execution in this status may move to `next`. Ends are final;
    /// a failure, expiry or cancellation may end any execution still open.
    pub fn may_become(self, next: Self) -> bool {
        !self.is_terminal() && next.rank() > self.rank()
    }

    /// The statuses an execution may be in to move to `next`: the
    /// compare-and-set's expected previous states, empty when none can.
    pub fn allowed_before(next: Self) -> Vec<Self> {
        Self::ALL.into_iter().filter(|status| status.may_become(next)).collect()
    }

    /// The statuses that end an execution.
    pub fn ended() -> impl Iterator<Item = Self> {
        Self::ALL.into_iter().filter(|status| status.is_terminal())
    }

    /// Whether a waiter's `?wait` is over: a mandatory execution settles when it
    /// ends; any other once Meta accepted it (or it ended).
    pub fn settles(self, mandatory: bool) -> bool {
        if mandatory { self.is_terminal() } else { self.is_terminal() || self.rank() >= Self::Accepted.rank() }
    }
}

#[cfg(test)]
mod tests {
    use super::ExecutionStatus::*;

    #[test]
    fn statuses_move_forward_only() {
        assert!(Queued.may_become(Sending));
        assert!(Accepted.may_become(Read), "read may come without delivered");
        assert!(!Read.may_become(Delivered), "a late delivered does not undo read");
        assert!(!Delivered.may_become(Delivered), "a repeated event changes nothing");
        assert!(Sent.may_become(Failed));
        assert!(Read.may_become(Replied));
        for end in [Failed, Expired, Cancelled, Replied] {
            for next in super::ExecutionStatus::ALL {
                assert!(!end.may_become(next), "{end:?} is final");
            }
        }
    }

    /// Every (from, to) pair: `x` where the move is allowed.
    #[test]
    fn the_transition_table() {
        let table = [
            //           queued sending accepted sent delivered read replied failed expired cancelled
            ("queued", "  .      x       x       x     x       x     x       x      x       x   "),
            ("sending", "  .      .       x       x     x       x     x       x      x       x   "),
            ("accepted", " .      .       .       x     x       x     x       x      x       x   "),
            ("sent", "     .      .       .       .     x       x     x       x      x       x   "),
            ("delivered", ".      .       .       .     .       x     x       x      x       x   "),
            ("read", "     .      .       .       .     .       .     x       x      x       x   "),
            ("replied", "  .      .       .       .     .       .     .       .      .       .   "),
            ("failed", "   .      .       .       .     .       .     .       .      .       .   "),
            ("expired", "  .      .       .       .     .       .     .       .      .       .   "),
            ("cancelled", ".      .       .       .     .       .     .       .      .       .   "),
        ];
        for (from, row) in table {
            let from = super::ExecutionStatus::parse(from).unwrap();
            let marks: Vec<bool> = row.split_whitespace().map(|mark| mark == "x").collect();
            assert_eq!(marks.len(), 10);
            for (next, allowed) in super::ExecutionStatus::ALL.into_iter().zip(marks) {
                assert_eq!(from.may_become(next), allowed, "{from:?} -> {next:?}");
                assert_eq!(super::ExecutionStatus::allowed_before(next).contains(&from), allowed, "{from:?} -> {next:?}");
            }
        }
        assert_eq!(super::ExecutionStatus::allowed_before(Sending), [Queued]);
        assert_eq!(super::ExecutionStatus::ended().collect::<Vec<_>>(), [Replied, Failed, Expired, Cancelled]);
    }

    #[test]
    fn settling_depends_on_mandatory() {
        assert!(Accepted.settles(false) && Failed.settles(false));
        assert!(!Sending.settles(false));
        assert!(!Read.settles(true) && Replied.settles(true) && Expired.settles(true) && Cancelled.settles(true));
    }
}
