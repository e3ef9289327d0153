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

pub use crate::config::check_phc;
use crate::config::{User, Users};
use crate::lock::{MutexExt, RwLockExt};
use crate::secret::Secret;
use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
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
        self.users.read_locked().clone()
    }

    /// Puts a new users file in force; sessions already authenticated keep their user.
    pub fn replace_users(&self, users: Users) {
        let new_dummy = dummy_for(&users);
        {
            let mut d = self.dummy.write_locked();
            if d.1 != new_dummy.1 {
                self.pad.reset();
                self.pad.calibrate(new_dummy.0.clone());
            }
            *d = new_dummy;
        }
        *self.users.write_locked() = Arc::new(users);
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
        // A user known only by its networks has no password: to AUTH it is an
        // unknown user, verified against the dummy hash like any other.
        let user = self
            .users()
            .get(username)
            .filter(|u| u.password_hash.is_some())
            .cloned();
        let (dummy_hash, dummy_cost) = self.dummy.read_locked().clone();
        let hash = match user.as_ref().and_then(|u| u.password_hash.clone()) {
            Some(h) => h,
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
        let known = user.is_some();
        let (ok, took) = match self.run(client, username, password, &hash, known).await {
            Ran::Done(ok, took) => (ok, took),
            Ran::Remembered => return outcome(true, user),
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
        if !ok {
            self.rejected.remember(username, pw, &hash, Instant::now());
            self.padded(started.elapsed()).await;
        }
        outcome(ok, user)
    }

    /// One argon2 run behind the client's gate and the shared queue.
    async fn run(
        &self,
        client: IpAddr,
        username: &str,
        password: &Secret,
        hash: &str,
        known: bool,
    ) -> Ran {
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
        // Likewise a burst of one user's logins (a site opening its connections at
        // once) queued here behind the first: its success may be known by now. With
        // 50 connections of 20 users, 20 verifications instead of 50.
        if known
            && self
                .cache
                .hit(username, password.expose(), hash, Instant::now())
        {
            return Ran::Remembered;
        }
        self.verified.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("postern_auth_verifications_total").increment(1);
        let t = Instant::now();
        let ok = self
            .verifier
            .verify(password.clone(), hash.to_string())
            .await;
        if ok && known {
            // Before the permit goes, so the next in the queue finds it.
            self.cache
                .remember(username, password.expose(), hash, Instant::now());
        }
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
    /// Known right (verified for another connection) while it waited in the queue.
    Remembered,
    /// The shared queue is full.
    Busy,
}

/// The dummy hash for `users`: their costliest parameters.
fn dummy_for(users: &Users) -> (String, dummy::Cost) {
    let cost = dummy::costliest(users.iter().filter_map(|u| u.password_hash.as_deref()));
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
            .locked()
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
        let mut m = self.map.locked();
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
mod tests;
