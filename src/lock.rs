//! Taking a lock without caring whether it is poisoned.
//!
//! A std lock is poisoned when a thread panics while holding it. Postern's locks
//! guard maps, counters and queues whose every update is a single step that leaves
//! them consistent (an insert, a remove, a counter bump), so the data behind a
//! poisoned lock is still good. Refusing it would turn one panicked task into a
//! proxy that fails every later session, so these helpers take the guard either way.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`] that ignores poisoning (see the module doc for why).
pub trait MutexExt<T: ?Sized> {
    /// Locks the mutex, poisoned or not.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> MutexExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock::read`] and [`RwLock::write`] that ignore poisoning (see the module doc).
pub trait RwLockExt<T: ?Sized> {
    /// Takes a shared read lock, poisoned or not.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    /// Takes the exclusive write lock, poisoned or not.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_mutex_still_gives_its_data() {
        let m = Arc::new(Mutex::new(vec![1]));
        let m2 = Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let mut g = m2.lock().unwrap();
            g.push(2);
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        m.locked().push(3);
        assert_eq!(*m.locked(), vec![1, 2, 3]);
    }

    #[test]
    fn a_poisoned_rwlock_still_reads_and_writes() {
        let l = Arc::new(RwLock::new(1));
        let l2 = Arc::clone(&l);
        let _ = std::thread::spawn(move || {
            let _g = l2.write().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(l.is_poisoned());
        *l.write_locked() = 2;
        assert_eq!(*l.read_locked(), 2);
    }
}
