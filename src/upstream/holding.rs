//! One budget for every message held whole in memory: passthrough messages
//! gathered for DKIM signing or for Microsoft Graph. Without it, each connection
//! may hold up to the message size limit, and a few clients with many connections
//! could exhaust the machine's memory; with it, a message that does not fit gets a
//! transient `452 4.3.1` and the client tries again later.

use std::sync::{Arc, LazyLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes held at once in the whole process.
pub const BUDGET: usize = 512 * 1024 * 1024;

static GLOBAL: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(BUDGET)));

/// What one held message has taken from the budget; given back when dropped.
pub struct Held {
    budget: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Default for Held {
    fn default() -> Held {
        Held::from(GLOBAL.clone())
    }
}

impl From<Arc<Semaphore>> for Held {
    /// A share of `budget` (a smaller one in tests).
    fn from(budget: Arc<Semaphore>) -> Held {
        Held {
            budget,
            permit: None,
        }
    }
}

impl Held {
    /// Takes `bytes` more; `false` when the budget cannot spare them now.
    pub fn grow(&mut self, bytes: usize) -> bool {
        let Ok(n) = u32::try_from(bytes) else {
            return false;
        };
        if n == 0 {
            return true;
        }
        match self.budget.clone().try_acquire_many_owned(n) {
            Ok(more) => {
                match &mut self.permit {
                    Some(p) => p.merge(more),
                    None => self.permit = Some(more),
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Gives everything back (the message was dropped or sent).
    pub fn release(&mut self) {
        self.permit = None;
    }
}

/// The reply when a message cannot be held: temporary, like a full disk.
pub fn no_room() -> crate::proto::reply::Reply {
    crate::proto::reply::Reply::new(
        452,
        crate::proto::reply::Esc(4, 3, 1),
        "Insufficient system storage, try again later",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_bytes_come_from_one_budget_and_go_back_when_dropped() {
        let budget = Arc::new(Semaphore::new(100));
        let mut a = Held::from(budget.clone());
        let mut b = Held::from(budget.clone());
        assert!(a.grow(60));
        assert!(!b.grow(50), "only 40 left");
        assert!(b.grow(40));
        assert!(!a.grow(1));
        drop(b);
        assert!(a.grow(40));
        a.release();
        assert_eq!(budget.available_permits(), 100);
        assert!(a.grow(0));
    }
}
