//! Quotas shared through Redis: one limit across every instance, exact.
//!
//! Reserve, count and give back are Lua scripts over one user's keys (one hash
//! tag), so concurrent transactions on different instances cannot overshoot. A
//! reservation has a lease ([`LEASE`]): one that belongs to an instance that
//! crashed is given back when it runs out instead of holding the user's room
//! forever.
//!
//! Near a limit, a message costs two round trips: MAIL reserves the message and,
//! if it fits, one recipient ahead (so the first RCPT asks nobody), and the end of
//! DATA counts it. Far from every limit, the reserve script grants this instance
//! room for more messages ahead ([`super::grants`]): the next messages ask
//! nobody, and what they sent is counted in one call per grant, in the background
//! ([`SharedRates::keep_settling`]).
//!
//! A message whose sender domain has limits is reserved, counted and given back
//! in its user's keys and its domain's in the same script call, so the domain
//! costs no extra round trip (keys: see [`Keys::domain_quota`]). Only a
//! null-sender message, whose domain is its header From's, reserves the domain
//! in a call of its own at the end of DATA.
//!
//! When Redis cannot be reached, this instance's memory answers ([`MemoryRates`]),
//! which also counts every message this instance sent while Redis was there, so
//! the fallback limit starts from what this instance knows rather than from zero.

use super::grants::{GRANT, Grants, Settle, Terms};
use super::keys::Keys;
use super::link::Link;
use crate::config::RateLimits;
use crate::policy::rates::{DomainLimits, Exceeded, MemoryRates, Ticket, Usage};
use redis::Script;
use tracing::warn;

mod settler;
mod store;
use settler::Settler;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a reservation lasts without news from its transaction. Longer than a
/// transaction's quiet stretches (a slow DATA), short enough that a crashed
/// instance does not block a user for long.
pub const LEASE: Duration = Duration::from_secs(15 * 60);

/// How often grants are settled: the most the counts in Redis lag this instance.
pub const SETTLE_EVERY: Duration = Duration::from_millis(200);

macro_rules! quota_script {
    ($file:literal) => {
        concat!(include_str!("lua/quota_common.lua"), include_str!($file))
    };
}

struct Scripts {
    reserve: Script,
    recipient: Script,
    usage: Script,
    domain: Script,
}

/// The shared quota store, with this instance's memory as fallback.
pub struct SharedRates {
    link: Arc<Link>,
    keys: Keys,
    local: Arc<MemoryRates>,
    scripts: Scripts,
    settler: Arc<Settler>,
    grants: Grants,
    /// Makes reservation ids unique across instances: a random start.
    instance: u64,
    next: AtomicU64,
}

/// Maps a limit's name from a script to the static name the session reports.
fn limit_name(name: &str) -> &'static str {
    match name {
        "messages_per_hour" => "messages_per_hour",
        "recipients_per_hour" => "recipients_per_hour",
        _ => "recipients_per_day",
    }
}

