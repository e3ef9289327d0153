//! The `password` of a users-file entry: an argon2 PHC string Postern can verify,
//! within the memory cost the verifier allows.

use argon2::password_hash::phc::PasswordHash;

/// Largest memory cost a stored hash may ask for, in KiB (256 MiB).
pub const MAX_M_COST: u32 = 256 * 1024;

/// Largest work a stored hash may ask for: memory (KiB) times passes. A login pays
/// it, and so does every login for an unknown user (the dummy hash copies the
/// costliest stored one), so one hash with `t=100` would let anyone burn a second of
/// CPU per AUTH. 256 MiB in one pass, or RFC 9106's 64 MiB in three, fit; the
/// default (19 MiB, two passes) is a seventh of it.
pub const MAX_WORK: u64 = 256 * 1024;

/// Checks that `s` is an argon2 PHC string Postern can verify.
pub fn check_phc(s: &str) -> Result<(), String> {
    let h = PasswordHash::new(s).map_err(|e| format!("not a PHC password hash: {e}"))?;
    match h.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => {}
        other => return Err(format!("hash algorithm {other} is not argon2")),
    }
    let params = argon2::Params::try_from(&h).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    if params.m_cost() > MAX_M_COST {
        return Err(format!(
            "argon2 memory cost m={} KiB is above the {} KiB Postern allows",
            params.m_cost(),
            MAX_M_COST
        ));
    }
    let work = u64::from(params.m_cost()) * u64::from(params.t_cost());
    if work > MAX_WORK {
        return Err(format!(
            "argon2 cost m={} KiB times t={} passes is above the {MAX_WORK} Postern allows \
             (every login, and every login for an unknown user, would pay it)",
            params.m_cost(),
            params.t_cost()
        ));
    }
    if h.salt.is_none() || h.hash.is_none() {
        return Err("the PHC string has no salt or no hash".into());
    }
    Ok(())
}
