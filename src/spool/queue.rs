//! Delivery from the spool: a scheduler that starts due deliveries up to
//! `delivery.concurrency` at once, each over a pooled smarthost connection, with
//! per-recipient results, retries on a schedule with jitter, and bounces for
//! permanent failures. A smarthost that throttles is held on its own (see
//! [`crate::upstream::throttle`]): mail for the other smarthosts keeps going.

use super::envelope::Envelope;
use super::remover::Remover;
use super::schedule::Schedule;
use super::store::{MessageWriter, Spool, unix_now};
use crate::config::Delivery;
use crate::lock::MutexExt;
use crate::upstream::Relays;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tracing::{Instrument, error, info, info_span};

/// The queue in memory: which ids are spooled and when each is due.
pub struct Queue {
    spool: Spool,
    pub(super) policy: Delivery,
    /// Where deliveries go.
    pub(super) relays: Arc<Relays>,
    /// Our name, for the bounces we write.
    pub(super) hostname: String,
    /// DKIM keys: each attempt signs the message with its `From:` domain's keys.
    pub(super) dkim: Arc<crate::dkim::Keyring>,
    /// Where attempts and bounces are reported (the delivery log, webhooks).
    pub(super) events: Arc<crate::events::Events>,
    /// When each message is due, and when it was queued.
    due: Mutex<Schedule>,
    in_flight: Mutex<HashSet<String>>,
    /// Deleted by the operator while possibly in flight: do not write them back.
    deleted: Mutex<HashSet<String>>,
    /// Attempts made so far, for messages whose count is newer than their envelope
    /// on disk (a deferral that changed nothing else is not written back).
    attempts: Mutex<HashMap<String, u32>>,
    /// Removes delivered messages on a thread of its own.
    pub(super) remover: Remover,
    wake: Notify,
    permits: Arc<Semaphore>,
    /// Slots for attempts that have run longer than [`STALLED_AFTER`]: they give
    /// their delivery slot back so that one slow transaction does not hold up the
    /// queue, and this caps how many smarthost connections they may hold.
    stalled: Arc<Semaphore>,
}

/// An attempt running longer than this stops counting against `delivery.concurrency`.
const STALLED_AFTER: Duration = Duration::from_secs(1);

/// How many stalled attempts may run, per slot of `delivery.concurrency`.
const STALLED_PER_SLOT: usize = 4;

