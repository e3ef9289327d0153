//! The pure part of the PostgreSQL store: a row of `postern_users` as a value, the
//! changes the store makes to one, and a set of rows turned into validated
//! [`Users`] by the same rules as the users file (`config::parse_users`), so that
//! both stores accept and refuse exactly the same users.

use super::super::{NewUser, RateLimitsInput, UserChange};
use crate::config::{Problems, RateLimits, Users, parse_users};
use serde_yaml::{Mapping, Value};
use std::collections::BTreeSet;
use std::path::Path;

/// The columns Postern reads and writes, in this order.
pub const COLUMNS: &str = "name, password_hash, senders, networks, messages_per_hour, \
     recipients_per_hour, recipients_per_day, disabled, allow_any_header_from";

/// One row of `postern_users`. Counts are `i32` as PostgreSQL's `integer` is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    pub password_hash: Option<String>,
    pub senders: Vec<String>,
    pub networks: Vec<String>,
    pub messages_per_hour: Option<i32>,
    pub recipients_per_hour: Option<i32>,
    pub recipients_per_day: Option<i32>,
    pub disabled: bool,
    pub allow_any_header_from: bool,
}

/// Where the rows are named in problems (there is no file).
const TABLE: &str = "postern_users";

fn count(n: Option<u32>) -> Option<i32> {
    n.map(|n| i32::try_from(n).unwrap_or(i32::MAX))
}

impl UserRow {
    /// The row for a new user whose password hash is `hash`.
    pub fn new(user: &NewUser, hash: Option<String>) -> UserRow {
        let mut row = UserRow {
            name: user.name.clone(),
            password_hash: hash,
            senders: user.senders.clone(),
            networks: user.networks.clone(),
            disabled: user.disabled,
            ..UserRow::default()
        };
        row.set_limits(user.rate_limits.as_ref());
        row
    }

    fn set_limits(&mut self, limits: Option<&RateLimitsInput>) {
        let l = limits.cloned().unwrap_or_default();
        self.messages_per_hour = count(l.messages_per_hour);
        self.recipients_per_hour = count(l.recipients_per_hour);
        self.recipients_per_day = count(l.recipients_per_day);
    }

    /// Applies `change`; `hash` is the new password hash when it sets a password.
    /// Columns the change does not name stay as they are.
    pub fn apply(&mut self, change: &UserChange, hash: Option<String>) {
        if hash.is_some() {
            self.password_hash = hash;
        }
        if let Some(s) = &change.senders {
            self.senders = s.clone();
        }
        if let Some(n) = &change.networks {
            self.networks = n.clone();
        }
        if let Some(r) = &change.rate_limits {
            self.set_limits(r.as_ref());
        }
        if let Some(d) = change.disabled {
            self.disabled = d;
        }
    }

    /// The row as a users-file entry, for `parse_users`. A negative count (which the
    /// table's CHECK refuses anyway) becomes a YAML error on that entry.
    fn entry(&self) -> Value {
        let mut m = Mapping::new();
        let strings = |v: &[String]| Value::Sequence(v.iter().cloned().map(Value::from).collect());
        m.insert("name".into(), self.name.clone().into());
        if let Some(h) = &self.password_hash {
            m.insert("password".into(), h.clone().into());
        }
        m.insert("senders".into(), strings(&self.senders));
        m.insert("networks".into(), strings(&self.networks));
        let mut limits = Mapping::new();
        for (key, v) in [
            ("messages_per_hour", self.messages_per_hour),
            ("recipients_per_hour", self.recipients_per_hour),
            ("recipients_per_day", self.recipients_per_day),
        ] {
            if let Some(n) = v {
                limits.insert(key.into(), i64::from(n).into());
            }
        }
        if !limits.is_empty() {
            m.insert("rate_limits".into(), Value::Mapping(limits));
        }
        m.insert("disabled".into(), self.disabled.into());
        m.insert(
            "allow_any_header_from".into(),
            self.allow_any_header_from.into(),
        );
        Value::Mapping(m)
    }
}

/// Validates `rows` as a whole (names, hashes, senders, networks and their overlaps).
fn parse(rows: &[&UserRow], defaults: &RateLimits, problems: &mut Problems) -> Option<Users> {
    let list: Vec<Value> = rows.iter().map(|r| r.entry()).collect();
    let mut doc = Mapping::new();
    doc.insert("users".into(), Value::Sequence(list));
    let text = serde_yaml::to_string(&Value::Mapping(doc)).ok()?;
    parse_users(&text, Path::new(TABLE), defaults, problems)
}

/// The index of the entry a problem is about (`users[3].senders[0]` → 3).
fn entry_index(key: &str) -> Option<usize> {
    key.strip_prefix("users[")?.split(']').next()?.parse().ok()
}

/// The users in `rows`. A row that breaks a rule is left out (and its problems are
/// returned, for the log) rather than keeping every user from being loaded: a
/// panel's one bad write must not lock out everyone else. `Err` (with the problems)
/// only when the rows cannot be read at all, so the caller keeps the users it has.
pub fn users_from_rows(
    rows: &[UserRow],
    defaults: &RateLimits,
) -> Result<(Users, Vec<String>), Vec<String>> {
    let mut problems = Problems::default();
    let all: Vec<&UserRow> = rows.iter().collect();
    if let Some(users) = parse(&all, defaults, &mut problems) {
        return Ok((users, Vec::new()));
    }
    let why: Vec<String> = problems.0.iter().map(|p| describe(p, rows)).collect();
    let bad: BTreeSet<usize> = (problems.0.iter())
        .filter_map(|p| entry_index(&p.key))
        .collect();
    let good: Vec<&UserRow> = (all.iter().enumerate())
        .filter(|(i, _)| !bad.contains(i))
        .map(|(_, r)| *r)
        .collect();
    match parse(&good, defaults, &mut Problems::default()) {
        Some(users) => Ok((users, why)),
        None => Err(why),
    }
}

