//! Per-user sending quotas: messages per hour, recipients per hour and per day.
//!
//! Counts are exact sliding windows (to the second), so `messages_per_hour: 100`
//! means at most 100 messages in any hour: a token bucket such as governor's
//! GCRA would let a full burst plus the refill through (199 in the first hour), which
//! is exactly what a leaked password would use.
//!
//! A message is counted only when it is accepted. Until then its place is *reserved*
//! (at MAIL for the message, at each RCPT for a recipient), so concurrent sessions of
//! one user cannot together overshoot, and a message that is refused or abandoned
//! gives its reservation back and costs nothing.
//!
//! A sender domain may have limits of its own (see `config::domains`): a message
//! then counts against its user *and* its domain, reserved in both at once, so
//! that ten users of one domain share the domain's quota. The stricter wins: a
//! message goes only if both have room, and only accepted ones count, in both.
//!
//! The store sits behind [`RateStore`] so that a shared one (Redis) can replace the
//! in-memory [`MemoryRates`] for several instances.

use crate::config::RateLimits;
use crate::lock::MutexExt;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which limit was reached, and when the count will have room again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: &'static str,
    pub max: u32,
    pub retry_after: Duration,
    /// The sender domain whose limit this is; `None`: the user's own.
    pub domain: Option<String>,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.domain {
            write!(f, "{} of domain {d} ", self.limit)?;
        } else {
            write!(f, "{} ", self.limit)?;
        }
        write!(
            f,
            "({}) reached, resets in {}",
            self.max,
            human(self.retry_after)
        )
    }
}

/// `1h05m`, `12m`, `40s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs().max(1);
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

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

/// A sender domain (its `config::domain_key`) and the limits that apply to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainLimits {
    pub domain: String,
    pub limits: RateLimits,
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

/// What a user has used, counted (accepted) messages only, for the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub messages_last_hour: u32,
    pub recipients_last_hour: u32,
    pub recipients_last_day: u32,
}

/// A boxed future: the store may have to ask a server (Redis) for its answer.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One reservation as its store knows it. The memory store needs only the user;
/// a shared store also records where the reservation was made, so that it is
/// committed or given back in the same place (see `state::rates`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ticket {
    pub user: String,
    /// The store's id for this reservation (unique across instances).
    pub id: String,
    /// Made in the shared store (else in this instance's memory).
    pub shared: bool,
    /// Recipients reserved ahead (with the message) and not yet claimed by RCPT.
    pub spare: u32,
    /// Recipients reserved in this instance's memory although the message is
    /// shared (the shared store could not be reached at RCPT).
    pub local_rcpts: u32,
    /// The sender domain reserved with the user, if its limits count this message.
    pub domain: Option<String>,
    /// The domain's reservation is in this instance's memory although the user's
    /// is shared (a null-sender message whose domain was reserved while the
    /// shared store could not be reached).
    pub domain_local: bool,
}

impl Ticket {
    /// A ticket with nothing but the user (the memory store's).
    pub fn local(user: &str) -> Ticket {
        Ticket {
            user: user.to_string(),
            ..Ticket::default()
        }
    }
}

