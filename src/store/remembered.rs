//! What a replica remembers of its configuration (actions, senders and
//! templates), which the hot paths read on every create and execute. It is
//! current while the replica's configuration generation (`Signals`) stays
//! the same: every change to actions, senders or templates raises it, on the
//! replica that made it as it commits and on the others as its notification
//! arrives, and so does a listener's reconnection. A read that a change
//! overtook is not remembered.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Most look-ups remembered; all are forgotten when one more comes.
const KEPT: usize = 4096;

pub(super) struct Remembered<K, V> {
    known: Mutex<(u64, HashMap<K, V>)>,
}

impl<K, V> Default for Remembered<K, V> {
    fn default() -> Self {
        Self { known: Mutex::new((0, HashMap::new())) }
    }
}

impl<K: Eq + Hash, V: Clone> Remembered<K, V> {
    /// What `read` answers for `key`, or what it answered before if the
    /// configuration `generation` has not moved since. The answer is kept
    /// only when `keep` allows it and no change arrived while it was read.
    pub(super) async fn recall_or_read<E, Read: Future<Output = Result<V, E>>>(
        &self,
        key: K,
        generation: impl Fn() -> u64,
        read: impl FnOnce() -> Read,
        keep: impl Fn(&V) -> bool,
    ) -> Result<V, E> {
        let read_at = generation();
        if let Some(known) = self.recall(&key, read_at) {
            return Ok(known);
        }
        let found = read().await?;
        if keep(&found) {
            self.remember(key, found.clone(), read_at, generation());
        }
        Ok(found)
    }

    /// What was read under this `generation`, if anything.
    fn recall(&self, key: &K, generation: u64) -> Option<V> {
        let known = self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if known.0 != generation {
            return None;
        }
        known.1.get(key).cloned()
    }

    /// Keeps what was read at generation `read_at` if nothing changed by `now`.
    fn remember(&self, key: K, value: V, read_at: u64, now: u64) {
        if read_at != now {
            return;
        }
        let mut known = self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if known.0 != now || known.1.len() >= KEPT {
            *known = (now, HashMap::new());
        }
        known.1.insert(key, value);
    }
}
