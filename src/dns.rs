//! DNS for Postern's own checks (`postern dkim list`, `postern doctor`): the one
//! place that builds the resolver and asks it questions.
//!
//! Queries go to the system resolver, or to `POSTERN_RESOLVER=IP:PORT` when set
//! (tests, split-horizon setups), through hickory as mail-auth uses it (so that
//! mail-auth's SPF evaluation asks the same server). Every query has a deadline,
//! and every answer is sorted into "found", "no such record", "no such domain" or
//! "could not ask": a SERVFAIL or a timeout says nothing about the zone, and a
//! check must never report it as a missing record.

use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::hickory_resolver::net::NetError;
use mail_auth::hickory_resolver::proto::rr::{RData, RecordType};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How long one query may take, retries included, before it counts as failed.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// What DNS said about one name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// These records (never empty).
    Found(T),
    /// The name exists but has no record of this type (NODATA).
    NoRecord,
    /// The name does not exist (NXDOMAIN).
    NoDomain,
    /// No usable answer (timeout, SERVFAIL, REFUSED…): nothing is known. The
    /// text says why, for "could not check".
    Failed(String),
}

impl<T> Answer<T> {
    /// The records, if any were found.
    pub fn found(&self) -> Option<&T> {
        match self {
            Answer::Found(t) => Some(t),
            _ => None,
        }
    }

    /// Whether DNS said for certain that there is nothing.
    pub fn is_absent(&self) -> bool {
        matches!(self, Answer::NoRecord | Answer::NoDomain)
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        match self {
            Answer::Found(t) => Answer::Found(f(t)),
            Answer::NoRecord => Answer::NoRecord,
            Answer::NoDomain => Answer::NoDomain,
            Answer::Failed(e) => Answer::Failed(e),
        }
    }
}

/// The resolver: `POSTERN_RESOLVER=IP:PORT` when set, else the system's. An error
/// means no DNS at all (a runtime failure for the commands that need it).
pub fn resolver() -> Result<MessageAuthenticator, String> {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    let config = match std::env::var("POSTERN_RESOLVER") {
        Ok(addr) => {
            let addr: SocketAddr = addr
                .parse()
                .map_err(|_| format!("POSTERN_RESOLVER={addr:?} is not IP:PORT"))?;
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut server.connections {
                c.port = addr.port();
            }
            ResolverConfig::from_name_servers(vec![server])
        }
        Err(_) => {
            let (config, _) = mail_auth::hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read the system resolver: {e}"))?;
            config
        }
    };
    MessageAuthenticator::new(config, opts).map_err(|e| e.to_string())
}

/// One query of `kind` for `name` (a fully qualified name is made of it), its
/// records' data, under [`QUERY_TIMEOUT`].
async fn query(dns: &MessageAuthenticator, name: &str, kind: RecordType) -> Answer<Vec<RData>> {
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let lookup = dns.resolver().lookup(fqdn, kind);
    match tokio::time::timeout(QUERY_TIMEOUT, lookup).await {
        Err(_) => Answer::Failed(format!("no answer within {}s", QUERY_TIMEOUT.as_secs())),
        Ok(Err(e)) => classify(&e),
        Ok(Ok(l)) => {
            let data: Vec<RData> = (l.answers().iter())
                .filter(|r| r.record_type() == kind)
                .map(|r| r.data.clone())
                .collect();
            if data.is_empty() {
                Answer::NoRecord
            } else {
                Answer::Found(data)
            }
        }
    }
}

fn classify<T>(e: &NetError) -> Answer<T> {
    if e.is_nx_domain() {
        Answer::NoDomain
    } else if e.is_no_records_found() {
        Answer::NoRecord
    } else {
        Answer::Failed(e.to_string())
    }
}

/// The TXT records at `name`, each one's strings joined (RFC 7208 §3.3), as text
/// (invalid UTF-8 replaced; callers escape it before showing it).
pub async fn txt(dns: &MessageAuthenticator, name: &str) -> Answer<Vec<String>> {
    query(dns, name, RecordType::TXT).await.map(|data| {
        (data.into_iter())
            .filter_map(|d| match d {
                RData::TXT(t) => Some(String::from_utf8_lossy(&t.txt_data.concat()).into_owned()),
                _ => None,
            })
            .collect()
    })
}

/// The MX records at `name`: preference and exchange (without the root dot; the
/// null MX's exchange is `""`).
pub async fn mx(dns: &MessageAuthenticator, name: &str) -> Answer<Vec<(u16, String)>> {
    query(dns, name, RecordType::MX).await.map(|data| {
        (data.into_iter())
            .filter_map(|d| match d {
                RData::MX(m) => Some((m.preference, host_name(&m.exchange.to_ascii()))),
                _ => None,
            })
            .collect()
    })
}

/// The CNAME at `name`, if it is one (its target).
pub async fn cname(dns: &MessageAuthenticator, name: &str) -> Answer<Vec<String>> {
    query(dns, name, RecordType::CNAME).await.map(|data| {
        (data.into_iter())
            .filter_map(|d| match d {
                RData::CNAME(c) => Some(host_name(&c.0.to_ascii())),
                _ => None,
            })
            .collect()
    })
}

/// The A and AAAA addresses of `name`. Found when either has some; failed when
/// either failed and neither has some.
pub async fn addresses(dns: &MessageAuthenticator, name: &str) -> Answer<Vec<IpAddr>> {
    let (a, aaaa) = tokio::join!(
        query(dns, name, RecordType::A),
        query(dns, name, RecordType::AAAA)
    );
    let mut ips = Vec::new();
    for d in [a.found(), aaaa.found()].into_iter().flatten().flatten() {
        match d {
            RData::A(a) => ips.push(IpAddr::V4(a.0)),
            RData::AAAA(a) => ips.push(IpAddr::V6(a.0)),
            _ => {}
        }
    }
    if !ips.is_empty() {
        return Answer::Found(ips);
    }
    match (a, aaaa) {
        (Answer::Failed(e), _) | (_, Answer::Failed(e)) => Answer::Failed(e),
        (Answer::NoDomain, _) | (_, Answer::NoDomain) => Answer::NoDomain,
        _ => Answer::NoRecord,
    }
}

/// The PTR names of `ip` (reverse DNS).
pub async fn ptr(dns: &MessageAuthenticator, ip: IpAddr) -> Answer<Vec<String>> {
    query(dns, &reverse_name(ip), RecordType::PTR)
        .await
        .map(|data| {
            (data.into_iter())
                .filter_map(|d| match d {
                    RData::PTR(p) => Some(host_name(&p.0.to_ascii())),
                    _ => None,
                })
                .collect()
        })
}

/// `4.3.2.1.in-addr.arpa` or the nibble form under `ip6.arpa`.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut labels: Vec<String> = (v6.octets().iter())
                .flat_map(|b| [b >> 4, b & 0xf])
                .map(|n| format!("{n:x}"))
                .collect();
            labels.reverse();
            format!("{}.ip6.arpa", labels.join("."))
        }
    }
}

/// A name from DNS as it is compared and shown: lower case, no root dot.
fn host_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("192.0.2.25".parse().unwrap()),
            "25.2.0.192.in-addr.arpa"
        );
        let v6 = reverse_name("2001:db8::1".parse().unwrap());
        assert!(v6.starts_with("1.0.0.0.0.0.0.0."), "{v6}");
        assert!(v6.ends_with(".8.b.d.0.1.0.0.2.ip6.arpa"), "{v6}");
        assert_eq!(v6.split('.').count(), 34);
    }
}
