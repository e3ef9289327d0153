//! Group commit for directory fsyncs.
//!
//! A message is durable once its file is fsynced and the directory entry that the
//! rename into `queue/` made is fsynced too. Under load many commits finish their
//! rename within the same millisecond and each fsynced the directory on its own; one
//! fsync started after all their renames covers them all. [`DirSync::sync`] joins the
//! round not yet started (or opens one) and returns once a directory fsync that began
//! after the caller's rename has finished, with that fsync's result: each caller still
//! hears of its own durability, and its client is answered 250 only after it.

use crate::lock::MutexExt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

/// One directory fsync and everyone who waits for it.
#[derive(Default)]
struct Round {
    /// The fsync's result, set once it has run (errors as kind and text, to be
    /// handed to every member).
    result: OnceLock<Result<(), (io::ErrorKind, String)>>,
}

#[derive(Default)]
struct State {
    /// The round that new callers join; it starts when no fsync is running.
    pending: Option<Arc<Round>>,
    /// Whether a round's fsync is under way.
    running: bool,
}

/// Shared fsyncs of one directory; callers block (run it on a blocking thread).
#[derive(Debug)]
pub struct DirSync {
    dir: PathBuf,
    state: Mutex<State>,
    done: Condvar,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("running", &self.running)
            .finish()
    }
}

impl DirSync {
    pub fn new(dir: PathBuf) -> DirSync {
        DirSync {
            dir,
            state: Mutex::default(),
            done: Condvar::new(),
        }
    }

    /// Makes every change to the directory made before this call durable. The
    /// caller whose round is due runs the fsync; the others wait for its result.
    pub fn sync(&self) -> io::Result<()> {
        let mut state = self.state.locked();
        let mine = state.pending.get_or_insert_with(Default::default).clone();
        loop {
            if let Some(result) = mine.result.get() {
                return result
                    .clone()
                    .map_err(|(kind, text)| io::Error::new(kind, text));
            }
            if !state.running {
                // Not started (a finished round has its result): ours is the
                // pending one, and it starts now, with everyone who joined it.
                state.pending = None;
                state.running = true;
                drop(state);
                let result = super::sync_dir(&self.dir);
                let _ = mine.result.set(
                    result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| (e.kind(), e.to_string())),
                );
                self.state.locked().running = false;
                self.done.notify_all();
                return result;
            }
            state = self
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_callers_share_fsyncs_and_each_returns() {
        let dir = tempfile::tempdir().unwrap();
        let sync = Arc::new(DirSync::new(dir.path().to_path_buf()));
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (sync, dir) = (sync.clone(), dir.path().to_path_buf());
                std::thread::spawn(move || {
                    for j in 0..20 {
                        std::fs::write(dir.join(format!("{i}-{j}")), b"x").unwrap();
                        sync.sync().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let state = sync.state.locked();
        assert!(!state.running && state.pending.is_none());
    }

    #[test]
    fn a_failed_fsync_is_reported_to_its_caller() {
        let sync = DirSync::new(PathBuf::from("/nonexistent/postern-spool"));
        assert!(sync.sync().is_err());
        // And the next round tries again rather than inheriting the result.
        assert!(sync.sync().is_err());
        assert!(!sync.state.locked().running);
    }
}
