//! Per-domain sending limits: the users file's `domains:` list (or the
//! `postern_domains` table) and the config's `domain_rate_limits` default.
//!
//! A domain is counted under one key whatever form a client writes it in: the
//! A-label (punycode), lower-case, without a trailing dot, so `Bücher.example`,
//! `xn--bcher-kva.example` and `BÜCHER.EXAMPLE.` are one domain and one quota.

use super::{Problems, RateLimits, RawRateLimits};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// One `domains:` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDomain {
    name: String,
    #[serde(default)]
    rate_limits: Option<RawRateLimits>,
}

/// The key a domain is counted under: its A-label, lower-case, without a root dot.
/// A name IDNA refuses (an address literal, say) is only lower-cased, which is
/// still one key per spelling-insensitive name.
pub fn domain_key(domain: &str) -> String {
    let d = domain.trim().trim_end_matches('.');
    match idna::domain_to_ascii(d) {
        Ok(a) if !a.is_empty() => a,
        _ => d.to_lowercase(),
    }
}

/// The domain of an address (after its last `@`) as a [`domain_key`]; `None`
/// for the null sender or an address without a domain.
pub fn address_domain(address: &str) -> Option<String> {
    let at = address.rfind('@')?;
    let d = &address[at + 1..];
    (!d.is_empty()).then(|| domain_key(d))
}

/// A domain name from the users file or the API, checked: the reason if it is
/// not one a sender could use.
pub fn check_domain_name(name: &str) -> Result<String, String> {
    let n = name.trim();
    if n.is_empty() || n.contains(['@', ' ', '<', '>', '/', '[', ']']) || n.starts_with('.') {
        return Err(format!("{name:?} is not a domain name"));
    }
    if n.chars().any(char::is_control) {
        return Err("a domain name has no control characters".into());
    }
    let n = n.trim_end_matches('.');
    match idna::domain_to_ascii(n) {
        Ok(a) if !a.is_empty() && a.len() <= 253 => Ok(a),
        _ => Err(format!("{name:?} is not a valid domain name")),
    }
}

/// Parses the `domains:` list into limits by [`domain_key`]; a listed domain's
/// keys override `domain_rate_limits` key by key when looked up, so only the keys
/// written are kept here.
pub(super) fn parse_domains(
    raw: Vec<RawDomain>,
    path: &Path,
    problems: &mut Problems,
) -> HashMap<String, RateLimits> {
    let mut out = HashMap::new();
    for (i, d) in raw.into_iter().enumerate() {
        let key = format!("domains[{i}].name");
        let name = match check_domain_name(&d.name) {
            Ok(n) => n,
            Err(e) => {
                problems.add(path, &key, e);
                continue;
            }
        };
        let limits = d
            .rate_limits
            .map(|r| r.over(&RateLimits::default()))
            .unwrap_or_default();
        if out.insert(name.clone(), limits).is_some() {
            problems.add(path, &key, format!("domain {name:?} is listed twice"));
        }
    }
    out
}

impl RateLimits {
    /// These limits, falling back to `fallback` for keys not set.
    pub fn or(&self, fallback: &RateLimits) -> RateLimits {
        RateLimits {
            messages_per_hour: self.messages_per_hour.or(fallback.messages_per_hour),
            recipients_per_hour: self.recipients_per_hour.or(fallback.recipients_per_hour),
            recipients_per_day: self.recipients_per_day.or(fallback.recipients_per_day),
        }
    }

    /// No limit at all.
    pub fn is_unlimited(&self) -> bool {
        *self == RateLimits::default()
    }
}

/// The limits that apply to `domain` (a [`domain_key`]): its own entry over the
/// default, else the default; `None` when nothing limits it.
pub fn limits_for(
    listed: &HashMap<String, RateLimits>,
    default: Option<&RateLimits>,
    domain: &str,
) -> Option<RateLimits> {
    let empty = RateLimits::default();
    let limits = match listed.get(domain) {
        Some(own) => own.or(default.unwrap_or(&empty)),
        None => default?.clone(),
    };
    (!limits.is_unlimited()).then_some(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_per_domain_whatever_its_spelling() {
        assert_eq!(domain_key("Site1.Example."), "site1.example");
        assert_eq!(domain_key("bücher.example"), "xn--bcher-kva.example");
        assert_eq!(domain_key("BÜCHER.example"), "xn--bcher-kva.example");
        assert_eq!(domain_key("xn--bcher-kva.example"), "xn--bcher-kva.example");
        assert_eq!(
            address_domain("A@Bücher.Example"),
            Some("xn--bcher-kva.example".into())
        );
        assert_eq!(address_domain(""), None);
        assert_eq!(address_domain("a@"), None);
        assert_eq!(address_domain("a@[192.0.2.1]"), Some("[192.0.2.1]".into()));
    }

    #[test]
    fn domain_names_are_checked() {
        assert_eq!(check_domain_name("Site1.example").unwrap(), "site1.example");
        for bad in [
            "",
            "@site1.example",
            "a b.example",
            ".example",
            "a/b",
            "x\u{7}y",
        ] {
            assert!(check_domain_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_listed_domain_overrides_the_default_key_by_key() {
        let default = RateLimits {
            messages_per_hour: Some(100),
            recipients_per_day: Some(1000),
            ..RateLimits::default()
        };
        let mut listed = HashMap::new();
        listed.insert(
            "site1.example".to_string(),
            RateLimits {
                messages_per_hour: Some(5),
                ..RateLimits::default()
            },
        );
        let l = limits_for(&listed, Some(&default), "site1.example").unwrap();
        assert_eq!(l.messages_per_hour, Some(5));
        assert_eq!(l.recipients_per_day, Some(1000));
        assert_eq!(
            limits_for(&listed, Some(&default), "other.example"),
            Some(default)
        );
        assert_eq!(limits_for(&listed, None, "other.example"), None);
        assert_eq!(
            limits_for(&listed, None, "site1.example")
                .unwrap()
                .messages_per_hour,
            Some(5)
        );
        listed.insert("open.example".into(), RateLimits::default());
        assert_eq!(limits_for(&listed, None, "open.example"), None);
    }

    #[test]
    fn the_users_file_lists_domains_once_each_by_their_key() {
        let parse = |text: &str| {
            let mut problems = Problems::default();
            let users = crate::config::parse_users(
                text,
                Path::new("users.yaml"),
                &RateLimits::default(),
                &mut problems,
            );
            (users, problems)
        };
        let (users, _) = parse(
            "domains:\n  - name: Bücher.Example\n    rate_limits: { messages_per_hour: 3 }\n\
             \x20 - name: open.example\nusers: []\n",
        );
        let users = users.unwrap();
        let l = users.domain_limits("xn--bcher-kva.example", None).unwrap();
        assert_eq!(l.messages_per_hour, Some(3));
        assert_eq!(users.domains().len(), 2);
        let (users, problems) = parse(
            "domains:\n  - name: bücher.example\n  - name: XN--BCHER-KVA.example\n\
             \x20 - name: \"@x.example\"\n",
        );
        assert!(users.is_none());
        let all = problems.to_string();
        assert!(
            all.contains("domains[1].name") && all.contains("listed twice"),
            "{all}"
        );
        assert!(all.contains("domains[2].name"), "{all}");
        let (_, problems) =
            parse("domains:\n  - name: y.example\n    rate_limits: { messages: 1 }\n");
        assert!(problems.to_string().contains("unknown field"), "{problems}");
    }
}
