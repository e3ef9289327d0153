//! The events hub: one place where sessions, the queue, the brake and the rate
//! limiter say what happened, and from where it reaches the delivery log
//! ([`crate::journal`]), the webhooks ([`crate::webhooks`]) and the dashboard's
//! traffic counters ([`traffic`]).
//!
//! [`Events::emit`] never waits: the event goes into a bounded channel, and when
//! that is full it is dropped and counted (`postern_events_dropped_total`). One
//! task takes events off the channel and hands each subscriber its share, which
//! again never waits (the log writer and the webhook calls have bounded queues of
//! their own).

pub mod traffic;

use crate::config::Config;
use crate::journal::{DeliveryLog, Entry, Journal, Kind, Recipient, Retention};
use crate::lock::MutexExt;
use crate::webhooks::Dispatcher;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
pub use traffic::{Point, Traffic, TrafficSeries};

/// Events waiting for the hub's task; beyond this they are dropped.
const CAPACITY: usize = 8192;

/// Who suspended or unsuspended a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The abuse brake, automatically.
    Brake,
    /// An operator (the admin API, the CLI).
    Operator,
}

impl By {
    pub fn as_str(self) -> &'static str {
        match self {
            By::Brake => "brake",
            By::Operator => "operator",
        }
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// A delivery-log entry: a transaction at the end of DATA, or a delivery attempt.
    Logged(Entry),
    Suspended {
        user: String,
        reason: String,
        by: By,
    },
    Unsuspended {
        user: String,
        by: By,
    },
    /// A rate limit refused a message or a recipient.
    RateLimited {
        user: String,
        limit: &'static str,
        max: u32,
        retry_after: Duration,
        /// The sender domain whose limit it was; `None`: the user's own limit.
        domain: Option<String>,
        /// At MAIL: a whole message was refused (the traffic counters count it).
        message_refused: bool,
        /// The first refusal for this user and limit in this window (the webhook
        /// fires for these only).
        first: bool,
    },
    /// Recipients of a queued message failed for good (a bounce was or would have
    /// been sent to the sender).
    Bounced {
        id: String,
        user: String,
        from: String,
        recipients: Vec<Recipient>,
    },
}

impl Event {
    /// The webhook event name, for those a webhook can ask for.
    pub fn name(&self) -> Option<&'static str> {
        match self {
            Event::Suspended { .. } => Some("user.suspended"),
            Event::Unsuspended { .. } => Some("user.unsuspended"),
            Event::RateLimited { first: true, .. } => Some("rate_limit.reached"),
            Event::Bounced { .. } => Some("message.bounced"),
            Event::RateLimited { .. } | Event::Logged(_) => None,
        }
    }
}

/// The hub; `Context` and `Queue` hold it.
pub struct Events {
    tx: mpsc::Sender<Event>,
    traffic: Arc<Traffic>,
    journal: Option<Journal>,
    /// Until when each (user, limit) has already fired `rate_limit.reached`.
    limits_fired: Mutex<HashMap<(String, &'static str), Instant>>,
}

impl Events {
    /// Opens the delivery log (if enabled), starts its writer, the webhook
    /// dispatcher and the hub's task. Must run inside the Tokio runtime.
    pub fn start(config: &Config) -> Result<Arc<Events>, String> {
        let c = &config.delivery_log;
        // Mail matters more than its log: a log that cannot be opened is reported
        // and left off, and Postern serves without it.
        let journal = match c.enabled.then(|| open_journal(c)) {
            Some(Ok(j)) => Some(j),
            Some(Err(e)) => {
                tracing::error!(error = %e, "the delivery log is off");
                None
            }
            None => None,
        };
        let webhooks = Dispatcher::new(&config.webhooks)?;
        let (tx, rx) = mpsc::channel(CAPACITY);
        let traffic = Arc::new(Traffic::default());
        tokio::spawn(fan_out(rx, traffic.clone(), journal.clone(), webhooks));
        Ok(Arc::new(Events {
            tx,
            traffic,
            journal,
            limits_fired: Mutex::new(HashMap::new()),
        }))
    }

    /// Hands `event` to the hub; never waits (a full hub drops it, counted).
    pub fn emit(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            metrics::counter!("postern_events_dropped_total").increment(1);
        }
    }

    /// A rate limit refused `user`: emits [`Event::RateLimited`], marked `first`
    /// once per user and limit until the limit's window has room again.
    pub fn rate_limited(
        &self,
        user: &str,
        e: &crate::policy::rates::Exceeded,
        message_refused: bool,
    ) {
        // A domain's limit fires once per domain, whichever of its users hit it
        // (a space never appears in a user name).
        let who = match &e.domain {
            Some(d) => format!("domain {d}"),
            None => user.to_string(),
        };
        let first = first_in_window(
            &mut self.limits_fired.locked(),
            (who, e.limit),
            Instant::now(),
            e.retry_after,
        );
        self.emit(Event::RateLimited {
            user: user.to_string(),
            limit: e.limit,
            max: e.max,
            retry_after: e.retry_after,
            domain: e.domain.clone(),
            message_refused,
            first,
        });
    }

