//! `postern doctor`: whether a sender domain's DNS lets its mail be trusted, judged
//! against the route its mail actually leaves through.
//!
//! Generic DNS checkers cannot know which smarthost a domain's mail goes out by, so
//! they cannot say whether SPF authorises it. Postern knows ([`route`]): the
//! domain's route, its smarthosts and therefore the provider (Amazon SES, Mailgun,
//! Brevo, Microsoft 365, Google, or "other", a server of one's own).
//!
//! Two halves, kept apart so that every verdict is a plain function with table
//! tests and the DNS I/O is small:
//!
//! - [`gather`] asks DNS (through [`crate::dns`], every query under a deadline)
//!   and returns [`gather::Facts`]: record text and nothing judged;
//! - [`spf`], [`dkim`], [`dmarc`] and [`mx`] turn facts into [`Check`]s: ok, warn
//!   or fail, and one sentence saying what to change (the exact record to publish
//!   where there is one). A query that timed out or failed gives `unknown` ("could
//!   not check"), never fail.
//!
//! [`check_domain`] is the whole check of one domain, for the CLI and for the
//! admin API (`GET /api/v1/doctor/{domain}`); [`render`] prints a [`Report`] for a
//! terminal (every DNS string escaped) or as JSON (its shape is in the README).

pub mod dkim;
pub mod dmarc;
pub mod gather;
pub mod mx;
pub mod render;
pub mod route;
pub mod spf;

use crate::config::{Config, SenderRule, Users};
use crate::dkim::Keys;
use mail_auth::MessageAuthenticator;
use route::Leg;
use serde::Serialize;

/// A check's verdict. Ordered from best to worst, so a domain's status is the
/// maximum of its checks'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Could not check: DNS did not answer (timeout, SERVFAIL). Not a failure.
    Unknown,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Unknown => "unknown",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// A DNS record to publish (or change to), as an owner types it into a DNS panel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: String,
}

/// One check of one domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier: `spf.record`, `spf.authorises`, `spf.lookups`,
    /// `spf.all`, `dkim`, `dmarc.record`, `dmarc.policy`, `dmarc.alignment`,
    /// `dmarc.rua`, `mx`, `ptr`.
    pub id: &'static str,
    pub status: Status,
    /// What the check is about when there can be several: a smarthost
    /// (`host:port`) or a DKIM selector.
    pub subject: Option<String>,
    /// What DNS says, one sentence.
    pub found: String,
    /// What to change, one sentence an owner can follow; `None` when all is well.
    pub fix: Option<String>,
    /// The record that `fix` asks for, when it is one.
    pub record: Option<Record>,
}

impl Check {
    fn new(id: &'static str, status: Status, found: String) -> Check {
        Check {
            id,
            status,
            subject: None,
            found,
            fix: None,
            record: None,
        }
    }

    pub fn ok(id: &'static str, found: impl Into<String>) -> Check {
        Check::new(id, Status::Ok, found.into())
    }

    pub fn warn(id: &'static str, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(id, Status::Warn, found.into()).fix(fix)
    }

    pub fn fail(id: &'static str, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(id, Status::Fail, found.into()).fix(fix)
    }

    /// Could not check: `why` is what DNS (or the resolver) said.
    pub fn unknown(id: &'static str, why: &str) -> Check {
        Check::new(id, Status::Unknown, format!("could not check: {why}"))
            .fix("run the doctor again later; if this persists, check the domain's DNS servers")
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Check {
        self.subject = Some(subject.into());
        self
    }

    pub fn record(mut self, name: &str, kind: &'static str, value: impl Into<String>) -> Check {
        self.record = Some(Record {
            name: name.to_string(),
            kind,
            value: value.into(),
        });
        self
    }
}

/// Everything checked about one domain.
#[derive(Debug, Clone, Serialize)]
pub struct DomainReport {
    pub domain: String,
    /// The worst of the checks' statuses.
    pub status: Status,
    /// Where the domain's mail leaves: the route (and its smarthosts) for each
    /// group of its senders.
    pub routes: Vec<Leg>,
    pub checks: Vec<Check>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The JSON shape's version; it only grows (new fields, new check ids).
    pub version: u32,
    pub status: Status,
    pub domains: Vec<DomainReport>,
}

impl Report {
    pub fn new(domains: Vec<DomainReport>) -> Report {
        let status = domains.iter().map(|d| d.status).max().unwrap_or(Status::Ok);
        Report {
            version: 1,
            status,
            domains,
        }
    }

    /// Whether DNS answered nothing at all: every check that asked it is unknown.
    pub fn dns_silent(&self) -> bool {
        let mut checks = self.domains.iter().flat_map(|d| &d.checks);
        checks.all(|c| c.status == Status::Unknown)
            && self.domains.iter().any(|d| !d.checks.is_empty())
    }
}

/// Checks one domain: asks DNS what the route its mail takes needs, then judges.
/// `keys` are Postern's DKIM keys (`dkim.keys_directory`).
pub async fn check_domain(
    dns: &MessageAuthenticator,
    config: &Config,
    keys: &Keys,
    domain: &str,
) -> DomainReport {
    let routes = route::legs(config, domain);
    let facts = gather::gather(dns, config, keys, domain, &routes).await;
    let checks = judge(domain, &routes, &facts);
    DomainReport {
        domain: domain.to_string(),
        status: checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok),
        routes,
        checks,
    }
}

/// Every check of one domain from what DNS said (pure).
pub fn judge(domain: &str, routes: &[Leg], facts: &gather::Facts) -> Vec<Check> {
    let relays: Vec<&route::Relay> = routes.iter().flat_map(|l| &l.relays).collect();
    let mut checks = spf::judge(domain, &relays, &facts.spf);
    let dkim_checks = dkim::judge(domain, &relays, &facts.dkim);
    let dkim_aligned = dkim::aligned(&dkim_checks);
    let spf_aligned = spf::aligned(&checks, &relays);
    checks.extend(dkim_checks);
    checks.extend(dmarc::judge(
        domain,
        &facts.dmarc,
        dkim_aligned,
        spf_aligned,
    ));
    checks.push(mx::judge_mx(domain, &facts.mx));
    checks.extend(facts.ptr.iter().map(mx::judge_ptr));
    checks
}

/// Every domain the users' `senders` name (`@domain` or an address at it), sorted.
pub fn sender_domains(users: &Users) -> Vec<String> {
    let mut domains: Vec<String> = (users.iter())
        .flat_map(|u| u.senders.iter())
        .map(|r| match r {
            SenderRule::Domain(d) => d.clone(),
            SenderRule::Address(a) => a.rsplit_once('@').map_or("", |(_, d)| d).to_string(),
        })
        .filter(|d| !d.is_empty())
        .collect();
    domains.sort();
    domains.dedup();
    domains
}

#[cfg(test)]
mod tests;
