//! Traffic counters for the dashboard: messages accepted and refused per minute
//! over the last 24 hours and per hour over the last 7 days, in memory (a restart
//! starts them afresh; the delivery log keeps the history).

use crate::lock::MutexExt;
use serde::Serialize;
use std::sync::Mutex;

/// One bar of a chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Point {
    /// Unix second the interval starts.
    pub start: u64,
    pub accepted: u64,
    pub refused: u64,
}

/// What the dashboard draws: oldest first, one point per interval, the last one
/// the interval in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrafficSeries {
    /// 1440 minutes.
    pub per_minute: Vec<Point>,
    /// 168 hours.
    pub per_hour: Vec<Point>,
}

/// Counts in fixed intervals, in a ring of slots each tagged with its interval.
struct Ring {
    width: u64,
    /// (interval number, accepted, refused).
    slots: Vec<(u64, u64, u64)>,
}

impl Ring {
    fn new(width: u64, len: usize) -> Ring {
        Ring {
            width,
            slots: vec![(u64::MAX, 0, 0); len],
        }
    }

    fn add(&mut self, unix: u64, accepted: bool) {
        let n = unix / self.width;
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(n % len) as usize];
        if slot.0 != n {
            *slot = (n, 0, 0);
        }
        if accepted {
            slot.1 += 1;
        } else {
            slot.2 += 1;
        }
    }

    fn series(&self, unix: u64) -> Vec<Point> {
        let now = unix / self.width;
        let len = self.slots.len() as u64;
        (now.saturating_sub(len - 1)..=now)
            .map(|n| {
                let (tag, accepted, refused) = self.slots[(n % len) as usize];
                let (accepted, refused) = if tag == n {
                    (accepted, refused)
                } else {
                    (0, 0)
                };
                Point {
                    start: n * self.width,
                    accepted,
                    refused,
                }
            })
            .collect()
    }
}

/// Both rings, behind one lock (an update is a few additions).
pub struct Traffic {
    rings: Mutex<(Ring, Ring)>,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            rings: Mutex::new((Ring::new(60, 24 * 60), Ring::new(3600, 7 * 24))),
        }
    }
}

impl Traffic {
    /// Counts one message at `unix` (seconds).
    pub fn count(&self, unix: u64, accepted: bool) {
        let mut r = self.rings.locked();
        r.0.add(unix, accepted);
        r.1.add(unix, accepted);
    }

    /// The series as of `unix`.
    pub fn series(&self, unix: u64) -> TrafficSeries {
        let r = self.rings.locked();
        TrafficSeries {
            per_minute: r.0.series(unix),
            per_hour: r.1.series(unix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_minute_and_hour_and_age_out() {
        let t = Traffic::default();
        let base = 1_764_676_800; // a whole hour
        t.count(base + 5, true);
        t.count(base + 59, false);
        t.count(base + 60, true);
        t.count(base + 3600, true);
        let s = t.series(base + 3600);
        assert_eq!(s.per_minute.len(), 1440);
        assert_eq!(s.per_hour.len(), 168);
        let minute = |start| s.per_minute.iter().find(|p| p.start == start).copied();
        assert_eq!(minute(base).map(|p| (p.accepted, p.refused)), Some((1, 1)));
        assert_eq!(
            minute(base + 60).map(|p| (p.accepted, p.refused)),
            Some((1, 0))
        );
        let last = s.per_minute.last().unwrap();
        assert_eq!((last.start, last.accepted), (base + 3600, 1));
        let hours: Vec<_> = s
            .per_hour
            .iter()
            .rev()
            .take(2)
            .map(|p| (p.accepted, p.refused))
            .collect();
        assert_eq!(hours, [(1, 0), (2, 1)]);
        // A day later the minutes are gone, the hours are still there.
        let later = t.series(base + 86_400 + 3600);
        assert!(later.per_minute.iter().all(|p| p.accepted + p.refused == 0));
        assert_eq!(later.per_hour.iter().map(|p| p.accepted).sum::<u64>(), 3);
        // And a week later the hours too.
        let much_later = t.series(base + 8 * 86_400);
        assert!(
            much_later
                .per_hour
                .iter()
                .all(|p| p.accepted + p.refused == 0)
        );
    }

    #[test]
    fn a_slot_reused_by_a_later_interval_starts_from_zero() {
        let t = Traffic::default();
        t.count(0, true);
        t.count(24 * 3600, false); // same minute slot, one day later
        let s = t.series(24 * 3600);
        let last = s.per_minute.last().unwrap();
        assert_eq!((last.accepted, last.refused), (0, 1));
    }
}
