//! The credential store and argon2id verification.
//!
//! A verify costs about 20 ms of CPU and 19 MiB of memory, so it runs on the blocking
//! pool behind a semaphore (a burst of AUTH cannot stall the async runtime or exhaust
//! memory) with a bounded number of waiters (past that, `454 4.7.0` try later). One
//! client address may have only [`PER_CLIENT`] verifications in that queue; its
//! others wait at the address's own gate, so a burst from one address (an attacker, or
//! a busy web server) is served in turn and never takes the queue from everyone else.
//! An unknown user is verified against a dummy hash with the costliest parameters in
//! the users file, and cheaper failures are padded to that cost ([`dummy`]), so the
//! reply takes as long as a wrong password for a real user and usernames cannot be
//! probed by timing.
//!
//! A wrong password that was already verified wrong (same username, password and
//! stored hash, within [`cache::REJECTED_TTL`]) is answered from a keyed cache without
//! argon2: repeating one wrong password (a stale printer, or someone trying to burn
//! the verifier threads) costs one verification, not one per try. The client sees the
//! same reply after the same padded time, and the failure policy counts it as before.

pub mod cache;
pub mod dummy;
pub mod verifier;

use crate::config::{User, Users};
use crate::secret::Secret;
use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::PasswordHash;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The result of one AUTH attempt.
#[derive(Debug)]
pub enum AuthOutcome {
    Ok(Arc<User>),
    /// Unknown user or wrong password: the client cannot tell which.
    BadCredentials,
    /// The password was right but the user is disabled.
    Disabled,
    /// Too many verifications waiting: try later.
    Busy,
}

/// Checks that `s` is an argon2 PHC string Postern can verify.
pub fn check_phc(s: &str) -> Result<(), String> {
    let h = PasswordHash::new(s).map_err(|e| format!("not a PHC password hash: {e}"))?;
    match h.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => {}
        other => return Err(format!("hash algorithm {other} is not argon2")),
    }
    let params = argon2::Params::try_from(&h).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    if params.m_cost() > verifier::MAX_M_COST {
        return Err(format!(
            "argon2 memory cost m={} KiB is above the {} KiB Postern allows",
            params.m_cost(),
            verifier::MAX_M_COST
        ));
    }
    if h.salt.is_none() || h.hash.is_none() {
        return Err("the PHC string has no salt or no hash".into());
    }
    Ok(())
}

/// Hashes a password with argon2id and the OWASP-minimum default parameters.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Users in force plus the verification pool.
pub struct Authenticator {
    users: RwLock<Arc<Users>>,
    permits: Semaphore,
    /// Verifications running or queued.
    in_flight: AtomicUsize,
    max_in_flight: usize,
    /// Each client address's gate into the queue.
    per_client: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
    /// Argon2 verifications done (known and unknown users alike).
    verified: AtomicU64,
    verifier: verifier::Verifier,
    /// Verified logins.
    cache: cache::CredentialCache,
    /// Passwords verified wrong.
    rejected: cache::CredentialCache,
    /// The hash unknown users are verified against, and its settings.
    dummy: RwLock<(String, dummy::Cost)>,
    /// What failures are padded to.
    pad: Arc<dummy::Pad>,
}

/// Most verifications one client address may have in the shared queue.
pub const PER_CLIENT: usize = 2;

impl Authenticator {
    /// `concurrent` verifies at once, `max_waiting` more queued behind them.
    pub fn new(users: Users, concurrent: usize, max_waiting: usize) -> Authenticator {
        let dummy = dummy_for(&users);
        let pad = Arc::new(dummy::Pad::default());
        pad.calibrate(dummy.0.clone());
        Authenticator {
            users: RwLock::new(Arc::new(users)),
            permits: Semaphore::new(concurrent.max(1)),
            in_flight: AtomicUsize::new(0),
            max_in_flight: concurrent.max(1) + max_waiting,
            per_client: Mutex::new(HashMap::new()),
            verified: AtomicU64::new(0),
            verifier: verifier::Verifier::new(concurrent.max(1)),
            cache: cache::CredentialCache::new(cache::TTL),
            rejected: cache::CredentialCache::new(cache::REJECTED_TTL),
            dummy: RwLock::new(dummy),
            pad,
        }
    }

