//! [`MemoryRates`]: the quota counts of one process, in memory (and the
//! fallback of the shared store when Redis cannot be reached). Users and sender
//! domains are counted alike, in one map under one lock, so a message is reserved
//! in both or in neither.

use super::{DomainLimits, Exceeded, Pending, RateStore, Ticket, Usage};
use crate::config::RateLimits;
use crate::lock::MutexExt;
use std::collections::{HashMap, VecDeque};
use std::future::ready;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts in a sliding window made of `buckets` buckets of `bucket` length each.
#[derive(Debug, Clone)]
struct Window {
    bucket: Duration,
    buckets: u64,
    /// (bucket index, count), oldest first; empty buckets are not stored, so there
    /// are never more entries than the limit allows events.
    counts: VecDeque<(u64, u32)>,
    total: u32,
}

impl Window {
    fn new(bucket: Duration, buckets: u64) -> Window {
        Window {
            bucket,
            buckets,
            counts: VecDeque::new(),
            total: 0,
        }
    }

    fn index(&self, since_origin: Duration) -> u64 {
        since_origin.as_secs() / self.bucket.as_secs().max(1)
    }

    fn prune(&mut self, since_origin: Duration) {
        let now = self.index(since_origin);
        while let Some(&(i, n)) = self.counts.front() {
            if i + self.buckets <= now {
                self.counts.pop_front();
                self.total -= n;
            } else {
                break;
            }
        }
    }

    fn used(&mut self, since_origin: Duration) -> u32 {
        self.prune(since_origin);
        self.total
    }

    fn add(&mut self, since_origin: Duration, n: u32) {
        if n == 0 {
            return;
        }
        let i = self.index(since_origin);
        self.total += n;
        match self.counts.back_mut() {
            Some((last, count)) if *last == i => *count += n,
            _ => self.counts.push_back((i, n)),
        }
    }

    /// When the oldest counted bucket leaves the window.
    fn retry_after(&self, since_origin: Duration) -> Duration {
        match self.counts.front() {
            Some(&(i, _)) => {
                let frees = Duration::from_secs((i + self.buckets) * self.bucket.as_secs());
                frees.saturating_sub(since_origin)
            }
            None => Duration::ZERO,
        }
    }
}

/// Whose counts: a user's or a sender domain's (separate name spaces).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Domain(String),
}

/// One user's or domain's counts.
#[derive(Debug, Clone)]
struct UserCounts {
    messages_hour: Window,
    rcpts_hour: Window,
    rcpts_day: Window,
    reserved_messages: u32,
    reserved_rcpts: u32,
}

impl UserCounts {
    fn new() -> UserCounts {
        let second = Duration::from_secs(1);
        UserCounts {
            messages_hour: Window::new(second, 3600),
            rcpts_hour: Window::new(second, 3600),
            rcpts_day: Window::new(second, 86_400),
            reserved_messages: 0,
            reserved_rcpts: 0,
        }
    }

    fn idle(&mut self, t: Duration) -> bool {
        self.reserved_messages == 0
            && self.reserved_rcpts == 0
            && self.messages_hour.used(t) == 0
            && self.rcpts_hour.used(t) == 0
            && self.rcpts_day.used(t) == 0
    }
}

/// The in-memory store: one process, counts lost on restart.
pub struct MemoryRates {
    origin: Instant,
    counts: Mutex<HashMap<Key, UserCounts>>,
}

/// Whom one reservation counts against: a user, and maybe a domain.
#[derive(Debug, Clone, Copy)]
pub struct Parties<'a> {
    pub user: Option<&'a str>,
    pub domain: Option<&'a str>,
}

