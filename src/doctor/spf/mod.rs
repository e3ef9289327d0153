//! SPF verdicts (pure): the record exists once and parses, authorises each
//! smarthost of the domain's route, stays within the 10-lookup limit, and ends
//! with a sensible `all`.
//!
//! A known provider is authorised by its include found anywhere in the tree of
//! includes; a server of one's own by evaluating the record (mail-auth's
//! evaluator, run by `gather`) for each of its addresses. Parsing is mail-auth's.

//! The record and its tree of includes are [`tree`]'s.

mod tree;

pub use tree::{
    At, Evaluation, Lookups, MAX_FETCHES, SpfFacts, at, final_all, includes_any, is_spf, lookups,
    next_names, with_all, with_mechanism,
};

use super::route::Relay;
use super::{Check, Status};
use crate::dns::Answer;
use mail_auth::SpfResult;
use mail_auth::spf::Qualifier;
use std::net::IpAddr;

/// Receivers stop after this many DNS-querying terms (RFC 7208 §4.6.4).
pub const LOOKUP_LIMIT: u32 = 10;

/// The mechanism that authorises one relay: its provider's include, or its
/// address or name.
fn mechanism_for(relay: &Relay) -> String {
    match relay.provider.spf_includes().first() {
        Some(include) => format!("include:{include}"),
        None => match relay.host.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => format!("ip4:{ip}"),
            Ok(IpAddr::V6(ip)) => format!("ip6:{ip}"),
            Err(_) => format!("a:{}", relay.host),
        },
    }
}

/// The record to publish when there is none: every relay authorised, `~all`.
pub fn suggested_record(relays: &[&Relay]) -> String {
    let mut record = String::from("v=spf1 ~all");
    for r in relays {
        record = with_mechanism(&record, &mechanism_for(r));
    }
    record
}

/// Every SPF check of a domain whose mail leaves through `relays`.
pub fn judge(domain: &str, relays: &[&Relay], facts: &SpfFacts) -> Vec<Check> {
    let record = match at(facts, domain) {
        At::Record(_, text) => text,
        other => return vec![record_problem(domain, relays, other)],
    };
    let mut checks = vec![Check::ok("spf.record", record.clone())];
    let mut seen = Vec::new();
    for relay in relays {
        if !seen.contains(&&relay.name) {
            seen.push(&relay.name);
            checks.push(authorises(domain, relay, &record, facts).subject(&relay.name));
        }
    }
    checks.push(lookup_check(&lookups(facts, domain)));
    checks.push(all_check(domain, &record, final_all(facts, domain)));
    checks
}

fn record_problem(domain: &str, relays: &[&Relay], at: At) -> Check {
    let suggestion = suggested_record(relays);
    let check = match at {
        At::Unknown(why) => return Check::unknown("spf.record", &why),
        At::Absent => Check::fail(
            "spf.record",
            format!(
                "{domain} has no SPF record, so receivers cannot tell its servers from forgers"
            ),
            format!("publish a TXT record at {domain}: {suggestion}"),
        ),
        At::Many(n) => Check::fail(
            "spf.record",
            format!(
                "{domain} has {n} SPF records; receivers treat that as a permanent error (RFC 7208 §4.5)"
            ),
            format!("merge them into one TXT record at {domain}, such as: {suggestion}"),
        ),
        At::Invalid(text) => Check::fail(
            "spf.record",
            format!("the SPF record of {domain} does not parse: {text}"),
            format!("replace it with a valid one, such as: {suggestion}"),
        ),
        At::Record(..) => unreachable!("a record is not a problem"),
    };
    check.record(domain, "TXT", suggestion)
}

fn authorises(domain: &str, relay: &Relay, record: &str, facts: &SpfFacts) -> Check {
    const ID: &str = "spf.authorises";
    let includes = relay.provider.spf_includes();
    if includes.is_empty() {
        return by_evaluation(domain, relay, record, facts);
    }
    let provider = relay.provider.name();
    match includes_any(facts, domain, includes) {
        Some(true) => Check::ok(ID, format!("the record includes {provider}'s servers")),
        None => Check::unknown(ID, "an include of the record could not be looked up"),
        Some(false) => {
            let fixed = with_mechanism(record, &format!("include:{}", includes[0]));
            Check::fail(
                ID,
                format!("the record does not authorise {provider} (no include:{}), so its servers fail SPF for {domain}", includes[0]),
                format!("change the TXT record at {domain} to: {fixed}"),
            )
            .record(domain, "TXT", fixed)
        }
    }
}

