//! Pacing: `max_messages_per_minute` for one smarthost entry. Microsoft 365 allows
//! 30 messages a minute per mailbox; an ERP that hands over 500 invoices at once
//! must not get the mailbox throttled.
//!
//! The rule is GCRA with a burst of one: two messages are never closer than
//! `60 s / N`, so no 60-second window holds more than N (a burst of N would admit
//! up to 2N - 1 in the first minute). With a burst of one GCRA's state is a single
//! instant, the earliest next admission (`tat`), so it is written out here rather
//! than taken from `governor` (which, even without default features, would add
//! itself, `nonzero_ext`, `spinning_top` and `web-time`, states no rust-version,
//! and has no notion of the second part):
//!
//! Turns. A queued message that is not admitted gets a *reservation*: the next
//! free slot after every slot already reserved, kept under its queue id. The queue
//! puts it back to sleep until then; when it returns it takes its slot. So a burst
//! of 500 messages is spread over 500 slots in arrival order, each message is
//! looked at about twice, and nothing spins. Admission itself still obeys `tat`:
//! a reservation only says when to come back, never lets two messages closer than
//! the interval. A reservation nobody claims (the message was deleted, or went to
//! another smarthost) is a wasted slot, and forgotten after [`FORGET_AFTER`].
//!
//! The rule is pure ([`Gcra`], time passed in, table-tested); [`Pacer`] puts it
//! behind a lock with the real clock, one per [`super::Pool`].
//!
//! Cluster mode: every instance that sends through the same entry must share one
//! pace, so the slot is claimed from a [`SharedPacing`] store (a script over one
//! key: the next free slot, claimed only when it is at most the caller's wait
//! away). Without turns there, a message told to come back later competes again
//! when it does; the spacing, and so the limit, still holds. When the store cannot
//! be reached the local [`Gcra`] paces this instance alone.

use super::relays::Relays;
use crate::lock::MutexExt;
use crate::proto::reply::{Esc, Reply};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A queued delivery waits for its turn in its task when the turn is at most this
/// far off; a later turn goes back to the queue (see [`first_turn`]).
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// A passthrough client waits at MAIL for a turn at most this far off, and is
/// answered [`paced_reply`] otherwise (clients wait minutes for a MAIL reply).
pub const PASSTHROUGH_WAIT: Duration = Duration::from_secs(10);

/// An unclaimed reservation this far in the past is dropped (looked for every
/// quarter of this).
pub const FORGET_AFTER: Duration = Duration::from_secs(120);

/// Whether a message may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Admitted: the slot is used.
    Now,
    /// Not before this instant; the caller's slot is reserved (see the module doc).
    At(Instant),
}

/// GCRA with a burst of one, plus reservations keyed by message.
#[derive(Debug)]
pub struct Gcra {
    interval: Duration,
    /// The earliest instant the next message may be admitted.
    tat: Option<Instant>,
    /// Reserved slots, by key.
    held: HashMap<String, Instant>,
    /// The first slot after every reservation.
    horizon: Option<Instant>,
    /// When to look for stale reservations next (a look is a pass over all of
    /// them: not on every turn, or a burst of n would cost n squared).
    next_prune: Option<Instant>,
}

impl Gcra {
    /// At most `per_minute` messages in any 60 seconds (`per_minute` > 0).
    pub fn new(per_minute: u32) -> Gcra {
        Gcra {
            interval: Duration::from_secs(60) / per_minute.max(1),
            tat: None,
            held: HashMap::new(),
            horizon: None,
            next_prune: None,
        }
    }

    /// The spacing between two messages.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The turn of the message `key` at `now`: admitted, or its reserved slot
    /// (reserving one if it had none).
    pub fn turn(&mut self, key: &str, now: Instant) -> Turn {
        self.forget_stale(now);
        let held = self.held.get(key).copied();
        let slot = held.unwrap_or_else(|| self.next_free(now));
        let ready = self.tat.is_none_or(|t| t <= now);
        if slot <= now && ready {
            self.held.remove(key);
            self.tat = Some(now + self.interval);
            if self.held.is_empty() {
                self.horizon = None;
            }
            return Turn::Now;
        }
        if held.is_none() {
            self.held.insert(key.to_string(), slot);
            self.horizon = Some(slot + self.interval);
        }
        Turn::At(self.tat.map_or(slot, |t| t.max(slot)))
    }

