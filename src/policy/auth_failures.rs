//! Penalties for failed logins, per client address and per username.
//!
//! The policy, in order:
//!
//! 1. A failure is remembered for `window` (15 minutes) as a keyed fingerprint of
//!    (username, password): an HMAC with a key made at start-up, never the password.
//!    Retrying the *same* wrong password counts once, so a printer with a stale
//!    password is not treated like someone guessing many.
//! 2. From an address with more than `tarpit_after` (3) distinct failures, every
//!    further failure is answered more slowly: one more second each, at most 5.
//! 3. A session with `per_session` (3) failures is closed with `421 4.7.0`.
//! 4. An address with `block_ip_after` (10) distinct failures is blocked: AUTH from it
//!    gets `421 4.7.0` for `block_time` (5 minutes), doubled for every repeated
//!    offence up to `block_max` (24 hours).
//! 5. A username with `block_user_after` (30) distinct failures, from any addresses, is
//!    locked the same way (a distributed guess at one account).
//! 6. A user who logged in successfully from an address within the last day keeps
//!    logging in from it even while the address is blocked: an office behind one NAT
//!    address is not locked out because someone else there misbehaves. The trust lifts
//!    only the address block, never the username lock, and the (user, address) pair
//!    has a failure limit of its own (`block_ip_after` distinct failures, blocked like
//!    an address): everyone behind a shared NAT or hosting address can reach a trusted
//!    user's login, so the pair must not be an unlimited supply of guesses.
//!    A correct login never clears the failure counts (an attacker holding one valid
//!    account must not be able to reset its guessing budget with it).
//!
//! All of it is plain state with the time passed in, so it is tested with a fake clock.
//!
//! In cluster mode the same records are also kept in a shared store
//! ([`SharedFailures`]): the session asks [`AuthFailures::check`] and
//! [`AuthFailures::record_failure`], which answer from the shared store when it can
//! be reached and from this instance's memory otherwise. Memory is always updated
//! too, so an outage starts from what this instance saw rather than from nothing.

pub use crate::config::AuthFailurePolicy;
use crate::lock::MutexExt;
use ring::hmac;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use crate::policy::rates::Pending;

/// Failure records shared with other instances (cluster mode). `None` means the
/// store could not answer: the caller uses its own memory.
pub trait SharedFailures: Send + Sync {
    /// The gate as the cluster sees it.
    fn gate<'a>(
        &'a self,
        ip: IpAddr,
        username: &'a str,
        policy: &'a AuthFailurePolicy,
    ) -> Pending<'a, Option<Gate>>;
    /// Records a failure everywhere; the counts and blocks it led to.
    fn failed<'a>(
        &'a self,
        ip: IpAddr,
        username: &'a str,
        password: &'a str,
        policy: &'a AuthFailurePolicy,
    ) -> Pending<'a, Option<Penalty>>;
    /// Records a good login (fire and forget).
    fn succeeded(&self, ip: IpAddr, username: &str, policy: &AuthFailurePolicy);
}

/// The tarpit delay after `ip_failures` distinct failures from one address.
pub fn tarpit(p: &AuthFailurePolicy, ip_failures: u32) -> Duration {
    let beyond = ip_failures.saturating_sub(p.tarpit_after);
    p.tarpit_step.saturating_mul(beyond).min(p.tarpit_max)
}

/// Whether an AUTH attempt may go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// The address is blocked.
    IpBlocked {
        retry_after: Duration,
    },
    /// The username is locked.
    UserBlocked {
        retry_after: Duration,
    },
    /// This username is locked from this address (too many failures for the pair).
    PairBlocked {
        retry_after: Duration,
    },
}

/// What a recorded failure means for the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Penalty {
    /// Wait this long before answering.
    pub delay: Duration,
    /// Distinct failures from this address within the window.
    pub ip_failures: u32,
    /// The address was blocked by this failure, for this long.
    pub ip_blocked: Option<Duration>,
    /// The username was locked by this failure, for this long.
    pub user_blocked: Option<Duration>,
    /// The (username, address) pair was locked by this failure, for this long.
    pub pair_blocked: Option<Duration>,
}

