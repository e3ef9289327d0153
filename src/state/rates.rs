//! Quotas shared through Redis: one limit across every instance, exact.
//!
//! Reserve, commit and give back are Lua scripts over one user's keys (one hash
//! tag), so concurrent transactions on different instances cannot overshoot. A
//! reservation has a lease ([`LEASE`]): one that belongs to an instance that
//! crashed is given back when it runs out instead of holding the user's room
//! forever. The common message costs two round trips: MAIL reserves the message
//! and, if it fits, one recipient ahead (so the first RCPT asks nobody), and the
//! end of DATA commits.
//!
//! A message whose sender domain has limits is reserved, committed and given
//! back in its user's keys and its domain's in the same script call, so the
//! domain costs no extra round trip (keys: see [`Keys::domain_quota`]). Only a
//! null-sender message, whose domain is its header From's, reserves the domain
//! in a third call at the end of DATA.
//!
//! When Redis cannot be reached, this instance's memory answers ([`MemoryRates`]),
//! which also counts every message this instance sent while Redis was there, so
//! the fallback limit starts from what this instance knows rather than from zero.

use super::keys::Keys;
use super::link::Link;
use crate::config::RateLimits;
use crate::policy::rates::{
    DomainLimits, Exceeded, MemoryRates, Parties, Pending, RateStore, Ticket, Usage,
};
use redis::Script;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a reservation lasts without news from its transaction. Longer than a
/// transaction's quiet stretches (a slow DATA), short enough that a crashed
/// instance does not block a user for long.
pub const LEASE: Duration = Duration::from_secs(15 * 60);

macro_rules! quota_script {
    ($file:literal) => {
        concat!(include_str!("lua/quota_common.lua"), include_str!($file))
    };
}

struct Scripts {
    reserve: Script,
    recipient: Script,
    commit: Script,
    release: Script,
    usage: Script,
    domain: Script,
}

