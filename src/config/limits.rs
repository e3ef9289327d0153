//! `limits` (sizes, counts and caps per message, session and server) and
//! `rate_limits` (per-user sending limits, which a user's entry may override).

use super::Size;
use super::ctx::Ctx;
use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Protocol errors in one session before it is closed with 421.
    pub max_errors: u32,
    /// IPv6 clients are counted per prefix of this length by every per-address
    /// limit, gate and block (1 to 128; IPv4 is always one address).
    pub ipv6_prefix: u8,
    /// NOOP, VRFY, HELP, RSET and ETRN since the last accepted message before the
    /// session is closed with 421 (Postfix's `smtpd_junk_command_limit`).
    pub max_junk_commands: u32,
    /// Messages one session may send; the next MAIL gets 421 and the session closes.
    pub max_messages_per_session: u32,
}

/// Per-user sending limits; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub messages_per_hour: Option<u32>,
    pub recipients_per_hour: Option<u32>,
    pub recipients_per_day: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_size: Option<Size>,
    max_recipients: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_errors: Option<u32>,
    ipv6_prefix: Option<u8>,
    max_junk_commands: Option<u32>,
    max_messages_per_session: Option<u32>,
}

/// Rate limits as written: every key optional so that a user's entry overrides only
/// what it names.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    messages_per_hour: Option<u32>,
    recipients_per_hour: Option<u32>,
    recipients_per_day: Option<u32>,
}

impl RawRateLimits {
    /// These limits, falling back to `defaults` for keys not given.
    pub fn over(&self, defaults: &RateLimits) -> RateLimits {
        RateLimits {
            messages_per_hour: self.messages_per_hour.or(defaults.messages_per_hour),
            recipients_per_hour: self.recipients_per_hour.or(defaults.recipients_per_hour),
            recipients_per_day: self.recipients_per_day.or(defaults.recipients_per_day),
        }
    }
}

/// `limits`, every key with a default, none of them 0.
pub(super) fn limits(cx: &mut Ctx) -> Limits {
    let l: RawLimits = cx.section("limits").unwrap_or_default();
    let limits = Limits {
        max_message_size: l.max_message_size.map(|s| s.0).unwrap_or(25 << 20),
        max_recipients: l.max_recipients.unwrap_or(100),
        max_connections: l.max_connections.unwrap_or(1000),
        max_connections_per_ip: l.max_connections_per_ip.unwrap_or(50),
        max_errors: l.max_errors.unwrap_or(10),
        ipv6_prefix: l.ipv6_prefix.unwrap_or(64),
        max_junk_commands: l.max_junk_commands.unwrap_or(100),
        max_messages_per_session: l.max_messages_per_session.unwrap_or(100),
    };
    if !(1..=128).contains(&limits.ipv6_prefix) {
        cx.add("limits.ipv6_prefix", "must be between 1 and 128");
    }
    for (k, v) in [
        ("max_message_size", limits.max_message_size),
        ("max_recipients", limits.max_recipients as u64),
        ("max_connections", limits.max_connections as u64),
        (
            "max_connections_per_ip",
            limits.max_connections_per_ip as u64,
        ),
        ("max_errors", limits.max_errors as u64),
        ("max_junk_commands", limits.max_junk_commands as u64),
        (
            "max_messages_per_session",
            limits.max_messages_per_session as u64,
        ),
    ] {
        if v == 0 {
            cx.add(&format!("limits.{k}"), "must be greater than 0");
        }
    }
    limits
}

/// `rate_limits`: the defaults for every user; unlimited when not given.
pub(super) fn rate_limits(cx: &mut Ctx) -> RateLimits {
    cx.section::<RawRateLimits>("rate_limits")
        .unwrap_or_default()
        .over(&RateLimits::default())
}

/// `domain_rate_limits`: the limits of sender domains not listed in `domains:`;
/// `None` when not given (such domains have no domain limit).
pub(super) fn domain_rate_limits(cx: &mut Ctx) -> Option<RateLimits> {
    cx.section::<RawRateLimits>("domain_rate_limits")
        .map(|r| r.over(&RateLimits::default()))
}
