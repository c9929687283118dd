//! Wakes requests holding `?wait=N` the moment their execution changes,
//! instead of polling the database in a loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use uuid::Uuid;

#[derive(Default)]
pub struct Waiters {
    watched: Mutex<HashMap<Uuid, Weak<Notify>>>,
}

impl Waiters {
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

    /// Tells everyone waiting on these executions to look again.
    pub fn wake(&self, ids: &[Uuid]) {
        let watched = self.watched.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for id in ids {
            if let Some(notify) = watched.get(id).and_then(Weak::upgrade) {
                notify.notify_waiters();
            }
        }
    }
}
