//! When each spooled message is due, kept so that finding the due ones costs
//! O(k log n) for k of them rather than a scan and sort of the whole queue.
//!
//! A message is in `by_id` while it is spooled. It is in `by_time` only while it
//! waits: taking it for delivery removes it from `by_time`, and finishing an attempt
//! puts it back with its next time (or removes it entirely).

use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, Clone, Copy)]
struct Due {
    next: u64,
    created: u64,
}

#[derive(Debug, Default)]
pub struct Schedule {
    by_id: HashMap<String, Due>,
    by_time: BTreeSet<(u64, String)>,
    /// created time → how many spooled messages have it (for the oldest-age gauge).
    created: BTreeMap<u64, usize>,
}

impl Schedule {
    /// Adds (or replaces) a waiting message.
    pub fn insert(&mut self, id: &str, next: u64, created: u64) {
        self.remove(id);
        self.by_id.insert(id.to_string(), Due { next, created });
        self.by_time.insert((next, id.to_string()));
        *self.created.entry(created).or_default() += 1;
    }

    /// Forgets a message (delivered, bounced, deleted); whether it was there.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(d) = self.by_id.remove(id) else {
            return false;
        };
        self.by_time.remove(&(d.next, id.to_string()));
        if let Some(n) = self.created.get_mut(&d.created) {
            *n -= 1;
            if *n == 0 {
                self.created.remove(&d.created);
            }
        }
        true
    }

    /// Takes up to `max` messages due at `now`, earliest first; they stop waiting.
    pub fn take_due(&mut self, now: u64, max: usize) -> Vec<String> {
        let mut taken = Vec::new();
        while taken.len() < max {
            match self.by_time.first() {
                Some((next, _)) if *next <= now => {
                    let (_, id) = self.by_time.pop_first().expect("checked");
                    taken.push(id);
                }
                _ => break,
            }
        }
        taken
    }

    /// A taken message waits again, due at `next` (it must still be spooled).
    pub fn requeue(&mut self, id: &str, next: u64) {
        if let Some(d) = self.by_id.get_mut(id) {
            self.by_time.remove(&(d.next, id.to_string()));
            d.next = next;
            self.by_time.insert((next, id.to_string()));
        }
    }

    /// When the earliest waiting message is due.
    pub fn next_due(&self) -> Option<u64> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// Makes every waiting message due now; returns how many are spooled.
    pub fn flush(&mut self) -> usize {
        let waiting: Vec<String> = std::mem::take(&mut self.by_time)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        for id in waiting {
            if let Some(d) = self.by_id.get_mut(&id) {
                d.next = 0;
            }
            self.by_time.insert((0, id));
        }
        self.by_id.len()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// When the oldest spooled message was created.
    pub fn oldest_created(&self) -> Option<u64> {
        self.created.keys().next().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_in_order_taken_once_requeued_removed() {
        let mut s = Schedule::default();
        s.insert("c", 30, 3);
        s.insert("a", 10, 1);
        s.insert("b", 20, 2);
        assert_eq!(s.next_due(), Some(10));
        assert_eq!(s.take_due(15, 10), vec!["a"]);
        // Taken: not due again until requeued, but still spooled.
        assert_eq!(s.take_due(100, 1), vec!["b"]);
        assert_eq!(s.len(), 3);
        assert_eq!(s.next_due(), Some(30));
        s.requeue("a", 40);
        assert_eq!(s.take_due(100, 10), vec!["c", "a"]);
        assert_eq!(s.oldest_created(), Some(1));
        assert!(s.remove("a"));
        assert!(!s.remove("a"));
        assert_eq!(s.oldest_created(), Some(2));
        s.requeue("b", 50);
        s.requeue("c", 60);
        assert_eq!(s.flush(), 2);
        assert_eq!(s.take_due(0, 10), vec!["b", "c"]);
        s.remove("b");
        s.remove("c");
        assert!(s.is_empty() && s.next_due().is_none() && s.oldest_created().is_none());
        // Requeueing something removed meanwhile (deleted) does nothing.
        s.requeue("b", 5);
        assert!(s.is_empty());
    }
}
