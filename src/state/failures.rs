//! Login failures shared through Redis: the same records as in memory (per
//! address, per username, per username from an address), so a guesser who spreads
//! attempts over the instances still reaches the block.
//!
//! The password fingerprint must be the same on every instance (a stale password
//! retried on two instances counts once) without an operator secret: the HMAC key
//! is created once in Redis (`SET NX`, 32 random bytes) and read by every instance.
//! The trade-off: whoever can read Redis can read the key, and with it test
//! guesses against the fingerprints of failed passwords kept there (64 bits of
//! HMAC, each for the failure window only). Redis must be as private as the users
//! file: password (ACL), TLS or a private network.

use super::keys::{Keys, Record};
use super::link::Link;
use crate::lock::MutexExt;
use crate::policy::auth_failures::{
    AuthFailurePolicy, Gate, Penalty, Pending, SharedFailures, tarpit,
};
use redis::Script;
use ring::hmac;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The shared failure records.
pub struct SharedAuthFailures {
    link: Arc<Link>,
    keys: Keys,
    script: Script,
    /// The cluster's fingerprint key, once read from Redis.
    key: Mutex<Option<hmac::Key>>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// A remaining time from PTTL (negative: no such key, not blocked).
fn remaining(pttl: i64) -> Option<Duration> {
    (pttl > 0).then(|| Duration::from_millis(pttl as u64))
}

impl SharedAuthFailures {
    pub fn new(link: Arc<Link>, keys: Keys) -> SharedAuthFailures {
        SharedAuthFailures {
            link,
            keys,
            script: Script::new(include_str!("lua/failure.lua")),
            key: Mutex::new(None),
        }
    }

    /// The cluster's key: created by the first instance that asks, read by all.
    async fn fingerprint_key(&self) -> Option<hmac::Key> {
        if let Some(k) = self.key.locked().clone() {
            return Some(k);
        }
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).ok()?;
        let name = self.keys.fingerprint_key();
        let stored: Vec<u8> = self
            .link
            .run("reading the fingerprint key", |mut c| async move {
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(&name)
                    .arg(&fresh[..])
                    .arg("NX")
                    .ignore();
                pipe.cmd("GET").arg(&name);
                let (v,): (Vec<u8>,) = pipe.query_async(&mut c).await?;
                Ok(v)
            })
            .await?;
        if stored.len() < 16 {
            return None;
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, &stored);
        *self.key.locked() = Some(key.clone());
        Some(key)
    }

    /// Records one failure in one record: (distinct failures, block time if any).
    async fn record(
        &self,
        record: Record<'_>,
        fp: u64,
        threshold: u32,
        p: &AuthFailurePolicy,
    ) -> Option<(u32, Option<Duration>)> {
        let [fails, offences, block] = self.keys.failure_record(&record);
        let (n, blocked): (u32, u64) = self
            .link
            .run("recording a login failure", |mut c| {
                let mut inv = self.script.prepare_invoke();
                inv.key(fails).key(offences).key(block);
                inv.arg(fp)
                    .arg(ms(p.window))
                    .arg(threshold)
                    .arg(ms(p.block_time))
                    .arg(ms(p.block_max));
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        Some((n, (blocked > 0).then(|| Duration::from_millis(blocked))))
    }
}

/// The keyed fingerprint of one (username, password) attempt, as in memory.
fn fingerprint(key: &hmac::Key, username: &str, password: &str) -> u64 {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(username.as_bytes());
    ctx.update(&[0]);
    ctx.update(password.as_bytes());
    let tag = ctx.sign();
    u64::from_be_bytes(tag.as_ref()[..8].try_into().expect("8 bytes"))
}

impl SharedFailures for SharedAuthFailures {
    fn gate<'a>(
        &'a self,
        ip: IpAddr,
        username: &'a str,
        _policy: &'a AuthFailurePolicy,
    ) -> Pending<'a, Option<Gate>> {
        Box::pin(async move {
            let trusted = self.keys.trusted(username, ip);
            let blocks = [
                Record::Address(ip),
                Record::User(username),
                Record::Pair(username, ip),
            ]
            .map(|r| self.keys.failure_record(&r)[2].clone());
            let (good, ip_ttl, user_ttl, pair_ttl): (bool, i64, i64, i64) = self
                .link
                .run("checking login blocks", |mut c| async move {
                    let mut pipe = redis::pipe();
                    pipe.cmd("EXISTS").arg(&trusted);
                    for b in &blocks {
                        pipe.cmd("PTTL").arg(b);
                    }
                    pipe.query_async(&mut c).await
                })
                .await?;
            // Trust lifts the address block only, as in memory.
            Some(
                match (
                    good,
                    remaining(ip_ttl),
                    remaining(user_ttl),
                    remaining(pair_ttl),
                ) {
                    (false, Some(d), _, _) => Gate::IpBlocked { retry_after: d },
                    (_, _, Some(d), _) => Gate::UserBlocked { retry_after: d },
                    (_, _, _, Some(d)) => Gate::PairBlocked { retry_after: d },
                    _ => Gate::Open,
                },
            )
        })
    }

    fn failed<'a>(
        &'a self,
        ip: IpAddr,
        username: &'a str,
        password: &'a str,
        p: &'a AuthFailurePolicy,
    ) -> Pending<'a, Option<Penalty>> {
        Box::pin(async move {
            let key = self.fingerprint_key().await?;
            let fp = fingerprint(&key, username, password);
            // Three scripts (three hash tags), sent together on one connection.
            let (by_ip, by_user, by_pair) = tokio::join!(
                self.record(Record::Address(ip), fp, p.block_ip_after, p),
                self.record(Record::User(username), fp, p.block_user_after, p),
                self.record(Record::Pair(username, ip), fp, p.block_ip_after, p),
            );
            let ((ip_failures, ip_blocked), (_, user_blocked), (_, pair_blocked)) =
                (by_ip?, by_user?, by_pair?);
            Some(Penalty {
                delay: tarpit(p, ip_failures),
                ip_failures,
                ip_blocked,
                user_blocked,
                pair_blocked,
            })
        })
    }

    fn succeeded(&self, ip: IpAddr, username: &str, p: &AuthFailurePolicy) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (link, key, ttl) = (
            self.link.clone(),
            self.keys.trusted(username, ip),
            ms(p.remember_good),
        );
        rt.spawn(async move {
            link.run("remembering a good login", |mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("PX")
                    .arg(ttl.max(1))
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        });
    }
}
