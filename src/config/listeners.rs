//! `listeners`, `tls` (the server's certificate) and `trusted_proxies` (who may send
//! a PROXY header to a listener that expects one).

use super::Cidr;
use super::ctx::Ctx;
use super::file_checks;
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// TLS on a listener or towards the smarthost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain TCP, upgraded by STARTTLS (port 587).
    Starttls,
    /// TLS from the first byte (port 465, RFC 8314).
    Implicit,
    /// No TLS at all: loopback tests, or a TLS-terminating proxy in front.
    None,
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Starttls => "starttls",
            TlsMode::Implicit => "implicit",
            TlsMode::None => "none",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub address: SocketAddr,
    pub tls: TlsMode,
    /// Offer AUTH without TLS (only meaningful with `tls: none`).
    pub insecure_auth: bool,
    /// Expect a PROXY v1/v2 header first, from `trusted_proxies` only.
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    address: String,
    tls: TlsMode,
    #[serde(default)]
    insecure_auth: bool,
    #[serde(default)]
    proxy_protocol: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificate: PathBuf,
    private_key: PathBuf,
}

/// `listeners`: at least one, no address twice.
pub(super) fn listeners(cx: &mut Ctx) -> Vec<Listener> {
    let raw: Vec<RawListener> = cx.section("listeners").unwrap_or_default();
    if raw.is_empty() && !cx.has_problem("listeners") {
        cx.add("listeners", "at least one listener is needed");
    }
    let mut listeners = Vec::new();
    for (i, l) in raw.into_iter().enumerate() {
        let key = format!("listeners[{i}]");
        match l.address.parse::<SocketAddr>() {
            Ok(address) => {
                if address.port() != 0 && listeners.iter().any(|x: &Listener| x.address == address)
                {
                    cx.add(&format!("{key}.address"), "listed twice");
                }
                listeners.push(Listener {
                    address,
                    tls: l.tls,
                    insecure_auth: l.insecure_auth,
                    proxy_protocol: l.proxy_protocol,
                })
            }
            Err(_) => cx.add(
                &format!("{key}.address"),
                format!(
                    "{:?} is not an IP:port such as \"[::]:587\" or \"0.0.0.0:465\"",
                    l.address
                ),
            ),
        }
        if l.insecure_auth && l.tls != TlsMode::None {
            cx.add(
                &format!("{key}.insecure_auth"),
                "only applies to a listener with tls: none",
            );
        }
    }
    listeners
}

/// `tls`: needed when a listener uses TLS; the files must load.
pub(super) fn tls(cx: &mut Ctx, listeners: &[Listener]) -> Option<TlsFiles> {
    let tls = cx.section::<RawTls>("tls").map(|t| TlsFiles {
        certificate: cx.resolve(t.certificate),
        private_key: cx.resolve(t.private_key),
    });
    let needs_tls = listeners.iter().any(|l| l.tls != TlsMode::None);
    match &tls {
        None if needs_tls && !cx.has_problem("tls") => cx.add(
            "tls",
            "a listener uses TLS, so tls.certificate and tls.private_key are needed",
        ),
        Some(t) => {
            if let Err(e) = file_checks::tls_files(t) {
                cx.add("tls", e);
            }
        }
        None => {}
    }
    tls
}

/// `trusted_proxies`: a list of addresses or CIDR networks, needed when a listener
/// has `proxy_protocol`.
pub(super) fn trusted_proxies(cx: &mut Ctx, listeners: &[Listener]) -> Vec<Cidr> {
    let raw: Vec<String> = cx.section("trusted_proxies").unwrap_or_default();
    let trusted: Vec<Cidr> = raw
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            Cidr::parse(s)
                .map_err(|e| cx.add(&format!("trusted_proxies[{i}]"), e))
                .ok()
        })
        .collect();
    if listeners.iter().any(|l| l.proxy_protocol) && trusted.is_empty() {
        cx.add(
            "trusted_proxies",
            "a listener has proxy_protocol: true, so list the load balancers' addresses \
             (CIDR) allowed to send a PROXY header",
        );
    }
    trusted
}
