//! The pure part of the users store: rules for new names and given hashes, and a
//! new user or a change written as a users-file entry (a YAML mapping), before the
//! whole file is validated by `config::parse_users`.

use super::{NewUser, RateLimitsInput, UserChange};
use crate::config::Problems;
use serde_yaml::{Mapping, Value};

/// Longest name the store gives a new user (an email address fits).
pub const MAX_NAME_LEN: usize = 128;

/// Whether `name` may be given to a new user: 1 to [`MAX_NAME_LEN`] characters of
/// ASCII letters, digits and `. _ - @ +`, not starting with `.` or `-`. Stricter
/// than the users file allows, on purpose: a name made through the API ends up in
/// logs, file names of other tools and panels' URLs, where `/`, `..`, control
/// characters and spaces make trouble.
pub fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+');
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("name: must be 1 to {MAX_NAME_LEN} characters"));
    }
    if !name.chars().all(allowed) {
        return Err("name: only ASCII letters, digits and . _ - @ + are allowed".into());
    }
    if name.starts_with(['.', '-']) {
        return Err("name: must not start with . or -".into());
    }
    Ok(())
}

/// Whether `hash` is an argon2id PHC string Postern can verify (argon2i and argon2d,
/// which the users file tolerates, are not taken from the API).
pub fn check_argon2id(hash: &str) -> Result<(), String> {
    if !hash.starts_with("$argon2id$") {
        return Err("password_hash: must be an argon2id PHC string ($argon2id$...)".into());
    }
    crate::config::check_phc(hash).map_err(|e| format!("password_hash: {e}"))
}

fn strings(items: &[String]) -> Value {
    Value::Sequence(items.iter().map(|s| Value::String(s.clone())).collect())
}

fn limits(r: &RateLimitsInput) -> Value {
    serde_yaml::to_value(r).unwrap_or(Value::Null)
}

/// A new user as a users-file entry; `hash` is its password hash, if it has one.
pub(super) fn new_entry(user: &NewUser, hash: Option<&str>) -> Value {
    let mut m = Mapping::new();
    m.insert("name".into(), Value::String(user.name.clone()));
    if let Some(h) = hash {
        m.insert("password".into(), Value::String(h.to_string()));
    }
    if !user.networks.is_empty() {
        m.insert("networks".into(), strings(&user.networks));
    }
    m.insert("senders".into(), strings(&user.senders));
    if let Some(r) = &user.rate_limits {
        m.insert("rate_limits".into(), limits(r));
    }
    if user.disabled {
        m.insert("disabled".into(), Value::Bool(true));
    }
    Value::Mapping(m)
}

/// Applies `change` to an existing entry; `hash` is the new password hash, if the
/// change sets a password. Keys the change does not name (such as
/// `allow_any_header_from`) stay as they are.
pub(super) fn apply_change(entry: &mut Mapping, change: &UserChange, hash: Option<&str>) {
    if let Some(h) = hash {
        entry.insert("password".into(), Value::String(h.to_string()));
    }
    if let Some(s) = &change.senders {
        entry.insert("senders".into(), strings(s));
    }
    match &change.networks {
        Some(n) if n.is_empty() => {
            entry.shift_remove("networks");
        }
        Some(n) => {
            entry.insert("networks".into(), strings(n));
        }
        None => {}
    }
    match &change.rate_limits {
        Some(Some(r)) => {
            entry.insert("rate_limits".into(), limits(r));
        }
        Some(None) => {
            entry.shift_remove("rate_limits");
        }
        None => {}
    }
    match change.disabled {
        Some(true) => {
            entry.insert("disabled".into(), Value::Bool(true));
        }
        Some(false) => {
            entry.shift_remove("disabled");
        }
        None => {}
    }
}

/// The problems about entry `index`, as reasons for whoever asked: without the
/// file's path, and `users[i].senders[0]` shortened to `senders[0]`. Problems about
/// other entries (a network another user has) are kept, with their key.
pub(super) fn reasons(problems: &Problems, index: usize) -> Vec<String> {
    let own = format!("users[{index}]");
    problems
        .0
        .iter()
        .map(|p| {
            let key = p.key.strip_prefix(&own).map(|k| k.trim_start_matches('.'));
            match key {
                Some("") => p.why.clone(),
                Some(k) => format!("{k}: {}", p.why),
                None if p.key.is_empty() => p.why.clone(),
                None => format!("{}: {}", p.key, p.why),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_panel_would_make_pass_and_hostile_ones_do_not() {
        for ok in ["wp-site1", "shop_2", "alerts@site.example", "a.b+c"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            "../etc",
            "a/b",
            "a b",
            "a\nb",
            "a\u{1b}[31m",
            "-x",
            ".x",
            "ü",
            long.as_str(),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_name(&"a".repeat(MAX_NAME_LEN)), Ok(()));
    }

    #[test]
    fn only_argon2id_hashes_are_taken() {
        let h = crate::auth::hash_password("x").unwrap();
        assert_eq!(check_argon2id(&h), Ok(()));
        let i = h.replacen("$argon2id$", "$argon2i$", 1);
        assert!(check_argon2id(&i).is_err());
        assert!(check_argon2id("$argon2id$garbage").is_err());
        assert!(check_argon2id("secret").is_err());
    }

    #[test]
    fn a_change_replaces_only_what_it_names() {
        let new = NewUser {
            name: "u".into(),
            senders: vec!["@a.example".into()],
            networks: vec!["192.0.2.0/24".into()],
            rate_limits: Some(RateLimitsInput {
                messages_per_hour: Some(5),
                ..Default::default()
            }),
            ..Default::default()
        };
        let Value::Mapping(mut m) = new_entry(&new, Some("$argon2id$h")) else {
            panic!()
        };
        m.insert("allow_any_header_from".into(), Value::Bool(true));
        let change = UserChange {
            senders: Some(vec!["@b.example".into()]),
            networks: Some(vec![]),
            rate_limits: Some(None),
            disabled: Some(true),
            ..Default::default()
        };
        apply_change(&mut m, &change, None);
        let yaml = serde_yaml::to_string(&m).unwrap();
        assert_eq!(
            yaml,
            "name: u\npassword: $argon2id$h\nsenders:\n- '@b.example'\nallow_any_header_from: true\ndisabled: true\n"
        );
    }

    #[test]
    fn reasons_name_the_field_not_the_file() {
        let mut p = Problems::default();
        let f = std::path::Path::new("/etc/postern/users.yaml");
        p.add(
            f,
            "users[2].senders[0]",
            "\"x\" is neither an address nor @domain",
        );
        p.add(f, "users[2]", "has neither a password nor networks");
        p.add(f, "users[0].networks[0]", "also user b's");
        assert_eq!(
            reasons(&p, 2),
            vec![
                "senders[0]: \"x\" is neither an address nor @domain",
                "has neither a password nor networks",
                "users[0].networks[0]: also user b's"
            ]
        );
    }
}