/// A script's refusal `{0, name, max, retry_after[, 'domain']}` as [`Exceeded`];
/// `domain` names the domain a refusal marked 'domain' is about.
fn refusal(v: &[redis::Value], domain: Option<&str>) -> Exceeded {
    let text = |i: usize| match v.get(i) {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    let int = |i: usize| match v.get(i) {
        Some(redis::Value::Int(n)) => *n,
        _ => 0,
    };
    Exceeded {
        limit: limit_name(&text(1)),
        max: int(2).clamp(0, u32::MAX as i64) as u32,
        retry_after: Duration::from_secs(int(3).max(1) as u64),
        domain: domain.filter(|_| text(4) == "domain").map(str::to_string),
    }
}

fn first_int(v: &[redis::Value], i: usize) -> i64 {
    match v.get(i) {
        Some(redis::Value::Int(n)) => *n,
        _ => 0,
    }
}

/// A limit as a script argument: -1 for none.
fn max_arg(max: Option<u32>) -> i64 {
    max.map_or(-1, i64::from)
}

impl SharedRates {
    pub fn new(link: Arc<Link>, keys: Keys, origin: Instant) -> SharedRates {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            // Ids must differ across instances and restarts: the clock and pid.
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            let nanos = t.map_or(0, |d| d.as_nanos() as u64);
            seed = (nanos ^ u64::from(std::process::id()).rotate_left(40)).to_be_bytes();
        }
        SharedRates {
            link,
            keys,
            local: Arc::new(MemoryRates::new(origin)),
            scripts: Scripts {
                reserve: Script::new(quota_script!("lua/quota_reserve.lua")),
                recipient: Script::new(quota_script!("lua/quota_recipient.lua")),
                usage: Script::new(quota_script!("lua/quota_usage.lua")),
                domain: Script::new(quota_script!("lua/quota_domain.lua")),
            },
            settler: Arc::new(Settler::new(quota_script!("lua/quota_settle.lua"))),
            grants: Grants::default(),
            instance: u64::from_be_bytes(seed),
            next: AtomicU64::new(1),
        }
    }

    fn new_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}.{n:x}", self.instance)
    }

    /// The keys of a ticket's parties in Redis: its user's, then its domain's
    /// unless the domain was reserved in memory.
    fn ticket_keys(&self, ticket: &Ticket) -> Vec<String> {
        let domain = ticket.domain.as_deref().filter(|_| !ticket.domain_local);
        self.party_keys(&ticket.user, domain)
    }

    fn party_keys(&self, user: &str, domain: Option<&str>) -> Vec<String> {
        let mut keys = self.keys.quota(user).to_vec();
        if let Some(d) = domain {
            keys.extend(self.keys.domain_quota(d));
        }
        keys
    }

    /// Reserves a message (and, with a recipient limit, recipients ahead) in
    /// Redis. Far from the limits Redis may grant room for more messages: the
    /// ticket then draws on that grant, and the grant is recorded here.
    async fn reserve_shared(
        &self,
        user: &str,
        limits: &RateLimits,
        domain: Option<&DomainLimits>,
        now: Instant,
    ) -> Option<Result<Ticket, Exceeded>> {
        let id = self.new_id();
        let none = RateLimits::default();
        let dl = domain.map_or(&none, |d| &d.limits);
        let has_rcpt_limit =
            |l: &RateLimits| l.recipients_per_hour.is_some() || l.recipients_per_day.is_some();
        let ahead = has_rcpt_limit(limits) || has_rcpt_limit(dl);
        let name = domain.map(|d| d.domain.as_str());
        let reply: Vec<redis::Value> = self
            .link
            .run("reserving a message", |mut c| {
                let mut inv = self.scripts.reserve.prepare_invoke();
                for k in self.party_keys(user, name) {
                    inv.key(k);
                }
                inv.arg(&id)
                    .arg(LEASE.as_millis() as u64)
                    .arg(max_arg(limits.messages_per_hour))
                    .arg(max_arg(limits.recipients_per_hour))
                    .arg(max_arg(limits.recipients_per_day))
                    .arg(if ahead { 1 } else { 0 })
                    .arg(max_arg(dl.messages_per_hour))
                    .arg(max_arg(dl.recipients_per_hour))
                    .arg(max_arg(dl.recipients_per_day))
                    .arg(GRANT);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        if first_int(&reply, 0) != 1 {
            return Some(Err(refusal(&reply, name)));
        }
        let rcpts = first_int(&reply, 1).clamp(0, u32::MAX as i64) as u32;
        let msgs = first_int(&reply, 2).clamp(1, u32::MAX as i64) as u32;
        let mut ticket = Ticket {
            user: user.to_string(),
            shared: true,
            domain: name.map(str::to_string),
            ..Ticket::default()
        };
        if msgs > 1 {
            let terms = terms(limits, domain.map(|d| &d.limits));
            let room = (msgs, ahead.then_some(rcpts));
            self.grants.add(&id, user, name, terms, room, now);
            ticket.grant = Some(id);
            ticket.id = self.new_id();
        } else {
            ticket.id = id;
            // Without recipient limits every recipient fits: none is reserved, none asked.
            ticket.spare = if ahead { rcpts } else { u32::MAX };
        }
        Some(Ok(ticket))
    }

    async fn domain_shared(
        &self,
        ticket: &Ticket,
        domain: &DomainLimits,
        rcpts: u32,
    ) -> Option<Result<(), Exceeded>> {
        let l = &domain.limits;
        let reply: Vec<redis::Value> = self
            .link
            .run("reserving a domain", |mut c| {
                let mut inv = self.scripts.domain.prepare_invoke();
                for k in self.keys.domain_quota(&domain.domain) {
                    inv.key(k);
                }
                inv.arg(&ticket.id)
                    .arg(LEASE.as_millis() as u64)
                    .arg(max_arg(l.messages_per_hour))
                    .arg(max_arg(l.recipients_per_hour))
                    .arg(max_arg(l.recipients_per_day))
                    .arg(rcpts);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        Some(if first_int(&reply, 0) == 1 {
            Ok(())
        } else {
            Err(refusal(&reply, Some(&domain.domain)))
        })
    }

    /// Reserves one more recipient under the ticket's reservation (its grant's,
    /// if it has one).
    async fn recipient_shared(
        &self,
        ticket: &Ticket,
        limits: &RateLimits,
        domain: Option<&RateLimits>,
    ) -> Option<Result<(), Exceeded>> {
        let none = RateLimits::default();
        let dl = domain.unwrap_or(&none);
        let id = ticket.grant.as_ref().unwrap_or(&ticket.id);
        let reply: Vec<redis::Value> = self
            .link
            .run("reserving a recipient", |mut c| {
                let mut inv = self.scripts.recipient.prepare_invoke();
                for k in self.ticket_keys(ticket) {
                    inv.key(k);
                }
                inv.arg(id)
                    .arg(LEASE.as_millis() as u64)
                    .arg(max_arg(limits.recipients_per_hour))
                    .arg(max_arg(limits.recipients_per_day))
                    .arg(max_arg(dl.recipients_per_hour))
                    .arg(max_arg(dl.recipients_per_day));
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        Some(if first_int(&reply, 0) == 1 {
            Ok(())
        } else {
            Err(refusal(&reply, ticket.domain.as_deref()))
        })
    }

    /// Settles what is due: every grant's sent messages are counted and its
    /// unused room given back once its [`super::grants::LIFE`] is over (every
    /// grant's, with `all`), and message settles that failed are made again.
    /// The calls go out together on the one connection.
    pub async fn settle(&self, all: bool) -> Pass {
        let due = self.grants.due(Instant::now(), all);
        if due.given_up > 0 {
            warn!(
                grants = due.given_up,
                "cluster: counts of grants Redis never confirmed were given up; the room they held comes back with the lease"
            );
        }
        let calls = due.calls.iter().map(|s| async move {
            let keys = self.party_keys(&s.user, s.domain.as_deref());
            let ok = (self.settler)
                .call(&self.link, "counting a grant", &keys, s)
                .await;
            self.grants.confirm(&s.id, s.seq, ok);
            ok
        });
        let ok = futures_util::future::join_all(calls).await;
        let none_kept = self.settler.retry(&self.link).await;
        match (ok.is_empty(), ok.iter().all(|ok| *ok)) {
            (true, _) if none_kept => Pass::Idle,
            (_, true) if none_kept => Pass::Done,
            _ => Pass::Failed,
        }
    }

    /// Settles grants every [`SETTLE_EVERY`], forever (aborted at shutdown, after
    /// a last [`SharedRates::settle`] of everything).
    pub async fn keep_settling(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SETTLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.settle(false).await;
        }
    }

    /// How many grants this instance holds.
    pub fn grants(&self) -> usize {
        self.grants.len()
    }
}

/// What a settling pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Nothing was left to settle.
    Idle,
    /// Everything due was settled (sent, and confirmed by Redis).
    Done,
    /// Redis did not confirm something: it is made again later.
    Failed,
}

/// The limits a grant is taken under.
fn terms(user: &RateLimits, domain: Option<&RateLimits>) -> Terms {
    Terms {
        user: user.clone(),
        domain: domain.cloned(),
    }
}

/// A message's own reservation `id`: counted, or given back (settle `seq`).
fn settle_of(id: &str, seq: u64, count: (u32, u32), drop: (u32, u32)) -> Settle {
    Settle {
        id: id.to_string(),
        seq,
        user: String::new(),
        domain: None,
        count,
        drop,
    }
}
impl SharedRates {
    /// The counts under one party's keys, or `None` if Redis cannot be asked.
    async fn usage_shared(&self, keys: [String; 8]) -> Option<Usage> {
        let shared: Option<Vec<u32>> = self
            .link
            .run("reading usage", |mut c| {
                let mut inv = self.scripts.usage.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                async move { inv.invoke_async(&mut c).await }
            })
            .await;
        match shared.as_deref() {
            Some(&[m, rh, rd]) => Some(Usage {
                messages_last_hour: m,
                recipients_last_hour: rh,
                recipients_last_day: rd,
            }),
            _ => None,
        }
    }
}