/// The shared quota store, with this instance's memory as fallback.
pub struct SharedRates {
    link: Arc<Link>,
    keys: Keys,
    local: Arc<MemoryRates>,
    scripts: Arc<Scripts>,
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
        let _ = getrandom::fill(&mut seed);
        SharedRates {
            link,
            keys,
            local: Arc::new(MemoryRates::new(origin)),
            scripts: Arc::new(Scripts {
                reserve: Script::new(quota_script!("lua/quota_reserve.lua")),
                recipient: Script::new(quota_script!("lua/quota_recipient.lua")),
                commit: Script::new(quota_script!("lua/quota_commit.lua")),
                release: Script::new(quota_script!("lua/quota_release.lua")),
                usage: Script::new(quota_script!("lua/quota_usage.lua")),
                domain: Script::new(quota_script!("lua/quota_domain.lua")),
            }),
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

    async fn reserve_shared(
        &self,
        user: &str,
        limits: &RateLimits,
        domain: Option<&DomainLimits>,
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
                    .arg(max_arg(dl.recipients_per_day));
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        if first_int(&reply, 0) != 1 {
            return Some(Err(refusal(&reply, name)));
        }
        Some(Ok(Ticket {
            user: user.to_string(),
            id,
            shared: true,
            // Without recipient limits every recipient fits: none is reserved, none asked.
            spare: if ahead {
                first_int(&reply, 1) as u32
            } else {
                u32::MAX
            },
            local_rcpts: 0,
            domain: name.map(str::to_string),
            domain_local: false,
        }))
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

    async fn recipient_shared(
        &self,
        ticket: &Ticket,
        limits: &RateLimits,
        domain: Option<&RateLimits>,
    ) -> Option<Result<(), Exceeded>> {
        let none = RateLimits::default();
        let dl = domain.unwrap_or(&none);
        let reply: Vec<redis::Value> = self
            .link
            .run("reserving a recipient", |mut c| {
                let mut inv = self.scripts.recipient.prepare_invoke();
                for k in self.ticket_keys(ticket) {
                    inv.key(k);
                }
                inv.arg(&ticket.id)
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

    async fn commit_shared(&self, ticket: &Ticket, rcpts: u32) -> Option<()> {
        let shared_rcpts = rcpts.saturating_sub(ticket.local_rcpts);
        self.link
            .run("counting a message", |mut c| {
                let mut inv = self.scripts.commit.prepare_invoke();
                for k in self.ticket_keys(ticket) {
                    inv.key(k);
                }
                inv.arg(&ticket.id).arg(shared_rcpts);
                async move { inv.invoke_async::<i64>(&mut c).await }
            })
            .await
            .map(|_| ())
    }
}

impl RateStore for SharedRates {
    fn reserve_message<'a>(
        &'a self,
        user: &'a str,
        limits: &'a RateLimits,
        domain: Option<&'a DomainLimits>,
        now: Instant,
    ) -> Pending<'a, Result<Ticket, Exceeded>> {
        Box::pin(async move {
            match self.reserve_shared(user, limits, domain).await {
                Some(r) => r,
                None => self
                    .local
                    .reserve_message_now(user, limits, domain, now)
                    .map(|()| Ticket::local(user, domain)),
            }
        })
    }

    fn reserve_recipient<'a>(
        &'a self,
        ticket: &'a mut Ticket,
        limits: &'a RateLimits,
        domain: Option<&'a RateLimits>,
        now: Instant,
    ) -> Pending<'a, Result<(), Exceeded>> {
        Box::pin(async move {
            if !ticket.shared {
                let who = Parties::of(ticket);
                return self.local.reserve_recipient_now(who, limits, domain, now);
            }
            if ticket.spare > 0 {
                // Reserved ahead at MAIL (or no recipient limit at all).
                ticket.spare = ticket.spare.saturating_sub(1);
                return Ok(());
            }
            match self.recipient_shared(ticket, limits, domain).await {
                Some(r) => r,
                None => {
                    let who = Parties::of(ticket);
                    self.local.reserve_recipient_now(who, limits, domain, now)?;
                    ticket.local_rcpts += 1;
                    Ok(())
                }
            }
        })
    }

    fn reserve_domain<'a>(
        &'a self,
        ticket: &'a mut Ticket,
        domain: &'a DomainLimits,
        rcpts: u32,
        now: Instant,
    ) -> Pending<'a, Result<(), Exceeded>> {
        Box::pin(async move {
            let shared = match ticket.shared {
                true => self.domain_shared(ticket, domain, rcpts).await,
                false => None,
            };
            match shared {
                Some(r) => r?,
                None => {
                    self.local.reserve_domain_now(domain, rcpts, now)?;
                    ticket.domain_local = ticket.shared;
                }
            }
            ticket.domain = Some(domain.domain.clone());
            Ok(())
        })
    }

    fn commit<'a>(&'a self, ticket: &'a Ticket, rcpts: u32, now: Instant) -> Pending<'a, ()> {
        Box::pin(async move {
            if !ticket.shared {
                self.local.commit_now(Parties::of(ticket), rcpts, now);
                return;
            }
            // Counted here too: if Redis goes away, this instance's own use is known.
            self.local
                .release_now(Parties::of(ticket), 0, ticket.local_rcpts);
            if let Some(d) = ticket.domain.as_deref().filter(|_| ticket.domain_local) {
                self.local.release_now(Parties::domain(d), 1, rcpts);
            }
            self.local.record(Parties::of(ticket), 1, rcpts, now);
            // If this fails the lease gives the reservation back and the message is
            // counted only here: the price of an outage, never a refusal.
            let _ = self.commit_shared(ticket, rcpts).await;
        })
    }

    fn release(&self, ticket: &Ticket, messages: u32, rcpts: u32) {
        if !ticket.shared {
            return self.local.release_now(Parties::of(ticket), messages, rcpts);
        }
        let local = rcpts.min(ticket.local_rcpts);
        self.local.release_now(Parties::of(ticket), 0, local);
        if let Some(d) = ticket.domain.as_deref().filter(|_| ticket.domain_local) {
            self.local.release_now(Parties::domain(d), messages, rcpts);
        }
        let shared = rcpts - local;
        if messages == 0 && shared == 0 {
            return;
        }
        // From Drop: nobody waits for this. Without a runtime (a test), the lease
        // gives it back.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (link, scripts, keys) = (
            self.link.clone(),
            self.scripts.clone(),
            self.ticket_keys(ticket),
        );
        let id = ticket.id.clone();
        rt.spawn(async move {
            link.run("giving back a reservation", |mut c| {
                let mut inv = scripts.release.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                inv.arg(&id).arg(messages.min(1)).arg(shared);
                async move { inv.invoke_async::<i64>(&mut c).await }
            })
            .await;
        });
    }

    fn prune(&self, now: Instant) -> usize {
        self.local.prune_now(now)
    }

    fn usage<'a>(&'a self, user: &'a str, now: Instant) -> Pending<'a, Usage> {
        Box::pin(async move {
            match self.usage_shared(self.keys.quota(user)).await {
                Some(u) => u,
                None => self.local.usage_now(user, now),
            }
        })
    }

    fn domain_usage<'a>(&'a self, domain: &'a str, now: Instant) -> Pending<'a, Usage> {
        Box::pin(async move {
            match self.usage_shared(self.keys.domain_quota(domain)).await {
                Some(u) => u,
                None => self.local.domain_usage_now(domain, now),
            }
        })
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