impl Queue {
    /// Opens the spool and loads what is queued (a restart resumes every message with
    /// its attempt count and next-attempt time).
    pub fn open(
        policy: &Delivery,
        hostname: &str,
        relays: Arc<Relays>,
        dkim: Arc<crate::dkim::Keyring>,
        events: Arc<crate::events::Events>,
    ) -> std::io::Result<Queue> {
        let spool = Spool::open(&policy.spool_directory)?;
        let envs = spool.load_all(true)?;
        let mut due = Schedule::default();
        for e in &envs {
            due.insert(&e.id, e.next_attempt, e.created);
        }
        if !envs.is_empty() {
            info!(messages = envs.len(), "resuming the queue");
        }
        Ok(Queue {
            remover: Remover::start(spool.clone())?,
            attempts: Mutex::new(HashMap::new()),
            stalled: Arc::new(Semaphore::new(policy.concurrency * STALLED_PER_SLOT)),
            spool,
            policy: policy.clone(),
            relays,
            hostname: hostname.to_string(),
            dkim,
            events,
            due: Mutex::new(due),
            in_flight: Mutex::new(HashSet::new()),
            deleted: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            permits: Arc::new(Semaphore::new(policy.concurrency)),
        })
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Messages in the queue.
    pub fn len(&self) -> usize {
        self.due.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes a finished message over from a session: makes it durable. When this
    /// returns `Ok`, the client may be told 250; the message is not delivered
    /// until [`Queue::enqueued`] schedules it, so the session records its intake
    /// first and no delivery attempt can be logged ahead of it.
    pub async fn accept(&self, writer: MessageWriter, env: &Envelope) -> std::io::Result<()> {
        self.spool.commit(writer, env).await
    }

    /// A message was just committed to the spool: it is due now.
    pub fn enqueued(&self, env: &Envelope) {
        self.due
            .locked()
            .insert(&env.id, env.next_attempt, env.created);
        self.wake.notify_one();
    }

    /// Makes every message due now and ends every smarthost's hold (`postern queue
    /// flush`); returns how many.
    pub fn flush(&self) -> usize {
        let n = self.due.locked().flush();
        self.relays.clear_holds();
        self.wake.notify_one();
        n
    }

    /// Removes a message (`postern queue delete`); returns whether it was queued.
    ///
    /// A message in flight is marked in `deleted` before its files go; a delivery
    /// writing its envelope back checks the mark before and after the write (see
    /// [`Queue::write_back`]), so a message deleted during an attempt cannot be
    /// resurrected. No lock is held across the disk I/O.
    pub fn delete(&self, id: &str) -> std::io::Result<bool> {
        self.due.locked().remove(id);
        self.attempts.locked().remove(id);
        let mut deleted = self.deleted.locked();
        if self.in_flight.locked().contains(id) {
            deleted.insert(id.to_string());
        }
        // Never recycled: a delivery in flight may still be reading this file, and a
        // reused file would hand it another message's content.
        self.spool.discard(id)
    }

    /// The wait before attempt number `attempts + 1`, with ±10% jitter so that
    /// messages deferred together do not come back together.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let s = &self.policy.retry_schedule;
        let base = s[(attempts.max(1) as usize - 1).min(s.len() - 1)];
        let jitter = (rand_u32() % 2001) as f64 / 10_000.0 - 0.1;
        base.mul_f64(1.0 + jitter)
    }

    /// Ids due now and not in flight, oldest due first, and when the next one after
    /// them is due.
    fn take_due(&self, now: u64, max: usize) -> (Vec<String>, Option<u64>) {
        let mut due = self.due.locked();
        let mut in_flight = self.in_flight.locked();
        let picked = due.take_due(now, max);
        for id in &picked {
            in_flight.insert(id.clone());
        }
        (picked, due.next_due())
    }

    fn finished(&self, id: &str, next: Option<u64>) {
        self.in_flight.locked().remove(id);
        let mut due = self.due.locked();
        let was_deleted = self.deleted.locked().remove(id);
        match next {
            Some(t) if !was_deleted => due.requeue(id, t),
            _ => {
                due.remove(id);
            }
        }
        drop(due);
        if next.is_none() || was_deleted {
            self.attempts.locked().remove(id);
        }
        self.wake.notify_one();
    }

    /// Publishes the queue's size and the age of its oldest message.
    fn gauges(&self, now: u64) {
        let due = self.due.locked();
        let oldest = due.oldest_created().map_or(0, |c| now.saturating_sub(c));
        metrics::gauge!("postern_queue_messages").set(due.len() as f64);
        metrics::gauge!("postern_queue_oldest_seconds").set(oldest as f64);
    }

    /// Waits until every delivery in flight has finished (at shutdown).
    pub async fn idle(&self) {
        let _all = self
            .permits
            .acquire_many(self.policy.concurrency as u32)
            .await;
        let _stalled = self
            .stalled
            .acquire_many((self.policy.concurrency * STALLED_PER_SLOT) as u32)
            .await;
    }

    pub(super) fn is_deleted(&self, id: &str) -> bool {
        self.deleted.locked().contains(id)
    }

    /// Attempts made on `id`, counting those not yet written to its envelope.
    pub(super) fn attempts_of(&self, env: &Envelope) -> u32 {
        let known = self.attempts.locked();
        known.get(&env.id).copied().unwrap_or(0).max(env.attempts)
    }

    pub(super) fn remember_attempts(&self, id: &str, attempts: u32) {
        self.attempts.locked().insert(id.to_string(), attempts);
    }

    /// Writes a deferred message's envelope back, on the blocking pool, unless the
    /// operator deleted it meanwhile. The mark is checked again after the write: a
    /// delete that came between the two removed the message file and maybe not the
    /// new envelope, which goes now (a crash in between leaves a stray `.env`
    /// without its message, removed at the next start).
    pub(super) async fn write_back(self: Arc<Self>, env: Envelope) {
        let written = tokio::task::spawn_blocking(move || {
            if self.is_deleted(&env.id) {
                return Ok(());
            }
            self.spool.write_envelope(&env)?;
            if self.is_deleted(&env.id) {
                self.spool.remove_envelope(&env.id)?;
            }
            std::io::Result::Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            error!(error = %e, "cannot update the envelope; the attempt will repeat");
        }
    }
}

/// A cheap random number for jitter (not for anything secret).
fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u32::from_le_bytes(b)
}
/// The scheduler: runs until `shutdown` turns true, then lets deliveries in flight
/// finish (the server bounds that with `shutdown_grace`).
pub async fn run(queue: Arc<Queue>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            break;
        }
        let now = unix_now();
        queue.gauges(now);
        let free = queue.permits.available_permits();
        let (ids, next) = queue.take_due(now, free);
        for id in ids {
            let permit = queue
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore open");
            start_delivery(&queue, id, permit);
        }
        let wait_until = next.unwrap_or(now + 60).max(now + 1);
        let wait = until_second(wait_until).min(Duration::from_secs(60));
        tokio::select! {
            _ = queue.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    info!(
        queued = queue.len(),
        "queue stopped; undelivered messages stay spooled"
    );
}

/// How long until Unix second `t` begins: the scheduler wakes at the second a
/// message is due rather than up to a second later (paced messages are due at
/// the second their slot comes).
fn until_second(t: u64) -> Duration {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(t);
    at.duration_since(std::time::SystemTime::now())
        .unwrap_or_default()
}

/// Runs one delivery attempt in a task of its own, holding a delivery slot. After
/// [`STALLED_AFTER`] it trades the slot for a stalled slot if one is free, so that a
/// smarthost stalling one transaction does not hold up every message behind it
/// (with 8 slots, 20-s stalls of 1% of messages capped delivery near 40 msg/s).
/// Every network step of the attempt has its own timeout (`timeouts.upstream_*`).
fn start_delivery(queue: &Arc<Queue>, id: String, permit: OwnedSemaphorePermit) {
    let (queue, stalled) = (queue.clone(), queue.stalled.clone());
    let span = info_span!("delivery", queue_id = %id);
    let task = async move {
        let work = super::attempt::deliver(&queue, &id);
        tokio::pin!(work);
        let mut held = permit;
        let next = tokio::select! {
            next = &mut work => next,
            _ = tokio::time::sleep(STALLED_AFTER) => {
                if let Ok(spare) = stalled.try_acquire_owned() {
                    held = spare;
                    queue.wake.notify_one();
                }
                work.await
            }
        };
        queue.finished(&id, next);
        drop(held);
    };
    tokio::spawn(task.instrument(span));
}
