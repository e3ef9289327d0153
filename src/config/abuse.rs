//! `abuse`: the knobs of the login-failure penalties and of the suspension brake.
//! The policies themselves (`policy::auth_failures`, `policy::brake`) take these
//! plain settings; config defines them so that it imports nothing of Postern's.

use super::HumanDuration;
use super::ctx::Ctx;
use super::file_checks;
use super::units::or_default;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The knobs of the policy (config `abuse.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailurePolicy {
    pub window: Duration,
    pub tarpit_after: u32,
    pub tarpit_step: Duration,
    pub tarpit_max: Duration,
    pub per_session: u32,
    pub block_ip_after: u32,
    pub block_user_after: u32,
    pub block_time: Duration,
    pub block_max: Duration,
    /// How long a successful (user, address) pair is trusted through a block.
    pub remember_good: Duration,
    /// Most addresses and usernames tracked; the least recently seen go first.
    pub max_tracked: usize,
}

impl Default for AuthFailurePolicy {
    fn default() -> Self {
        AuthFailurePolicy {
            window: Duration::from_secs(15 * 60),
            tarpit_after: 3,
            tarpit_step: Duration::from_secs(1),
            tarpit_max: Duration::from_secs(5),
            per_session: 3,
            block_ip_after: 10,
            block_user_after: 30,
            block_time: Duration::from_secs(5 * 60),
            block_max: Duration::from_secs(24 * 3600),
            remember_good: Duration::from_secs(24 * 3600),
            max_tracked: 100_000,
        }
    }
}

/// The brake's settings (config `abuse.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrakePolicy {
    /// `None`: no limit on addresses per user.
    pub max_ips_per_user_per_hour: Option<u32>,
    /// `None`: rate-limit hits never suspend.
    pub suspend_after_limited_hours: Option<u32>,
}

/// Abuse protection: login failure penalties and the suspension brake.
#[derive(Debug, Clone)]
pub struct Abuse {
    pub auth_failures: AuthFailurePolicy,
    pub brake: BrakePolicy,
    /// Where suspensions are kept across restarts.
    pub state_file: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAbuse {
    auth_failure_window: Option<HumanDuration>,
    auth_tarpit_after: Option<u32>,
    auth_failures_per_session: Option<u32>,
    auth_block_ip_after: Option<u32>,
    auth_block_user_after: Option<u32>,
    auth_block_time: Option<HumanDuration>,
    auth_block_max: Option<HumanDuration>,
    max_ips_per_user_per_hour: Option<u32>,
    suspend_after_limited_hours: Option<u32>,
    state_file: Option<PathBuf>,
}

/// `abuse`; the state file is by default in the spool directory.
pub(super) fn abuse(cx: &mut Ctx, spool_directory: &Path) -> Abuse {
    let a: RawAbuse = cx.section("abuse").unwrap_or_default();
    let abuse = Abuse {
        auth_failures: auth_failures(cx, &a),
        brake: BrakePolicy {
            max_ips_per_user_per_hour: a.max_ips_per_user_per_hour.filter(|&n| n > 0),
            suspend_after_limited_hours: a
                .suspend_after_limited_hours
                .or(Some(3))
                .filter(|&n| n > 0),
        },
        state_file: cx.resolve(
            a.state_file
                .unwrap_or_else(|| spool_directory.join("suspended.yaml")),
        ),
    };
    if let Err(e) = file_checks::state_file(&abuse.state_file) {
        cx.add("abuse.state_file", e);
    }
    abuse
}

/// The `auth_*` keys, each falling back to [`AuthFailurePolicy::default`].
fn auth_failures(cx: &mut Ctx, a: &RawAbuse) -> AuthFailurePolicy {
    let d = AuthFailurePolicy::default();
    let auth_failures = AuthFailurePolicy {
        window: or_default(a.auth_failure_window, d.window),
        tarpit_after: a.auth_tarpit_after.unwrap_or(d.tarpit_after),
        per_session: a.auth_failures_per_session.unwrap_or(d.per_session),
        block_ip_after: a.auth_block_ip_after.unwrap_or(d.block_ip_after),
        block_user_after: a.auth_block_user_after.unwrap_or(d.block_user_after),
        block_time: or_default(a.auth_block_time, d.block_time),
        block_max: or_default(a.auth_block_max, d.block_max),
        ..d
    };
    for (k, v) in [
        ("auth_failures_per_session", auth_failures.per_session),
        ("auth_block_ip_after", auth_failures.block_ip_after),
        ("auth_block_user_after", auth_failures.block_user_after),
    ] {
        if v == 0 {
            cx.add(&format!("abuse.{k}"), "must be greater than 0");
        }
    }
    auth_failures
}
