//! `smarthost`: where mail goes, one mapping or a list tried in order (failover), and
//! the same entries under each of `routes`.

use super::ctx::Ctx;
use super::file_checks;
use super::{HumanDuration, TlsMode};
use crate::secret::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Smarthost {
    /// Host name as written: used for TLS verification (SNI and certificate name).
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Where the password was read from.
    pub password_file: Option<PathBuf>,
    /// Send credentials even without TLS (loopback smarthosts only).
    pub insecure_auth: bool,
    /// Idle connections kept open for reuse.
    pub pool_size: usize,
    pub idle_timeout: Duration,
    pub max_messages_per_connection: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmarthost {
    address: String,
    #[serde(default = "default_smarthost_tls")]
    tls: TlsMode,
    ca_file: Option<PathBuf>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default)]
    insecure_auth: bool,
    pool_size: Option<usize>,
    idle_timeout: Option<HumanDuration>,
    max_messages_per_connection: Option<u32>,
}

fn default_smarthost_tls() -> TlsMode {
    TlsMode::Starttls
}

/// The top-level `smarthost`, which must be given.
pub(super) fn default_smarthosts(cx: &mut Ctx) -> Option<Vec<Smarthost>> {
    match cx.map.get("smarthost") {
        Some(v) => smarthost_list(cx, v, "smarthost"),
        None => {
            cx.add("smarthost", "smarthost.address is needed");
            None
        }
    }
}

/// A smarthost entry: one mapping, or a list of them tried in order.
pub(super) fn smarthost_list(
    cx: &mut Ctx,
    value: &serde_yaml::Value,
    key: &str,
) -> Option<Vec<Smarthost>> {
    let before = cx.problems.len();
    let items: Vec<(String, &serde_yaml::Value)> = match value.as_sequence() {
        Some(seq) => seq
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{key}[{i}]"), v))
            .collect(),
        None => vec![(key.to_string(), value)],
    };
    if items.is_empty() {
        cx.add(key, "needs at least one smarthost");
    }
    let mut out = Vec::new();
    for (k, v) in items {
        match serde_yaml::from_value::<RawSmarthost>(v.clone()) {
            Ok(raw) => out.extend(validate_smarthost(cx, raw, &k)),
            Err(e) => cx.add(&k, e.to_string()),
        }
    }
    (cx.problems.len() == before).then_some(out)
}

fn validate_smarthost(cx: &mut Ctx, s: RawSmarthost, key: &str) -> Option<Smarthost> {
    let before = cx.problems.len();
    let (host, port) = match split_host_port(&s.address) {
        Some(hp) => hp,
        None => {
            cx.add(
                &format!("{key}.address"),
                format!("{:?} is not host:port", s.address),
            );
            (String::new(), 0)
        }
    };
    let ca_file = s.ca_file.map(|p| cx.resolve(p));
    if let Some(ca) = &ca_file
        && let Err(e) = file_checks::ca_file(ca)
    {
        cx.add(&format!("{key}.ca_file"), e);
    }
    let password_file = s.password_file.map(|p| cx.resolve(p));
    let password = password(cx, key, s.username.is_some(), password_file.as_deref());
    if s.username.is_some() && s.tls == TlsMode::None && !s.insecure_auth {
        cx.add(
            &format!("{key}.tls"),
            "credentials would be sent in clear text; use starttls or implicit (or insecure_auth: true for a loopback smarthost)",
        );
    }
    let max_messages_per_connection = s.max_messages_per_connection.unwrap_or(100);
    if max_messages_per_connection == 0 {
        cx.add(
            &format!("{key}.max_messages_per_connection"),
            "must be greater than 0",
        );
    }
    (cx.problems.len() == before).then(|| Smarthost {
        host,
        port,
        tls: s.tls,
        ca_file,
        username: s.username,
        password,
        password_file,
        insecure_auth: s.insecure_auth,
        pool_size: s.pool_size.unwrap_or(8),
        idle_timeout: s
            .idle_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30)),
        max_messages_per_connection,
    })
}

/// The smarthost password, read from `password_file`; a username and a password
/// file go together.
fn password(
    cx: &mut Ctx,
    key: &str,
    has_username: bool,
    password_file: Option<&Path>,
) -> Option<Secret> {
    match (has_username, password_file) {
        (true, Some(pf)) => read_password(cx, key, pf),
        (true, None) => {
            cx.add(
                &format!("{key}.password_file"),
                format!("needed with {key}.username"),
            );
            None
        }
        (false, Some(_)) => {
            cx.add(
                &format!("{key}.username"),
                format!("needed with {key}.password_file"),
            );
            None
        }
        (false, None) => None,
    }
}

/// The contents of `pf` without the line end, which must not be empty.
fn read_password(cx: &mut Ctx, key: &str, pf: &Path) -> Option<Secret> {
    match std::fs::read_to_string(pf).map(zeroize::Zeroizing::new) {
        Ok(text) => {
            let p = text.trim_end_matches(['\r', '\n']).to_string();
            if p.is_empty() {
                cx.add(
                    &format!("{key}.password_file"),
                    format!("{} is empty", pf.display()),
                );
            }
            Some(Secret::new(p))
        }
        Err(e) => {
            cx.add(
                &format!("{key}.password_file"),
                format!("cannot read {}: {e}", pf.display()),
            );
            None
        }
    }
}

/// Splits `host:port` or `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        s.rsplit_once(':')?
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace()) {
        return None;
    }
    Some((host.to_string(), port.parse().ok().filter(|&p| p != 0)?))
}
