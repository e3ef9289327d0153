//! `abuse`: the knobs of the login-failure penalties and of the suspension brake.
//! The policies themselves (`policy::auth_failures`, `policy::brake`) take these
//! plain settings; config defines them so that it imports nothing of Postern's.

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
