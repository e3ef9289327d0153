//! Delivery from the spool: a scheduler that starts due deliveries up to
//! `delivery.concurrency` at once, each over a pooled smarthost connection, with
//! per-recipient results, retries on a schedule with jitter, a whole-queue slowdown
//! when the smarthost throttles, and bounces for permanent failures.

use super::bounce::{self, Failure, Report};
use super::remover::Remover;
use super::schedule::Schedule;
use super::store::{Envelope, RcptState, Spool, unix_now};
use crate::config::Delivery;
use crate::context::Context;
use crate::lock::MutexExt;
use crate::proto::address::is_canonical_path;
use crate::proto::printable::Printable;
use crate::proto::reply::Reply;
use crate::proto::stuff::DotStuffer;
use crate::upstream::{Upstream, UpstreamError};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{Instrument, error, info, info_span, warn};

/// The queue in memory: which ids are spooled and when each is due.
pub struct Queue {
    spool: Spool,
    policy: Delivery,
    /// When each message is due, and when it was queued.
    due: Mutex<Schedule>,
    in_flight: Mutex<HashSet<String>>,
    /// Deleted by the operator while possibly in flight: do not write them back.
    deleted: Mutex<HashSet<String>>,
    /// Attempts made so far, for messages whose count is newer than their envelope
    /// on disk (a deferral that changed nothing else is not written back).
    attempts: Mutex<HashMap<String, u32>>,
    /// Removes delivered messages on a thread of its own.
    remover: Remover,
    wake: Notify,
    /// Unix second until which the smarthost asked us to slow down, and the current
    /// slowdown step.
    throttle: Mutex<(u64, u64)>,
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

/// What one attempt decided for the message as a whole.
#[derive(Debug, Default)]
struct Outcome {
    delivered: Vec<String>,
    deferred: Vec<(String, String)>,
    failed: Vec<Failure>,
    throttled: bool,
    /// When the smarthost answered 250 to the message's DATA.
    accepted_at: Option<std::time::Instant>,
    /// The message needs SMTPUTF8 and this smarthost does not offer it.
    no_smtputf8: bool,
}

/// Why a message needing SMTPUTF8 cannot go to a smarthost that lacks it.
const NO_SMTPUTF8: &str =
    "553 5.6.7 the message needs SMTPUTF8 and the smarthost does not offer it";

fn is_throttle(r: &Reply) -> bool {
    r.code == 421 || r.code == 454 || r.text.to_ascii_lowercase().contains("throttl")
}

fn status_of(r: &Reply) -> String {
    r.esc
        .map(|e| e.to_string())
        .unwrap_or_else(|| format!("{}.0.0", r.code / 100))
}

impl Queue {
    /// Opens the spool and loads what is queued (a restart resumes every message with
    /// its attempt count and next-attempt time).
    pub fn open(policy: &Delivery) -> std::io::Result<Queue> {
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
            due: Mutex::new(due),
            in_flight: Mutex::new(HashSet::new()),
            deleted: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            throttle: Mutex::new((0, 0)),
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

    /// A message was just committed to the spool.
    pub fn enqueued(&self, env: &Envelope) {
        self.due
            .locked()
            .insert(&env.id, env.next_attempt, env.created);
        self.wake.notify_one();
    }

    /// Makes every message due now (`postern queue flush`); returns how many.
    pub fn flush(&self) -> usize {
        let n = self.due.locked().flush();
        *self.throttle.locked() = (0, 0);
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

    fn throttled_until(&self) -> u64 {
        self.throttle.locked().0
    }

    /// The smarthost said slow down: pause the whole queue, 30 s doubling to 10 min.
    fn slow_down(&self) {
        let mut t = self.throttle.locked();
        t.1 = (t.1 * 2).clamp(30, 600);
        t.0 = unix_now() + t.1;
        warn!(
            pause_s = t.1,
            "smarthost is throttling; pausing the whole queue"
        );
    }

    fn delivered_something(&self) {
        let mut t = self.throttle.locked();
        t.1 = 0;
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

    fn is_deleted(&self, id: &str) -> bool {
        self.deleted.locked().contains(id)
    }

    /// Attempts made on `id`, counting those not yet written to its envelope.
    fn attempts_of(&self, env: &Envelope) -> u32 {
        let known = self.attempts.locked();
        known.get(&env.id).copied().unwrap_or(0).max(env.attempts)
    }

    fn remember_attempts(&self, id: &str, attempts: u32) {
        self.attempts.locked().insert(id.to_string(), attempts);
    }

    /// Writes a deferred message's envelope back, on the blocking pool, unless the
    /// operator deleted it meanwhile. The mark is checked again after the write: a
    /// delete that came between the two removed the message file and maybe not the
    /// new envelope, which goes now (a crash in between leaves a stray `.env`
    /// without its message, removed at the next start).
    async fn write_back(self: Arc<Self>, env: Envelope) {
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
pub async fn run(ctx: Arc<Context>) {
    let Some(queue) = ctx.queue.clone() else {
        return;
    };
    let mut shutdown = ctx.shutdown.clone();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let now = unix_now();
        queue.gauges(now);
        let throttled = queue.throttled_until();
        let mut next = None;
        if throttled <= now {
            let free = queue.permits.available_permits();
            let (ids, n) = queue.take_due(now, free);
            next = n;
            for id in ids {
                let permit = queue
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore open");
                start_delivery(ctx.clone(), &queue, id, permit);
            }
        }
        let wait_until = if throttled > now {
            throttled
        } else {
            next.unwrap_or(now + 60).max(now + 1)
        };
        let wait = Duration::from_secs(wait_until.saturating_sub(now).min(60));
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

/// Runs one delivery attempt in a task of its own, holding a delivery slot. After
/// [`STALLED_AFTER`] it trades the slot for a stalled slot if one is free, so that a
/// smarthost stalling one transaction does not hold up every message behind it
/// (with 8 slots, 20-s stalls of 1% of messages capped delivery near 40 msg/s).
/// Every network step of the attempt has its own timeout (`timeouts.upstream_*`).
fn start_delivery(ctx: Arc<Context>, queue: &Queue, id: String, permit: OwnedSemaphorePermit) {
    let stalled = queue.stalled.clone();
    let span = info_span!("delivery", queue_id = %id);
    let task = async move {
        let work = deliver(&ctx, &id);
        tokio::pin!(work);
        let mut held = permit;
        let next = tokio::select! {
            next = &mut work => next,
            _ = tokio::time::sleep(STALLED_AFTER) => {
                if let Ok(spare) = stalled.try_acquire_owned() {
                    held = spare;
                    if let Some(q) = &ctx.queue {
                        q.wake.notify_one();
                    }
                }
                work.await
            }
        };
        if let Some(q) = &ctx.queue {
            q.finished(&id, next);
        }
        drop(held);
    };
    tokio::spawn(task.instrument(span));
}

/// Messages up to this size are read whole for delivery; larger ones are streamed.
const WHOLE_READ: u64 = 256 * 1024;

/// One delivery attempt; returns when to try again, or `None` when the message is
/// done (delivered, bounced or deleted).
async fn deliver(ctx: &Context, id: &str) -> Option<u64> {
    let queue = ctx.queue.as_ref()?;
    let mut env = match load_envelope(queue, id).await {
        Ok(env) => env,
        Err(next) => return next,
    };
    let stored = env.clone();
    env.attempts = queue.attempts_of(&env);
    let started = std::time::Instant::now();
    let outcome = attempt(ctx, &env).await;
    let delivered = outcome.delivered.len();
    let all_delivered = outcome.deferred.is_empty()
        && outcome.failed.is_empty()
        && env
            .pending()
            .all(|r| outcome.delivered.contains(&r.address));
    if all_delivered {
        // The very next step after the smarthost's 250: the window in which a crash
        // would cause a second delivery closes here.
        if let Err(e) = queue.remover.remove(id, outcome.accepted_at) {
            error!(error = %e, "cannot remove a delivered message from the spool");
        }
    }
    count_attempt(&outcome, started);
    if outcome.throttled {
        queue.slow_down();
    }
    if !outcome.delivered.is_empty() {
        queue.delivered_something();
    }
    let now = unix_now();
    let failures = record(
        &mut env,
        outcome,
        now,
        queue.policy.max_queue_lifetime.as_secs(),
    );
    let pending = env.pending().count();
    info!(
        sender = %Printable(&env.from),
        attempt = env.attempts,
        delivered,
        deferred = pending,
        failed = failures.len(),
        last_error = %Printable(env.last_error.as_deref().unwrap_or("")),
        "delivery attempt"
    );
    report_failures(ctx, &env, failures).await;
    warn_if_late(ctx, &mut env, now).await;
    if all_delivered || queue.is_deleted(id) {
        return None;
    }
    reschedule(queue, id, &stored, env, pending, now).await
}

/// Reads `id`'s envelope off the runtime. `Err` holds what [`deliver`] returns
/// when there is nothing to attempt: `None` when the message is gone, a retry in
/// an hour when its envelope cannot be read.
async fn load_envelope(queue: &Queue, id: &str) -> Result<Envelope, Option<u64>> {
    let read = {
        let (spool, id) = (queue.spool().clone(), id.to_string());
        tokio::task::spawn_blocking(move || spool.read_envelope(&id))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    };
    match read {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(None),
        Err(e) => {
            error!(error = %e, "cannot read the envelope; leaving it for the operator");
            Err(Some(unix_now() + 3600))
        }
    }
}

/// Metrics for one attempt: how long the smarthost took, and per-recipient results.
fn count_attempt(outcome: &Outcome, started: std::time::Instant) {
    metrics::histogram!("postern_upstream_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    for (result, n) in [
        ("delivered", outcome.delivered.len()),
        ("deferred", outcome.deferred.len()),
        ("failed", outcome.failed.len()),
    ] {
        metrics::counter!("postern_deliveries_total", "result" => result).increment(n as u64);
    }
}

/// Logs the recipients that failed permanently and bounces them to the sender.
async fn report_failures(ctx: &Context, env: &Envelope, failures: Vec<Failure>) {
    if failures.is_empty() {
        return;
    }
    for f in &failures {
        warn!(rcpt = %Printable(&f.rcpt), status = %f.status, diagnostic = %Printable(&f.diagnostic), "recipient failed permanently");
    }
    notify_sender(ctx, env, Report::Failed, failures).await;
}

/// After an attempt that left the message in the queue: removes it when no
/// recipient is pending any more, or schedules the next attempt (writing the
/// envelope back only when that is worth it, see [`worth_persisting`]).
async fn reschedule(
    queue: &Arc<Queue>,
    id: &str,
    stored: &Envelope,
    mut env: Envelope,
    pending: usize,
    now: u64,
) -> Option<u64> {
    if pending == 0 {
        if let Err(e) = queue.remover.remove(id, None) {
            error!(error = %e, "cannot remove a finished message from the spool");
        }
        return None;
    }
    let delay = queue.backoff(env.attempts);
    env.next_attempt = now + delay.as_secs().max(1);
    queue.remember_attempts(id, env.attempts);
    let next = env.next_attempt;
    if worth_persisting(stored, &env) {
        queue.clone().write_back(env).await;
    }
    Some(next)
}

/// Applies one attempt's outcome to `env` (attempt count, recipient states, last
/// error; recipients still pending past `lifetime` seconds fail) and returns the
/// recipients that failed permanently.
fn record(env: &mut Envelope, outcome: Outcome, now: u64, lifetime: u64) -> Vec<Failure> {
    env.attempts += 1;
    for r in env.rcpts.iter_mut() {
        if outcome.delivered.contains(&r.address) {
            r.state = RcptState::Delivered;
        }
        if let Some(f) = outcome.failed.iter().find(|f| f.rcpt == r.address) {
            r.state = RcptState::Failed;
            r.last_reply = Some(f.diagnostic.clone());
        }
        if let Some((_, why)) = outcome.deferred.iter().find(|(a, _)| *a == r.address) {
            r.last_reply = Some(why.clone());
        }
    }
    let mut failures = outcome.failed;
    if now.saturating_sub(env.created) >= lifetime {
        for r in env
            .rcpts
            .iter_mut()
            .filter(|r| r.state == RcptState::Pending)
        {
            r.state = RcptState::Failed;
            let why = r
                .last_reply
                .clone()
                .unwrap_or_else(|| "no answer from the smarthost".into());
            failures.push(Failure {
                rcpt: r.address.clone(),
                status: "4.4.7".into(),
                diagnostic: format!(
                    "message expired after {} attempts; last error: {why}",
                    env.attempts
                ),
            });
        }
    }
    env.last_error = outcome
        .deferred
        .first()
        .map(|(_, w)| w.clone())
        .or(env.last_error.take());
    failures
}

/// Sends the delayed-delivery warning once the message has waited `delay_warning`.
async fn warn_if_late(ctx: &Context, env: &mut Envelope, now: u64) {
    let Some(queue) = &ctx.queue else { return };
    let late = queue
        .policy
        .delay_warning
        .is_some_and(|d| now.saturating_sub(env.created) >= d.as_secs());
    if !late || env.warned || env.pending().next().is_none() {
        return;
    }
    env.warned = true;
    let delayed: Vec<Failure> = env
        .pending()
        .map(|r| Failure {
            rcpt: r.address.clone(),
            status: "4.4.7".into(),
            diagnostic: r
                .last_reply
                .clone()
                .unwrap_or_else(|| "not yet delivered".into()),
        })
        .collect();
    notify_sender(ctx, env, Report::Delayed, delayed).await;
}

/// Whether a deferred message's envelope must be written back: when what a restart
/// must know changed (a recipient's state, the delay warning) or the reason for the
/// deferral did (so `postern queue list` shows it). A deferral that changed only the
/// attempt count and next attempt (every attempt during a smarthost outage) is kept
/// in memory: after a crash the message is simply tried again sooner.
fn worth_persisting(stored: &Envelope, now: &Envelope) -> bool {
    let states = |e: &Envelope| e.rcpts.iter().map(|r| r.state).collect::<Vec<_>>();
    states(stored) != states(now)
        || stored.warned != now.warned
        || stored.last_error != now.last_error
}

/// Queues a DSN to the sender, unless the message was itself a bounce; the disk
/// work runs on the blocking pool.
async fn notify_sender(ctx: &Context, env: &Envelope, report: Report, failures: Vec<Failure>) {
    let Some(queue) = ctx.queue.clone() else {
        return;
    };
    if env.is_bounce() {
        warn!("not bouncing a bounce; dropping it");
        return;
    }
    let (hostname, env) = (ctx.config.hostname.clone(), env.clone());
    let spool = queue.spool().clone();
    let stored = tokio::task::spawn_blocking(move || {
        let file = std::fs::read(spool.message_path(&env.id)).unwrap_or_default();
        let message = super::store::body_of(&file);
        let (dsn, bytes) = bounce::build(
            &hostname,
            &env,
            report,
            &failures,
            bounce::original_headers(message),
        );
        spool.store(&dsn, &bytes).map(|()| (dsn, env.from))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match stored {
        Ok((dsn, to)) => {
            info!(dsn_id = %dsn.id, to = %Printable(&to), report = ?report, "delivery status notification queued");
            queue.enqueued(&dsn);
        }
        Err(e) => error!(error = %e, "cannot queue the bounce"),
    }
}

/// One attempt for the pending recipients of `env`, along the sender's route: what
/// one smarthost defers (connection failure or 4xx) goes to the next, so each
/// recipient is handed to exactly one smarthost.
async fn attempt(ctx: &Context, env: &Envelope) -> Outcome {
    let route = ctx.relay.route(&env.from).to_vec();
    let mut pending: Vec<String> = env.pending().map(|r| r.address.clone()).collect();
    let mut total = Outcome::default();
    for (n, &pool) in route.iter().enumerate() {
        let mut out = attempt_on(ctx, env, pool, pending).await;
        if out.no_smtputf8 && n + 1 == route.len() {
            // No smarthost on the route can take it: bounce, as passthrough refuses it.
            warn!(smarthost = %ctx.relay.pool(pool).name(), "no smarthost on the route offers SMTPUTF8; bouncing");
            out.failed
                .extend(out.deferred.drain(..).map(|(rcpt, _)| Failure {
                    rcpt,
                    status: "5.6.7".into(),
                    diagnostic: NO_SMTPUTF8.into(),
                }));
        }
        total.delivered.extend(out.delivered);
        total.failed.extend(out.failed);
        total.throttled = out.throttled;
        total.accepted_at = total.accepted_at.or(out.accepted_at);
        if out.deferred.is_empty() || n + 1 == route.len() {
            total.deferred.extend(out.deferred);
            break;
        }
        warn!(
            smarthost = %ctx.relay.pool(pool).name(),
            deferred = out.deferred.len(),
            reason = %Printable(&out.deferred[0].1),
            "failing over to the next smarthost"
        );
        pending = out.deferred.into_iter().map(|(a, _)| a).collect();
    }
    total
}

impl Outcome {
    /// Defers every recipient of `pending` that this attempt has not yet settled.
    fn defer_rest(&mut self, pending: &[String], why: String) {
        let done: HashSet<String> = self
            .delivered
            .iter()
            .cloned()
            .chain(self.failed.iter().map(|f| f.rcpt.clone()))
            .chain(self.deferred.iter().map(|(a, _)| a.clone()))
            .collect();
        for a in pending {
            if !done.contains(a) {
                self.deferred.push((a.clone(), why.clone()));
            }
        }
    }

    /// Settles `rcpts` with a negative reply: failed when it is permanent, deferred
    /// otherwise.
    fn settle_refused(&mut self, rcpts: impl IntoIterator<Item = String>, r: &Reply) {
        let text = r.to_string();
        for a in rcpts {
            if r.is_permanent() {
                self.failed.push(Failure {
                    rcpt: a,
                    status: status_of(r),
                    diagnostic: text.clone(),
                });
            } else {
                self.deferred.push((a, text.clone()));
            }
        }
    }
}

/// Splits `pending` into the recipients that may go upstream and failures for those
/// that may not: an address in the spool that is not a valid path in its canonical
/// wire form (an envelope of an older release, or one edited by hand) never reaches an
/// upstream command. A bad sender fails every recipient.
fn sendable(env: &Envelope, pending: Vec<String>) -> (Vec<String>, Vec<Failure>) {
    let bad_sender = !is_canonical_path(&env.from);
    let (ok, bad): (Vec<String>, Vec<String>) = pending
        .into_iter()
        .partition(|a| !bad_sender && is_canonical_path(a));
    let (status, what) = if bad_sender {
        ("5.1.7", "sender")
    } else {
        ("5.1.3", "recipient")
    };
    let failures = bad
        .into_iter()
        .map(|rcpt| {
            warn!(rcpt = %Printable(&rcpt), sender = %Printable(&env.from), "invalid {what} address in the spool; not sent");
            Failure {
                rcpt,
                status: status.into(),
                diagnostic: format!("invalid {what} address in the spool"),
            }
        })
        .collect();
    (ok, failures)
}

/// Talks to smarthost `pool` once for `pending`.
async fn attempt_on(ctx: &Context, env: &Envelope, pool: usize, pending: Vec<String>) -> Outcome {
    let mut out = Outcome::default();
    let (pending, invalid) = sendable(env, pending);
    out.failed = invalid;
    if pending.is_empty() {
        return out;
    }
    let Some((mut conn, mail)) = start_mail(ctx, env, pool, &pending, &mut out).await else {
        return out;
    };
    match mail {
        Ok(r) if r.is_positive() => {}
        Ok(r) => {
            if r.is_permanent() {
                out.settle_refused(pending.iter().cloned(), &r);
            } else {
                out.throttled = is_throttle(&r);
                out.defer_rest(&pending, r.to_string());
            }
            if r.code != 421 {
                ctx.relay.reset_and_put(conn).await;
            }
            return out;
        }
        Err(e) => {
            out.defer_rest(&pending, e.to_string());
            return out;
        }
    }
    let Some(accepted) = send_rcpts(&mut conn, &pending, &mut out).await else {
        return out;
    };
    if accepted.is_empty() {
        ctx.relay.reset_and_put(conn).await;
        return out;
    }
    match send_data(ctx, env, &mut conn).await {
        Ok(r) if r.is_positive() => {
            out.accepted_at = Some(std::time::Instant::now());
            // Delivered: the caller removes the envelope right away, keeping the
            // window for a duplicate after a crash as small as it can be.
            out.delivered = accepted;
            ctx.relay.put(conn);
        }
        Ok(r) => {
            out.settle_refused(accepted, &r);
            out.throttled |= is_throttle(&r);
            if r.code != 421 {
                ctx.relay.put(conn);
            }
        }
        Err(e) => out.defer_rest(&pending, e.to_string()),
    }
    out
}

/// Takes a connection to smarthost `pool` and sends MAIL on it, with one retry on a
/// fresh connection if a pooled one was dead. `None` when the attempt is over before
/// a MAIL reply (no connection, or no SMTPUTF8): `out` then says why.
async fn start_mail(
    ctx: &Context,
    env: &Envelope,
    pool: usize,
    pending: &[String],
    out: &mut Outcome,
) -> Option<(Upstream, Result<Reply, UpstreamError>)> {
    let mut taken = match ctx.relay.take(pool).await {
        Ok(t) => t,
        Err(e) => {
            if let UpstreamError::Refused { reply, .. } = &e {
                out.throttled = is_throttle(reply);
            }
            out.defer_rest(pending, e.to_string());
            return None;
        }
    };
    if env.smtputf8 && !taken.conn.caps.smtputf8 {
        out.no_smtputf8 = true;
        ctx.relay.put(taken.conn);
        out.defer_rest(pending, NO_SMTPUTF8.into());
        return None;
    }
    let mail_line = mail_from(env, &taken.conn);
    let mut mail = taken.conn.command(&mail_line, "MAIL").await;
    if taken.reused && mail.as_ref().map_or(true, |r| r.code == 421) {
        match ctx.relay.connect(pool).await {
            Ok(c) if env.smtputf8 && !c.caps.smtputf8 => {
                out.no_smtputf8 = true;
                ctx.relay.put(c);
                out.defer_rest(pending, NO_SMTPUTF8.into());
                return None;
            }
            Ok(c) => {
                taken.conn = c;
                mail = taken
                    .conn
                    .command(&mail_from(env, &taken.conn), "MAIL")
                    .await;
            }
            Err(e) => {
                out.defer_rest(pending, e.to_string());
                return None;
            }
        }
    }
    Some((taken.conn, mail))
}

/// Sends RCPT for each of `pending`; returns those the smarthost accepted, or
/// `None` when the connection is lost (421 or an error) and everyone left is
/// deferred.
async fn send_rcpts(
    conn: &mut Upstream,
    pending: &[String],
    out: &mut Outcome,
) -> Option<Vec<String>> {
    let mut accepted = Vec::new();
    for a in pending {
        match conn.command(&format!("RCPT TO:<{a}>"), "RCPT").await {
            Ok(r) if r.is_positive() => accepted.push(a.clone()),
            Ok(r) if r.is_permanent() => out.failed.push(Failure {
                rcpt: a.clone(),
                status: status_of(&r),
                diagnostic: r.to_string(),
            }),
            Ok(r) => {
                out.throttled |= is_throttle(&r);
                out.deferred.push((a.clone(), r.to_string()));
                if r.code == 421 {
                    out.defer_rest(pending, r.to_string());
                    return None;
                }
            }
            Err(e) => {
                out.defer_rest(pending, e.to_string());
                return None;
            }
        }
    }
    Some(accepted)
}

fn mail_from(env: &Envelope, conn: &Upstream) -> String {
    let mut line = format!("MAIL FROM:<{}>", env.from);
    if conn.caps.size.is_some() {
        line.push_str(&format!(" SIZE={}", env.size));
    }
    if env.eight_bit && conn.caps.eight_bit_mime {
        line.push_str(" BODY=8BITMIME");
    }
    if env.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    line
}

/// DATA: streams the spooled message from disk, dot-stuffed.
async fn send_data(
    ctx: &Context,
    env: &Envelope,
    conn: &mut Upstream,
) -> Result<Reply, UpstreamError> {
    let r = conn.command("DATA", "DATA").await?;
    if r.code != 354 {
        return Ok(r);
    }
    let path = ctx
        .queue
        .as_ref()
        .expect("queue mode")
        .spool()
        .message_path(&env.id);
    let mut stuffer = DotStuffer::default();
    if env.size <= WHOLE_READ {
        // One trip to the blocking pool for the whole message.
        let body = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(std::io::Error::other)??;
        let body = super::store::body_of(&body);
        let mut wire = Vec::with_capacity(body.len() + body.len() / 64 + 8);
        stuffer.stuff(body, &mut wire);
        stuffer.finish(&mut wire);
        conn.write_data(&wire).await?;
        return conn.finish_data().await;
    }
    let mut file = tokio::fs::File::open(&path).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut wire = Vec::with_capacity(66 * 1024);
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        stuffer.stuff(&buf[..n], &mut wire);
        conn.write_data(&wire).await?;
        wire.clear();
    }
    stuffer.finish(&mut wire);
    conn.write_data(&wire).await?;
    conn.finish_data().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            created: 100,
            attempts: 1,
            next_attempt: 200,
            last_error: Some("451 busy".into()),
            ..Envelope::sample("A")
        }
    }

    /// An envelope written by release 1 may hold an unquoted injection; it fails
    /// instead of reaching MAIL or RCPT.
    #[test]
    fn stored_addresses_that_are_not_canonical_never_go_upstream() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (ok, failed) = sendable(
            &env(),
            list(&[
                "c@d.example",
                "x@y.example> NOTIFY=NEVER",
                "\"q\"@d.example",
            ]),
        );
        assert_eq!(ok, list(&["c@d.example"]));
        assert_eq!(failed.len(), 2);
        assert!(failed.iter().all(|f| f.status == "5.1.3"));
        let mut bad = env();
        bad.from = "ceo@bank.example> AUTH=@site1.example".into();
        let (ok, failed) = sendable(&bad, list(&["c@d.example"]));
        assert!(ok.is_empty());
        assert_eq!(failed[0].status, "5.1.7");
        let mut null = env();
        null.from = String::new();
        assert_eq!(sendable(&null, list(&["c@d.example"])).0.len(), 1);
    }

    #[test]
    fn only_a_change_worth_keeping_is_written_back() {
        let stored = env();
        type Case = (&'static str, fn(&mut Envelope), bool);
        let cases: [Case; 6] = [
            ("nothing", |_| {}, false),
            (
                "attempts and next attempt",
                |e| {
                    e.attempts = 7;
                    e.next_attempt = 999;
                },
                false,
            ),
            (
                "a deferral reply",
                |e| e.rcpts[0].last_reply = Some("451 busy".into()),
                false,
            ),
            (
                "the last error",
                |e| e.last_error = Some("421 down".into()),
                true,
            ),
            (
                "a recipient's state",
                |e| e.rcpts[0].state = RcptState::Failed,
                true,
            ),
            ("the delay warning", |e| e.warned = true, true),
        ];
        for (what, change, expected) in cases {
            let mut now = env();
            change(&mut now);
            assert_eq!(worth_persisting(&stored, &now), expected, "{what}");
        }
    }

    #[test]
    fn an_outage_deferral_keeps_the_same_last_error() {
        let mut e = env();
        let outcome = Outcome {
            deferred: vec![("c@d.example".into(), "451 busy".into())],
            ..Outcome::default()
        };
        let failures = record(&mut e, outcome, 150, 3600);
        assert!(failures.is_empty());
        assert_eq!(e.attempts, 2);
        assert!(!worth_persisting(&env(), &e));
        // Past the lifetime, the pending recipient fails with 4.4.7.
        let failures = record(&mut e, Outcome::default(), 100 + 3600, 3600);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].status, "4.4.7");
        assert!(worth_persisting(&env(), &e));
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defer_rest_leaves_settled_recipients_alone() {
        let mut out = Outcome {
            delivered: names(&["a@x"]),
            deferred: vec![("b@x".into(), "451 busy".into())],
            failed: vec![Failure {
                rcpt: "c@x".into(),
                status: "5.1.1".into(),
                diagnostic: "550 no".into(),
            }],
            ..Outcome::default()
        };
        out.defer_rest(&names(&["a@x", "b@x", "c@x", "d@x", "e@x"]), "lost".into());
        let deferred: Vec<(&str, &str)> = out
            .deferred
            .iter()
            .map(|(a, w)| (a.as_str(), w.as_str()))
            .collect();
        assert_eq!(
            deferred,
            [("b@x", "451 busy"), ("d@x", "lost"), ("e@x", "lost")]
        );
        assert_eq!(out.delivered, names(&["a@x"]));
        assert_eq!(out.failed.len(), 1);
    }

    #[test]
    fn a_refusal_fails_on_5xx_and_defers_on_4xx() {
        let mut out = Outcome::default();
        let perm = Reply::new(550, crate::proto::reply::Esc(5, 1, 1), "no such user");
        out.settle_refused(names(&["a@x", "b@x"]), &perm);
        assert!(out.deferred.is_empty());
        let failed: Vec<(&str, &str)> = out
            .failed
            .iter()
            .map(|f| (f.rcpt.as_str(), f.status.as_str()))
            .collect();
        assert_eq!(failed, [("a@x", "5.1.1"), ("b@x", "5.1.1")]);
        assert_eq!(out.failed[0].diagnostic, perm.to_string());

        let mut out = Outcome::default();
        let temp = Reply::plain(451, "try later");
        out.settle_refused(names(&["a@x"]), &temp);
        assert!(out.failed.is_empty());
        assert_eq!(out.deferred, [("a@x".to_string(), temp.to_string())]);
    }
}
