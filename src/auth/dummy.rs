//! Making an unknown user cost what a known one does (no username probing by timing).
//!
//! An unknown user is verified against a dummy hash, so it costs an argon2 run like a
//! wrong password for a real user. But argon2's cost is set by each stored hash's
//! parameters: with a dummy at the defaults, a user whose hash has higher parameters
//! (a migration to stronger settings, hashes made by other tools) answers measurably
//! later than an unknown name, and the name is found. So:
//!
//! - The dummy hash takes the **costliest** parameters in the users file (memory ×
//!   passes, then lanes and output length), made again on every reload. An unknown
//!   user then costs as much as the slowest real user.
//! - Every failed verification that was cheaper than that is **padded** with a sleep
//!   (no CPU, no verifier thread held) up to the time the costliest parameters took
//!   recently ([`Pad`]), so users with cheaper hashes answer no sooner than unknown
//!   ones. A repeated wrong password answered from the rejection cache is padded the
//!   same way. Successful logins are never padded: only the holder of the password
//!   sees them.
//!
//! The costliest rather than the most common parameters: with the most common ones,
//! every user with rarer parameters would stand out, and padding can only slow the
//! fast down, never speed the slow up.
//!
//! The dummy hash is a PHC string with a random salt and a random "hash": it is never
//! the hash of any password, so it can never verify, and making it costs nothing.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ring::rand::SecureRandom;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The argon2 settings of one stored hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    pub algorithm: Algorithm,
    pub version: Version,
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    pub output_len: usize,
}

impl Cost {
    /// The settings of a PHC string, if Postern can verify it.
    pub fn of(phc: &str) -> Option<Cost> {
        let h = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(h.algorithm.as_str()).ok()?;
        let version = match h.version {
            None => Version::default(),
            Some(v) => Version::try_from(v).ok()?,
        };
        let params = Params::try_from(&h).ok()?;
        Some(Cost {
            algorithm,
            version,
            m_cost: params.m_cost(),
            t_cost: params.t_cost(),
            p_cost: params.p_cost(),
            output_len: h.hash.as_ref()?.len(),
        })
    }

    /// The defaults `postern user add` hashes with.
    pub fn default_params() -> Cost {
        let p = Params::default();
        Cost {
            algorithm: Algorithm::Argon2id,
            version: Version::V0x13,
            m_cost: p.m_cost(),
            t_cost: p.t_cost(),
            p_cost: p.p_cost(),
            output_len: Params::DEFAULT_OUTPUT_LEN,
        }
    }

    /// Orders by the work a verify does: memory × passes (lanes are computed one
    /// after the other here), then lanes, then output length.
    fn rank(&self) -> (u64, u32, usize) {
        (
            u64::from(self.m_cost) * u64::from(self.t_cost),
            self.p_cost,
            self.output_len,
        )
    }

    /// Whether a verify with these settings costs at least as much as with `other`.
    pub fn at_least(&self, other: &Cost) -> bool {
        self.rank() >= other.rank()
    }
}

/// The costliest settings among `phcs` (the defaults when there is none).
pub fn costliest<'a>(phcs: impl IntoIterator<Item = &'a str>) -> Cost {
    phcs.into_iter()
        .filter_map(Cost::of)
        .max_by_key(Cost::rank)
        .unwrap_or_else(Cost::default_params)
}

/// A PHC string with `cost`'s settings, a random salt and a random output: it costs a
/// full verification and matches no password.
pub fn hash_with(cost: &Cost) -> String {
    let rng = ring::rand::SystemRandom::new();
    let mut salt = [0u8; 16];
    let mut output = vec![0u8; cost.output_len];
    rng.fill(&mut salt).expect("system random");
    rng.fill(&mut output).expect("system random");
    let algorithm = match cost.algorithm {
        Algorithm::Argon2d => "argon2d",
        Algorithm::Argon2i => "argon2i",
        Algorithm::Argon2id => "argon2id",
    };
    format!(
        "${algorithm}$v={}$m={},t={},p={}${}${}",
        u32::from(cost.version),
        cost.m_cost,
        cost.t_cost,
        cost.p_cost,
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(&output),
    )
}

/// How long a verification with the costliest settings took lately: failures are
/// padded up to it.
#[derive(Default)]
pub struct Pad {
    nanos: AtomicU64,
}

