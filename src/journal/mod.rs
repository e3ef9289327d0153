//! The delivery log: every transaction at the end of DATA and every delivery
//! attempt from the queue, kept on disk for `GET /api/v1/messages` and the
//! dashboard ("did this site's mail go out, and if not why").
//!
//! The store is append-only JSON-lines segment files (see [`segments`]) rather
//! than SQLite: writing an entry costs one serialisation and a buffered append on
//! a thread of its own (no C library, no page cache of a database to tune, nothing
//! the session waits for); retention is deleting whole files; a crash can only
//! tear the last line, which reading skips. Reading newest first filtered by user
//! walks the segments backwards; an in-memory index of the users in each segment
//! (built as it is written, or on the first read after a restart) skips the
//! segments that do not name the user.
//!
//! Entries reach the file through [`Writer`], which the events hub feeds
//! ([`crate::events`]); [`DeliveryLog::query`] reads from any thread.

pub mod entry;
pub mod segments;
mod writer;

pub use entry::{Entry, Kind, Recipient};
pub use segments::Retention;
pub use writer::{Journal, Writer};

use crate::lock::MutexExt;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Most entries one query returns.
pub const MAX_QUERY: usize = 1000;

/// The delivery log's folder and what it keeps; shared by its writer and readers.
pub struct DeliveryLog {
    dir: PathBuf,
    retention: Retention,
    /// The users named in each segment, by segment name. Sealed segments never
    /// change, so an entry here stays true until the segment is removed.
    index: Mutex<HashMap<String, Arc<HashSet<String>>>>,
}

impl DeliveryLog {
    /// Opens (creating, 0700) the log's folder.
    pub fn open(dir: &Path, retention: Retention) -> io::Result<Arc<DeliveryLog>> {
        crate::private_fs::own_dir(dir)?;
        Ok(Arc::new(DeliveryLog {
            dir: dir.to_path_buf(),
            retention,
            index: Mutex::new(HashMap::new()),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// The newest entries first, at most `limit` (capped at [`MAX_QUERY`]), only
    /// `user`'s when given, none older than `max_age`. Reads files: call it off
    /// the async runtime (`spawn_blocking`). What was written in the last few
    /// milliseconds may not be visible yet.
    pub fn query(&self, user: Option<&str>, limit: usize) -> Vec<Entry> {
        let limit = limit.min(MAX_QUERY);
        let segments = match segments::list(&self.dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the delivery log");
                return Vec::new();
            }
        };
        let cutoff = unix(SystemTime::now()).saturating_sub(self.retention.max_age.as_secs());
        let mut out = Vec::new();
        for seg in segments.iter().rev() {
            if out.len() >= limit || seg.modified < cutoff {
                break;
            }
            if let Some(u) = user
                && self
                    .index
                    .locked()
                    .get(&seg.name)
                    .is_some_and(|users| !users.contains(u))
            {
                continue;
            }
            let entries = self.read_segment(&seg.name);
            let wanted = entries
                .into_iter()
                .rev()
                .filter(|e| user.is_none_or(|u| e.user == u) && e.unix_time() >= cutoff);
            out.extend(wanted.take(limit - out.len()));
        }
        out
    }

    /// Reads one segment and indexes the users it names (a missing file reads as
    /// empty: retention may have removed it meanwhile).
    fn read_segment(&self, name: &str) -> Vec<Entry> {
        let text = std::fs::read(self.dir.join(name)).unwrap_or_default();
        let entries = segments::parse(&text);
        let mut index = self.index.locked();
        // The active segment's set is kept by the writer as it appends.
        index
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(entries.iter().map(|e| e.user.clone()).collect()));
        entries
    }

    /// The writer notes that `user` is in segment `name`.
    fn note_user(&self, name: &str, user: &str) {
        let mut index = self.index.locked();
        let users = index.entry(name.to_string()).or_default();
        if !users.contains(user) {
            Arc::make_mut(users).insert(user.to_string());
        }
    }

    /// Removes what retention says must go; returns how many segments went.
    fn enforce_retention(&self, active: Option<&str>, now: SystemTime) -> io::Result<usize> {
        let all = segments::list(&self.dir)?;
        let gone = segments::expired(&all, active, unix(now), self.retention);
        for name in &gone {
            match std::fs::remove_file(self.dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.index.locked().remove(name);
        }
        Ok(gone.len())
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
