//! Dashboard sign-ins: server-side sessions behind a random cookie, each with its
//! own CSRF token, and the per-address throttle on failed sign-ins.
//!
//! The cookie holds only a random 256-bit id; the server keeps, under the id's
//! SHA-256, when the session began, when it was last used and its CSRF token. A
//! stolen copy of the table (a core dump) therefore holds no usable cookie. Every
//! function takes `now`, so expiry is tested without waiting.

use crate::lock::MutexExt;
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Most sessions kept; the oldest goes when a sign-in would pass it. A few
/// operators need a handful; the cap bounds the memory a token holder can use.
pub const MAX_SESSIONS: usize = 256;

/// Failed sign-ins an address may make within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;

/// The window failed sign-ins are counted in; once over, an address waits for it
/// to end (the token itself is never checked while it waits).
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// Addresses tracked at once; beyond this the oldest windows are forgotten.
const MAX_TRACKED: usize = 10_000;

/// What a valid cookie gives a request.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The synchronizer token the page sends back in `X-CSRF-Token`.
    pub csrf: String,
}

struct Session {
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// The signed-in sessions.
pub struct Sessions {
    idle: Duration,
    lifetime: Duration,
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    pub fn new(idle: Duration, lifetime: Duration) -> Sessions {
        Sessions {
            idle,
            lifetime,
            by_digest: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session: its cookie value (64 hex digits) and its CSRF token.
    pub fn create(&self, now: Instant) -> (String, SessionInfo) {
        let id = random_hex();
        let csrf = random_hex();
        let mut all = self.by_digest.locked();
        all.retain(|_, s| self.alive(s, now));
        if all.len() >= MAX_SESSIONS
            && let Some(oldest) = all.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k)
        {
            all.remove(&oldest);
        }
        let session = Session {
            csrf: csrf.clone(),
            created: now,
            last_seen: now,
        };
        all.insert(super::digest(id.as_bytes()), session);
        (id, SessionInfo { csrf })
    }

    /// The session a cookie value names, if it is alive; using it counts as activity.
    pub fn check(&self, id: &str, now: Instant) -> Option<SessionInfo> {
        let key = super::digest(id.as_bytes());
        let mut all = self.by_digest.locked();
        let alive = self.alive(all.get(&key)?, now);
        if !alive {
            all.remove(&key);
            return None;
        }
        let s = all.get_mut(&key)?;
        s.last_seen = now;
        Some(SessionInfo {
            csrf: s.csrf.clone(),
        })
    }

    /// Ends a session (sign-out); whether it existed.
    pub fn remove(&self, id: &str) -> bool {
        self.by_digest
            .locked()
            .remove(&super::digest(id.as_bytes()))
            .is_some()
    }

    /// Sessions alive at `now`.
    pub fn count(&self, now: Instant) -> usize {
        let mut all = self.by_digest.locked();
        all.retain(|_, s| self.alive(s, now));
        all.len()
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.saturating_duration_since(s.last_seen) < self.idle
            && now.saturating_duration_since(s.created) < self.lifetime
    }
}

/// Whether `given` is the session's CSRF token, in constant time.
pub fn csrf_matches(session: &SessionInfo, given: &[u8]) -> bool {
    session.csrf.len() == given.len() && bool::from(session.csrf.as_bytes().ct_eq(given))
}

/// 32 random bytes as 64 lowercase hex digits.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random number generator");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Failed sign-ins per address (an IPv6 client by its /64, which one host
/// usually has whole).
pub struct SignInThrottle {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Default for SignInThrottle {
    fn default() -> Self {
        SignInThrottle {
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl SignInThrottle {
    /// `Some(wait)` when `ip` has used up its failures and must wait that long.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let all = self.failures.locked();
        let (start, n) = *all.get(&key(ip))?;
        let end = start + FAILURE_WINDOW;
        (n >= MAX_FAILURES && end > now).then(|| end - now)
    }

    /// Counts a failed sign-in from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut all = self.failures.locked();
        if all.len() >= MAX_TRACKED {
            all.retain(|_, (start, _)| *start + FAILURE_WINDOW > now);
        }
        if all.len() >= MAX_TRACKED {
            return; // A flood of addresses: each is still checked against the token.
        }
        let entry = all.entry(key(ip)).or_insert((now, 0));
        if entry.0 + FAILURE_WINDOW <= now {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// A successful sign-in clears the address's count.
    pub fn succeeded(&self, ip: IpAddr) {
        self.failures.locked().remove(&key(ip));
    }
}

fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(60);
    const LIFETIME: Duration = Duration::from_secs(300);

    #[test]
    fn a_session_lives_while_used_and_ends_when_idle_or_old() {
        let s = Sessions::new(IDLE, LIFETIME);
        let t0 = Instant::now();
        let (id, info) = s.create(t0);
        assert_eq!(id.len(), 64);
        assert_ne!(id, info.csrf);
        // Used every 50 s it stays alive, until the lifetime ends it.
        let mut t = t0;
        for _ in 0..5 {
            t += Duration::from_secs(50);
            assert_eq!(s.check(&id, t).map(|i| i.csrf), Some(info.csrf.clone()));
        }
        assert!(s.check(&id, t0 + LIFETIME).is_none());
        // Idle for a minute: gone.
        let (id, _) = s.create(t0);
        assert!(s.check(&id, t0 + IDLE).is_none());
        assert_eq!(s.count(t0 + IDLE), 0);
    }

    #[test]
    fn sign_out_and_unknown_ids() {
        let s = Sessions::new(IDLE, LIFETIME);
        let now = Instant::now();
        let (id, _) = s.create(now);
        assert!(s.check("0".repeat(64).as_str(), now).is_none());
        assert!(s.remove(&id));
        assert!(s.check(&id, now).is_none());
        assert!(!s.remove(&id));
    }

    #[test]
    fn sessions_are_capped_oldest_first() {
        let s = Sessions::new(IDLE, LIFETIME);
        let t0 = Instant::now();
        let (first, _) = s.create(t0);
        for i in 1..=MAX_SESSIONS as u64 {
            s.create(t0 + Duration::from_millis(i));
        }
        assert_eq!(s.count(t0 + Duration::from_secs(1)), MAX_SESSIONS);
        assert!(s.check(&first, t0 + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn csrf_tokens_compare_whole() {
        let info = SessionInfo {
            csrf: "ab".repeat(32),
        };
        assert!(csrf_matches(&info, "ab".repeat(32).as_bytes()));
        assert!(!csrf_matches(&info, b"ab"));
        assert!(!csrf_matches(&info, b""));
        assert!(!csrf_matches(&info, "ab".repeat(31).as_bytes()));
    }

    #[test]
    fn failures_block_an_address_for_the_rest_of_the_window() {
        let t = SignInThrottle::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(t.blocked(ip, t0).is_none());
            t.failed(ip, t0);
        }
        assert_eq!(
            t.blocked(ip, t0 + Duration::from_secs(100)),
            Some(Duration::from_secs(200))
        );
        assert!(t.blocked(other, t0).is_none());
        assert!(t.blocked(ip, t0 + FAILURE_WINDOW).is_none());
        // A new window starts from zero.
        t.failed(ip, t0 + FAILURE_WINDOW);
        assert!(t.blocked(ip, t0 + FAILURE_WINDOW).is_none());
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let t = SignInThrottle::default();
        let now = Instant::now();
        for i in 0..MAX_FAILURES {
            t.failed(format!("2001:db8::{i}").parse().unwrap(), now);
        }
        assert!(t.blocked("2001:db8::ffff".parse().unwrap(), now).is_some());
        assert!(t.blocked("2001:db8:0:1::1".parse().unwrap(), now).is_none());
        t.succeeded("2001:db8::1".parse().unwrap());
        assert!(t.blocked("2001:db8::1".parse().unwrap(), now).is_none());
    }
}
