//! Whether a key's DNS record is published and matches, for `postern dkim list`
//! and `postern doctor`. The lookup itself is [`crate::dns`]'s.

use crate::dns::Answer;
use mail_auth::MessageAuthenticator;
use std::fmt;

/// What DNS says about one key's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// A DKIM record with this key's public key.
    Matches,
    /// No TXT record at the name.
    Missing,
    /// A DKIM record with another key, or another key type; what it says.
    Differs(String),
    /// The lookup failed (timeout, SERVFAIL…): nothing is known.
    Unknown(String),
}

impl fmt::Display for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Published::Matches => f.write_str("published, matches this key"),
            Published::Missing => f.write_str("NOT PUBLISHED: add the TXT record above"),
            Published::Differs(d) => write!(f, "DIFFERS from this key: DNS has {d}"),
            Published::Unknown(e) => write!(f, "cannot check: {e}"),
        }
    }
}

/// Looks up `name`'s TXT records and compares the DKIM one with `algorithm`
/// (`rsa`, `ed25519`) and `public_key` (the `p=` value, base64).
pub async fn check(
    dns: &MessageAuthenticator,
    name: &str,
    algorithm: &str,
    public_key: &str,
) -> Published {
    verdict(&crate::dns::txt(dns, name).await, algorithm, public_key)
}

/// The verdict on what DNS answered at a key's name (pure, for tests and for
/// `postern doctor`, which does its own lookups).
pub fn verdict(answer: &Answer<Vec<String>>, algorithm: &str, public_key: &str) -> Published {
    match answer {
        Answer::Found(records) => compare(records, algorithm, public_key),
        Answer::NoRecord | Answer::NoDomain => Published::Missing,
        Answer::Failed(e) => Published::Unknown(e.clone()),
    }
}

/// The verdict on the TXT records found at a key's name (pure, for tests).
pub fn compare(records: &[String], algorithm: &str, public_key: &str) -> Published {
    let dkim: Vec<&String> = (records.iter())
        .filter(|r| tag(r, "v").is_none_or(|v| v == "DKIM1") && tag(r, "p").is_some())
        .collect();
    let Some(first) = dkim.first() else {
        return Published::Missing;
    };
    let matches = |r: &&String| {
        tag(r, "k").unwrap_or_else(|| "rsa".into()) == algorithm
            && tag(r, "p").as_deref() == Some(public_key)
    };
    if dkim.iter().any(matches) {
        return Published::Matches;
    }
    let k = tag(first, "k").unwrap_or_else(|| "rsa".into());
    let p = tag(first, "p").unwrap_or_default();
    let shown = if p.is_empty() {
        "an empty p= (the key is revoked)".to_string()
    } else {
        format!("k={k}, p={}…", p.chars().take(24).collect::<String>())
    };
    Published::Differs(shown)
}

/// A tag's value in a `tag=value; …` record, whitespace removed (RFC 6376 §3.2
/// allows folding whitespace anywhere in base64).
fn tag(record: &str, name: &str) -> Option<String> {
    record.split(';').find_map(|t| {
        let (k, v) = t.split_once('=')?;
        (k.trim() == name).then(|| v.chars().filter(|c| !c.is_whitespace()).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_compared_by_key_type_and_public_key() {
        let rec = |s: &str| vec![s.to_string()];
        assert_eq!(
            compare(&rec("v=DKIM1; k=rsa; p=AB CD"), "rsa", "ABCD"),
            Published::Matches
        );
        // k= defaults to rsa; another TXT record at the name is ignored.
        let two = vec!["google-site-verification=x".into(), "p=ABCD".into()];
        assert_eq!(compare(&two, "rsa", "ABCD"), Published::Matches);
        assert_eq!(compare(&[], "rsa", "ABCD"), Published::Missing);
        assert_eq!(
            compare(&rec("v=spf1 -all"), "rsa", "ABCD"),
            Published::Missing
        );
        assert!(matches!(
            compare(&rec("v=DKIM1; k=rsa; p=OTHER"), "rsa", "ABCD"),
            Published::Differs(_)
        ));
        assert!(matches!(
            compare(&rec("v=DKIM1; k=ed25519; p=ABCD"), "rsa", "ABCD"),
            Published::Differs(_)
        ));
        assert_eq!(
            compare(&rec("v=DKIM1; p="), "rsa", "ABCD"),
            Published::Differs("an empty p= (the key is revoked)".into())
        );
    }
}