    /// When a message without a reservation would get its slot.
    pub fn next_free(&self, now: Instant) -> Instant {
        [self.tat, self.horizon]
            .into_iter()
            .flatten()
            .fold(now, Instant::max)
    }

    /// Gives up `key`'s reservation (its holder left).
    pub fn release(&mut self, key: &str) {
        self.held.remove(key);
        if self.held.is_empty() {
            self.horizon = None;
        }
    }

    /// How many reservations are held.
    pub fn reserved(&self) -> usize {
        self.held.len()
    }

    fn forget_stale(&mut self, now: Instant) {
        if self.next_prune.is_some_and(|t| now < t) {
            return;
        }
        self.next_prune = Some(now + FORGET_AFTER / 4);
        let before = self.held.len();
        self.held
            .retain(|_, slot| now.saturating_duration_since(*slot) < FORGET_AFTER);
        if before != self.held.len() && self.held.is_empty() {
            self.horizon = None;
        }
    }
}

/// A claim on the shared pace: `Ok(wait)`, the slot is taken and is `wait` from
/// now; `Err(wait)`, the next free slot is further than allowed and was not taken.
pub type Claim = Result<Duration, Duration>;

/// A pace shared by several instances (cluster mode).
pub trait SharedPacing: Send + Sync {
    /// Claims the next slot of `key` (slots `interval` apart) if it is at most
    /// `max_wait` away; `None` when the store cannot be reached.
    fn claim<'a>(
        &'a self,
        key: &'a str,
        interval: Duration,
        max_wait: Duration,
    ) -> Pin<Box<dyn Future<Output = Option<Claim>> + Send + 'a>>;
}

/// The pacing of one smarthost entry, shared by every delivery to it.
pub struct Pacer {
    gcra: Mutex<Gcra>,
    /// Makes keys for waiters that have no queue id (passthrough sessions).
    anonymous: AtomicU64,
    /// Cluster mode: the shared store and this entry's name in it.
    shared: OnceLock<(Arc<dyn SharedPacing>, String)>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("gcra", &self.gcra)
            .field("shared", &self.shared.get().map(|(_, k)| k))
            .finish()
    }
}

/// What [`Pacer::wait_turn`] found when the turn is too far off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReady {
    /// When the next free slot is.
    pub until: Instant,
}

impl Pacer {
    pub fn new(per_minute: u32) -> Pacer {
        Pacer {
            gcra: Mutex::new(Gcra::new(per_minute)),
            anonymous: AtomicU64::new(0),
            shared: OnceLock::new(),
        }
    }

    /// Paces through `shared` from now on, under `key` (cluster mode).
    pub fn share(&self, shared: Arc<dyn SharedPacing>, key: String) {
        let _ = self.shared.set((shared, key));
    }

    /// The turn from the shared store: waited for when claimed; `None` when the
    /// store cannot answer (the local pace decides).
    async fn shared_turn(&self, max_wait: Duration) -> Option<Result<(), NotReady>> {
        let (store, key) = self.shared.get()?;
        let interval = self.gcra.locked().interval();
        // Whole milliseconds, rounded up: never closer than the interval.
        let interval = Duration::from_millis(interval.as_nanos().div_ceil(1_000_000) as u64);
        match store.claim(key, interval, max_wait).await? {
            Ok(wait) => {
                if !wait.is_zero() {
                    metrics::counter!("postern_paced_total", "result" => "delayed").increment(1);
                    tokio::time::sleep(wait).await;
                }
                Some(Ok(()))
            }
            Err(wait) => {
                metrics::counter!("postern_paced_total", "result" => "refused").increment(1);
                Some(Err(NotReady {
                    until: now() + wait,
                }))
            }
        }
    }

    /// The turn of the queued message `key`, waiting here for it when it is at
    /// most `short` away (so that a delivery slot is never held idle for long),
    /// else the reserved slot to come back at.
    pub async fn turn(&self, key: &str, short: Duration) -> Result<(), NotReady> {
        if let Some(shared) = self.shared_turn(short).await {
            return shared;
        }
        loop {
            let turn = self.gcra.locked().turn(key, now());
            if turn != Turn::Now {
                metrics::counter!("postern_paced_total", "result" => "delayed").increment(1);
            }
            match turn {
                Turn::Now => return Ok(()),
                Turn::At(t) if t <= now() + short => tokio::time::sleep_until(t.into()).await,
                Turn::At(until) => return Err(NotReady { until }),
            }
        }
    }