impl<'a> Parties<'a> {
    /// The ticket's user and domain.
    pub fn of(ticket: &'a Ticket) -> Parties<'a> {
        Parties {
            user: Some(&ticket.user),
            domain: ticket.domain.as_deref(),
        }
    }

    /// The ticket's user only (its domain is reserved elsewhere).
    pub fn user_of(ticket: &'a Ticket) -> Parties<'a> {
        Parties {
            user: Some(&ticket.user),
            domain: None,
        }
    }

    /// A domain only.
    pub fn domain(domain: &'a str) -> Parties<'a> {
        Parties {
            user: None,
            domain: Some(domain),
        }
    }

    fn keys(&self) -> impl Iterator<Item = Key> {
        let user = self.user.map(|u| Key::User(u.to_string()));
        user.into_iter()
            .chain(self.domain.map(|d| Key::Domain(d.to_string())))
    }
}

impl MemoryRates {
    pub fn new(origin: Instant) -> MemoryRates {
        MemoryRates {
            origin,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn since(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
    }
}

fn counts(map: &mut HashMap<Key, UserCounts>, key: Key) -> &mut UserCounts {
    map.entry(key).or_insert_with(UserCounts::new)
}

/// `Ok` if `extra` more fit under `max` beside what is counted and reserved.
fn check(
    window: &mut Window,
    reserved: u32,
    extra: u32,
    max: Option<u32>,
    name: &'static str,
    t: Duration,
) -> Result<(), Exceeded> {
    let Some(max) = max else { return Ok(()) };
    if u64::from(window.used(t)) + u64::from(reserved) + u64::from(extra) <= u64::from(max) {
        return Ok(());
    }
    let retry_after = if window.used(t) == 0 {
        // Everything is reserved by transactions in progress: soon.
        Duration::from_secs(60)
    } else {
        window.retry_after(t)
    };
    Err(Exceeded {
        limit: name,
        max,
        retry_after,
        domain: None,
    })
}

/// Whether `messages` more messages and `rcpts` more recipients fit in `c`.
fn fits(
    c: &mut UserCounts,
    limits: &RateLimits,
    (messages, rcpts): (u32, u32),
    t: Duration,
) -> Result<(), Exceeded> {
    if messages > 0 {
        let (w, r) = (&mut c.messages_hour, c.reserved_messages);
        check(
            w,
            r,
            messages,
            limits.messages_per_hour,
            "messages_per_hour",
            t,
        )?;
    }
    if rcpts > 0 {
        let r = c.reserved_rcpts;
        check(
            &mut c.rcpts_hour,
            r,
            rcpts,
            limits.recipients_per_hour,
            "recipients_per_hour",
            t,
        )?;
        check(
            &mut c.rcpts_day,
            r,
            rcpts,
            limits.recipients_per_day,
            "recipients_per_day",
            t,
        )?;
    }
    Ok(())
}

/// The memory store's answers, synchronous: the shared store falls back on them.
impl MemoryRates {
    /// Reserves `n` = (messages, recipients) for the user under `limits` and for
    /// the domain under `domain` (its limits), all or nothing, under one lock.
    fn reserve_now(
        &self,
        who: Parties<'_>,
        limits: Option<&RateLimits>,
        domain: Option<&RateLimits>,
        n: (u32, u32),
        now: Instant,
    ) -> Result<(), Exceeded> {
        let t = self.since(now);
        let mut map = self.counts.locked();
        if let (Some(u), Some(l)) = (who.user, limits) {
            fits(counts(&mut map, Key::User(u.to_string())), l, n, t)?;
        }
        if let (Some(d), Some(l)) = (who.domain, domain) {
            fits(counts(&mut map, Key::Domain(d.to_string())), l, n, t).map_err(|mut e| {
                e.domain = Some(d.to_string());
                e
            })?;
        }
        for key in who.keys() {
            let c = counts(&mut map, key);
            c.reserved_messages += n.0;
            c.reserved_rcpts += n.1;
        }
        Ok(())
    }

    pub fn reserve_message_now(
        &self,
        user: &str,
        limits: &RateLimits,
        domain: Option<&DomainLimits>,
        now: Instant,
    ) -> Result<(), Exceeded> {
        let who = Parties {
            user: Some(user),
            domain: domain.map(|d| d.domain.as_str()),
        };
        self.reserve_now(who, Some(limits), domain.map(|d| &d.limits), (1, 0), now)
    }

    pub fn reserve_recipient_now(
        &self,
        who: Parties<'_>,
        limits: &RateLimits,
        domain: Option<&RateLimits>,
        now: Instant,
    ) -> Result<(), Exceeded> {
        let no_limit = RateLimits::default();
        let domain = domain.or(Some(&no_limit));
        self.reserve_now(who, Some(limits), domain, (0, 1), now)
    }

    /// Reserves one message and `rcpts` recipients in `domain` only.
    pub fn reserve_domain_now(
        &self,
        domain: &DomainLimits,
        rcpts: u32,
        now: Instant,
    ) -> Result<(), Exceeded> {
        let who = Parties::domain(&domain.domain);
        self.reserve_now(who, None, Some(&domain.limits), (1, rcpts), now)
    }

    pub fn commit_now(&self, who: Parties<'_>, rcpts: u32, now: Instant) {
        let t = self.since(now);
        let mut map = self.counts.locked();
        for key in who.keys() {
            let c = counts(&mut map, key);
            c.reserved_messages = c.reserved_messages.saturating_sub(1);
            c.reserved_rcpts = c.reserved_rcpts.saturating_sub(rcpts);
            c.messages_hour.add(t, 1);
            c.rcpts_hour.add(t, rcpts);
            c.rcpts_day.add(t, rcpts);
        }
    }

    pub fn release_now(&self, who: Parties<'_>, messages: u32, rcpts: u32) {
        let mut map = self.counts.locked();
        for key in who.keys() {
            let c = counts(&mut map, key);
            c.reserved_messages = c.reserved_messages.saturating_sub(messages);
            c.reserved_rcpts = c.reserved_rcpts.saturating_sub(rcpts);
        }
    }

    pub fn prune_now(&self, now: Instant) -> usize {
        let t = self.since(now);
        let mut map = self.counts.locked();
        map.retain(|_, c| !c.idle(t));
        map.len()
    }

    fn usage_of(&self, key: &Key, now: Instant) -> Usage {
        let t = self.since(now);
        let mut map = self.counts.locked();
        match map.get_mut(key) {
            Some(c) => Usage {
                messages_last_hour: c.messages_hour.used(t),
                recipients_last_hour: c.rcpts_hour.used(t),
                recipients_last_day: c.rcpts_day.used(t),
            },
            None => Usage::default(),
        }
    }

    pub fn usage_now(&self, user: &str, now: Instant) -> Usage {
        self.usage_of(&Key::User(user.to_string()), now)
    }

    pub fn domain_usage_now(&self, domain: &str, now: Instant) -> Usage {
        self.usage_of(&Key::Domain(domain.to_string()), now)
    }

    /// Counts use that was reserved elsewhere (the shared store, before it went
    /// away), so this instance's own memory stays a true lower bound.
    pub fn record(&self, who: Parties<'_>, messages: u32, rcpts: u32, now: Instant) {
        let t = self.since(now);
        let mut map = self.counts.locked();
        for key in who.keys() {
            let c = counts(&mut map, key);
            c.messages_hour.add(t, messages);
            c.rcpts_hour.add(t, rcpts);
            c.rcpts_day.add(t, rcpts);
        }
    }
}

impl RateStore for MemoryRates {
    fn reserve_message<'a>(
        &'a self,
        user: &'a str,
        limits: &'a RateLimits,
        domain: Option<&'a DomainLimits>,
        now: Instant,
    ) -> Pending<'a, Result<Ticket, Exceeded>> {
        let r = self.reserve_message_now(user, limits, domain, now);
        Box::pin(ready(r.map(|()| Ticket::local(user, domain))))
    }

    fn reserve_recipient<'a>(
        &'a self,
        ticket: &'a mut Ticket,
        limits: &'a RateLimits,
        domain: Option<&'a RateLimits>,
        now: Instant,
    ) -> Pending<'a, Result<(), Exceeded>> {
        let who = Parties::of(ticket);
        Box::pin(ready(self.reserve_recipient_now(who, limits, domain, now)))
    }

    fn reserve_domain<'a>(
        &'a self,
        ticket: &'a mut Ticket,
        domain: &'a DomainLimits,
        rcpts: u32,
        now: Instant,
    ) -> Pending<'a, Result<(), Exceeded>> {
        let r = self.reserve_domain_now(domain, rcpts, now);
        if r.is_ok() {
            ticket.domain = Some(domain.domain.clone());
        }
        Box::pin(ready(r))
    }

    fn commit<'a>(&'a self, ticket: &'a Ticket, rcpts: u32, now: Instant) -> Pending<'a, ()> {
        self.commit_now(Parties::of(ticket), rcpts, now);
        Box::pin(ready(()))
    }

    fn release(&self, ticket: &Ticket, messages: u32, rcpts: u32) {
        self.release_now(Parties::of(ticket), messages, rcpts)
    }

    fn prune(&self, now: Instant) -> usize {
        self.prune_now(now)
    }

    fn usage<'a>(&'a self, user: &'a str, now: Instant) -> Pending<'a, Usage> {
        Box::pin(ready(self.usage_now(user, now)))
    }

    fn domain_usage<'a>(&'a self, domain: &'a str, now: Instant) -> Pending<'a, Usage> {
        Box::pin(ready(self.domain_usage_now(domain, now)))
    }
}