#[derive(Debug)]
struct Record {
    failures: VecDeque<(Instant, u64)>,
    offences: u32,
    blocked_until: Option<Instant>,
    last_seen: Instant,
}

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            failures: VecDeque::new(),
            offences: 0,
            blocked_until: None,
            last_seen: now,
        }
    }

    fn prune(&mut self, now: Instant, window: Duration) {
        while let Some(&(t, _)) = self.failures.front() {
            if now.saturating_duration_since(t) >= window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
    }

    /// Adds a failure unless the same one is already counted; returns the count.
    fn add(&mut self, now: Instant, fp: u64, window: Duration) -> u32 {
        self.prune(now, window);
        self.last_seen = now;
        if !self.failures.iter().any(|&(_, f)| f == fp) {
            self.failures.push_back((now, fp));
        }
        self.failures.len() as u32
    }

    fn blocked(&self, now: Instant) -> Option<Duration> {
        self.blocked_until.filter(|&u| u > now).map(|u| u - now)
    }

    /// Blocks after a threshold; the time doubles with each offence.
    fn block(&mut self, now: Instant, p: &AuthFailurePolicy) -> Duration {
        self.offences += 1;
        let factor = 1u32 << (self.offences - 1).min(16);
        let time = p.block_time.saturating_mul(factor).min(p.block_max);
        self.blocked_until = Some(now + time);
        self.failures.clear();
        time
    }

    fn idle(&self, now: Instant, p: &AuthFailurePolicy) -> bool {
        self.failures.is_empty()
            && self.blocked(now).is_none()
            // Keep repeat offenders' history for a day so the next block is longer.
            && (self.offences == 0 || now.saturating_duration_since(self.last_seen) > p.block_max)
    }
}

#[derive(Default)]
struct State {
    ips: HashMap<IpAddr, Record>,
    users: HashMap<String, Record>,
    /// Failures per (username, address), the limit a trusted pair keeps.
    pairs: HashMap<(String, IpAddr), Record>,
    good: HashMap<(String, IpAddr), Instant>,
}

/// The failure tracker shared by all sessions.
pub struct AuthFailures {
    policy: AuthFailurePolicy,
    key: hmac::Key,
    state: Mutex<State>,
    shared: OnceLock<Arc<dyn SharedFailures>>,
}

impl AuthFailures {
    pub fn new(policy: AuthFailurePolicy) -> AuthFailures {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("system randomness");
        AuthFailures {
            policy,
            key,
            state: Mutex::new(State::default()),
            shared: OnceLock::new(),
        }
    }

    /// Shares the records from now on (cluster mode; set once, at start).
    pub fn share(&self, shared: Arc<dyn SharedFailures>) {
        let _ = self.shared.set(shared);
    }

    /// Before verifying: may `username` try to log in from `ip` now? The
    /// cluster's answer when it can give one, else this instance's.
    pub async fn check(&self, ip: IpAddr, username: &str, now: Instant) -> Gate {
        if let Some(shared) = self.shared.get()
            && let Some(gate) = shared.gate(ip, username, &self.policy).await
        {
            return gate;
        }
        self.gate(ip, username, now)
    }

    /// Records a failed login here and in the cluster, and says how to answer it.
    pub async fn record_failure(
        &self,
        ip: IpAddr,
        username: &str,
        password: &str,
        now: Instant,
    ) -> Penalty {
        let local = self.failed(ip, username, password, now);
        match self.shared.get() {
            Some(shared) => shared
                .failed(ip, username, password, &self.policy)
                .await
                .unwrap_or(local),
            None => local,
        }
    }

    /// Records a successful login here and in the cluster.
    pub fn record_success(&self, ip: IpAddr, username: &str, now: Instant) {
        self.succeeded(ip, username, now);
        if let Some(shared) = self.shared.get() {
            shared.succeeded(ip, username, &self.policy);
        }
    }

    pub fn policy(&self) -> &AuthFailurePolicy {
        &self.policy
    }

