//! The credential store and argon2id verification.
//!
//! A verify costs about 20 ms of CPU and 19 MiB of memory, so it runs on the blocking
//! pool behind a semaphore (a burst of AUTH cannot stall the async runtime or exhaust
//! memory) with a bounded number of waiters (past that, `454 4.7.0` try later).
//! An unknown user is verified against a dummy hash, so the reply takes as long as a
//! wrong password for a real user and usernames cannot be probed by timing.

use crate::config::{User, Users};
use crate::secret::Secret;
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
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
        "argon2id" | "argon2i" | "argon2d" => Ok(()),
        other => Err(format!("hash algorithm {other} is not argon2")),
    }
}

/// Hashes a password with argon2id and the OWASP-minimum default parameters.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify_phc(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// Users in force plus the verification pool.
pub struct Authenticator {
    users: RwLock<Arc<Users>>,
    permits: Semaphore,
    /// Verifications running or queued.
    in_flight: AtomicUsize,
    max_in_flight: usize,
    dummy_hash: String,
}

impl Authenticator {
    /// `concurrent` verifies at once, `max_waiting` more queued behind them.
    pub fn new(users: Users, concurrent: usize, max_waiting: usize) -> Authenticator {
        let dummy_hash =
            hash_password("postern dummy password, never a real one").expect("argon2 default hash");
        Authenticator {
            users: RwLock::new(Arc::new(users)),
            permits: Semaphore::new(concurrent.max(1)),
            in_flight: AtomicUsize::new(0),
            max_in_flight: concurrent.max(1) + max_waiting,
            dummy_hash,
        }
    }

    /// The users in force.
    pub fn users(&self) -> Arc<Users> {
        self.users.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts a new users file in force; sessions already authenticated keep their user.
    pub fn replace_users(&self, users: Users) {
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(users);
    }

    /// Verifies one username and password.
    pub async fn verify(&self, username: &str, password: &Secret) -> AuthOutcome {
        let password = password.clone();
        let user = self.users().get(username).cloned();
        let hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());

        let _slot = match InFlight::enter(&self.in_flight, self.max_in_flight) {
            Some(slot) => slot,
            None => return AuthOutcome::Busy,
        };
        let Ok(_permit) = self.permits.acquire().await else {
            return AuthOutcome::Busy;
        };
        let ok = tokio::task::spawn_blocking(move || verify_phc(password.expose(), &hash))
            .await
            .unwrap_or(false);
        match (ok, user) {
            (true, Some(u)) if u.disabled => AuthOutcome::Disabled,
            (true, Some(u)) => AuthOutcome::Ok(u),
            _ => AuthOutcome::BadCredentials,
        }
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
        assert!(
            matches!(a.verify("alice", &s("right")).await, AuthOutcome::Ok(u) if u.name == "alice")
        );
        assert!(matches!(
            a.verify("alice", &s("wrong")).await,
            AuthOutcome::BadCredentials
        ));
        assert!(matches!(
            a.verify("Alice", &s("right")).await,
            AuthOutcome::BadCredentials
        ));
        assert!(matches!(
            a.verify("nobody", &s("right")).await,
            AuthOutcome::BadCredentials
        ));
        assert!(matches!(
            a.verify("bob", &s("pw")).await,
            AuthOutcome::Disabled
        ));
        assert!(matches!(
            a.verify("bob", &s("nope")).await,
            AuthOutcome::BadCredentials
        ));
        assert_eq!(a.in_flight.load(Ordering::SeqCst), 0);
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
        assert!(check_phc("$2y$10$abcdefghijklmnopqrstuv").is_err());
    }
}
