//! Room taken ahead from the shared quotas: grants.
//!
//! Asking Redis twice for every message (reserve at MAIL, count at the end of
//! DATA) makes Redis the price of every message. Far from a limit, the reserve
//! script instead lets an instance take up to [`GRANT`] more messages (and as
//! many recipients) ahead, under one reservation id: a *grant*. This instance
//! then hands that room to its sessions without asking anybody, counts what they
//! send, and settles with Redis in one call per grant ([`Grants::due`]): what was
//! sent is counted, what was not used is given back.
//!
//! Nothing overshoots: a grant is a reservation, so other instances see its room
//! as taken. What it costs is fairness near a limit, and the script takes care of
//! that: within 128 messages of a limit no grant is made (every message asks, as
//! before), and beyond, a grant takes at most 1/128 of the room left. A grant
//! hands out room for at most [`LIFE`] and is then settled, so room one instance
//! took and did not use goes back within about a second; the counts in Redis lag
//! this instance's sending by at most the settling period (and at shutdown,
//! everything is settled).
//!
//! This module is only the bookkeeping (pure, no I/O); `state::rates` talks to
//! Redis.

use crate::config::RateLimits;
use crate::lock::MutexExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most messages (and recipients) a grant takes beyond the one it is for.
pub const GRANT: u32 = 63;

/// How long a grant hands out room before it is settled and a new one taken.
pub const LIFE: Duration = Duration::from_secs(1);

/// How long a settle Redis does not confirm is sent again before it is given up
/// (logged): less than the time Redis remembers what it applied (the lease), so
/// that a settle sent again is never applied twice.
pub const RETRY_FOR: Duration = Duration::from_secs(10 * 60);

/// Who a grant's room belongs to: a user, and the sender domain reserved with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Owner {
    user: String,
    domain: Option<String>,
}

/// The limits a grant was taken under; room is handed out only under the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    pub user: RateLimits,
    pub domain: Option<RateLimits>,
}

#[derive(Debug)]
struct Grant {
    owner: Owner,
    terms: Terms,
    born: Instant,
    /// Still handing out room (else it waits for its sessions, then goes).
    current: bool,
    spare_msgs: u32,
    /// Recipients reserved and not handed out; `None`: no recipient limit, so
    /// every recipient fits without a reservation.
    spare_rcpts: Option<u32>,
    /// Handed to transactions still in progress.
    out_msgs: u32,
    out_rcpts: u32,
    /// Since the last settle: sent (to count), and given back (to drop).
    sent_msgs: u32,
    sent_rcpts: u32,
    back_msgs: u32,
    back_rcpts: u32,
    /// The settle sent and not yet confirmed: sent again, as it is, until
    /// Redis confirms it (its token makes a repeat count once).
    pending: Option<Settle>,
    /// When the pending settle was first sent.
    pending_since: Option<Instant>,
    /// Settles made so far (each one's token is the grant id and this).
    settles: u64,
}

impl Grant {
    /// Stops handing out messages: their spare room is given back at the next
    /// settle. Spare recipients stay for the messages still in progress, and go
    /// back with the last of them.
    fn retire(&mut self) {
        self.current = false;
        self.back_msgs += std::mem::take(&mut self.spare_msgs);
    }

    /// The next settle from what was sent and given back since the last one
    /// (now the grant's pending one), or `None` if there is nothing to say.
    fn next_settle(&mut self, id: &str) -> Option<Settle> {
        let count = (self.sent_msgs, self.sent_rcpts);
        let drop = (count.0 + self.back_msgs, count.1 + self.back_rcpts);
        if drop == (0, 0) {
            return None;
        }
        (
            self.sent_msgs,
            self.sent_rcpts,
            self.back_msgs,
            self.back_rcpts,
        ) = (0, 0, 0, 0);
        self.settles += 1;
        Some(Settle {
            id: id.to_string(),
            seq: self.settles,
            user: self.owner.user.clone(),
            domain: self.owner.domain.clone(),
            count,
            drop,
        })
    }
}

/// One call to make to Redis: for reservation `id` (a grant's, of `user` and
/// `domain`), count `count` and give back `drop` (messages, recipients). `id`
/// and `seq` make its token: Redis applies a settle once, however often sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settle {
    pub id: String,
    pub seq: u64,
    pub user: String,
    pub domain: Option<String>,
    pub count: (u32, u32),
    pub drop: (u32, u32),
}

/// What [`Grants::due`] found: the settles to send, and how many were given up
/// after [`RETRY_FOR`] without a confirmation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    pub calls: Vec<Settle>,
    pub given_up: usize,
}

/// This instance's grants.
#[derive(Default)]
pub struct Grants {
    inner: Mutex<Book>,
}

/// The grants by id, and the ids of those still handing out by owner (so that a
/// message finds its user's without looking through every user's).
#[derive(Default)]
struct Book {
    grants: HashMap<String, Grant>,
    current: HashMap<Owner, Vec<String>>,
}

impl Book {
    /// Retires grant `id` and takes it off its owner's current list.
    fn retire(&mut self, id: &str) {
        let Some(g) = self.grants.get_mut(id) else {
            return;
        };
        g.retire();
        if let Some(ids) = self.current.get_mut(&g.owner) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.current.remove(&g.owner);
            }
        }
    }
}

