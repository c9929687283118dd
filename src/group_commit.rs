//! Group commit: items that arrive while one batch is being written wait
//! and go together in the next, a few round trips (and one fsync) for the
//! lot instead of a few for each. The delivery worker's send outcomes and
//! the event dispatcher's attempt outcomes are written this way.

use std::sync::Mutex;

pub struct Batches<T> {
    pending: Mutex<Pending<T>>,
}

struct Pending<T> {
    items: Vec<T>,
    /// Someone is taking batches: a new item waits for them.
    leading: bool,
}

impl<T> Default for Batches<T> {
    fn default() -> Self {
        Self { pending: Mutex::new(Pending { items: Vec::new(), leading: false }) }
    }
}

impl<T> Batches<T> {
    /// Adds an item; true when no one is taking batches, so the caller
    /// must: call `next` and write each batch until it gives none.
    pub fn push(&self, item: T) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.items.push(item);
        !std::mem::replace(&mut pending.leading, true)
    }

    /// Everything waiting, for the one taking batches; `None`, and the lead
    /// given up, when nothing is.
    pub fn next(&self) -> Option<Vec<T>> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.items.is_empty() {
            pending.leading = false;
            return None;
        }
        Some(std::mem::take(&mut pending.items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_caller_leads_and_takes_what_the_others_add() {
        let batches = Batches::default();
        assert!(batches.push(1), "the first item's caller leads");
        assert!(!batches.push(2) && !batches.push(3), "later ones wait for the leader");
        assert_eq!(batches.next(), Some(vec![1, 2, 3]));
        assert!(!batches.push(4), "still led until the leader finds nothing");
        assert_eq!(batches.next(), Some(vec![4]));
        assert_eq!(batches.next(), None);
        assert!(batches.push(5), "after that, the next caller leads");
    }
}
