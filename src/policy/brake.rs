//! The suspicious-account brake: stop a compromised account before the shared IP is
//! blocklisted.
//!
//! A user is suspended automatically when it logs in from more distinct addresses in
//! one hour than `max_ips_per_user_per_hour` (off unless set), or when it hits a rate
//! limit in `suspend_after_limited_hours` consecutive clock hours. A suspended user's
//! logins get `535 5.7.8`. Suspensions are written to a small state file so that a
//! restart does not lift them; `postern user enable NAME` removes one, and SIGHUP
//! makes the running server re-read the file.

pub use crate::config::BrakePolicy;
use crate::lock::MutexExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One suspension, as kept in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suspension {
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub since: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    #[serde(default)]
    suspended: BTreeMap<String, Suspension>,
}

#[derive(Default)]
struct Activity {
    /// Addresses seen in the current hour.
    ips: HashMap<IpAddr, Instant>,
    /// Clock hours (since the epoch) in which a rate limit was hit.
    limited_hours: BTreeSet<u64>,
}

pub struct Brake {
    policy: BrakePolicy,
    file: PathBuf,
    suspended: Mutex<BTreeMap<String, Suspension>>,
    activity: Mutex<HashMap<String, Activity>>,
}

/// Reads a suspension state file; a missing file means nobody is suspended.
pub fn read_state(path: &Path) -> Result<BTreeMap<String, Suspension>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(BTreeMap::new()),
        Ok(text) => serde_yaml::from_str::<StateFile>(&text)
            .map(|s| s.suspended)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the state file atomically (temporary file, fsync, rename).
pub fn write_state(path: &Path, suspended: &BTreeMap<String, Suspension>) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        crate::private_fs::create_dir_all(dir)?;
    }
    let text = serde_yaml::to_string(&StateFile {
        suspended: suspended.clone(),
    })
    .map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    let mut f = crate::private_fs::create(&tmp)?;
    f.write_all(
        b"# Users suspended by Postern's abuse brake. Lift with `postern user enable NAME`.\n",
    )?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Brake {
    /// Loads suspensions from `file` (missing is fine).
    pub fn new(policy: BrakePolicy, file: PathBuf) -> Result<Brake, String> {
        let suspended = read_state(&file)?;
        Ok(Brake {
            policy,
            file,
            suspended: Mutex::new(suspended),
            activity: Mutex::new(HashMap::new()),
        })
    }

    /// Re-reads the state file (on SIGHUP), so `postern user enable` takes effect.
    pub fn reload(&self) -> Result<usize, String> {
        let s = read_state(&self.file)?;
        let n = s.len();
        let lifted: Vec<String> = {
            let mut cur = self.suspended.locked();
            let lifted = cur
                .keys()
                .filter(|u| !s.contains_key(*u))
                .cloned()
                .collect();
            *cur = s;
            lifted
        };
        // A lifted user starts with a clean slate, or the next login would
        // suspend it again on the same evidence.
        let mut act = self.activity.locked();
        for u in lifted {
            act.remove(&u);
        }
        Ok(n)
    }

    /// Why `user` is suspended, if it is.
    pub fn suspended(&self, user: &str) -> Option<Suspension> {
        self.suspended.locked().get(user).cloned()
    }

    /// Suspends `user` now (the admin API), and saves the state file: the
    /// suspension holds at once, and across a restart once this returns `Ok`. An
    /// error means it holds until restart only.
    pub fn suspend(&self, user: &str, reason: &str) -> Result<(), String> {
        self.record(user, reason.to_string(), SystemTime::now())
    }

    /// Lifts `user`'s suspension now (the admin API), saves the state file, and
    /// forgets the activity that led to it; returns whether the user was suspended.
    pub fn unsuspend(&self, user: &str) -> Result<bool, String> {
        let was = {
            let mut all = self.suspended.locked();
            let was = all.remove(user).is_some();
            if was {
                write_state(&self.file, &all)
                    .map_err(|e| format!("{}: {e}", self.file.display()))?;
            }
            was
        };
        self.activity.locked().remove(user);
        Ok(was)
    }

    /// Records a suspension in memory and in the state file.
    fn record(&self, user: &str, reason: String, wall: SystemTime) -> Result<(), String> {
        let mut all = self.suspended.locked();
        all.insert(
            user.to_string(),
            Suspension {
                reason,
                since: epoch_secs(wall),
            },
        );
        write_state(&self.file, &all).map_err(|e| format!("{}: {e}", self.file.display()))
    }

    /// An automatic suspension; a state file that cannot be written is logged.
    fn brake(&self, user: &str, reason: String, wall: SystemTime) -> String {
        if let Err(e) = self.record(user, reason.clone(), wall) {
            tracing::error!(error = %e, "cannot save the suspension; it holds until restart");
        }
        reason
    }

    /// Notes a successful login; returns the reason if it suspends the user.
    pub fn login(&self, user: &str, ip: IpAddr, now: Instant, wall: SystemTime) -> Option<String> {
        let max = self.policy.max_ips_per_user_per_hour?;
        let count = {
            let mut act = self.activity.locked();
            let a = act.entry(user.to_string()).or_default();
            a.ips
                .retain(|_, t| now.saturating_duration_since(*t) < Duration::from_secs(3600));
            a.ips.insert(ip, now);
            a.ips.len() as u32
        };
        (count > max).then(|| {
            self.brake(
                user,
                format!("logged in from {count} addresses within an hour (max_ips_per_user_per_hour: {max})"),
                wall,
            )
        })
    }

    /// Notes that a rate limit refused the user; returns the reason if this
    /// suspends it.
    pub fn limited(&self, user: &str, wall: SystemTime) -> Option<String> {
        let hours = self.policy.suspend_after_limited_hours?;
        let hour = epoch_secs(wall) / 3600;
        let consecutive = {
            let mut act = self.activity.locked();
            let a = act.entry(user.to_string()).or_default();
            a.limited_hours.insert(hour);
            a.limited_hours.retain(|&h| h + u64::from(hours) > hour);
            (0..u64::from(hours))
                .take_while(|&k| hour >= k && a.limited_hours.contains(&(hour - k)))
                .count() as u32
        };
        (consecutive >= hours).then(|| {
            self.brake(
                user,
                format!("hit its rate limit in {hours} consecutive hours"),
                wall,
            )
        })
    }

    /// Forgets activity older than an hour (run periodically).
    pub fn prune(&self, now: Instant, wall: SystemTime) {
        let hour = epoch_secs(wall) / 3600;
        let keep = u64::from(self.policy.suspend_after_limited_hours.unwrap_or(1));
        let mut act = self.activity.locked();
        act.retain(|_, a| {
            a.ips
                .retain(|_, t| now.saturating_duration_since(*t) < Duration::from_secs(3600));
            a.limited_hours.retain(|&h| h + keep > hour);
            !a.ips.is_empty() || !a.limited_hours.is_empty()
        });
    }
}