    /// The users in force.
    pub fn users(&self) -> Arc<Users> {
        self.users.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts a new users file in force; sessions already authenticated keep their user.
    pub fn replace_users(&self, users: Users) {
        let new_dummy = dummy_for(&users);
        {
            let mut d = self.dummy.write().unwrap_or_else(|e| e.into_inner());
            if d.1 != new_dummy.1 {
                self.pad.reset();
                self.pad.calibrate(new_dummy.0.clone());
            }
            *d = new_dummy;
        }
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(users);
        self.cache.clear();
        self.rejected.clear();
    }

    /// Argon2 verifications done so far.
    pub fn verifications(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }

    /// Verifies one username and password from `client` (the address key the
    /// per-address gate counts under).
    pub async fn verify(&self, client: IpAddr, username: &str, password: &Secret) -> AuthOutcome {
        let started = Instant::now();
        let user = self.users().get(username).cloned();
        let (dummy_hash, dummy_cost) = self.dummy.read().unwrap_or_else(|e| e.into_inner()).clone();
        let hash = match &user {
            Some(u) => u.password_hash.clone(),
            None => dummy_hash,
        };
        let pw = password.expose();
        if let Some(u) = &user
            && self.cache.hit(username, pw, &hash, started)
        {
            return outcome(true, Some(u.clone()));
        }
        if self.rejected.hit(username, pw, &hash, started) {
            self.padded(started.elapsed()).await;
            return AuthOutcome::BadCredentials;
        }
        let (ok, took) = match self.run(client, username, password, &hash).await {
            Ran::Done(ok, took) => (ok, took),
            Ran::Rejected => {
                self.padded(started.elapsed()).await;
                return AuthOutcome::BadCredentials;
            }
            Ran::Busy => return AuthOutcome::Busy,
        };
        let costliest =
            user.is_none() || dummy::Cost::of(&hash).is_some_and(|c| c.at_least(&dummy_cost));
        if costliest {
            self.pad.observe(took);
        }
        if ok {
            if user.is_some() {
                self.cache.remember(username, pw, &hash, Instant::now());
            }
        } else {
            self.rejected.remember(username, pw, &hash, Instant::now());
            self.padded(started.elapsed()).await;
        }
        outcome(ok, user)
    }

    /// One argon2 run behind the client's gate and the shared queue.
    async fn run(&self, client: IpAddr, username: &str, password: &Secret, hash: &str) -> Ran {
        let _gate = ClientGate::enter(&self.per_client, client).await;
        // A burst of the same wrong password on parallel connections waited here
        // behind the first of them: its answer may be known by now.
        if self
            .rejected
            .hit(username, password.expose(), hash, Instant::now())
        {
            return Ran::Rejected;
        }
        let Some(_slot) = InFlight::enter(&self.in_flight, self.max_in_flight) else {
            return Ran::Busy;
        };
        let Ok(_permit) = self.permits.acquire().await else {
            return Ran::Busy;
        };
        self.verified.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("postern_auth_verifications_total").increment(1);
        let t = Instant::now();
        let ok = self
            .verifier
            .verify(password.clone(), hash.to_string())
            .await;
        Ran::Done(ok, t.elapsed())
    }

    /// Waits out the rest of a costliest-parameters verification (nothing is held).
    async fn padded(&self, took: Duration) {
        let rest = self.pad.remaining(took);
        if !rest.is_zero() {
            tokio::time::sleep(rest).await;
        }
    }
}

/// What became of one attempt at running argon2.
enum Ran {
    /// Whether the password matched, and how long argon2 took.
    Done(bool, Duration),
    /// Known wrong while it waited at the client's gate.
    Rejected,
    /// The shared queue is full.
    Busy,
}

/// The dummy hash for `users`: their costliest parameters.
fn dummy_for(users: &Users) -> (String, dummy::Cost) {
    let cost = dummy::costliest(users.iter().map(|u| u.password_hash.as_str()));
    (dummy::hash_with(&cost), cost)
}

fn outcome(verified: bool, user: Option<Arc<User>>) -> AuthOutcome {
    match (verified, user) {
        (true, Some(u)) if u.disabled => AuthOutcome::Disabled,
        (true, Some(u)) => AuthOutcome::Ok(u),
        _ => AuthOutcome::BadCredentials,
    }
}

/// Counts one verification in flight; leaves the count on drop, so a session that is
/// cancelled while waiting (timeout, disconnect) never leaks a slot.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize, max: usize) -> Option<InFlight<'a>> {
        let before = counter.fetch_add(1, Ordering::SeqCst);
        let slot = InFlight(counter);
        (before < max).then_some(slot)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A client's place in the shared queue. Dropping it lets that client's next attempt
/// in, and forgets the address once nothing of it is running or waiting.
struct ClientGate<'a> {
    map: &'a Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
    client: IpAddr,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<'a> ClientGate<'a> {
    async fn enter(
        map: &'a Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
        client: IpAddr,
    ) -> ClientGate<'a> {
        let gate = map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(client)
            .or_insert_with(|| Arc::new(Semaphore::new(PER_CLIENT)))
            .clone();
        // Never closed, so acquiring only ever waits.
        let permit = gate.acquire_owned().await.ok();
        ClientGate {
            map,
            client,
            permit,
        }
    }
}

