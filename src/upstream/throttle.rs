//! Holding a smarthost entry that asked to slow down (`421`, `454`, "throttling", or
//! Graph's `429` with `Retry-After`): no new transaction there until the hold ends,
//! 30 s doubling to 10 min while it keeps throttling, and at least as long as it
//! asked (at most 10 min).
//!
//! A hold is per smarthost, not per queue: a throttled Microsoft 365 mailbox must
//! not stop mail for the other routes. Entries that name the same smarthost
//! (`host:port`, or the same Graph mailbox) share one hold, so a smarthost that
//! refuses everything with `421` holds every route through it; routes to other
//! smarthosts keep flowing, and no pause of the whole queue is ever needed.
//!
//! The rule is pure ([`HoldState`], time passed in, table-tested); [`Hold`] puts it
//! behind a lock with the runtime's clock.

use crate::lock::MutexExt;
use crate::proto::reply::{Esc, Reply};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The first pause, doubled while the smarthost keeps throttling.
const FIRST: Duration = Duration::from_secs(30);
/// The longest pause, whatever the smarthost asks.
const LONGEST: Duration = Duration::from_secs(600);

/// When a held smarthost may be tried again, and the current step.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HoldState {
    until: Option<Instant>,
    /// The last pause taken by the doubling rule; zero after a success.
    step: Duration,
}

impl HoldState {
    /// The smarthost throttled at `now`, asking for `asked` if it said: holds it for
    /// the next step or what it asked, whichever is longer. Returns the pause. A
    /// throttle reported while the hold runs (by transactions that began before
    /// it) is not a new one: it may lengthen the hold to what it asks, but does not
    /// double the step, or a burst of concurrent deliveries would jump to 10 min.
    pub fn throttled(&mut self, asked: Option<Duration>, now: Instant) -> Duration {
        let asked = asked.unwrap_or_default().min(LONGEST);
        if let Some(until) = self.until(now) {
            let until = until.max(now + asked);
            self.until = Some(until);
            return until - now;
        }
        self.step = (self.step * 2).clamp(FIRST, LONGEST);
        let pause = self.step.max(asked);
        self.until = Some(now + pause);
        pause
    }

    /// The smarthost took a message: the next throttle starts at the first step.
    pub fn succeeded(&mut self) {
        self.step = Duration::ZERO;
    }

    /// Until when the smarthost is held, if it still is at `now`.
    pub fn until(&self, now: Instant) -> Option<Instant> {
        self.until.filter(|u| *u > now)
    }
}

/// The hold of one smarthost, shared by every entry that names it.
#[derive(Debug, Default)]
pub struct Hold {
    state: Mutex<HoldState>,
}

impl Hold {
    /// See [`HoldState::throttled`].
    pub fn throttled(&self, asked: Option<Duration>) -> Duration {
        self.state.locked().throttled(asked, now())
    }

    pub fn succeeded(&self) {
        self.state.locked().succeeded();
    }

    /// Until when the smarthost is held, if it is.
    pub fn until(&self) -> Option<Instant> {
        self.state.locked().until(now())
    }

    /// Ends the hold and its doubling (`postern queue flush`: the operator says go).
    pub fn clear(&self) {
        *self.state.locked() = HoldState::default();
    }
}

/// What a transaction at a held smarthost gets, without the smarthost being
/// contacted: temporary, with the time left. Its words are not a throttle's (see
/// [`super::outcome::is_throttle`]), so refusing at a hold never extends it.
pub fn held_reply(left: Duration) -> Reply {
    Reply::new(
        451,
        Esc(4, 7, 0),
        format!(
            "smarthost asked to slow down; on hold for {} s more",
            left.as_secs().max(1)
        ),
    )
}

/// The runtime's clock (paused in tests), as a std instant.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_hold_doubles_and_is_at_least_as_long_as_asked() {
        // (step before, asked, pause)
        for (step, asked, want) in [
            (0, None, 30),
            (30, None, 60),
            (600, None, 600),
            (0, Some(45), 45),
            (0, Some(10), 30),
            (60, Some(90), 120),
            (0, Some(86_400), 600),
        ] {
            let t0 = Instant::now();
            let mut h = HoldState {
                until: None,
                step: s(step),
            };
            assert_eq!(h.throttled(asked.map(s), t0), s(want), "{step} {asked:?}");
            assert_eq!(h.until(t0), Some(t0 + s(want)));
            assert_eq!(h.until(t0 + s(want)), None, "over at its end");
        }
    }

    #[test]
    fn throttles_during_a_hold_do_not_double_it() {
        let t0 = Instant::now();
        let mut h = HoldState::default();
        assert_eq!(h.throttled(None, t0), s(30));
        // Eight deliveries in flight all report it: still the first step.
        for _ in 0..8 {
            assert_eq!(h.throttled(None, t0 + s(1)), s(29));
        }
        // One asks for longer: the hold grows to it, the step stays.
        assert_eq!(h.throttled(Some(s(50)), t0 + s(2)), s(50));
        assert_eq!(h.until(t0 + s(40)), Some(t0 + s(52)));
        // Throttled again after the hold: the next step.
        assert_eq!(h.throttled(None, t0 + s(60)), s(60));
    }

    #[test]
    fn a_success_restarts_the_doubling() {
        let t0 = Instant::now();
        let mut h = HoldState::default();
        assert_eq!(h.throttled(None, t0), s(30));
        assert_eq!(h.throttled(None, t0 + s(31)), s(60));
        h.succeeded();
        assert_eq!(h.throttled(None, t0 + s(100)), s(30));
    }

    #[test]
    fn refusing_at_a_hold_is_not_a_throttle() {
        let r = held_reply(s(12));
        assert_eq!((r.code, r.esc), (451, Some(Esc(4, 7, 0))));
        assert!(!super::super::outcome::is_throttle(&r, &[]), "{r:?}");
        assert!(r.text.contains("12 s"), "{}", r.text);
    }
}
