//! SPF verdicts (pure): the record exists once and parses, authorises each
//! smarthost of the domain's route, stays within the 10-lookup limit, and ends
//! with a sensible `all`.
//!
//! A known provider is authorised by its include found anywhere in the tree of
//! includes; a server of one's own by evaluating the record (mail-auth's
//! evaluator, run by `gather`) for each of its addresses. Parsing is mail-auth's.

use super::route::Relay;
use super::{Check, Status};
use crate::dns::Answer;
use mail_auth::SpfResult;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::spf::{Macro, Mechanism, Qualifier, Spf};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Receivers stop after this many DNS-querying terms (RFC 7208 §4.6.4).
pub const LOOKUP_LIMIT: u32 = 10;
/// The walk of includes asks for at most this many records.
pub const MAX_FETCHES: usize = 30;
/// Include chains deeper than this are treated as a loop.
const MAX_DEPTH: usize = 10;

/// The SPF result for each address of one smarthost (or why its addresses are
/// not known).
pub type Evaluation = Answer<Vec<(IpAddr, SpfResult)>>;

/// What DNS said for SPF.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpfFacts {
    /// The TXT answer at every name the walk asked: the domain, then the
    /// targets of its includes and redirects.
    pub txt: BTreeMap<String, Answer<Vec<String>>>,
    /// For each smarthost of no known provider: the record evaluated for each
    /// of its addresses (or why its addresses are not known).
    pub evaluations: Vec<(String, Evaluation)>,
}

/// What a name has for SPF.
#[derive(Debug)]
pub enum At {
    /// Exactly one SPF record, parsed, and its text.
    Record(Box<Spf>, String),
    /// No SPF record (no TXT, no such domain, or only other TXT records).
    Absent,
    /// More than one SPF record: a permanent error at receivers (RFC 7208 §4.5).
    Many(usize),
    /// One SPF record that does not parse; its text.
    Invalid(String),
    /// DNS did not answer, or the walk did not ask.
    Unknown(String),
}

/// Whether a TXT record is an SPF record: `v=spf1` alone or followed by a space.
pub fn is_spf(record: &str) -> bool {
    let r = record.trim_start();
    r.get(..6).is_some_and(|v| v.eq_ignore_ascii_case("v=spf1"))
        && r.as_bytes().get(6).is_none_or(|b| *b == b' ')
}

/// What `name` has for SPF, from the facts.
pub fn at(facts: &SpfFacts, name: &str) -> At {
    let records = match facts.txt.get(name) {
        None => return At::Unknown("not looked up (too many includes)".into()),
        Some(Answer::Failed(e)) => return At::Unknown(e.clone()),
        Some(Answer::NoRecord | Answer::NoDomain) => return At::Absent,
        Some(Answer::Found(r)) => r,
    };
    let spf: Vec<&String> = records.iter().filter(|r| is_spf(r)).collect();
    match spf.as_slice() {
        [] => At::Absent,
        [one] => match Spf::parse(one.trim().as_bytes()) {
            Ok(parsed) => At::Record(Box::new(parsed), one.to_string()),
            Err(_) => At::Invalid(one.to_string()),
        },
        many => At::Many(many.len()),
    }
}

/// The names a record sends the walk to: its literal include targets, and its
/// redirect when it has no `all` (a macro target cannot be followed).
pub fn next_names(spf: &Spf) -> Vec<String> {
    let mut names: Vec<String> = (spf.directives.iter())
        .filter_map(|d| match &d.mechanism {
            Mechanism::Include { macro_string } => literal(macro_string),
            _ => None,
        })
        .collect();
    names.extend(redirect(spf).and_then(literal));
    names
}

fn redirect(spf: &Spf) -> Option<&Macro> {
    let has_all = (spf.directives.iter()).any(|d| d.mechanism == Mechanism::All);
    spf.redirect.as_ref().filter(|_| !has_all)
}

fn literal(m: &Macro) -> Option<String> {
    match m {
        Macro::Literal(bytes) => std::str::from_utf8(bytes)
            .ok()
            .map(|s| s.trim_end_matches('.').to_ascii_lowercase()),
        _ => None,
    }
}

/// The lookup count of the whole tree, and the names that break it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Lookups {
    pub count: u32,
    /// Includes or redirects with no usable SPF record, or that loop: each makes
    /// the evaluation a permanent error.
    pub broken: Vec<String>,
    /// Names DNS did not answer for.
    pub unknown: Vec<String>,
    /// Terms with a macro target, counted but not followed.
    pub macros: u32,
}

/// Counts the DNS-querying terms from `domain`'s record down (include, a, mx,
/// ptr, exists, redirect: RFC 7208 §4.6.4).
pub fn lookups(facts: &SpfFacts, domain: &str) -> Lookups {
    let mut acc = Lookups::default();
    walk(facts, domain, &mut Vec::new(), &mut acc);
    acc
}