impl Drop for ClientGate<'_> {
    fn drop(&mut self) {
        self.permit.take();
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds it: nobody of this address is running or waiting.
        if m.get(&self.client)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            m.remove(&self.client);
        }
        // Gates left behind by cancelled waits.
        if m.len() > 4096 {
            m.retain(|_, g| Arc::strong_count(g) > 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimits;

    fn user(name: &str, password: &str, disabled: bool) -> User {
        User {
            name: name.into(),
            password_hash: hash_password(password).unwrap(),
            senders: vec![],
            rate_limits: RateLimits::default(),
            disabled,
            allow_any_header_from: false,
        }
    }

    #[tokio::test]
    async fn verify_outcomes() {
        let users = Users::from_list(vec![user("alice", "right", false), user("bob", "pw", true)]);
        let a = Authenticator::new(users, 2, 8);
        let s = |p: &str| Secret::new(p.into());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(
            matches!(a.verify(ip, "alice", &s("right")).await, AuthOutcome::Ok(u) if u.name == "alice")
        );
        assert!(matches!(
            a.verify(ip, "alice", &s("wrong")).await,
            AuthOutcome::BadCredentials
        ));
        assert!(matches!(
            a.verify(ip, "Alice", &s("right")).await,
            AuthOutcome::BadCredentials
        ));
        assert!(matches!(
            a.verify(ip, "nobody", &s("right")).await,
            AuthOutcome::BadCredentials
        ));
        assert!(matches!(
            a.verify(ip, "bob", &s("pw")).await,
            AuthOutcome::Disabled
        ));
        assert!(matches!(
            a.verify(ip, "bob", &s("nope")).await,
            AuthOutcome::BadCredentials
        ));
        assert_eq!(a.in_flight.load(Ordering::SeqCst), 0);
        assert!(a.per_client.lock().unwrap().is_empty());
        // Every attempt ran argon2, unknown user included: no timing oracle.
        assert_eq!(a.verifications(), 6);
    }

    #[tokio::test]
    async fn verified_logins_and_repeated_failures_are_cached() {
        let users = || Users::from_list(vec![user("alice", "right", false)]);
        let a = Authenticator::new(users(), 2, 8);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let s = |p: &str| Secret::new(p.into());
        for _ in 0..20 {
            assert!(matches!(
                a.verify(ip, "alice", &s("wrong")).await,
                AuthOutcome::BadCredentials
            ));
        }
        assert_eq!(
            a.verifications(),
            1,
            "a repeated wrong password runs argon2 once"
        );
        // The same for an unknown user, from any address.
        for i in 0..20u8 {
            let from = IpAddr::from([198, 51, 100, i]);
            assert!(matches!(
                a.verify(from, "nobody", &s("guess")).await,
                AuthOutcome::BadCredentials
            ));
        }
        assert_eq!(a.verifications(), 2);
        // Every new guess is verified; a repeat is not remembered as a success.
        assert!(matches!(
            a.verify(ip, "alice", &s("wrong2")).await,
            AuthOutcome::BadCredentials
        ));
        assert_eq!(a.verifications(), 3, "another password pays argon2");
        for _ in 0..5 {
            assert!(matches!(
                a.verify(ip, "alice", &s("right")).await,
                AuthOutcome::Ok(_)
            ));
        }
        assert_eq!(a.verifications(), 4, "one verification, then hits");
        assert!(matches!(
            a.verify(ip, "alice", &s("wrong")).await,
            AuthOutcome::BadCredentials
        ));
        assert_eq!(a.verifications(), 4);
        // A reload forgets; a changed password never matches the old entry.
        a.replace_users(users());
        assert!(matches!(
            a.verify(ip, "alice", &s("right")).await,
            AuthOutcome::Ok(_)
        ));
        assert_eq!(a.verifications(), 5);
        a.replace_users(Users::from_list(vec![user("alice", "new", false)]));
        assert!(matches!(
            a.verify(ip, "alice", &s("right")).await,
            AuthOutcome::BadCredentials
        ));
        // The old wrong password is now the right one: verified, not a cached failure.
        a.replace_users(Users::from_list(vec![user("alice", "wrong", false)]));
        assert!(matches!(
            a.verify(ip, "alice", &s("wrong")).await,
            AuthOutcome::Ok(_)
        ));
        assert_eq!(a.verifications(), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_repeats_leaves_the_queue_to_others() {
        let users = Users::from_list(vec![
            user("alice", "right", false),
            user("bob", "pw", false),
        ]);
        // One verify at a time and a short queue: 40 flooding addresses with two
        // verifications each would fill it many times over.
        let a = Arc::new(Authenticator::new(users, 1, 4));
        let s = |p: &str| Secret::new(p.into());
        let first: IpAddr = "203.0.113.1".parse().unwrap();
        assert!(matches!(
            a.verify(first, "alice", &s("stale")).await,
            AuthOutcome::BadCredentials
        ));
        let flood: Vec<_> = (0..40u8)
            .flat_map(|i| (0..5).map(move |_| i))
            .map(|i| {
                let a = a.clone();
                tokio::spawn(async move {
                    let from = IpAddr::from([203, 0, 113, i]);
                    a.verify(from, "alice", &Secret::new("stale".into())).await
                })
            })
            .collect();
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(matches!(
            a.verify(other, "bob", &s("pw")).await,
            AuthOutcome::Ok(_)
        ));
        for t in flood {
            assert!(matches!(t.await.unwrap(), AuthOutcome::BadCredentials));
        }
        assert_eq!(a.verifications(), 2, "the flood ran argon2 once in all");
    }

    #[test]
    fn unknown_users_are_verified_against_the_costliest_parameters() {
        let strong = {
            let params = argon2::Params::new(32 * 1024, 3, 1, None).unwrap();
            Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password(b"pw")
                .unwrap()
                .to_string()
        };
        let users = Users::from_list(vec![
            user("a", "x", false),
            User {
                password_hash: strong.clone(),
                ..user("b", "y", false)
            },
        ]);
        let a = Authenticator::new(users, 1, 1);
        let d = a.dummy.read().unwrap().clone();
        assert_eq!(d.1, dummy::Cost::of(&strong).unwrap());
        assert_eq!(dummy::Cost::of(&d.0), Some(d.1));
        // A reload with only default hashes goes back to the defaults.
        a.replace_users(Users::from_list(vec![user("a", "x", false)]));
        assert_eq!(a.dummy.read().unwrap().1, dummy::Cost::default_params());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_client_cannot_take_the_queue() {
        let users = Users::from_list(vec![user("alice", "right", false)]);
        // One verify at a time and a queue of 64: without the gate, a burst of 12 from
        // one address would all be ahead of the next client.
        let a = Arc::new(Authenticator::new(users, 1, 64));
        let in_queue = |n: usize| {
            let a = a.clone();
            async move {
                while a.in_flight.load(Ordering::SeqCst) < n {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
        };
        // Hold the only verify slot so the queue fills up deterministically.
        let hold = a.permits.acquire().await.unwrap();
        let flooder: IpAddr = "192.0.2.66".parse().unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        // Distinct guesses: repeats of one would be answered from the rejection cache.
        let attempts: Vec<_> = (0..12)
            .map(|i| {
                let (a, done) = (a.clone(), done.clone());
                tokio::spawn(async move {
                    let r = a
                        .verify(flooder, "alice", &Secret::new(format!("wrong{i}")))
                        .await;
                    done.fetch_add(1, Ordering::SeqCst);
                    r
                })
            })
            .collect();
        in_queue(PER_CLIENT.min(12)).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            a.in_flight.load(Ordering::SeqCst),
            PER_CLIENT,
            "the rest wait at the gate"
        );
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        let good = {
            let a = a.clone();
            tokio::spawn(
                async move { a.verify(other, "alice", &Secret::new("right".into())).await },
            )
        };
        in_queue(PER_CLIENT + 1).await;
        drop(hold);
        assert!(matches!(good.await.unwrap(), AuthOutcome::Ok(_)));
        // The other client waited only for the flooder's two already in the queue.
        let before = done.load(Ordering::SeqCst);
        assert!(before <= 2, "waited behind {before}");
        // And the flood is served in turn, not refused.
        for t in attempts {
            assert!(matches!(t.await.unwrap(), AuthOutcome::BadCredentials));
        }
        assert!(a.per_client.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_parallel_burst_from_one_address_runs_argon2_at_most_per_gate_slot() {
        let users = Users::from_list(vec![user("alice", "right", false)]);
        let a = Arc::new(Authenticator::new(users, 2, 64));
        let burst: Vec<_> = (0..12)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move {
                    let from: IpAddr = "192.0.2.66".parse().unwrap();
                    a.verify(from, "alice", &Secret::new("stale".into())).await
                })
            })
            .collect();
        for t in burst {
            assert!(matches!(t.await.unwrap(), AuthOutcome::BadCredentials));
        }
        // The first ones through the address's gate ran it; the rest were answered
        // from the rejection cache once they got through.
        assert!(
            a.verifications() <= PER_CLIENT as u64,
            "{}",
            a.verifications()
        );
    }

    #[test]
    fn in_flight_is_bounded_and_released() {
        let c = AtomicUsize::new(0);
        let a = InFlight::enter(&c, 2).unwrap();
        let b = InFlight::enter(&c, 2).unwrap();
        assert!(InFlight::enter(&c, 2).is_none());
        drop(a);
        assert!(InFlight::enter(&c, 2).is_some());
        drop(b);
        assert_eq!(c.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn phc_checks() {
        assert!(check_phc(&hash_password("x").unwrap()).is_ok());
        assert!(check_phc("plaintext").is_err());
        let huge = hash_password("x").unwrap().replace("m=19456", "m=4194304");
        assert!(check_phc(&huge).unwrap_err().contains("memory cost"));
        assert!(check_phc("$2y$10$abcdefghijklmnopqrstuv").is_err());
    }
}