    /// A user was suspended (by the brake, or by an operator through the API).
    pub fn suspended(&self, user: &str, reason: &str, by: By) {
        self.emit(Event::Suspended {
            user: user.to_string(),
            reason: reason.to_string(),
            by,
        });
    }

    /// A user's suspension was lifted.
    pub fn unsuspended(&self, user: &str, by: By) {
        self.emit(Event::Unsuspended {
            user: user.to_string(),
            by,
        });
    }

    /// Messages accepted and refused over time, for the dashboard.
    pub fn traffic(&self) -> TrafficSeries {
        self.traffic.series(unix(SystemTime::now()))
    }

    /// The delivery log, for `GET /api/v1/messages` (`None` when it is off).
    pub fn delivery_log(&self) -> Option<&Arc<DeliveryLog>> {
        self.journal.as_ref().map(|j| j.log())
    }

    /// Waits (at most `within`) until what was emitted so far is in the delivery
    /// log's file: at shutdown, so that the last transactions are not lost.
    pub async fn settle(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.tx.capacity() < self.tx.max_capacity() && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The hub's task may hold the last event it took off the channel.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some(j) = self.journal.clone() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let _ = tokio::task::spawn_blocking(move || j.flush_blocking(left)).await;
        }
    }

    /// Forgets rate-limit windows that are over; run about once a minute.
    pub fn prune(&self, now: Instant) {
        self.limits_fired.locked().retain(|_, until| *until > now);
    }
}

/// Opens the delivery log and starts its writer.
fn open_journal(c: &crate::config::DeliveryLogConfig) -> Result<Journal, String> {
    let log = DeliveryLog::open(&c.directory, Retention::new(c.max_age, c.max_size))
        .map_err(|e| format!("cannot open {}: {e}", c.directory.display()))?;
    Journal::start(log).map_err(|e| format!("cannot start its writer: {e}"))
}

/// Whether a refusal at `now` is the first for `key` in its window, noting the
/// window (until `retry_after` from now, when the limit has room again) if so.
fn first_in_window(
    fired: &mut HashMap<(String, &'static str), Instant>,
    key: (String, &'static str),
    now: Instant,
    retry_after: Duration,
) -> bool {
    match fired.get(&key) {
        Some(until) if *until > now => false,
        _ => {
            fired.insert(key, now + retry_after.max(Duration::from_secs(1)));
            true
        }
    }
}

/// The hub's task: each event to the traffic counters, the webhooks and the log.
async fn fan_out(
    mut rx: mpsc::Receiver<Event>,
    traffic: Arc<Traffic>,
    journal: Option<Journal>,
    webhooks: Option<Dispatcher>,
) {
    while let Some(event) = rx.recv().await {
        match &event {
            Event::Logged(e) if e.kind == Kind::Submission => {
                traffic.count(e.unix_time(), e.status != "refused");
            }
            Event::RateLimited {
                message_refused: true,
                ..
            } => traffic.count(unix(SystemTime::now()), false),
            _ => {}
        }
        if let Some(w) = &webhooks {
            w.offer(&event);
        }
        if let (Event::Logged(e), Some(j)) = (event, &journal) {
            j.record(e);
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_is_first_once_per_window() {
        let mut fired = HashMap::new();
        let t0 = Instant::now();
        let key = || ("alice".to_string(), "messages_per_hour");
        let window = Duration::from_secs(600);
        assert!(first_in_window(&mut fired, key(), t0, window));
        assert!(!first_in_window(
            &mut fired,
            key(),
            t0 + Duration::from_secs(599),
            window
        ));
        let other = ("alice".to_string(), "recipients_per_day");
        assert!(
            first_in_window(&mut fired, other, t0, window),
            "another limit"
        );
        assert!(first_in_window(
            &mut fired,
            ("bob".into(), "messages_per_hour"),
            t0,
            window
        ));
        assert!(
            first_in_window(&mut fired, key(), t0 + window, window),
            "the next window"
        );
    }

    #[tokio::test]
    async fn emit_never_waits_and_drops_when_full() {
        // A hub whose task is not running and whose channel holds one event.
        let (tx, mut rx) = mpsc::channel(1);
        let events = Events {
            tx,
            traffic: Arc::new(Traffic::default()),
            journal: None,
            limits_fired: Mutex::new(HashMap::new()),
        };
        for _ in 0..1000 {
            events.unsuspended("alice", By::Operator);
        }
        assert!(matches!(rx.try_recv(), Ok(Event::Unsuspended { .. })));
        assert!(rx.try_recv().is_err(), "the rest were dropped");
    }
}