    /// A turn for a waiter without a queue id (a passthrough client at MAIL): wait
    /// for it when the next free slot is at most `max_wait` away; otherwise
    /// reserve nothing and say when it would have been.
    pub async fn wait_turn(&self, max_wait: Duration) -> Result<(), NotReady> {
        if let Some(shared) = self.shared_turn(max_wait).await {
            return shared;
        }
        let key = format!(
            "\0session-{}",
            self.anonymous.fetch_add(1, Ordering::Relaxed)
        );
        {
            let gcra = self.gcra.locked();
            let until = gcra.next_free(now());
            if until > now() + max_wait {
                metrics::counter!("postern_paced_total", "result" => "refused").increment(1);
                return Err(NotReady { until });
            }
        }
        // However the wait ends (admitted, overtaken, or the client left and the
        // future was dropped), no reservation outlives it.
        let _release = Release {
            pacer: self,
            key: &key,
        };
        self.turn(&key, max_wait).await
    }
}

/// The queue's turn for message `key` at the first smarthost of `sender`'s route.
/// A paced smarthost makes the message wait for it rather than fail over: pacing
/// is not failure. [`super::deliver`] expects this turn taken, and paces the
/// later smarthosts of the route (reached only on failure) itself. A smarthost on
/// hold after throttling is not contacted, so it has no turn to take.
pub async fn first_turn(relays: &Relays, sender: &str, key: &str) -> Result<(), NotReady> {
    let Some(&first) = relays.route(sender).first() else {
        return Ok(());
    };
    if relays.held_until(first).is_some() {
        return Ok(());
    }
    match relays.pacer(first) {
        Some(p) => p.turn(key, QUEUE_WAIT).await,
        None => Ok(()),
    }
}

/// The turn at smarthost `pool` for a message that has no reservation there (a
/// passthrough client, or a queued message failing over): waits for it up to
/// `max_wait`. None at a smarthost on hold, which is not contacted.
pub async fn turn_at(relays: &Relays, pool: usize, max_wait: Duration) -> Result<(), NotReady> {
    if relays.held_until(pool).is_some() {
        return Ok(());
    }
    match relays.pacer(pool) {
        Some(p) => p.wait_turn(max_wait).await,
        None => Ok(()),
    }
}

/// The transient reply when a smarthost's pacing has no slot soon: the client
/// (passthrough) or the queue (failover) tries again later.
pub fn paced_reply() -> Reply {
    Reply::new(
        451,
        Esc(4, 7, 0),
        "smarthost sending rate reached, try again later",
    )
}

