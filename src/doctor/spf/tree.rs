//! An SPF record and the tree of includes under it, as DNS gave them (pure):
//! which record a name has, the names the walk must ask for next, the lookup
//! count, whether an include is reachable, the final `all`, and the record text
//! edited as the owner should publish it. Parsing is mail-auth's.

use crate::dns::Answer;
use mail_auth::SpfResult;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::spf::{Macro, Mechanism, Qualifier, Spf};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The walk of includes asks for at most this many records.
pub const MAX_FETCHES: usize = 30;
/// Include chains deeper than this are treated as a loop.
pub(super) const MAX_DEPTH: usize = 10;

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
