//! How a committed change reaches whoever waits for it on this replica: a
//! `?wait` request watching one execution, the delivery worker waiting for
//! jobs, the event dispatcher, or what the store remembers of actions,
//! senders and templates, which it must forget.
//! The store emits signals from the transaction that made the change and
//! delivers them here after its commit; on PostgreSQL they also go to every
//! other replica through `NOTIFY`, whose listener there delivers them in turn.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// The execution changed: its status, wamid or reply.
    Execution(Uuid),
    /// A job became due (stored, released or rescheduled sooner).
    Jobs,
    /// An event was stored for delivery to an endpoint.
    Events,
    /// An action, a sender or its templates changed: what replicas remember
    /// of them is forgotten.
    Configuration,
}

impl Signal {
    /// The wire form in a PostgreSQL notification's payload.
    pub fn encode(self) -> String {
        match self {
            Signal::Execution(id) => format!("e:{id}"),
            Signal::Jobs => "j".into(),
            Signal::Events => "v".into(),
            // "t": first sent for templates alone, and still understood by replicas of that version.
            Signal::Configuration => "t".into(),
        }
    }

    pub fn decode(text: &str) -> Option<Self> {
        match text {
            "j" => Some(Signal::Jobs),
            "v" => Some(Signal::Events),
            "t" => Some(Signal::Configuration),
            _ => text.strip_prefix("e:").and_then(|id| Uuid::parse_str(id).ok()).map(Signal::Execution),
        }
    }
}

#[derive(Default)]
pub struct Signals {
    watched: Mutex<HashMap<Uuid, Weak<Notify>>>,
    jobs: Arc<Notify>,
    events: Arc<Notify>,
    /// Raised by every change to actions, senders or templates heard of.
    configuration: AtomicU64,
}

impl Signals {
    /// The notifier of one execution, shared by everyone waiting on it.
    pub fn watch(&self, id: Uuid) -> Arc<Notify> {
        let mut watched = self.watched.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        watched.retain(|_, notify| notify.strong_count() > 0);
        if let Some(notify) = watched.get(&id).and_then(Weak::upgrade) {
            return notify;
        }
        let notify = Arc::new(Notify::new());
        watched.insert(id, Arc::downgrade(&notify));
        notify
    }

    /// The executions someone on this replica waits for.
    pub fn watched(&self) -> Vec<Uuid> {
        let watched = self.watched.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        watched.iter().filter(|(_, notify)| notify.strong_count() > 0).map(|(id, _)| *id).collect()
    }

    /// What the delivery worker waits on between passes.
    pub fn jobs(&self) -> Arc<Notify> {
        Arc::clone(&self.jobs)
    }

    /// What the event dispatcher waits on between passes.
    pub fn events(&self) -> Arc<Notify> {
        Arc::clone(&self.events)
    }

    /// Which change to actions, senders and templates this replica heard of
    /// last: what it remembers of them is current while this stays the same.
    pub fn configuration_generation(&self) -> u64 {
        self.configuration.load(Ordering::Acquire)
    }

    pub fn deliver(&self, signals: &[Signal]) {
        let watched = self.watched.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for signal in signals {
            match signal {
                Signal::Execution(id) => {
                    if let Some(notify) = watched.get(id).and_then(Weak::upgrade) {
                        notify.notify_waiters();
                    }
                }
                Signal::Jobs => self.jobs.notify_one(),
                Signal::Events => self.events.notify_one(),
                Signal::Configuration => {
                    self.configuration.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Signals may have been missed (a reconnect): everyone looks again.
    pub fn wake_all(&self) {
        let watched = self.watched.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for notify in watched.values().filter_map(Weak::upgrade) {
            notify.notify_waiters();
        }
        self.jobs.notify_one();
        self.events.notify_one();
        self.configuration.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_survive_their_wire_form() {
        let id = Uuid::now_v7();
        for signal in [Signal::Execution(id), Signal::Jobs, Signal::Events, Signal::Configuration] {
            assert_eq!(Signal::decode(&signal.encode()), Some(signal));
        }
        assert_eq!(Signal::decode("e:not-a-uuid"), None);
        assert_eq!(Signal::decode("x"), None);
    }

    #[tokio::test]
    async fn a_signal_wakes_the_watchers_of_its_execution_only() {
        let signals = Signals::default();
        let (watched, other) = (Uuid::now_v7(), Uuid::now_v7());
        let notify = signals.watch(watched);
        let woken = notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        signals.deliver(&[Signal::Execution(other)]);
        assert!(futures_util::poll!(woken.as_mut()).is_pending());
        signals.deliver(&[Signal::Execution(watched)]);
        assert!(futures_util::poll!(woken.as_mut()).is_ready());
    }
}