/// A problem about a row, named by the user's name and the column's key.
fn describe(p: &crate::config::Problem, rows: &[UserRow]) -> String {
    let row = entry_index(&p.key).and_then(|i| rows.get(i));
    match row {
        Some(r) => format!("user {:?}: {}: {}", r.name, p.key, p.why),
        None => format!("{}: {}", p.key, p.why),
    }
}

/// The reasons `candidate` cannot be stored next to `others` (the other users'
/// rows); empty when it can. Only problems about the candidate count: one about
/// another row (a bad row a panel wrote) is not the candidate's fault.
pub fn reasons_against(
    candidate: &UserRow,
    others: &[UserRow],
    defaults: &RateLimits,
) -> Vec<String> {
    let mut set: Vec<&UserRow> = others.iter().filter(|r| r.name != candidate.name).collect();
    let own = set.len();
    set.push(candidate);
    let mut problems = Problems::default();
    if parse(&set, defaults, &mut problems).is_some() {
        return Vec::new();
    }
    let mine = Problems(
        problems
            .0
            .into_iter()
            .filter(|p| entry_index(&p.key) == Some(own))
            .collect(),
    );
    super::super::entry::reasons(&mine, own)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, senders: &[&str], networks: &[&str]) -> UserRow {
        UserRow {
            name: name.into(),
            password_hash: Some(crate::auth::hash_password("pw").unwrap()),
            senders: senders.iter().map(|s| s.to_string()).collect(),
            networks: networks.iter().map(|s| s.to_string()).collect(),
            ..UserRow::default()
        }
    }

    #[test]
    fn rows_become_users_with_limits_over_the_defaults() {
        let mut a = row("a", &["@a.example"], &[]);
        a.messages_per_hour = Some(5);
        a.disabled = true;
        let b = row("b", &[], &["192.0.2.0/24"]);
        let defaults = RateLimits {
            messages_per_hour: Some(100),
            recipients_per_day: Some(1000),
            ..RateLimits::default()
        };
        let (users, problems) = users_from_rows(&[a, b], &defaults).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let a = users.get("a").unwrap();
        assert_eq!(a.rate_limits.messages_per_hour, Some(5));
        assert_eq!(a.rate_limits.recipients_per_day, Some(1000));
        assert!(a.disabled);
        assert_eq!(
            users.by_address("192.0.2.9".parse().unwrap()).unwrap().name,
            "b"
        );
    }

    #[test]
    fn a_bad_row_is_left_out_and_named_the_others_load() {
        let good = row("good", &["@g.example"], &[]);
        let mut bad = row("bad", &["not an address"], &[]);
        bad.password_hash = Some("plain-text".into());
        let clash = row("clash", &[], &["10.0.0.0/8"]);
        let first = row("first", &[], &["10.0.0.0/8"]);
        let (users, problems) =
            users_from_rows(&[good, bad, first, clash], &RateLimits::default()).unwrap();
        assert!(users.get("good").is_some());
        assert!(users.get("first").is_some());
        assert!(users.get("bad").is_none());
        assert!(users.get("clash").is_none());
        let all = problems.join("\n");
        assert!(all.contains("user \"bad\": users[1].senders[0]"), "{all}");
        assert!(all.contains("users[1].password"), "{all}");
        assert!(all.contains("users[3].networks[0]"), "{all}");
    }

    #[test]
    fn a_candidate_is_judged_alone_but_against_the_others_networks() {
        let mut broken = row("broken", &[], &[]);
        broken.password_hash = Some("x".into());
        let printer = row("printer", &[], &["192.0.2.0/24"]);
        let ok = row("new", &["@n.example"], &[]);
        let others = [broken, printer];
        assert!(reasons_against(&ok, &others, &RateLimits::default()).is_empty());
        let clash = row("new", &[], &["192.0.2.0/24"]);
        let why = reasons_against(&clash, &others, &RateLimits::default());
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].starts_with("networks[0]:"), "{why:?}");
        // An update is judged without the row it replaces.
        let moved = row("printer", &[], &["192.0.2.0/24"]);
        assert!(reasons_against(&moved, &others, &RateLimits::default()).is_empty());
    }

    #[test]
    fn a_change_replaces_only_what_it_names() {
        let mut r = row("a", &["@a.example"], &["192.0.2.0/24"]);
        r.messages_per_hour = Some(3);
        let before = r.clone();
        r.apply(&UserChange::default(), None);
        assert_eq!(r, before);
        r.apply(
            &UserChange {
                networks: Some(vec![]),
                rate_limits: Some(None),
                disabled: Some(true),
                ..UserChange::default()
            },
            Some("$argon2id$new".into()),
        );
        assert_eq!(r.password_hash.as_deref(), Some("$argon2id$new"));
        assert_eq!(r.senders, before.senders);
        assert!(r.networks.is_empty());
        assert_eq!(r.messages_per_hour, None);
        assert!(r.disabled);
    }
}
