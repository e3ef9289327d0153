//! `smarthost`: where mail goes, one mapping or a list tried in order (failover), and
//! the same entries under each of `routes`.

use super::ctx::Ctx;
use super::file_checks;
use super::oauth2::{self, OAuth2, RawOAuth2, is_https_url};
use super::{HumanDuration, TlsMode};
use crate::secret::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How mail reaches a smarthost entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// SMTP submission (password or XOAUTH2).
    #[default]
    Smtp,
    /// Microsoft Graph `sendMail` over HTTPS.
    Graph,
}

/// Microsoft Graph's endpoint when `graph_url` is not set.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com/v1.0";

#[derive(Debug, Clone)]
pub struct Smarthost {
    /// Host name as written: used for TLS verification (SNI and certificate name).
    /// Empty for a Graph entry without an address.
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    /// OAuth 2.0 instead of a password: AUTH XOAUTH2 (SMTP) or the bearer token
    /// (Graph).
    pub oauth2: Option<OAuth2>,
    /// The Graph API base, without a trailing slash.
    pub graph_url: String,
    /// Pacing: at most this many messages in any 60 seconds.
    pub max_messages_per_minute: Option<u32>,
    /// A TLS client certificate and its key (PEM), for a connector that trusts it.
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
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
    address: Option<String>,
    #[serde(default)]
    transport: Transport,
    oauth2: Option<RawOAuth2>,
    graph_url: Option<String>,
    max_messages_per_minute: Option<u32>,
    client_certificate: Option<PathBuf>,
    client_key: Option<PathBuf>,
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
    // Graph delivers to every recipient the header names, all or nothing: it can
    // lead a failover list, but cannot take over the part of a message that an
    // SMTP smarthost before it deferred (it would deliver the rest again).
    let first_smtp = out.iter().position(|s| s.transport == Transport::Smtp);
    if let Some(i) = first_smtp
        && out[i..].iter().any(|s| s.transport == Transport::Graph)
    {
        cx.add(
            key,
            "a transport: graph entry must come before every SMTP entry of the list",
        );
    }
    (cx.problems.len() == before).then_some(out)
}

fn validate_smarthost(cx: &mut Ctx, s: RawSmarthost, key: &str) -> Option<Smarthost> {
    let before = cx.problems.len();
    let (host, port) = address(cx, &s, key);
    let ca_file = s.ca_file.clone().map(|p| cx.resolve(p));
    if let Some(ca) = &ca_file
        && let Err(e) = file_checks::ca_file(ca)
    {
        cx.add(&format!("{key}.ca_file"), e);
    }
    let password_file = s.password_file.clone().map(|p| cx.resolve(p));
    let (password, oauth2) = credentials(cx, &s, key, password_file.as_deref());
    let graph_url = graph_url(cx, &s, key);
    let (client_certificate, client_key) = client_certificate(cx, &s, key);
    let max_messages_per_connection = s.max_messages_per_connection.unwrap_or(100);
    for (name, value) in [
        (
            "max_messages_per_connection",
            Some(max_messages_per_connection),
        ),
        ("max_messages_per_minute", s.max_messages_per_minute),
    ] {
        if value == Some(0) {
            cx.add(&format!("{key}.{name}"), "must be greater than 0");
        }
    }
    (cx.problems.len() == before).then(|| Smarthost {
        host,
        port,
        transport: s.transport,
        oauth2,
        graph_url,
        max_messages_per_minute: s.max_messages_per_minute,
        client_certificate,
        client_key,
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

/// `address` as host and port: needed for SMTP, not used by Graph.
fn address(cx: &mut Ctx, s: &RawSmarthost, key: &str) -> (String, u16) {
    match (&s.address, s.transport) {
        (None, Transport::Graph) => (String::new(), 0),
        (None, Transport::Smtp) => {
            cx.add(&format!("{key}.address"), "is needed");
            (String::new(), 0)
        }
        (Some(a), _) => split_host_port(a).unwrap_or_else(|| {
            cx.add(&format!("{key}.address"), format!("{a:?} is not host:port"));
            (String::new(), 0)
        }),
    }
}

/// The password or the OAuth 2.0 block, whichever the entry uses, and the checks
/// that tie them to `username`, `tls` and `transport`.
fn credentials(
    cx: &mut Ctx,
    s: &RawSmarthost,
    key: &str,
    password_file: Option<&Path>,
) -> (Option<Secret>, Option<OAuth2>) {
    let Some(raw) = &s.oauth2 else {
        if s.transport == Transport::Graph {
            cx.add(&format!("{key}.oauth2"), "needed with transport: graph");
        }
        let password = password(cx, key, s.username.is_some(), password_file);
        clear_text_check(cx, s, key);
        return (password, None);
    };
    if password_file.is_some() {
        cx.add(
            &format!("{key}.password_file"),
            format!("use either {key}.password_file or {key}.oauth2, not both"),
        );
    }
    if s.username.is_none() {
        cx.add(
            &format!("{key}.username"),
            "needed with oauth2: the mailbox to send as",
        );
    }
    if s.transport == Transport::Smtp {
        clear_text_check(cx, s, key);
    }
    let raw = RawOAuth2::clone(raw);
    (None, oauth2::validate(cx, raw, &format!("{key}.oauth2")))
}

/// Credentials never go to an SMTP smarthost in clear text, but on loopback when
/// asked for.
fn clear_text_check(cx: &mut Ctx, s: &RawSmarthost, key: &str) {
    if s.username.is_some() && s.tls == TlsMode::None && !s.insecure_auth {
        cx.add(
            &format!("{key}.tls"),
            "credentials would be sent in clear text; use starttls or implicit (or insecure_auth: true for a loopback smarthost)",
        );
    }
}

fn graph_url(cx: &mut Ctx, s: &RawSmarthost, key: &str) -> String {
    let url = s.graph_url.as_deref().unwrap_or(DEFAULT_GRAPH_URL);
    if !is_https_url(url) {
        cx.add(
            &format!("{key}.graph_url"),
            format!("{url:?} is not an https:// URL"),
        );
    }
    url.trim_end_matches('/').to_string()
}

/// `client_certificate` and `client_key`, which go together.
fn client_certificate(
    cx: &mut Ctx,
    s: &RawSmarthost,
    key: &str,
) -> (Option<PathBuf>, Option<PathBuf>) {
    let cert = s.client_certificate.clone().map(|p| cx.resolve(p));
    let pkey = s.client_key.clone().map(|p| cx.resolve(p));
    match (&cert, &pkey) {
        (Some(c), Some(k)) => {
            if let Err((which, why)) = file_checks::client_identity(c, k) {
                cx.add(&format!("{key}.{which}"), why);
            }
            if s.tls == TlsMode::None {
                cx.add(
                    &format!("{key}.client_certificate"),
                    "needs tls: starttls or implicit",
                );
            }
        }
        (Some(_), None) => cx.add(
            &format!("{key}.client_key"),
            format!("needed with {key}.client_certificate"),
        ),
        (None, Some(_)) => cx.add(
            &format!("{key}.client_certificate"),
            format!("needed with {key}.client_key"),
        ),
        _ => {}
    }
    (cert, pkey)
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
        (true, Some(pf)) => oauth2::read_secret(cx, &format!("{key}.password_file"), pf),
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
