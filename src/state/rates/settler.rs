//! Settle calls to Redis (count what was sent, give back what was not used),
//! each applied exactly once.
//!
//! A call whose answer is lost (a timeout, a failover) may or may not have been
//! applied. So every call carries a token, `ID.SEQ`, which the script records
//! (a key beside the reservation's, in the same hash slot, kept for twice the
//! lease) and refuses to apply twice: a call can be made again safely. A grant's
//! settle is made again from its grant's bookkeeping until confirmed
//! ([`super::super::grants::Grants::confirm`]); a message's own settle that fails
//! is kept here and made again every settling period. Without that, a failed
//! call would lose counts of mail already sent (and let a user exceed a limit by
//! them), and hold room until the lease ran out.

use super::super::grants::Settle;
use super::super::link::Link;
use super::LEASE;
use crate::lock::MutexExt;
use redis::Script;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::warn;

/// The most failed message settles kept for another try; beyond, the oldest
/// are given up (the lease then gives their room back, their counts are lost).
const KEEP: usize = 100_000;

pub struct Settler {
    script: Script,
    /// Message settles that failed: their keys and what, made again later.
    unsettled: Mutex<VecDeque<(Vec<String>, Settle)>>,
    seq: AtomicU64,
}

/// The key that records token `id.seq` as applied: in the first party's hash
/// slot (its keys start with its hash tag).
fn token_key(keys: &[String], s: &Settle) -> Option<String> {
    let first = keys.first()?;
    Some(format!("{first}:done:{}.{}", s.id, s.seq))
}

impl Settler {
    pub fn new(script: &str) -> Settler {
        Settler {
            script: Script::new(script),
            unsettled: Mutex::default(),
            seq: AtomicU64::new(1),
        }
    }

    /// A fresh sequence number for a message's settle (a grant numbers its own).
    pub fn seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes settle `s` over `keys` (one or two parties); `false` if Redis did
    /// not answer (it may or may not have applied it: its token tells, later).
    pub async fn call(&self, link: &Link, what: &'static str, keys: &[String], s: &Settle) -> bool {
        let token = token_key(keys, s);
        link.run(what, |mut c| {
            let mut inv = self.script.prepare_invoke();
            for k in keys.iter().chain(&token) {
                inv.key(k);
            }
            inv.arg(&s.id)
                .arg(s.count.0)
                .arg(s.count.1)
                .arg(s.drop.0)
                .arg(s.drop.1)
                .arg(LEASE.as_millis() as u64);
            async move { inv.invoke_async::<i64>(&mut c).await }
        })
        .await
        .is_some()
    }

    /// A message's own settle: made now, and kept for another try if it fails.
    pub async fn message(&self, link: &Link, what: &'static str, keys: Vec<String>, s: Settle) {
        if !self.call(link, what, &keys, &s).await {
            self.keep(keys, s);
        }
    }

    fn keep(&self, keys: Vec<String>, s: Settle) {
        let mut kept = self.unsettled.locked();
        if kept.len() >= KEEP {
            kept.pop_front();
            warn!(
                kept = KEEP,
                "cluster: too many settles waiting for Redis; the oldest is given up (its counts are lost, its lease gives its room back)"
            );
        }
        kept.push_back((keys, s));
    }

    /// Makes again the message settles that failed; `true` if none is left.
    pub async fn retry(&self, link: &Link) -> bool {
        if !link.is_up() {
            return self.unsettled.locked().is_empty();
        }
        let kept: Vec<_> = self.unsettled.locked().drain(..).collect();
        for chunk in kept.chunks(256) {
            let calls = (chunk.iter().cloned())
                .map(|(keys, s)| self.message(link, "counting a message again", keys, s));
            futures_util::future::join_all(calls).await;
        }
        self.unsettled.locked().is_empty()
    }
}
