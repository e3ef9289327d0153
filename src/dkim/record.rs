//! The DNS TXT record that publishes a key, as `postern dkim generate` prints it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::time::{SystemTime, UNIX_EPOCH};

/// A TXT record's strings hold at most this many bytes each (RFC 1035 §3.3).
pub const MAX_STRING: usize = 255;

/// Where the record goes: `SELECTOR._domainkey.DOMAIN`.
pub fn record_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{domain}")
}

/// The record's text: `v=DKIM1; k=rsa; p=BASE64`.
pub fn record_value(algorithm: &str, public_key: &[u8]) -> String {
    format!("v=DKIM1; k={algorithm}; p={}", STANDARD.encode(public_key))
}

/// `value` cut into strings of at most [`MAX_STRING`] bytes (it is ASCII), each
/// quoted: `"v=DKIM1; k=rsa; p=MIIB…" "…"`, as zone files and most DNS panels
/// take a long TXT record. Resolvers join the strings without a separator.
pub fn quoted_strings(value: &str) -> String {
    let parts: Vec<String> = value
        .as_bytes()
        .chunks(MAX_STRING)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    parts.join(" ")
}

/// The selector `postern dkim generate` picks when none is given: dated, so that
/// the next rotation gets a new one (`postern-202612`, `postern-202612-ed25519`).
pub fn default_selector(ed25519: bool, now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let t = mail_parser::DateTime::from_timestamp(secs as i64);
    let base = format!("postern-{:04}{:02}", t.year, t.month);
    if ed25519 {
        format!("{base}-ed25519")
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn long_values_are_cut_into_quoted_strings_of_at_most_255_bytes() {
        let value = record_value("rsa", &[7u8; 294]);
        assert!(value.len() > 255 && value.len() < 2 * 255);
        let quoted = quoted_strings(&value);
        let parts: Vec<&str> = quoted.split("\" \"").collect();
        assert_eq!(parts.len(), 2);
        let joined: String = parts.concat().trim_matches('"').to_string();
        assert_eq!(joined, value);
        assert_eq!(parts[0].trim_start_matches('"').len(), 255);
        // A short one stays one string; exactly 255 bytes too.
        assert_eq!(
            quoted_strings("v=DKIM1; k=ed25519; p=AA"),
            "\"v=DKIM1; k=ed25519; p=AA\""
        );
        let exact = "x".repeat(255);
        assert_eq!(quoted_strings(&exact), format!("\"{exact}\""));
        assert_eq!(quoted_strings(&"x".repeat(256)).matches('"').count(), 4);
    }

    #[test]
    fn names_and_default_selectors() {
        assert_eq!(
            record_name("s1", "site1.example"),
            "s1._domainkey.site1.example"
        );
        // 2026-12-02
        let at = UNIX_EPOCH + Duration::from_secs(1_796_212_800);
        assert_eq!(default_selector(false, at), "postern-202612");
        assert_eq!(default_selector(true, at), "postern-202612-ed25519");
    }
}
