//! A user's `senders` entry and a route's `match`: an exact address or a whole
//! `@domain`, parsed and normalized. Matching an address against it is policy's
//! (`policy::senders`).

use std::fmt;

/// One entry of a user's `senders` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderRule {
    /// `alerts@site2.example`: this address only.
    Address(String),
    /// `@site1.example`: any address at this domain (not its subdomains).
    Domain(String),
}

impl SenderRule {
    /// Parses `user@domain` or `@domain`.
    pub fn parse(s: &str) -> Result<SenderRule, String> {
        let s = s.trim();
        let Some(at) = s.rfind('@') else {
            return Err(format!("{s:?} is neither an address nor @domain"));
        };
        let (local, domain) = (&s[..at], &s[at + 1..]);
        if !is_domain_like(domain) {
            return Err(format!("{s:?} has no valid domain"));
        }
        if local.contains(['<', '>', ' ']) {
            return Err(format!("{s:?} is not a plain address"));
        }
        let domain = normalize_domain(domain);
        if local.is_empty() {
            Ok(SenderRule::Domain(domain))
        } else {
            Ok(SenderRule::Address(format!(
                "{}@{}",
                local.to_lowercase(),
                domain
            )))
        }
    }
}

/// A domain as a sender rule may name it: dot-separated labels of letters (any
/// script: an IDN in its U-label form), digits, `-` and `_`, with an optional root
/// dot; or an address literal in brackets. No wildcard: `@*` would match nothing
/// and looks as if it matched everything.
fn is_domain_like(domain: &str) -> bool {
    if let Some(literal) = domain.strip_prefix('[') {
        return literal.strip_suffix(']').is_some_and(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".:".contains(c))
        });
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        })
}

impl fmt::Display for SenderRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SenderRule::Address(a) => f.write_str(a),
            SenderRule::Domain(d) => write!(f, "@{d}"),
        }
    }
}

/// Lower-case, without a trailing root dot.
pub fn normalize_domain(d: &str) -> String {
    d.trim_end_matches('.').to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors() {
        for bad in [
            "nodomain",
            "a@",
            "@",
            "a b@c.example",
            "@.example",
            "<a@b.example>",
            "@*",
            "@*.example",
            "a@exa%mple.com",
            "@a..example",
            "@[]",
            "@[1.2.3.4",
        ] {
            assert!(SenderRule::parse(bad).is_err(), "{bad:?}");
        }
        for good in [
            "@bücher.example",
            "a@[192.0.2.1]",
            "@ex.com.",
            "a@my_host.example",
        ] {
            assert!(SenderRule::parse(good).is_ok(), "{good:?}");
        }
        assert_eq!(SenderRule::parse("@EX.com").unwrap().to_string(), "@ex.com");
    }
}
