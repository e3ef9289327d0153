//! Argon2 verification on dedicated threads, each reusing one memory buffer.
//!
//! A verify with the default parameters needs 19 MiB. Allocated and freed per call on
//! whatever blocking-pool thread runs it, that memory stays with the allocator's
//! per-thread arenas: a burst of logins grew the process by hundreds of MiB and kept
//! it. Here each of a fixed number of threads owns one buffer, so verification memory
//! is at most `threads × 19 MiB`, whatever the load. The buffer is wiped after every
//! verify (it holds password-derived data) and dropped after an unusually large one.

pub use crate::config::MAX_M_COST;
use crate::lock::MutexExt;
use crate::secret::Secret;
use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

/// Blocks kept between verifies: the default 19 MiB (m=19456).
const KEEP_BLOCKS: usize = 19 * 1024;

struct Job {
    password: Secret,
    hash: String,
    done: oneshot::Sender<bool>,
}

/// A fixed set of verifier threads.
pub struct Verifier {
    jobs: mpsc::Sender<Job>,
}

impl Verifier {
    pub fn new(threads: usize) -> Verifier {
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("postern-argon2-{i}"))
                .spawn(move || worker(&rx))
                .expect("spawn an argon2 thread");
        }
        Verifier { jobs }
    }

    /// Whether `password` matches the PHC string `hash`. The caller bounds how many
    /// are queued.
    pub async fn verify(&self, password: Secret, hash: String) -> bool {
        let (done, result) = oneshot::channel();
        if self
            .jobs
            .send(Job {
                password,
                hash,
                done,
            })
            .is_err()
        {
            return false;
        }
        result.await.unwrap_or(false)
    }
}

fn worker(rx: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = match rx.locked().recv() {
            Ok(job) => job,
            Err(_) => return, // the Verifier is gone
        };
        let ok = verify_with(&mut memory, job.password.expose().as_bytes(), &job.hash);
        memory.fill(Block::default());
        if memory.len() > KEEP_BLOCKS {
            memory = Vec::new();
        }
        let _ = job.done.send(ok);
    }
}

/// Verifies `password` against a PHC string, using (and growing) `memory`.
pub fn verify_with(memory: &mut Vec<Block>, password: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    if params.m_cost() > MAX_M_COST {
        return false;
    }
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let computed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt.as_ref(),
        &mut out,
        &mut memory[..blocks],
    );
    computed.is_ok() && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_crate_verifier() {
        let hash = crate::auth::hash_password("correct horse").unwrap();
        let mut memory = Vec::new();
        assert!(verify_with(&mut memory, b"correct horse", &hash));
        assert!(!verify_with(&mut memory, b"correct horsf", &hash));
        assert_eq!(memory.len(), KEEP_BLOCKS);
        // Other parameters and variants, as other tools write them.
        let params = Params::new(8 * 1024, 3, 2, Some(32)).unwrap();
        for alg in [Algorithm::Argon2i, Algorithm::Argon2d, Algorithm::Argon2id] {
            let a = Argon2::new(alg, Version::V0x13, params.clone());
            let h = argon2::PasswordHasher::hash_password(&a, b"pw")
                .unwrap()
                .to_string();
            assert!(verify_with(&mut memory, b"pw", &h), "{h}");
            assert!(!verify_with(&mut memory, b"pW", &h), "{h}");
        }
        for bad in ["", "plaintext", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA"] {
            assert!(!verify_with(&mut memory, b"pw", bad));
        }
        // A cost beyond the cap is refused without allocating it.
        let huge = hash.replace("m=19456", "m=4194304");
        assert!(PasswordHash::new(&huge).is_ok(), "{huge}");
        let before = memory.len();
        assert!(!verify_with(&mut memory, b"correct horse", &huge));
        assert_eq!(memory.len(), before);
    }

    #[tokio::test]
    async fn threads_answer() {
        let v = Verifier::new(2);
        let hash = crate::auth::hash_password("pw").unwrap();
        assert!(v.verify(Secret::new("pw".into()), hash.clone()).await);
        assert!(!v.verify(Secret::new("px".into()), hash).await);
    }
}
