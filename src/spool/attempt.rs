//! One delivery attempt of a spooled message: read it, hand it to
//! [`upstream::deliver`], apply the per-recipient outcome to its envelope (see
//! [`super::bookkeeping`]), bounce what failed, warn when it is late, and remove or
//! reschedule it.

use super::bookkeeping::{record, sendable, worth_persisting};
use super::bounce::{self, Report};
use super::envelope::{Envelope, body_of};
use super::queue::Queue;
use super::store::{INLINE, unix_now};
use crate::events::Event;
use crate::journal::entry::{attempt_status, format_time};
use crate::journal::{Entry, Kind, Recipient};
use crate::proto::printable::Printable;
use crate::upstream::{self, Content, Failure, Outcome, Sender, pacing};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// One delivery attempt; returns when to try again, or `None` when the message is
/// done (delivered, bounced or deleted).
pub(super) async fn deliver(queue: &Arc<Queue>, id: &str) -> Option<u64> {
    let mut env = match load_envelope(queue, id).await {
        Ok(env) => env,
        Err(next) => return next,
    };
    let route_key = env.route_by.as_deref().unwrap_or(&env.from);
    if let Some(until) = throttle_hold(queue, route_key) {
        // Not an attempt either: the count, the backoff and the envelope stay as
        // they are (the queue lifetime runs on, and is checked at the next attempt).
        debug!("every smarthost of the route is on hold after throttling; waiting");
        return Some(unix_second_of(until).max(unix_now() + 1));
    }
    if let Err(paced) = pacing::first_turn(&queue.relays, route_key, id).await {
        // Not an attempt: nothing is counted or written, and the message comes
        // back when its reserved slot is due.
        debug!("smarthost paced (max_messages_per_minute); waiting for its turn");
        return Some(unix_second_of(paced.until));
    }
    let stored = env.clone();
    env.attempts = queue.attempts_of(&env);
    let started = std::time::Instant::now();
    let outcome = attempt(queue, &env).await;
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
    let now = unix_now();
    let asked = outcome.retry_after;
    let settled = Settled {
        delivered: outcome.delivered.clone(),
        reply: outcome.delivered_reply.clone(),
        deferred: outcome.deferred.clone(),
    };
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
    log_attempt(queue, &env, settled, &failures);
    report_failures(queue, &env, failures).await;
    warn_if_late(queue, &mut env, now).await;
    if all_delivered || queue.is_deleted(id) {
        return None;
    }
    reschedule(queue, id, &stored, env, pending, now, asked).await
}

/// When the first smarthost of the route for `route_key` may be tried again, if
/// every smarthost of the route is held after throttling (see
/// [`crate::upstream::throttle`]); with one free, the attempt goes ahead and the
/// held ones are passed over like any that defers.
fn throttle_hold(queue: &Queue, route_key: &str) -> Option<std::time::Instant> {
    let route = queue.relays.route(route_key);
    let holds: Option<Vec<_>> = route.iter().map(|&i| queue.relays.held_until(i)).collect();
    holds?.into_iter().min()
}

/// One attempt for the pending recipients of `env` that may go upstream (see
/// [`sendable`]); those that may not fail here.
async fn attempt(queue: &Queue, env: &Envelope) -> Outcome {
    let pending: Vec<String> = env.pending().map(|r| r.address.clone()).collect();
    let (pending, invalid) = sendable(env, pending);
    let mut outcome = Outcome {
        failed: invalid,
        ..Outcome::default()
    };
    if pending.is_empty() {
        return outcome;
    }
    let content = match message_content(queue, env).await {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "cannot read the spooled message; the attempt will repeat");
            outcome.defer_rest(&pending, format!("cannot read the spooled message: {e}"));
            return outcome;
        }
    };
    // A `From:` the user may not send as (allowed any) is never signed.
    let keys = match env.unsigned {
        true => Arc::new(crate::dkim::Keys::default()),
        false => queue.dkim.current(),
    };
    let content = match crate::dkim::sign::sign_content(&keys, content).await {
        Ok(c) => c,
        Err(e) => {
            error!(error = %Printable(&e), "cannot DKIM-sign the message; the attempt will repeat");
            outcome.defer_rest(&pending, format!("cannot DKIM-sign the message: {e}"));
            return outcome;
        }
    };
    let sender = Sender {
        address: env.from.clone(),
        size: env.size,
        eight_bit: env.eight_bit,
        smtputf8: env.smtputf8,
        route_by: env.route_by.clone(),
    };
    let delivered = upstream::deliver(&queue.relays, &sender, pending, &content).await;
    outcome.absorb(delivered);
    outcome
}

