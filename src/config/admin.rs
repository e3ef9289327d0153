//! `admin`: the admin API's listener and its bearer token. Off unless the section is
//! there.
//!
//! The token is a secret read from `token_file` at start, like the smarthost password
//! (before `run_as` drops root); the file is audited like every secret (`load.rs`:
//! world-readable stops the server). `webhooks` will join this section (a list of
//! URLs, secrets and events); the admin API itself does not depend on it.

use super::ctx::Ctx;
use super::oauth2::read_secret;
use super::units::{HumanDuration, or_default};
use crate::secret::Secret;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Shortest token accepted: a short one could be guessed over the network.
pub const MIN_TOKEN_LEN: usize = 16;

/// The admin API's settings.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Where the API listens (HTTP, or HTTPS with `tls`).
    pub address: SocketAddr,
    /// The file the token was read from (audited like every secret).
    pub token_file: PathBuf,
    /// What clients send as `Authorization: Bearer <token>`.
    pub token: Secret,
    /// Serve HTTPS with the `tls.*` certificate instead of plain HTTP.
    pub tls: bool,
    /// A dashboard sign-in ends after this long without a request...
    pub session_idle: Duration,
    /// ...and after this long in any case.
    pub session_lifetime: Duration,
}

/// Dashboard sessions: idle 2 hours, 12 hours at most (a working day).
pub const SESSION_IDLE: Duration = Duration::from_secs(2 * 3600);
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    address: String,
    token_file: PathBuf,
    #[serde(default)]
    tls: bool,
    session_idle: Option<HumanDuration>,
    session_lifetime: Option<HumanDuration>,
}

/// `admin`, if given; `has_tls` says whether `tls.*` names a certificate.
pub(super) fn admin(cx: &mut Ctx, has_tls: bool) -> Option<Admin> {
    let raw: RawAdmin = cx.section("admin")?;
    let before = cx.problems.len();
    let address = match raw.address.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.add(
                "admin.address",
                format!(
                    "{:?} is not an IP:port such as \"127.0.0.1:8025\"",
                    raw.address
                ),
            );
            None
        }
    };
    let token_file = cx.resolve(raw.token_file);
    let token = read_secret(cx, "admin.token_file", &token_file);
    if let Some(t) = &token
        && !t.expose().is_empty()
        && t.expose().trim().len() < MIN_TOKEN_LEN
    {
        cx.add(
            "admin.token_file",
            format!(
                "{}: the token is shorter than {MIN_TOKEN_LEN} characters; make one with `openssl rand -hex 32`",
                token_file.display()
            ),
        );
    }
    if raw.tls && !has_tls {
        cx.add(
            "admin.tls",
            "needs tls.certificate and tls.private_key (the admin API uses the same certificate)",
        );
    }
    let session_idle = or_default(raw.session_idle, SESSION_IDLE);
    let session_lifetime = or_default(raw.session_lifetime, SESSION_LIFETIME);
    if session_idle.is_zero() || session_lifetime.is_zero() {
        cx.add(
            "admin.session_idle",
            "session_idle and session_lifetime must be longer than 0s",
        );
    }
    if cx.problems.len() != before {
        return None;
    }
    Some(Admin {
        address: address?,
        token_file,
        token: token?,
        tls: raw.tls,
        session_idle,
        session_lifetime,
    })
}
