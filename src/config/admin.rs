//! `admin`: the admin API's listener and its bearer token. Off unless the section is
//! there.
//!
//! The token is a secret read from `token_file` at start, like the smarthost password
//! (before `run_as` drops root); the file is audited like every secret (`load.rs`:
//! world-readable stops the server). The section's `webhooks` list is read by
//! `webhooks.rs`; webhooks work without the API, so a section with only `webhooks`
//! leaves the API off.

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
    address: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default)]
    tls: bool,
    /// Parsed by `webhooks.rs`.
    #[serde(default, rename = "webhooks")]
    _webhooks: Option<serde_yaml::Value>,
    session_idle: Option<HumanDuration>,
    session_lifetime: Option<HumanDuration>,
}

/// `admin`, if given; `has_tls` says whether `tls.*` names a certificate.
pub(super) fn admin(cx: &mut Ctx, has_tls: bool) -> Option<Admin> {
    let raw: RawAdmin = cx.section("admin")?;
    let (address, token_file) = match (raw.address, raw.token_file) {
        (Some(a), Some(t)) => (a, t),
        // Only webhooks: no API.
        (None, None) if !raw.tls => return None,
        _ => {
            cx.add(
                "admin",
                "the admin API needs both address and token_file (leave both out for webhooks only)",
            );
            return None;
        }
    };
    let before = cx.problems.len();
    let address = match address.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.add(
                "admin.address",
                format!("{address:?} is not an IP:port such as \"127.0.0.1:8025\""),
            );
            None
        }
    };
    let token_file = cx.resolve(token_file);
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

#[cfg(test)]
mod tests {
    use crate::config::{Config, Problems};
    use std::os::unix::fs::PermissionsExt;

    /// Loads a config with `admin` (and `extra`) in a folder holding `token` as
    /// admin.token with `mode`; the problems' texts if it fails.
    fn load(admin: &str, token: &str, mode: u32) -> Result<Config, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("admin.token", token, mode);
        write("users.yaml", "users: []\n", 0o600);
        let config = format!(
            "listeners:\n  - address: \"127.0.0.1:2525\"\n    tls: none\nusers:\n  file: users.yaml\n\
             smarthost:\n  address: \"[::1]:25\"\n  tls: none\ndelivery:\n  mode: passthrough\n  spool_directory: spool\n{admin}"
        );
        write("postern.yaml", &config, 0o600);
        Config::load(&dir.path().join("postern.yaml"))
            .map(|(c, _)| c)
            .map_err(|p: Problems| {
                p.0.iter()
                    .map(|p| format!("{}: {}", p.key, p.why))
                    .collect()
            })
    }

    const ADMIN: &str = "admin:\n  address: \"127.0.0.1:8025\"\n  token_file: admin.token\n";
    const TOKEN: &str = "0123456789abcdef0123456789abcdef\n";

    #[test]
    fn off_unless_configured_and_the_token_read_at_start() {
        assert!(load("", TOKEN, 0o600).unwrap().admin.is_none());
        let a = load(ADMIN, TOKEN, 0o600).unwrap().admin.unwrap();
        assert_eq!(a.address, "127.0.0.1:8025".parse().unwrap());
        assert_eq!(a.token.expose(), TOKEN.trim_end());
        assert!(!a.tls);
        assert_eq!(format!("{a:?}").matches("0123456789abcdef").count(), 0);
    }

    #[test]
    fn bad_tokens_and_settings_are_refused_with_their_key() {
        let one = |admin: &str, token: &str, mode: u32| {
            let problems = load(admin, token, mode).unwrap_err();
            assert_eq!(problems.len(), 1, "{problems:?}");
            problems[0].clone()
        };
        assert!(one(ADMIN, "\n", 0o600).starts_with("admin.token_file: "));
        assert!(one(ADMIN, "short\n", 0o600).contains("shorter than 16"));
        let world = one(ADMIN, TOKEN, 0o644);
        assert!(
            world.starts_with("admin.token_file: ") && world.contains("every user"),
            "{world}"
        );
        let tls = format!("{ADMIN}  tls: true\n");
        assert!(one(&tls, TOKEN, 0o600).starts_with("admin.tls: "));
        let addr = ADMIN.replace("127.0.0.1:8025", "localhost");
        assert!(one(&addr, TOKEN, 0o600).starts_with("admin.address: "));
        let unknown = format!("{ADMIN}  colour: red\n");
        assert!(one(&unknown, TOKEN, 0o600).starts_with("admin: "));
        let missing = ADMIN.replace("admin.token", "nowhere.token");
        assert!(one(&missing, TOKEN, 0o600).contains("cannot read"));
    }

    #[test]
    fn dashboard_sessions_last_2h_idle_and_12h_at_most_unless_set() {
        let a = load(ADMIN, TOKEN, 0o600).unwrap().admin.unwrap();
        assert_eq!(a.session_idle, super::SESSION_IDLE);
        assert_eq!(a.session_lifetime, super::SESSION_LIFETIME);
        let set = format!("{ADMIN}  session_idle: 15m\n  session_lifetime: 1h\n");
        let a = load(&set, TOKEN, 0o600).unwrap().admin.unwrap();
        assert_eq!(a.session_idle, std::time::Duration::from_secs(900));
        assert_eq!(a.session_lifetime, std::time::Duration::from_secs(3600));
        let zero = format!("{ADMIN}  session_idle: 0s\n");
        let problems = load(&zero, TOKEN, 0o600).unwrap_err();
        assert!(
            problems[0].starts_with("admin.session_idle: "),
            "{problems:?}"
        );
    }
}