/// The Unix second in which `at` falls. The queue schedules in whole seconds: the
/// message comes back up to a second early and waits the rest in its task (see
/// [`pacing::QUEUE_WAIT`]), so that it keeps its slot to the millisecond rather
/// than to the next whole second.
fn unix_second_of(at: std::time::Instant) -> u64 {
    let wait = at.saturating_duration_since(std::time::Instant::now());
    let then = std::time::SystemTime::now() + wait;
    then.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Messages up to this size are read whole for delivery; larger ones are streamed
/// from their file (which then holds just the message: only messages held in memory
/// while they arrived, up to [`INLINE`] bytes, embed their envelope).
const WHOLE_READ: u64 = 256 * 1024;
const _: () = assert!(
    INLINE as u64 <= WHOLE_READ,
    "a file with an envelope in front is read whole"
);

/// The spooled message, read off the runtime when it is small.
async fn message_content(queue: &Queue, env: &Envelope) -> std::io::Result<Content> {
    let path = queue.spool().message_path(&env.id);
    if env.size > WHOLE_READ {
        return Ok(Content::File(path));
    }
    let file = tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .map_err(std::io::Error::other)??;
    Ok(Content::Bytes(body_of(&file).to_vec()))
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

/// What one attempt did for each recipient, kept for the delivery log before the
/// outcome is applied to the envelope.
struct Settled {
    delivered: Vec<String>,
    reply: Option<String>,
    deferred: Vec<(String, String)>,
}

/// Records the attempt in the delivery log (through the events hub): each
/// recipient tried, or failed without a try, with its fate and reply.
fn log_attempt(queue: &Queue, env: &Envelope, s: Settled, failures: &[Failure]) {
    let failed = |a: &str| failures.iter().any(|f| f.rcpt == a);
    let delivered = s
        .delivered
        .iter()
        .map(|a| Recipient::new(a, "delivered", s.reply.clone()));
    let deferred = s
        .deferred
        .iter()
        .filter(|(a, _)| !failed(a))
        .map(|(a, why)| Recipient::new(a, "deferred", Some(why.clone())));
    let failed = failures
        .iter()
        .map(|f| Recipient::new(&f.rcpt, "failed", Some(f.diagnostic.clone())));
    let recipients: Vec<Recipient> = delivered.chain(deferred).chain(failed).collect();
    if recipients.is_empty() {
        return;
    }
    queue.events.emit(Event::Logged(Entry {
        id: env.id.clone(),
        time: format_time(std::time::SystemTime::now()),
        user: env.user.clone(),
        client_ip: env.client_ip.clone(),
        from: env.from.clone(),
        size: env.size,
        status: attempt_status(&recipients).to_string(),
        recipients,
        kind: Kind::Attempt,
        reason: None,
        reply: None,
        attempt: Some(env.attempts),
    }));
}

/// Logs the recipients that failed permanently and bounces them to the sender.
async fn report_failures(queue: &Queue, env: &Envelope, failures: Vec<Failure>) {
    if failures.is_empty() {
        return;
    }
    for f in &failures {
        warn!(rcpt = %Printable(&f.rcpt), status = %f.status, diagnostic = %Printable(&f.diagnostic), "recipient failed permanently");
    }
    if !env.is_bounce() {
        queue.events.emit(Event::Bounced {
            id: env.id.clone(),
            user: env.user.clone(),
            from: env.from.clone(),
            recipients: failures
                .iter()
                .map(|f| Recipient::new(&f.rcpt, "failed", Some(f.diagnostic.clone())))
                .collect(),
        });
    }
    notify_sender(queue, env, Report::Failed, failures).await;
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
    asked: Option<Duration>,
) -> Option<u64> {
    if pending == 0 {
        if let Err(e) = queue.remover.remove(id, None) {
            error!(error = %e, "cannot remove a finished message from the spool");
        }
        return None;
    }
    // Not before the smarthost said (`Retry-After`), up to an hour.
    let asked = asked.map_or(Duration::ZERO, |d| d.min(Duration::from_secs(3600)));
    let delay = queue.backoff(env.attempts).max(asked);
    env.next_attempt = now + delay.as_secs().max(1);
    queue.remember_attempts(id, env.attempts);
    let next = env.next_attempt;
    if worth_persisting(stored, &env) {
        queue.clone().write_back(env).await;
    }
    Some(next)
}

/// Sends the delayed-delivery warning once the message has waited `delay_warning`.
async fn warn_if_late(queue: &Queue, env: &mut Envelope, now: u64) {
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
    notify_sender(queue, env, Report::Delayed, delayed).await;
}

/// Queues a DSN to the sender, unless the message was itself a bounce; the disk
/// work runs on the blocking pool.
async fn notify_sender(queue: &Queue, env: &Envelope, report: Report, failures: Vec<Failure>) {
    if env.is_bounce() {
        warn!("not bouncing a bounce; dropping it");
        return;
    }
    let (hostname, env) = (queue.hostname.clone(), env.clone());
    let mailbox = queue
        .relays
        .mailbox(env.route_by.as_deref().unwrap_or(&env.from));
    let spool = queue.spool().clone();
    let stored = tokio::task::spawn_blocking(move || {
        let file = std::fs::read(spool.message_path(&env.id)).unwrap_or_default();
        let message = body_of(&file);
        let (dsn, bytes) = bounce::build(
            &hostname,
            &env,
            report,
            &failures,
            bounce::original_headers(message),
            mailbox.as_deref(),
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