/// A server of one's own: the record evaluated for each of its addresses.
fn by_evaluation(domain: &str, relay: &Relay, record: &str, facts: &SpfFacts) -> Check {
    const ID: &str = "spf.authorises";
    let host = &relay.host;
    let found = facts.evaluations.iter().find(|(r, _)| *r == relay.name);
    let results = match found.map(|(_, a)| a) {
        None => return Check::unknown(ID, "the smarthost's addresses were not looked up"),
        Some(Answer::Failed(e)) => return Check::unknown(ID, e),
        Some(Answer::NoRecord | Answer::NoDomain) => {
            return Check::warn(
                ID,
                format!(
                    "{host} has no address in public DNS, so the doctor cannot tell which address it sends from"
                ),
                format!(
                    "make sure the TXT record at {domain} lists the public address {host} sends from (ip4:ADDRESS)"
                ),
            );
        }
        Some(Answer::Found(r)) => r,
    };
    if results.iter().all(|(ip, _)| !is_public(ip)) {
        let ips: Vec<String> = results.iter().map(|(ip, _)| ip.to_string()).collect();
        return Check::warn(
            ID,
            format!(
                "{host} is at a private address ({}), so the doctor cannot tell which public address its mail leaves from",
                ips.join(", ")
            ),
            format!("make sure the TXT record at {domain} lists that public address (ip4:ADDRESS)"),
        );
    }
    if results.iter().any(|(_, r)| *r == SpfResult::TempError) {
        return Check::unknown(ID, "a lookup during the evaluation failed");
    }
    if results.iter().any(|(_, r)| *r == SpfResult::PermError) {
        return Check::fail(
            ID,
            format!("evaluating the record of {domain} for {host} gives a permanent error"),
            "fix the record (see the other SPF checks)",
        );
    }
    let missing: Vec<&IpAddr> = (results.iter())
        .filter(|(ip, r)| is_public(ip) && *r != SpfResult::Pass)
        .map(|(ip, _)| ip)
        .collect();
    if missing.is_empty() {
        return Check::ok(ID, format!("the record authorises {host}'s addresses"));
    }
    let mut fixed = record.to_string();
    for ip in &missing {
        let kind = if ip.is_ipv4() { "ip4" } else { "ip6" };
        fixed = with_mechanism(&fixed, &format!("{kind}:{ip}"));
    }
    let list: Vec<String> = missing.iter().map(|ip| ip.to_string()).collect();
    Check::fail(
        ID,
        format!(
            "the record does not authorise {host} ({}): its mail fails SPF for {domain}",
            list.join(", ")
        ),
        format!("change the TXT record at {domain} to: {fixed}"),
    )
    .record(domain, "TXT", fixed)
}

/// An address mail can be seen to come from on the Internet.
pub fn is_public(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64) // CGNAT
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80) // link local
        }
    }
}

fn lookup_check(l: &Lookups) -> Check {
    const ID: &str = "spf.lookups";
    let at_least = if l.macros > 0 { "at least " } else { "" };
    if l.count > LOOKUP_LIMIT {
        return Check::fail(
            ID,
            format!(
                "the record needs {at_least}{} DNS lookups; receivers stop at {LOOKUP_LIMIT} and SPF fails (permerror)",
                l.count
            ),
            "remove includes of services you no longer use, or list your own servers as ip4:/ip6: instead of a:/mx:/include:",
        );
    }
    if !l.broken.is_empty() {
        return Check::fail(
            ID,
            format!(
                "the record refers to {}, which makes SPF fail (permerror)",
                l.broken.join(", ")
            ),
            "remove those includes, or have their owners publish an SPF record there",
        );
    }
    if !l.unknown.is_empty() {
        return Check::unknown(ID, &format!("no answer for {}", l.unknown.join(", ")));
    }
    Check::ok(
        ID,
        format!("{at_least}{} of {LOOKUP_LIMIT} DNS lookups", l.count),
    )
}

fn all_check(domain: &str, record: &str, all: Option<Qualifier>) -> Check {
    const ID: &str = "spf.all";
    match all {
        Some(Qualifier::Fail) => Check::ok(ID, "ends with -all: other servers fail"),
        Some(Qualifier::SoftFail) => Check::ok(ID, "ends with ~all: other servers soft-fail"),
        Some(Qualifier::Neutral) => Check::warn(
            ID,
            "ends with ?all, which says nothing about other servers",
            format!(
                "end the TXT record at {domain} with ~all: {}",
                with_all(record, "~all")
            ),
        )
        .record(domain, "TXT", with_all(record, "~all")),
        Some(Qualifier::Pass) => Check::fail(
            ID,
            format!(
                "ends with +all, which authorises every server on the Internet to send as {domain}"
            ),
            format!(
                "end the TXT record at {domain} with ~all: {}",
                with_all(record, "~all")
            ),
        )
        .record(domain, "TXT", with_all(record, "~all")),
        None => Check::warn(
            ID,
            "has no all term, so other servers are neutral",
            format!(
                "end the TXT record at {domain} with ~all: {}",
                with_all(record, "~all")
            ),
        )
        .record(domain, "TXT", with_all(record, "~all")),
    }
}

/// Whether SPF can align with the From domain for DMARC: the record authorises
/// every relay and each keeps the customer's envelope sender. `None`: unknown.
pub fn aligned(checks: &[Check], relays: &[&Relay]) -> Option<bool> {
    let spf: Vec<&Check> = checks.iter().filter(|c| c.id.starts_with("spf.")).collect();
    if spf
        .iter()
        .any(|c| c.id == "spf.record" && c.status == Status::Unknown)
    {
        return None;
    }
    let authorised: Vec<&&Check> = spf.iter().filter(|c| c.id == "spf.authorises").collect();
    if authorised.is_empty() || authorised.iter().any(|c| c.status == Status::Fail) {
        return Some(false);
    }
    if !relays.iter().all(|r| r.provider.keeps_envelope_sender()) {
        return Some(false);
    }
    if authorised.iter().all(|c| c.status == Status::Ok) {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
