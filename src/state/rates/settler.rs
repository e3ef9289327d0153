//! Settle calls to Redis (count what was sent, give back what was not used),
//! each applied exactly once.
//!
//! A call whose answer is lost (a timeout, a failover) may or may not have been
//! applied, so it is made again, and must then not count twice. Every call names
//! its reservation id and a sequence number that grows with each call for that
//! id; the script keeps the last number it applied for the id (one small key
//! beside the reservation's, in the same hash slot, for the lease) and applies a
//! call only with a higher one. A grant has one settle outstanding at a time
//! ([`super::super::grants::Grants::confirm`]); a message's own settles (its
//! commit, its give-backs) are kept here when they fail and made again every
//! settling period, for at most [`RETRY_FOR`]. A give-back superseded by the
//! message's commit is skipped (the commit drops the whole reservation anyway).
//! Without this, a failed call lost counts of mail already sent (letting a user
//! exceed a limit by them) and held room until the lease ran out.

use super::super::grants::{RETRY_FOR, Settle};
use super::super::link::Link;
use super::LEASE;
use crate::lock::MutexExt;
use redis::Script;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;
use tracing::warn;

/// The most failed message settles kept for another try; beyond, the oldest
/// are given up (the lease then gives their room back, their counts are lost).
const KEEP: usize = 10_000;

/// The most kept settles made again in one settling period.
const PER_PASS: usize = 1024;

struct Kept {
    keys: Vec<String>,
    settle: Settle,
    since: Instant,
}

pub struct Settler {
    script: Script,
    /// Message settles that failed, oldest first.
    kept: Mutex<VecDeque<Kept>>,
    /// Kept settles given up (too old, or too many) since the last log line.
    given_up: AtomicUsize,
    seq: AtomicU64,
}

/// The key holding the last sequence number applied for reservation `id`: in
/// the first party's hash slot (its keys start with its hash tag).
fn applied_key(keys: &[String], s: &Settle) -> Option<String> {
    let first = keys.first()?;
    Some(format!("{first}:applied:{}", s.id))
}

impl Settler {
    pub fn new(script: &str) -> Settler {
        Settler {
            script: Script::new(script),
            kept: Mutex::default(),
            given_up: AtomicUsize::new(0),
            seq: AtomicU64::new(1),
        }
    }

    /// A fresh sequence number for a message's settle (a grant numbers its own).
    pub fn seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes settle `s` over `keys` (one or two parties); `false` if Redis did
    /// not answer (it may or may not have applied it: made again, it counts once).
    pub async fn call(&self, link: &Link, what: &'static str, keys: &[String], s: &Settle) -> bool {
        let applied = applied_key(keys, s);
        link.run(what, |mut c| {
            let mut inv = self.script.prepare_invoke();
            for k in keys.iter().chain(&applied) {
                inv.key(k);
            }
            inv.arg(&s.id)
                .arg(s.count.0)
                .arg(s.count.1)
                .arg(s.drop.0)
                .arg(s.drop.1)
                .arg(LEASE.as_millis() as u64)
                .arg(s.seq);
            async move { inv.invoke_async::<i64>(&mut c).await }
        })
        .await
        .is_some()
    }

    /// A message's own settle: made now, and kept for another try if it fails.
    pub async fn message(&self, link: &Link, what: &'static str, keys: Vec<String>, s: Settle) {
        if !self.call(link, what, &keys, &s).await {
            self.keep(keys, s, Instant::now());
        }
    }

    fn keep(&self, keys: Vec<String>, settle: Settle, since: Instant) {
        let mut kept = self.kept.locked();
        if kept.len() >= KEEP {
            kept.pop_front();
            self.given_up.fetch_add(1, Ordering::Relaxed);
        }
        kept.push_back(Kept {
            keys,
            settle,
            since,
        });
    }

    /// Makes again the oldest message settles that failed (they stay kept until
    /// Redis confirms them, so a pass cut short loses none); `true` if none is
    /// left.
    pub async fn retry(&self, link: &Link) -> bool {
        let batch: Vec<(Vec<String>, Settle)> = {
            let mut kept = self.kept.locked();
            let before = kept.len();
            kept.retain(|k| k.since.elapsed() < RETRY_FOR);
            self.given_up
                .fetch_add(before - kept.len(), Ordering::Relaxed);
            let batch = kept.iter().take(PER_PASS);
            batch.map(|k| (k.keys.clone(), k.settle.clone())).collect()
        };
        let lost = self.given_up.swap(0, Ordering::Relaxed);
        if lost > 0 {
            warn!(
                settles = lost,
                "cluster: message counts Redis never confirmed were given up; the room they held comes back with the lease"
            );
        }
        if batch.is_empty() || !link.is_up() {
            return batch.is_empty();
        }
        let mut done = HashSet::new();
        for chunk in batch.chunks(256) {
            let calls = chunk.iter().map(|(keys, s)| async move {
                let ok = self.call(link, "counting a message again", keys, s).await;
                ok.then(|| (s.id.clone(), s.seq))
            });
            done.extend(
                futures_util::future::join_all(calls)
                    .await
                    .into_iter()
                    .flatten(),
            );
        }
        let mut kept = self.kept.locked();
        kept.retain(|k| !done.contains(&(k.settle.id.clone(), k.settle.seq)));
        kept.is_empty()
    }
}