impl Pad {
    /// Notes one verification with the costliest settings (a moving average, so one
    /// slow run on a busy machine does not stretch every reply).
    pub fn observe(&self, took: Duration) {
        let new = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(average(old, new))
            });
    }

    /// How much longer a failure that took `took` should wait.
    pub fn remaining(&self, took: Duration) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed)).saturating_sub(took)
    }

    /// Forgets the measurement (the costliest settings changed).
    pub fn reset(&self) {
        self.nanos.store(0, Ordering::Relaxed);
    }

    /// Measures one verification against `phc` on a thread of its own, so that
    /// failures are padded from the first login after a start or a reload, before
    /// any costliest verification has been timed.
    pub fn calibrate(self: &Arc<Self>, phc: String) {
        let pad = self.clone();
        let spawned = std::thread::Builder::new()
            .name("postern-argon2-calibrate".into())
            .spawn(move || {
                let mut memory = Vec::new();
                let t = std::time::Instant::now();
                super::verifier::verify_with(&mut memory, b"calibration", &phc);
                pad.observe(t.elapsed());
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot time the dummy verification; failures are padded after the first one");
        }
    }
}

/// Moving average with weight 1/4 for the newest; the first sample is taken as is.
fn average(old: u64, new: u64) -> u64 {
    if old == 0 {
        new
    } else {
        old - old / 4 + new / 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::Argon2;
    use argon2::password_hash::PasswordHasher;

    fn hash(alg: Algorithm, m: u32, t: u32, p: u32) -> String {
        let params = Params::new(m, t, p, None).unwrap();
        Argon2::new(alg, Version::V0x13, params)
            .hash_password(b"pw")
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_dummy_takes_the_costliest_parameters_in_the_file() {
        let default = crate::auth::hash_password("x").unwrap();
        let cheap = hash(Algorithm::Argon2id, 8, 1, 1);
        let more_memory = hash(Algorithm::Argon2i, 48 * 1024, 1, 1);
        let more_passes = hash(Algorithm::Argon2id, 8 * 1024, 7, 1);
        // Mostly defaults, one stronger user: the dummy costs what the strong one does.
        let c = costliest([default.as_str(), default.as_str(), more_memory.as_str()]);
        assert_eq!(
            (c.algorithm, c.m_cost, c.t_cost, c.p_cost),
            (Algorithm::Argon2i, 48 * 1024, 1, 1)
        );
        // Work is memory × passes: 8 MiB × 7 beats 48 MiB × 1 and 19 MiB × 2.
        let c = costliest([default.as_str(), more_memory.as_str(), more_passes.as_str()]);
        assert_eq!((c.m_cost, c.t_cost), (8 * 1024, 7));
        // Cheaper hashes never lower it below the costliest.
        let c = costliest([cheap.as_str(), default.as_str()]);
        assert_eq!(c, Cost::of(&default).unwrap());
        assert_eq!(c, Cost::default_params());
        // Nothing usable: the defaults.
        assert_eq!(costliest([]), Cost::default_params());
        assert_eq!(costliest(["plaintext"]), Cost::default_params());
        // Lanes break a tie in work.
        let lanes = hash(Algorithm::Argon2id, 8 * 1024, 7, 2);
        assert_eq!(costliest([more_passes.as_str(), lanes.as_str()]).p_cost, 2);
    }

    #[test]
    fn the_dummy_hash_has_those_parameters_and_matches_nothing() {
        let cost = Cost {
            algorithm: Algorithm::Argon2d,
            version: Version::V0x13,
            m_cost: 64,
            t_cost: 3,
            p_cost: 2,
            output_len: 40,
        };
        let phc = hash_with(&cost);
        assert!(crate::auth::check_phc(&phc).is_ok(), "{phc}");
        assert_eq!(Cost::of(&phc), Some(cost.clone()));
        assert_ne!(phc, hash_with(&cost), "a fresh salt each time");
        let mut memory = Vec::new();
        for pw in [&b""[..], b"pw", b"postern"] {
            assert!(!crate::auth::verifier::verify_with(&mut memory, pw, &phc));
        }
        let default = hash_with(&Cost::default_params());
        assert!(
            default.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{default}"
        );
    }

    #[test]
    fn failures_are_padded_to_the_costliest_time() {
        let pad = Pad::default();
        assert_eq!(pad.remaining(Duration::from_millis(5)), Duration::ZERO);
        pad.observe(Duration::from_millis(80));
        assert_eq!(
            pad.remaining(Duration::from_millis(20)),
            Duration::from_millis(60)
        );
        assert_eq!(pad.remaining(Duration::from_millis(90)), Duration::ZERO);
        // One outlier moves it a quarter of the way.
        pad.observe(Duration::from_millis(480));
        assert_eq!(pad.remaining(Duration::ZERO), Duration::from_millis(180));
        pad.reset();
        assert_eq!(pad.remaining(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn calibration_measures_the_dummy_at_start() {
        let pad = Arc::new(Pad::default());
        pad.calibrate(hash_with(&Cost::default_params()));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while pad.remaining(Duration::ZERO).is_zero() {
            assert!(std::time::Instant::now() < deadline, "never calibrated");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