impl Grants {
    /// Takes one message from a current grant of `user` (and `domain`) taken
    /// under the same `terms`; returns its id, or `None` if Redis must be asked.
    pub fn take(&self, user: &str, domain: Option<&str>, terms: &Terms) -> Option<String> {
        let mut book = self.inner.locked();
        let owner = Owner {
            user: user.to_string(),
            domain: domain.map(str::to_string),
        };
        let id = book.current.get(&owner)?.iter().find(|id| {
            book.grants
                .get(*id)
                .is_some_and(|g| g.spare_msgs > 0 && g.terms == *terms)
        })?;
        let id = id.clone();
        let g = book.grants.get_mut(&id)?;
        g.spare_msgs -= 1;
        g.out_msgs += 1;
        if g.spare_msgs == 0 {
            book.retire(&id);
        }
        Some(id)
    }

    /// Records a grant Redis just made: `msgs` messages (one of them taken now)
    /// and `rcpts` recipients (`None`: no recipient limit).
    pub fn add(
        &self,
        id: &str,
        user: &str,
        domain: Option<&str>,
        terms: Terms,
        (msgs, rcpts): (u32, Option<u32>),
        now: Instant,
    ) {
        let grant = Grant {
            owner: Owner {
                user: user.to_string(),
                domain: domain.map(str::to_string),
            },
            terms,
            born: now,
            current: msgs > 1,
            spare_msgs: msgs.saturating_sub(1),
            spare_rcpts: rcpts,
            out_msgs: 1,
            out_rcpts: 0,
            sent_msgs: 0,
            sent_rcpts: 0,
            back_msgs: 0,
            back_rcpts: 0,
            pending: None,
            pending_since: None,
            settles: 0,
        };
        let mut book = self.inner.locked();
        if grant.current {
            let ids = book.current.entry(grant.owner.clone()).or_default();
            ids.push(id.to_string());
        }
        book.grants.insert(id.to_string(), grant);
    }

    /// Takes one recipient from grant `id`'s spare room if its message is under
    /// the grant's `terms`; `false`: Redis must be asked.
    pub fn take_rcpt(&self, id: &str, terms: &Terms) -> bool {
        let mut book = self.inner.locked();
        let Some(g) = (book.grants.get_mut(id)).filter(|g| g.terms == *terms) else {
            return false;
        };
        match &mut g.spare_rcpts {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                g.out_rcpts += 1;
                true
            }
        }
    }

    /// Redis reserved one more recipient under grant `id` (beyond its spare).
    pub fn rcpt_reserved(&self, id: &str) {
        if let Some(g) = self.inner.locked().grants.get_mut(id) {
            g.out_rcpts += 1;
        }
    }

    /// A transaction of grant `id` sent its message to `rcpts` recipients.
    pub fn sent(&self, id: &str, rcpts: u32) {
        if let Some(g) = self.inner.locked().grants.get_mut(id) {
            g.out_msgs = g.out_msgs.saturating_sub(1);
            g.out_rcpts = g.out_rcpts.saturating_sub(rcpts);
            g.sent_msgs += 1;
            g.sent_rcpts += rcpts;
        }
    }

    /// A transaction of grant `id` gives back `msgs` messages and `rcpts`
    /// recipients: spare room again while the grant is current.
    pub fn give_back(&self, id: &str, msgs: u32, rcpts: u32) {
        let mut book = self.inner.locked();
        let Some(g) = book.grants.get_mut(id) else {
            return;
        };
        g.out_msgs = g.out_msgs.saturating_sub(msgs);
        g.out_rcpts = g.out_rcpts.saturating_sub(rcpts);
        if g.current {
            g.spare_msgs += msgs;
            if let Some(n) = &mut g.spare_rcpts {
                *n += rcpts;
            }
        } else {
            g.back_msgs += msgs;
            g.back_rcpts += rcpts;
        }
    }

    /// What to tell Redis now: grants older than [`LIFE`] (or all, with `all`)
    /// stop handing out, and every grant with something sent or given back, or
    /// a settle not yet confirmed ([`Grants::confirm`]), is settled. A grant
    /// with nothing in progress and nothing unsettled is then forgotten.
    pub fn due(&self, now: Instant, all: bool) -> Due {
        let mut book = self.inner.locked();
        let aged: Vec<String> = (book.current.values().flatten())
            .filter(|id| {
                let born = book.grants.get(*id).map_or(now, |g| g.born);
                all || now.saturating_duration_since(born) >= LIFE
            })
            .cloned()
            .collect();
        for id in &aged {
            book.retire(id);
        }
        let mut due = Due::default();
        book.grants.retain(|id, g| {
            if !g.current && g.out_msgs == 0 {
                g.back_rcpts += g.spare_rcpts.take().unwrap_or(0);
            }
            let since = g.pending_since.unwrap_or(now);
            if g.pending.is_some() && now.saturating_duration_since(since) >= RETRY_FOR {
                g.pending = None;
                due.given_up += 1;
            }
            if g.pending.is_none() {
                g.pending = g.next_settle(id);
                g.pending_since = Some(now);
            }
            due.calls.extend(g.pending.clone());
            g.current || g.out_msgs > 0 || g.pending.is_some()
        });
        due
    }

    /// Redis answered settle `seq` of grant `id`: applied (`ok`), it is done;
    /// else it stays pending and goes again, as it is, with the next [`Grants::due`].
    pub fn confirm(&self, id: &str, seq: u64, ok: bool) {
        let mut book = self.inner.locked();
        if let Some(g) = book.grants.get_mut(id)
            && ok
            && g.pending.as_ref().is_some_and(|p| p.seq == seq)
        {
            g.pending = None;
        }
    }

    /// How many grants this instance holds (for tests and the log).
    pub fn len(&self) -> usize {
        self.inner.locked().grants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