fn walk(facts: &SpfFacts, name: &str, path: &mut Vec<String>, acc: &mut Lookups) {
    if path.iter().any(|p| p == name) || path.len() > MAX_DEPTH {
        acc.broken.push(format!("{name} (a loop)"));
        return;
    }
    let spf = match at(facts, name) {
        At::Record(spf, _) => spf,
        At::Unknown(_) => return acc.unknown.push(name.to_string()),
        At::Absent => return acc.broken.push(format!("{name} (no SPF record)")),
        At::Many(n) => return acc.broken.push(format!("{name} ({n} SPF records)")),
        At::Invalid(_) => {
            return acc
                .broken
                .push(format!("{name} (a record that does not parse)"));
        }
    };
    path.push(name.to_string());
    let follow = |m: &Macro, path: &mut Vec<String>, acc: &mut Lookups| {
        acc.count += 1;
        match literal(m) {
            Some(target) => walk(facts, &target, path, acc),
            None => acc.macros += 1,
        }
    };
    for d in spf.directives.iter() {
        match &d.mechanism {
            Mechanism::Include { macro_string } => follow(macro_string, path, acc),
            Mechanism::A { .. }
            | Mechanism::Mx { .. }
            | Mechanism::Ptr { .. }
            | Mechanism::Exists { .. } => acc.count += 1,
            Mechanism::All | Mechanism::Ip4 { .. } | Mechanism::Ip6 { .. } => {}
        }
    }
    if let Some(r) = redirect(&spf) {
        follow(r, path, acc);
    }
    path.pop();
}

/// Whether an include of one of `wanted` (with a passing qualifier) is reachable
/// from `name`'s record: `Some(true)`, `Some(false)`, or `None` when a part of the
/// tree is unknown and the include was not found elsewhere.
pub fn includes_any(facts: &SpfFacts, name: &str, wanted: &[&str]) -> Option<bool> {
    fn search(facts: &SpfFacts, name: &str, wanted: &[&str], depth: usize) -> Option<bool> {
        let spf = match at(facts, name) {
            At::Record(spf, _) => spf,
            At::Unknown(_) => return None,
            _ => return Some(false),
        };
        if depth > MAX_DEPTH {
            return Some(false);
        }
        let mut unknown = false;
        let includes = (spf.directives.iter()).filter_map(|d| match &d.mechanism {
            Mechanism::Include { macro_string } if d.qualifier == Qualifier::Pass => {
                literal(macro_string)
            }
            _ => None,
        });
        for target in includes.chain(redirect(&spf).and_then(literal)) {
            if wanted.contains(&target.as_str()) {
                return Some(true);
            }
            match search(facts, &target, wanted, depth + 1) {
                Some(true) => return Some(true),
                None => unknown = true,
                Some(false) => {}
            }
        }
        if unknown { None } else { Some(false) }
    }
    search(facts, name, wanted, 0)
}

/// The qualifier of the `all` that ends `name`'s evaluation (following
/// redirects), if any.
pub fn final_all(facts: &SpfFacts, name: &str) -> Option<Qualifier> {
    let mut name = name.to_string();
    for _ in 0..=MAX_DEPTH {
        let At::Record(spf, _) = at(facts, &name) else {
            return None;
        };
        if let Some(d) = (spf.directives.iter()).find(|d| d.mechanism == Mechanism::All) {
            return Some(d.qualifier.clone());
        }
        name = redirect(&spf).and_then(literal)?;
    }
    None
}

/// Whether a record term is an `all` term (`-all`, `~all`, `all`…).
fn is_all(term: &str) -> bool {
    term.trim_start_matches(['+', '-', '~', '?'])
        .eq_ignore_ascii_case("all")
        && term.len() <= 4
}

/// `record` with `mechanism` added before its `all` (or `redirect=`), as the owner
/// should publish it.
pub fn with_mechanism(record: &str, mechanism: &str) -> String {
    let mut terms: Vec<&str> = record.split_whitespace().collect();
    if terms.iter().any(|t| t.eq_ignore_ascii_case(mechanism)) {
        return terms.join(" ");
    }
    let at = (terms.iter())
        .position(|t| is_all(t) || t.to_ascii_lowercase().starts_with("redirect="))
        .unwrap_or(terms.len());
    terms.insert(at, mechanism);
    terms.join(" ")
}

/// `record` with its `all` replaced by `all` (added at the end when it has none).
pub fn with_all(record: &str, all: &str) -> String {
    let mut terms: Vec<&str> = record.split_whitespace().filter(|t| !is_all(t)).collect();
    terms.push(all);
    terms.join(" ")
}

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
#[path = "spf_tests.rs"]
mod tests;