/// Lifts a suspension in the state file; returns whether the user was suspended.
pub fn lift(file: &Path, user: &str) -> Result<bool, String> {
    let mut all = read_state(file)?;
    let was = all.remove(user).is_some();
    if was {
        write_state(file, &all).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(was)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brake(dir: &Path, ips: Option<u32>, hours: Option<u32>) -> Brake {
        Brake::new(
            BrakePolicy {
                max_ips_per_user_per_hour: ips,
                suspend_after_limited_hours: hours,
            },
            dir.join("suspended.yaml"),
        )
        .unwrap()
    }

    #[test]
    fn too_many_addresses_suspends_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let b = brake(dir.path(), Some(3), None);
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for i in 1..=3u8 {
            assert_eq!(b.login("wp", IpAddr::from([192, 0, 2, i]), t0, wall), None);
        }
        // The same addresses again are fine.
        assert_eq!(b.login("wp", IpAddr::from([192, 0, 2, 1]), t0, wall), None);
        let reason = b
            .login("wp", IpAddr::from([192, 0, 2, 4]), t0, wall)
            .unwrap();
        assert!(reason.contains("4 addresses"), "{reason}");
        assert!(b.suspended("wp").is_some());
        assert!(b.suspended("other").is_none());
        // A new process sees the suspension; lifting it and reloading clears it.
        let b2 = brake(dir.path(), Some(3), None);
        assert_eq!(b2.suspended("wp").unwrap().since, 1_800_000_000);
        assert!(lift(&dir.path().join("suspended.yaml"), "wp").unwrap());
        assert!(!lift(&dir.path().join("suspended.yaml"), "wp").unwrap());
        b2.reload().unwrap();
        assert!(b2.suspended("wp").is_none());
    }

    #[test]
    fn an_operator_suspension_persists_and_is_lifted() {
        let dir = tempfile::tempdir().unwrap();
        let b = brake(dir.path(), None, None);
        b.suspend("wp", "ticket 42").unwrap();
        assert_eq!(b.suspended("wp").unwrap().reason, "ticket 42");
        let again = brake(dir.path(), None, None);
        assert_eq!(again.suspended("wp").unwrap().reason, "ticket 42");
        assert!(b.unsuspend("wp").unwrap());
        assert!(!b.unsuspend("wp").unwrap());
        assert!(b.suspended("wp").is_none());
        assert!(brake(dir.path(), None, None).suspended("wp").is_none());
    }

    #[test]
    fn addresses_older_than_an_hour_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let b = brake(dir.path(), Some(1), None);
        let t0 = Instant::now();
        let wall = UNIX_EPOCH;
        assert_eq!(b.login("u", IpAddr::from([192, 0, 2, 1]), t0, wall), None);
        let t1 = t0 + Duration::from_secs(3600);
        assert_eq!(b.login("u", IpAddr::from([192, 0, 2, 2]), t1, wall), None);
        assert!(
            b.login("u", IpAddr::from([192, 0, 2, 3]), t1, wall)
                .is_some()
        );
    }

    #[test]
    fn limited_in_consecutive_hours_suspends() {
        let dir = tempfile::tempdir().unwrap();
        let b = brake(dir.path(), None, Some(3));
        let h =
            |n: u64| UNIX_EPOCH + Duration::from_secs(1_800_000_000 / 3600 * 3600 + n * 3600 + 10);
        assert_eq!(b.limited("u", h(0)), None);
        assert_eq!(b.limited("u", h(0)), None);
        assert_eq!(b.limited("u", h(1)), None);
        // A gap resets the run.
        assert_eq!(b.limited("u", h(3)), None);
        assert_eq!(b.limited("u", h(4)), None);
        assert!(b.limited("u", h(5)).is_some());
    }

    #[test]
    fn off_by_default_settings_never_suspend() {
        let dir = tempfile::tempdir().unwrap();
        let b = brake(dir.path(), None, None);
        for i in 0..=255u8 {
            assert_eq!(
                b.login("u", IpAddr::from([10, 0, 0, i]), Instant::now(), UNIX_EPOCH),
                None
            );
            assert_eq!(
                b.limited("u", UNIX_EPOCH + Duration::from_secs(u64::from(i) * 3600)),
                None
            );
        }
    }
}
