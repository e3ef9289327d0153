//! Which envelope senders a user may use: an exact address or a whole `@domain`.
//!
//! Matching ignores case in the domain (DNS is case-insensitive) and, deliberately,
//! in the local part too: every mailbox provider Postern relays to treats
//! `Alerts@` and `alerts@` as one mailbox, and operators write rules expecting that.
//! The rule itself, and its parsing, is config's (`config::SenderRule`).

pub use crate::config::SenderRule;
use crate::config::normalize_domain;

/// Matching is policy's: config only parses the rule.
impl SenderRule {
    /// Whether this rule allows `address` (a bare `local@domain`).
    pub fn allows(&self, address: &str) -> bool {
        let Some(at) = address.rfind('@') else {
            return false;
        };
        let (local, domain) = (&address[..at], &address[at + 1..]);
        if local.is_empty() {
            return false;
        }
        let domain = normalize_domain(domain);
        match self {
            SenderRule::Domain(d) => *d == domain,
            SenderRule::Address(a) => *a == format!("{}@{}", local.to_lowercase(), domain),
        }
    }
}

/// Whether any rule allows `address`. No rules: no sender is allowed.
pub fn sender_allowed(rules: &[SenderRule], address: &str) -> bool {
    rules.iter().any(|r| r.allows(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<SenderRule> {
        list.iter().map(|s| SenderRule::parse(s).unwrap()).collect()
    }

    #[test]
    fn matching_table() {
        let r = rules(&["@site1.example", "alerts@site2.example"]);
        let cases = [
            ("anyone@site1.example", true),
            ("Anyone@SITE1.Example", true),
            ("x@site1.example.", true),
            ("alerts@site2.example", true),
            ("ALERTS@site2.EXAMPLE", true),
            ("other@site2.example", false),
            ("x@sub.site1.example", false),
            ("x@site1.example.evil", false),
            ("x@evilsite1.example", false),
            ("site1.example", false),
            ("@site1.example", false),
            ("", false),
            ("alerts@site2.example@evil.example", false),
        ];
        for (addr, want) in cases {
            assert_eq!(sender_allowed(&r, addr), want, "{addr:?}");
        }
        assert!(!sender_allowed(&[], "a@b.example"));
    }

    #[test]
    fn utf8_addresses() {
        let r = rules(&["@b\u{fc}ro.example"]);
        assert!(sender_allowed(&r, "j\u{f6}rg@B\u{dc}RO.example"));
    }
}