/// Where quota counts live. Reserving and counting may need a round trip to a
/// shared store, so they are futures; giving back is fire-and-forget, because it
/// happens when a transaction is dropped.
pub trait RateStore: Send + Sync {
    /// Reserves room for one more message of `user`, and of `domain` when given
    /// (both or neither), or says which limit is reached.
    fn reserve_message<'a>(
        &'a self,
        user: &'a str,
        limits: &'a RateLimits,
        domain: Option<&'a DomainLimits>,
        now: Instant,
    ) -> Pending<'a, Result<Ticket, Exceeded>>;
    /// Reserves room for one more recipient of the message `ticket` holds, in
    /// its domain too (`domain` are the domain's limits) if it has one.
    fn reserve_recipient<'a>(
        &'a self,
        ticket: &'a mut Ticket,
        limits: &'a RateLimits,
        domain: Option<&'a RateLimits>,
        now: Instant,
    ) -> Pending<'a, Result<(), Exceeded>>;
    /// Reserves the message and its `rcpts` recipients in `domain` at once, for a
    /// message whose domain is known only at the end of DATA (the null sender's
    /// header From). The ticket must have no domain yet.
    fn reserve_domain<'a>(
        &'a self,
        ticket: &'a mut Ticket,
        domain: &'a DomainLimits,
        rcpts: u32,
        now: Instant,
    ) -> Pending<'a, Result<(), Exceeded>>;
    /// Turns a reservation (one message, `rcpts` recipients) into counted use.
    fn commit<'a>(&'a self, ticket: &'a Ticket, rcpts: u32, now: Instant) -> Pending<'a, ()>;
    /// Gives reservations back: `messages` messages and `rcpts` recipients.
    fn release(&self, ticket: &Ticket, messages: u32, rcpts: u32);
    /// Drops users with nothing counted; returns how many remain (in memory).
    fn prune(&self, now: Instant) -> usize;
    /// What `user` has used in the current windows (reservations not included).
    fn usage<'a>(&'a self, user: &'a str, now: Instant) -> Pending<'a, Usage>;
    /// What the users of `domain` (a domain key) have used together, counted
    /// only while the domain had limits.
    fn domain_usage<'a>(&'a self, domain: &'a str, now: Instant) -> Pending<'a, Usage>;
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
        Box::pin(ready(r.map(|()| Ticket {
            domain: domain.map(|d| d.domain.clone()),
            ..Ticket::local(user)
        })))
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

/// One transaction's reservation; given back on drop unless committed, so a
/// transaction that ends any other way (RSET, error, disconnect) costs nothing.
pub struct Reservation {
    store: Arc<dyn RateStore>,
    ticket: Ticket,
    /// The sender domain's limits, when they count this message.
    domain: Option<DomainLimits>,
    rcpts: u32,
    done: bool,
}

impl Reservation {
    /// Reserves a message for `user`.
    pub async fn message(
        store: Arc<dyn RateStore>,
        user: &str,
        limits: &RateLimits,
        now: Instant,
    ) -> Result<Reservation, Exceeded> {
        Reservation::message_in(store, user, limits, None, now).await
    }

    /// Reserves a message for `user` and, when given, its sender domain.
    pub async fn message_in(
        store: Arc<dyn RateStore>,
        user: &str,
        limits: &RateLimits,
        domain: Option<DomainLimits>,
        now: Instant,
    ) -> Result<Reservation, Exceeded> {
        let ticket = store
            .reserve_message(user, limits, domain.as_ref(), now)
            .await?;
        Ok(Reservation {
            store,
            ticket,
            domain,
            rcpts: 0,
            done: false,
        })
    }

    /// Reserves one more recipient in this transaction (in its domain too).
    pub async fn recipient(&mut self, limits: &RateLimits, now: Instant) -> Result<(), Exceeded> {
        let domain = self.domain.as_ref().map(|d| &d.limits);
        self.store
            .reserve_recipient(&mut self.ticket, limits, domain, now)
            .await?;
        self.rcpts += 1;
        Ok(())
    }

    /// Whether a sender domain is reserved with this message.
    pub fn has_domain(&self) -> bool {
        self.ticket.domain.is_some()
    }

    /// Reserves the message and every recipient so far in `domain` (the null
    /// sender's header From domain, known only at the end of DATA).
    pub async fn domain(&mut self, domain: DomainLimits, now: Instant) -> Result<(), Exceeded> {
        self.store
            .reserve_domain(&mut self.ticket, &domain, self.rcpts, now)
            .await?;
        self.domain = Some(domain);
        Ok(())
    }

    /// Gives back one recipient reservation (the smarthost refused it).
    pub fn drop_recipient(&mut self) {
        if self.rcpts > 0 {
            self.rcpts -= 1;
            self.store.release(&self.ticket, 0, 1);
        }
    }

    /// The message was accepted: count it.
    pub async fn commit(mut self, now: Instant) {
        self.store.commit(&self.ticket, self.rcpts, now).await;
        self.done = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.store.release(&self.ticket, 1, self.rcpts);
        }
    }
}

#[cfg(test)]
mod tests;
