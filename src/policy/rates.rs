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
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) reached, resets in {}",
            self.limit,
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

/// One user's counts.
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
    /// Reserves room for one more message, or says which limit is reached.
    fn reserve_message<'a>(
        &'a self,
        user: &'a str,
        limits: &'a RateLimits,
        now: Instant,
    ) -> Pending<'a, Result<Ticket, Exceeded>>;
    /// Reserves room for one more recipient of the message `ticket` holds.
    fn reserve_recipient<'a>(
        &'a self,
        ticket: &'a mut Ticket,
        limits: &'a RateLimits,
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
}

/// The in-memory store: one process, counts lost on restart.
pub struct MemoryRates {
    origin: Instant,
    users: Mutex<HashMap<String, UserCounts>>,
}

impl MemoryRates {
    pub fn new(origin: Instant) -> MemoryRates {
        MemoryRates {
            origin,
            users: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, user: &str, f: impl FnOnce(&mut UserCounts) -> R) -> R {
        let mut users = self.users.locked();
        f(users
            .entry(user.to_string())
            .or_insert_with(UserCounts::new))
    }

    fn since(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
    }
}

fn check(
    window: &mut Window,
    reserved: u32,
    max: Option<u32>,
    name: &'static str,
    t: Duration,
) -> Result<(), Exceeded> {
    let Some(max) = max else { return Ok(()) };
    if window.used(t) + reserved < max {
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
    })
}

/// The memory store's answers, synchronous: the shared store falls back on them.
impl MemoryRates {
    pub fn reserve_message_now(
        &self,
        user: &str,
        limits: &RateLimits,
        now: Instant,
    ) -> Result<(), Exceeded> {
        let t = self.since(now);
        self.with(user, |c| {
            check(
                &mut c.messages_hour,
                c.reserved_messages,
                limits.messages_per_hour,
                "messages_per_hour",
                t,
            )?;
            c.reserved_messages += 1;
            Ok(())
        })
    }

    pub fn reserve_recipient_now(
        &self,
        user: &str,
        limits: &RateLimits,
        now: Instant,
    ) -> Result<(), Exceeded> {
        let t = self.since(now);
        self.with(user, |c| {
            check(
                &mut c.rcpts_hour,
                c.reserved_rcpts,
                limits.recipients_per_hour,
                "recipients_per_hour",
                t,
            )?;
            check(
                &mut c.rcpts_day,
                c.reserved_rcpts,
                limits.recipients_per_day,
                "recipients_per_day",
                t,
            )?;
            c.reserved_rcpts += 1;
            Ok(())
        })
    }

    pub fn commit_now(&self, user: &str, rcpts: u32, now: Instant) {
        let t = self.since(now);
        self.with(user, |c| {
            c.reserved_messages = c.reserved_messages.saturating_sub(1);
            c.reserved_rcpts = c.reserved_rcpts.saturating_sub(rcpts);
            c.messages_hour.add(t, 1);
            c.rcpts_hour.add(t, rcpts);
            c.rcpts_day.add(t, rcpts);
        })
    }

    pub fn release_now(&self, user: &str, messages: u32, rcpts: u32) {
        self.with(user, |c| {
            c.reserved_messages = c.reserved_messages.saturating_sub(messages);
            c.reserved_rcpts = c.reserved_rcpts.saturating_sub(rcpts);
        })
    }

    pub fn prune_now(&self, now: Instant) -> usize {
        let t = self.since(now);
        let mut users = self.users.locked();
        users.retain(|_, c| !c.idle(t));
        users.len()
    }

    pub fn usage_now(&self, user: &str, now: Instant) -> Usage {
        let t = self.since(now);
        let mut users = self.users.locked();
        match users.get_mut(user) {
            Some(c) => Usage {
                messages_last_hour: c.messages_hour.used(t),
                recipients_last_hour: c.rcpts_hour.used(t),
                recipients_last_day: c.rcpts_day.used(t),
            },
            None => Usage::default(),
        }
    }

    /// Counts use that was reserved elsewhere (the shared store, before it went
    /// away), so this instance's own memory stays a true lower bound.
    pub fn record(&self, user: &str, messages: u32, rcpts: u32, now: Instant) {
        let t = self.since(now);
        self.with(user, |c| {
            c.messages_hour.add(t, messages);
            c.rcpts_hour.add(t, rcpts);
            c.rcpts_day.add(t, rcpts);
        })
    }
}

impl RateStore for MemoryRates {
    fn reserve_message<'a>(
        &'a self,
        user: &'a str,
        limits: &'a RateLimits,
        now: Instant,
    ) -> Pending<'a, Result<Ticket, Exceeded>> {
        let r = self.reserve_message_now(user, limits, now);
        Box::pin(ready(r.map(|()| Ticket::local(user))))
    }

    fn reserve_recipient<'a>(
        &'a self,
        ticket: &'a mut Ticket,
        limits: &'a RateLimits,
        now: Instant,
    ) -> Pending<'a, Result<(), Exceeded>> {
        Box::pin(ready(self.reserve_recipient_now(&ticket.user, limits, now)))
    }

    fn commit<'a>(&'a self, ticket: &'a Ticket, rcpts: u32, now: Instant) -> Pending<'a, ()> {
        self.commit_now(&ticket.user, rcpts, now);
        Box::pin(ready(()))
    }

    fn release(&self, ticket: &Ticket, messages: u32, rcpts: u32) {
        self.release_now(&ticket.user, messages, rcpts)
    }

    fn prune(&self, now: Instant) -> usize {
        self.prune_now(now)
    }

    fn usage<'a>(&'a self, user: &'a str, now: Instant) -> Pending<'a, Usage> {
        Box::pin(ready(self.usage_now(user, now)))
    }
}

/// One transaction's reservation; given back on drop unless committed, so a
/// transaction that ends any other way (RSET, error, disconnect) costs nothing.
pub struct Reservation {
    store: Arc<dyn RateStore>,
    ticket: Ticket,
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
        let ticket = store.reserve_message(user, limits, now).await?;
        Ok(Reservation {
            store,
            ticket,
            rcpts: 0,
            done: false,
        })
    }

    /// Reserves one more recipient in this transaction.
    pub async fn recipient(&mut self, limits: &RateLimits, now: Instant) -> Result<(), Exceeded> {
        self.store
            .reserve_recipient(&mut self.ticket, limits, now)
            .await?;
        self.rcpts += 1;
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
