//! Short-lived caches of verification results, so that a site sending one message per
//! connection (the WordPress pattern) does not pay an argon2 verification (~20 ms of a
//! core, 19 MiB) for every message, and a client repeating one wrong password does
//! not pay (or make everyone else wait for) one per try.
//!
//! Security reasoning:
//! - Successes and failures live in two separate caches, each with its own key: a
//!   failure can never be remembered as a success. Only an exact repeat of a
//!   (username, password, stored hash) that was verified wrong skips argon2; every
//!   new guess is verified, so guessing is exactly as slow as without the cache.
//! - A rejection entry can never go stale: the same password against the same
//!   stored hash is always wrong. It lives [`REJECTED_TTL`] only to bound memory.
//! - The key is HMAC-SHA256, under a random key made at start and kept only in
//!   memory, of the username, the password and the stored PHC hash. No password or
//!   password-equivalent is stored, and entries do not survive the process.
//! - Including the stored hash means a password change (a new hash in the users file)
//!   can never match an old entry; the cache is also cleared on every reload.
//! - Entries live [`TTL`] at most; the cache holds at most [`MAX_ENTRIES`].
//! - A success hit is faster than a verification, which tells a client that this
//!   exact password was used recently: only someone who already has the password
//!   learns anything. A rejection hit is padded to the time of a verification (see
//!   [`super::dummy`]) and unknown users are cached the same way as known ones, so
//!   usernames cannot be told apart by timing.
//! - An attacker who can read the process's memory gets the HMAC key and recent
//!   entries, and could test guesses against them quickly; such an attacker can read
//!   passwords as they arrive anyway.

use crate::lock::MutexExt;
use ring::hmac;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a verified login is remembered.
pub const TTL: Duration = Duration::from_secs(300);

/// How long a password verified wrong is remembered (the failure window).
pub const REJECTED_TTL: Duration = Duration::from_secs(15 * 60);

/// Most entries kept.
pub const MAX_ENTRIES: usize = 100_000;

pub struct CredentialCache {
    key: hmac::Key,
    entries: Mutex<HashMap<[u8; 32], Instant>>,
    ttl: Duration,
}

impl CredentialCache {
    pub fn new(ttl: Duration) -> CredentialCache {
        let rng = ring::rand::SystemRandom::new();
        CredentialCache {
            key: hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("system random"),
            entries: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn tag(&self, username: &str, password: &str, phc: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        // Length-prefixed, so no two different triples feed the same bytes.
        for part in [username, password, phc] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Whether this exact username, password and stored hash verified within the TTL.
    pub fn hit(&self, username: &str, password: &str, phc: &str, now: Instant) -> bool {
        let tag = self.tag(username, password, phc);
        let mut entries = self.entries.locked();
        match entries.get(&tag) {
            Some(&expires) if expires > now => true,
            Some(_) => {
                entries.remove(&tag);
                false
            }
            None => false,
        }
    }

    /// Remembers a successful verification.
    pub fn remember(&self, username: &str, password: &str, phc: &str, now: Instant) {
        let tag = self.tag(username, password, phc);
        let mut entries = self.entries.locked();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, &mut expires| expires > now);
            if entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        entries.insert(tag, now + self.ttl);
    }

    /// Forgets everything (users reloaded).
    pub fn clear(&self) {
        self.entries.locked().clear();
    }

    pub fn len(&self) -> usize {
        self.entries.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_only_the_exact_triple_within_the_ttl() {
        let c = CredentialCache::new(Duration::from_secs(60));
        let t = Instant::now();
        assert!(!c.hit("alice", "pw", "$h1", t));
        c.remember("alice", "pw", "$h1", t);
        assert!(c.hit("alice", "pw", "$h1", t + Duration::from_secs(59)));
        assert!(!c.hit("alice", "pW", "$h1", t), "other password");
        assert!(!c.hit("alicE", "pw", "$h1", t), "other user");
        assert!(!c.hit("alice", "pw", "$h2", t), "password changed");
        // Shifting bytes between the fields does not collide.
        c.remember("ab", "c", "$h", t);
        assert!(!c.hit("a", "bc", "$h", t));
        assert!(
            !c.hit("alice", "pw", "$h1", t + Duration::from_secs(60)),
            "expired"
        );
        assert!(!c.hit("alice", "pw", "$h1", t), "an expired entry is gone");
        c.remember("alice", "pw", "$h1", t);
        c.clear();
        assert!(!c.hit("alice", "pw", "$h1", t));
    }

    #[test]
    fn bounded() {
        let c = CredentialCache::new(Duration::from_secs(60));
        let t = Instant::now();
        for i in 0..MAX_ENTRIES + 10 {
            c.remember(&format!("u{i}"), "pw", "$h", t);
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        // Once they expire, room is made.
        c.remember("late", "pw", "$h", t + Duration::from_secs(61));
        assert_eq!(c.len(), 1);
    }
}
