//! Events to the voice platform (CONTRACT §10): what happened to an
//! execution, a template or a sender, posted to the tenant's endpoints and
//! signed as the Standard Webhooks specification says. The store writes each
//! event in the transaction of the change it reports; the dispatcher
//! delivers it, at least once, with the same id on every retry.

pub mod dispatcher;
pub mod signature;
pub mod target;

use std::time::Duration;

use serde::Serialize;

use crate::domain::ExecutionStatus;

pub use dispatcher::Dispatcher;

/// The types of event an endpoint may subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum EventType {
    #[serde(rename = "execution.accepted")]
    ExecutionAccepted,
    #[serde(rename = "execution.sent")]
    ExecutionSent,
    #[serde(rename = "execution.delivered")]
    ExecutionDelivered,
    #[serde(rename = "execution.read")]
    ExecutionRead,
    #[serde(rename = "execution.replied")]
    ExecutionReplied,
    #[serde(rename = "execution.failed")]
    ExecutionFailed,
    #[serde(rename = "execution.expired")]
    ExecutionExpired,
    #[serde(rename = "execution.cancelled")]
    ExecutionCancelled,
    #[serde(rename = "template.status_changed")]
    TemplateStatusChanged,
    #[serde(rename = "sender.unhealthy")]
    SenderUnhealthy,
    /// Sent by `_test` only, whatever the endpoint subscribed to.
    #[serde(rename = "webhook.test")]
    WebhookTest,
}

impl EventType {
    /// The types an endpoint can subscribe to (`webhook.test` goes to any).
    pub const SUBSCRIBABLE: [EventType; 10] = [
        Self::ExecutionAccepted,
        Self::ExecutionSent,
        Self::ExecutionDelivered,
        Self::ExecutionRead,
        Self::ExecutionReplied,
        Self::ExecutionFailed,
        Self::ExecutionExpired,
        Self::ExecutionCancelled,
        Self::TemplateStatusChanged,
        Self::SenderUnhealthy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExecutionAccepted => "execution.accepted",
            Self::ExecutionSent => "execution.sent",
            Self::ExecutionDelivered => "execution.delivered",
            Self::ExecutionRead => "execution.read",
            Self::ExecutionReplied => "execution.replied",
            Self::ExecutionFailed => "execution.failed",
            Self::ExecutionExpired => "execution.expired",
            Self::ExecutionCancelled => "execution.cancelled",
            Self::TemplateStatusChanged => "template.status_changed",
            Self::SenderUnhealthy => "sender.unhealthy",
            Self::WebhookTest => "webhook.test",
        }
    }

    pub fn parse_subscribable(input: &str) -> Option<Self> {
        Self::SUBSCRIBABLE.into_iter().find(|kind| kind.as_str() == input)
    }

    /// The event an execution reaching `status` reports; none for the
    /// statuses of actiond's own queue (queued, sending).
    pub fn of_status(status: ExecutionStatus) -> Option<Self> {
        match status {
            ExecutionStatus::Queued | ExecutionStatus::Sending => None,
            ExecutionStatus::Accepted => Some(Self::ExecutionAccepted),
            ExecutionStatus::Sent => Some(Self::ExecutionSent),
            ExecutionStatus::Delivered => Some(Self::ExecutionDelivered),
            ExecutionStatus::Read => Some(Self::ExecutionRead),
            ExecutionStatus::Replied => Some(Self::ExecutionReplied),
            ExecutionStatus::Failed => Some(Self::ExecutionFailed),
            ExecutionStatus::Expired => Some(Self::ExecutionExpired),
            ExecutionStatus::Cancelled => Some(Self::ExecutionCancelled),
        }
    }
}

/// The template statuses that stop sends and so make an event.
pub const TEMPLATE_STATUSES_REPORTED: [&str; 3] = ["PAUSED", "DISABLED", "REJECTED"];

/// Waits after each failed attempt: 7 retries, 8 attempts in all.
const RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];
pub const MAX_ATTEMPTS: u32 = RETRY_SCHEDULE.len() as u32 + 1;
/// An endpoint failing without a success for this long is disabled.
const FAILING_LIMIT: Duration = Duration::from_secs(5 * 24 * 3600);

#[derive(Debug, Clone, Copy)]
pub struct EventSettings {
    /// Lifts the SSRF rules: `http://`, loopback and private targets allowed.
    pub allow_local: bool,
    /// Multiplies the retry schedule and the failing limit (tests shrink them).
    pub retry_scale: f64,
}

impl EventSettings {
    /// The wait after failed attempt `attempt` (from 1), or `None` after the last.
    pub fn retry_after(&self, attempt: u32) -> Option<Duration> {
        let wait = RETRY_SCHEDULE.get(usize::try_from(attempt).ok()?.checked_sub(1)?)?;
        Some(wait.mul_f64(self.retry_scale))
    }

    pub fn failing_limit(&self) -> Duration {
        FAILING_LIMIT.mul_f64(self.retry_scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_gives_eight_attempts_and_scales() {
        let normal = EventSettings { allow_local: false, retry_scale: 1.0 };
        let waits: Vec<u64> = (1..=8).filter_map(|attempt| normal.retry_after(attempt)).map(|wait| wait.as_secs()).collect();
        assert_eq!(waits, [5, 300, 1800, 7200, 18_000, 36_000, 36_000]);
        assert_eq!(MAX_ATTEMPTS, 8);
        let fast = EventSettings { allow_local: false, retry_scale: 0.001 };
        assert_eq!(fast.retry_after(1), Some(Duration::from_millis(5)));
        assert_eq!(fast.retry_after(0), None);
        assert_eq!(fast.failing_limit(), Duration::from_millis(432_000));
    }

    #[test]
    fn every_reported_status_has_its_type_and_queue_statuses_none() {
        for status in ExecutionStatus::ALL {
            let kind = EventType::of_status(status);
            assert_eq!(kind.is_none(), matches!(status, ExecutionStatus::Queued | ExecutionStatus::Sending));
            if let Some(kind) = kind {
                assert_eq!(kind.as_str(), format!("execution.{}", status.as_str()));
                assert_eq!(EventType::parse_subscribable(kind.as_str()), Some(kind));
            }
        }
        assert_eq!(EventType::parse_subscribable("webhook.test"), None);
    }
}