/// The runtime's clock (paused in tests), as the std instant [`Gcra`] works in.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Gives a passthrough waiter's reservation back if its wait is cancelled.
struct Release<'a> {
    pacer: &'a Pacer,
    key: &'a str,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.pacer.gcra.locked().release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Drives `gcra` like the queue does: each key asks, and a key told `At(t)`
    /// asks again at `t` (plus `late`); returns the admission times, in order.
    fn run(gcra: &mut Gcra, arrivals: &[(f64, &str)], late: f64, t0: Instant) -> Vec<Duration> {
        let mut asks: Vec<(Instant, String)> = arrivals
            .iter()
            .map(|(at, k)| (t0 + secs(*at), k.to_string()))
            .collect();
        let mut admitted = Vec::new();
        while !asks.is_empty() {
            asks.sort();
            let (now, key) = asks.remove(0);
            match gcra.turn(&key, now) {
                Turn::Now => admitted.push(now - t0),
                Turn::At(t) => {
                    assert!(t > now, "a turn in the past would spin");
                    asks.push((t + secs(late), key));
                }
            }
        }
        admitted
    }

    /// No 60-second window holds more than `n` admissions.
    fn max_in_any_minute(times: &[Duration]) -> usize {
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| **t < times[i] + secs(60.0))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_burst_is_spread_evenly_one_at_a_time() {
        let t0 = Instant::now();
        let mut g = Gcra::new(60);
        let burst: Vec<(f64, String)> = (0..5).map(|i| (0.0, format!("m{i}"))).collect();
        let burst: Vec<(f64, &str)> = burst.iter().map(|(t, k)| (*t, k.as_str())).collect();
        let times = run(&mut g, &burst, 0.0, t0);
        assert_eq!(times, (0..5).map(|i| secs(i as f64)).collect::<Vec<_>>());
        assert_eq!(g.reserved(), 0, "every reservation was claimed");
    }

    #[test]
    fn burst_of_one_never_more_than_n_in_any_minute() {
        // 500 invoices at once, then a trickle, at 30 a minute; callers come back
        // up to 0.7 s late, as the queue's whole-second schedule makes them.
        for late in [0.0, 0.3, 0.7] {
            let t0 = Instant::now();
            let mut g = Gcra::new(30);
            let keys: Vec<String> = (0..520).map(|i| format!("m{i}")).collect();
            let arrivals: Vec<(f64, &str)> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (if i < 500 { 0.0 } else { i as f64 }, k.as_str()))
                .collect();
            let times = run(&mut g, &arrivals, late, t0);
            assert_eq!(times.len(), 520, "every message goes");
            assert!(max_in_any_minute(&times) <= 30, "late={late}");
            let min_gap = times.windows(2).map(|w| w[1] - w[0]).min().unwrap();
            assert!(min_gap >= secs(2.0), "late={late}: {min_gap:?}");
            // Coming back late does not add up: the rate stays close to N.
            let span = times[499] - times[0];
            assert!(
                span <= secs(499.0 * 2.0 + late + 0.001),
                "late={late}: {span:?}"
            );
        }
    }

    #[test]
    fn a_fresh_message_does_not_jump_the_reservations() {
        let t0 = Instant::now();
        let mut g = Gcra::new(60);
        assert_eq!(g.turn("a", t0), Turn::Now);
        assert_eq!(g.turn("b", t0), Turn::At(t0 + secs(1.0)));
        assert_eq!(g.turn("c", t0), Turn::At(t0 + secs(2.0)));
        // At 1.0 a newcomer asks before b comes back: it goes after c.
        assert_eq!(g.turn("d", t0 + secs(1.0)), Turn::At(t0 + secs(3.0)));
        assert_eq!(g.turn("b", t0 + secs(1.0)), Turn::Now);
        // c back early: still its own slot.
        assert_eq!(g.turn("c", t0 + secs(1.5)), Turn::At(t0 + secs(2.0)));
        // c back late: admitted, and the next admission is one interval after it.
        assert_eq!(g.turn("c", t0 + secs(2.6)), Turn::Now);
        assert_eq!(g.turn("d", t0 + secs(3.0)), Turn::At(t0 + secs(3.6)));
        assert_eq!(g.turn("d", t0 + secs(3.6)), Turn::Now);
        // Idle long enough: the next one goes at once.
        assert_eq!(g.turn("e", t0 + secs(10.0)), Turn::Now);
    }

    #[test]
    fn unclaimed_reservations_are_forgotten() {
        let t0 = Instant::now();
        let mut g = Gcra::new(60);
        assert_eq!(g.turn("a", t0), Turn::Now);
        assert_eq!(g.turn("gone", t0), Turn::At(t0 + secs(1.0)));
        assert_eq!(g.reserved(), 1);
        let later = t0 + secs(1.0) + FORGET_AFTER;
        assert_eq!(g.turn("b", later), Turn::Now);
        assert_eq!(g.reserved(), 0);
        // Released explicitly: the horizon goes with the last one.
        assert_eq!(g.turn("c", later), Turn::At(later + secs(1.0)));
        g.release("c");
        assert_eq!(g.next_free(later), later + secs(1.0), "tat still holds");
    }

    #[test]
    fn the_interval_is_a_minute_over_n() {
        assert_eq!(Gcra::new(30).interval(), secs(2.0));
        assert_eq!(Gcra::new(60).interval(), secs(1.0));
        assert_eq!(Gcra::new(7).interval(), Duration::from_nanos(8_571_428_571));
    }

    #[tokio::test(start_paused = true)]
    async fn a_passthrough_waiter_waits_briefly_or_is_told_when() {
        let p = Pacer::new(60);
        let start = tokio::time::Instant::now();
        p.wait_turn(secs(5.0)).await.unwrap();
        p.wait_turn(secs(5.0)).await.unwrap();
        assert!(start.elapsed() >= secs(1.0), "waited for the second slot");
        // Six more would need six more seconds: the sixth is refused.
        for _ in 0..4 {
            let p = &p;
            // Reserve without waiting to the end: started, then abandoned.
            let _ = tokio::time::timeout(secs(0.01), p.wait_turn(secs(5.0))).await;
        }
        assert_eq!(p.gcra.locked().reserved(), 0, "abandoned waits release");
        let got = p.wait_turn(secs(0.5)).await;
        assert!(got.is_err(), "{got:?}");
    }
}
