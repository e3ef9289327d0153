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

mod memory;

pub use memory::{MemoryRates, Parties};

use crate::config::RateLimits;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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

/// A sender domain (its `config::domain_key`) and the limits that apply to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainLimits {
    pub domain: String,
    pub limits: RateLimits,
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
    /// The grant (room a shared store took ahead, see `state::grants`) this
    /// message's room came from; `id` then names only a domain reserved at the
    /// end of DATA ([`Ticket::domain_apart`]).
    pub grant: Option<String>,
    /// The domain was reserved apart from the user, under `id` (a null-sender
    /// message whose user's room came from a grant).
    pub domain_apart: bool,
}

impl Ticket {
    /// A ticket held in this instance's memory: the user, and the domain when its
    /// limits count the message.
    pub fn local(user: &str, domain: Option<&DomainLimits>) -> Ticket {
        Ticket {
            user: user.to_string(),
            domain: domain.map(|d| d.domain.clone()),
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