    /// A keyed fingerprint of one (username, password) attempt.
    fn fingerprint(&self, username: &str, password: &str) -> u64 {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(username.as_bytes());
        ctx.update(&[0]);
        ctx.update(password.as_bytes());
        let tag = ctx.sign();
        u64::from_be_bytes(tag.as_ref()[..8].try_into().expect("8 bytes"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.locked()
    }

    /// Before verifying: may `username` try to log in from `ip` now?
    pub fn gate(&self, ip: IpAddr, username: &str, now: Instant) -> Gate {
        let state = self.lock();
        let pair = (username.to_string(), ip);
        // Trust lifts the address block only.
        let trusted = state
            .good
            .get(&pair)
            .is_some_and(|&t| now.saturating_duration_since(t) < self.policy.remember_good);
        if !trusted && let Some(d) = state.ips.get(&ip).and_then(|r| r.blocked(now)) {
            return Gate::IpBlocked { retry_after: d };
        }
        if let Some(d) = state.users.get(username).and_then(|r| r.blocked(now)) {
            return Gate::UserBlocked { retry_after: d };
        }
        if let Some(d) = state.pairs.get(&pair).and_then(|r| r.blocked(now)) {
            return Gate::PairBlocked { retry_after: d };
        }
        Gate::Open
    }

    /// Records a failed login and says how to answer it.
    pub fn failed(&self, ip: IpAddr, username: &str, password: &str, now: Instant) -> Penalty {
        let fp = self.fingerprint(username, password);
        let p = &self.policy;
        let mut state = self.lock();
        let ip_rec = state.ips.entry(ip).or_insert_with(|| Record::new(now));
        let ip_failures = ip_rec.add(now, fp, p.window);
        let delay = tarpit(p, ip_failures);
        let ip_blocked = (ip_failures >= p.block_ip_after).then(|| ip_rec.block(now, p));
        let user_rec = state
            .users
            .entry(username.to_string())
            .or_insert_with(|| Record::new(now));
        let user_failures = user_rec.add(now, fp, p.window);
        let user_blocked = (user_failures >= p.block_user_after).then(|| user_rec.block(now, p));
        let pair_rec = state
            .pairs
            .entry((username.to_string(), ip))
            .or_insert_with(|| Record::new(now));
        let pair_failures = pair_rec.add(now, fp, p.window);
        let pair_blocked = (pair_failures >= p.block_ip_after).then(|| pair_rec.block(now, p));
        let over = state.ips.len() + state.users.len() + state.pairs.len() > p.max_tracked;
        drop(state);
        if over {
            self.prune(now);
        }
        Penalty {
            delay,
            ip_failures,
            ip_blocked,
            user_blocked,
            pair_blocked,
        }
    }

    /// Records a successful login: this user is trusted from this address.
    pub fn succeeded(&self, ip: IpAddr, username: &str, now: Instant) {
        self.lock().good.insert((username.to_string(), ip), now);
    }

    /// Forgets what no longer matters, and the least recently seen entries past
    /// `max_tracked`, so an attacker cycling addresses cannot grow memory.
    pub fn prune(&self, now: Instant) {
        let p = &self.policy;
        let mut guard = self.lock();
        let state = &mut *guard;
        for r in state
            .ips
            .values_mut()
            .chain(state.users.values_mut())
            .chain(state.pairs.values_mut())
        {
            r.prune(now, p.window);
        }
        state.ips.retain(|_, r| !r.idle(now, p));
        state.users.retain(|_, r| !r.idle(now, p));
        state.pairs.retain(|_, r| !r.idle(now, p));
        state
            .good
            .retain(|_, t| now.saturating_duration_since(*t) < p.remember_good);
        let third = p.max_tracked / 3;
        evict_oldest(&mut state.ips, third);
        evict_oldest(&mut state.users, third);
        evict_oldest(&mut state.pairs, third);
        let max_good = p.max_tracked;
        if state.good.len() > max_good {
            let mut v: Vec<_> = state.good.iter().map(|(k, t)| (*t, k.clone())).collect();
            v.sort();
            for (_, k) in v.into_iter().take(state.good.len() - max_good) {
                state.good.remove(&k);
            }
        }
    }

    /// Addresses, usernames and (username, address) pairs tracked now.
    pub fn tracked(&self) -> usize {
        let s = self.lock();
        s.ips.len() + s.users.len() + s.pairs.len()
    }
}

fn evict_oldest<K: Clone + Eq + Hash>(map: &mut HashMap<K, Record>, max: usize) {
    if map.len() <= max {
        return;
    }
    let mut by_age: Vec<(Instant, K)> = map.iter().map(|(k, r)| (r.last_seen, k.clone())).collect();
    by_age.sort_by_key(|(t, _)| *t);
    let excess = map.len() - max;
    for (_, k) in by_age.into_iter().take(excess) {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tarpit_then_block_with_growing_cool_down() {
        let f = AuthFailures::new(AuthFailurePolicy::default());
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        let mut delays = Vec::new();
        for i in 0..10 {
            assert_eq!(f.gate(a, "alice", t0), Gate::Open);
            let p = f.failed(a, "alice", &format!("guess{i}"), t0);
            delays.push(p.delay.as_secs());
            assert_eq!(p.ip_blocked.is_some(), i == 9);
        }
        assert_eq!(delays, vec![0, 0, 0, 1, 2, 3, 4, 5, 5, 5]);
        assert_eq!(
            f.gate(a, "bob", t0),
            Gate::IpBlocked {
                retry_after: Duration::from_secs(300)
            }
        );
        // Over after five minutes; a second offence blocks for ten.
        let t1 = t0 + Duration::from_secs(300);
        assert_eq!(f.gate(a, "bob", t1), Gate::Open);
        for i in 0..10 {
            f.failed(a, "alice", &format!("again{i}"), t1);
        }
        assert_eq!(
            f.gate(a, "bob", t1),
            Gate::IpBlocked {
                retry_after: Duration::from_secs(600)
            }
        );
    }

    #[test]
    fn the_same_stale_password_counts_once() {
        let f = AuthFailures::new(AuthFailurePolicy::default());
        let t0 = Instant::now();
        let printer = ip("192.0.2.9");
        for i in 0..500 {
            let p = f.failed(
                printer,
                "scanner",
                "old-password",
                t0 + Duration::from_secs(i),
            );
            assert_eq!(
                (p.delay, p.ip_failures, p.ip_blocked),
                (Duration::ZERO, 1, None)
            );
        }
        assert_eq!(
            f.gate(printer, "scanner", t0 + Duration::from_secs(500)),
            Gate::Open
        );
    }

    #[test]
    fn failures_expire_after_the_window() {
        let f = AuthFailures::new(AuthFailurePolicy::default());
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..9 {
            f.failed(a, "alice", &format!("g{i}"), t0);
        }
        let later = t0 + Duration::from_secs(15 * 60);
        let p = f.failed(a, "alice", "g9", later);
        assert_eq!((p.ip_failures, p.ip_blocked), (1, None));
    }

    #[test]
    fn a_known_good_user_behind_a_blocked_nat_still_gets_in() {
        let f = AuthFailures::new(AuthFailurePolicy::default());
        let t0 = Instant::now();
        let nat = ip("198.51.100.7");
        f.succeeded(nat, "office", t0);
        for i in 0..10 {
            f.failed(nat, "admin", &format!("g{i}"), t0 + Duration::from_secs(60));
        }
        let t1 = t0 + Duration::from_secs(61);
        assert!(matches!(
            f.gate(nat, "someone-new", t1),
            Gate::IpBlocked { .. }
        ));
        assert_eq!(f.gate(nat, "office", t1), Gate::Open);
        // The trust lasts a day, not forever.
        let t2 = t0 + Duration::from_secs(24 * 3600);
        f.failed(nat, "admin", "x", t2);
        for i in 0..10 {
            f.failed(nat, "admin", &format!("h{i}"), t2);
        }
        assert!(matches!(f.gate(nat, "office", t2), Gate::IpBlocked { .. }));
    }

    #[test]
    fn a_trusted_pair_has_a_failure_limit_of_its_own() {
        let f = AuthFailures::new(AuthFailurePolicy::default());
        let t0 = Instant::now();
        let nat = ip("198.51.100.7");
        f.succeeded(nat, "office", t0);
        f.succeeded(nat, "colleague", t0);
        // Someone behind the NAT guesses at the trusted user: the address is blocked
        // at the tenth, and so is the pair, for the same time.
        for i in 0..10 {
            let t = t0 + Duration::from_secs(60);
            assert_eq!(f.gate(nat, "office", t), Gate::Open, "guess {i}");
            let p = f.failed(nat, "office", &format!("g{i}"), t);
            assert_eq!(p.pair_blocked.is_some(), i == 9, "guess {i}");
        }
        let t1 = t0 + Duration::from_secs(61);
        assert!(
            matches!(f.gate(nat, "office", t1), Gate::PairBlocked { retry_after } if retry_after > Duration::from_secs(290)),
            "{:?}",
            f.gate(nat, "office", t1)
        );
        // The other trusted user there still gets in; a stranger does not.
        assert_eq!(f.gate(nat, "colleague", t1), Gate::Open);
        assert!(matches!(
            f.gate(nat, "stranger", t1),
            Gate::IpBlocked { .. }
        ));
        // The same user from elsewhere is not affected by the pair's block.
        assert_eq!(f.gate(ip("192.0.2.1"), "office", t1), Gate::Open);
        // Trust never lifts a username lock.
        for i in 0..30u32 {
            f.failed(
                IpAddr::from([203, 0, 113, i as u8]),
                "colleague",
                &format!("p{i}"),
                t1,
            );
        }
        assert!(matches!(
            f.gate(nat, "colleague", t1),
            Gate::UserBlocked { .. }
        ));
        // A repeat offence doubles the pair's block like an address's.
        let t2 = t1 + Duration::from_secs(300);
        assert_eq!(f.gate(nat, "office", t2), Gate::Open);
        for i in 0..10 {
            f.failed(nat, "office", &format!("again{i}"), t2);
        }
        assert_eq!(
            f.gate(nat, "office", t2),
            Gate::PairBlocked {
                retry_after: Duration::from_secs(600)
            }
        );
    }

    #[test]
    fn distributed_guessing_locks_the_username() {
        let f = AuthFailures::new(AuthFailurePolicy::default());
        let t0 = Instant::now();
        for i in 0..30u32 {
            let a = IpAddr::from([203, 0, 113, i as u8]);
            let p = f.failed(a, "ceo", &format!("pw{i}"), t0);
            assert_eq!(p.user_blocked.is_some(), i == 29);
        }
        assert!(matches!(
            f.gate(ip("203.0.113.200"), "ceo", t0),
            Gate::UserBlocked { .. }
        ));
        assert_eq!(f.gate(ip("203.0.113.200"), "other", t0), Gate::Open);
    }

    #[test]
    fn memory_is_bounded_when_addresses_cycle() {
        let f = AuthFailures::new(AuthFailurePolicy {
            max_tracked: 1000,
            ..AuthFailurePolicy::default()
        });
        let t0 = Instant::now();
        for i in 0..20_000u32 {
            let a = IpAddr::from(i.to_be_bytes());
            f.failed(
                a,
                &format!("user{}", i % 50),
                "pw",
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert!(f.tracked() <= 1000, "{} tracked", f.tracked());
        // Everything idle is forgotten after the window.
        f.prune(t0 + Duration::from_secs(3600));
        assert_eq!(f.tracked(), 0);
    }

    #[test]
    fn fingerprints_are_keyed_per_process() {
        let a = AuthFailures::new(AuthFailurePolicy::default());
        let b = AuthFailures::new(AuthFailurePolicy::default());
        assert_eq!(a.fingerprint("u", "p"), a.fingerprint("u", "p"));
        assert_ne!(a.fingerprint("u", "p"), a.fingerprint("u", "q"));
        assert_ne!(a.fingerprint("u", "p"), b.fingerprint("u", "p"));
        assert_ne!(a.fingerprint("ab", "c"), a.fingerprint("a", "bc"));
    }
}
