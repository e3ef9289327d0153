//! `admin.webhooks`: where Postern POSTs what happened (a user suspended, a rate
//! limit reached, a message bounced), each signed with its own secret.
//!
//! ```yaml
//! admin:
//!   webhooks:
//!     - url: https://panel.example/hooks/postern
//!       secret_file: /etc/postern/webhook.secret
//!       events: [user.suspended, rate_limit.reached, message.bounced]
//! ```
//!
//! The list is read here from the `admin` mapping directly, whatever else that
//! section holds (`admin.rs` parses the API's own keys and lets `webhooks` through),
//! so the two parts do not depend on each other.

use super::ctx::Ctx;
use super::oauth2::read_secret;
use crate::secret::Secret;
use serde::Deserialize;
use std::path::PathBuf;

/// The events a webhook may ask for.
pub const WEBHOOK_EVENTS: &[&str] = &[
    "user.suspended",
    "user.unsuspended",
    "rate_limit.reached",
    "message.bounced",
];

/// One webhook: a URL, its signing secret, the events it gets.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    /// The file the secret was read from (audited like every secret).
    pub secret_file: PathBuf,
    /// The HMAC-SHA256 key for `Postern-Signature`.
    pub secret: Secret,
    /// Names from [`WEBHOOK_EVENTS`]; all of them when the key is left out.
    pub events: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret_file: PathBuf,
    events: Option<Vec<String>>,
}

/// An `http://` or `https://` URL with a host.
fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

/// `admin.webhooks`, if any.
pub(super) fn webhooks(cx: &mut Ctx) -> Vec<Webhook> {
    let Some(value) = cx.map.get("admin").and_then(|a| a.get("webhooks")).cloned() else {
        return Vec::new();
    };
    let raw: Vec<RawWebhook> = match serde_yaml::from_value(value) {
        Ok(r) => r,
        Err(e) => {
            cx.add("admin.webhooks", e.to_string());
            return Vec::new();
        }
    };
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, w)| webhook(cx, &format!("admin.webhooks[{i}]"), w))
        .collect()
}

fn webhook(cx: &mut Ctx, key: &str, raw: RawWebhook) -> Option<Webhook> {
    let before = cx.problems.len();
    if !is_http_url(&raw.url) {
        cx.add(
            &format!("{key}.url"),
            format!("{:?} is not an http:// or https:// URL", raw.url),
        );
    }
    let events = raw
        .events
        .unwrap_or_else(|| WEBHOOK_EVENTS.iter().map(|e| e.to_string()).collect());
    for e in &events {
        if !WEBHOOK_EVENTS.contains(&e.as_str()) {
            cx.add(
                &format!("{key}.events"),
                format!("unknown event {e:?} (known: {})", WEBHOOK_EVENTS.join(", ")),
            );
        }
    }
    let secret_file = cx.resolve(raw.secret_file);
    let secret = read_secret(cx, &format!("{key}.secret_file"), &secret_file);
    if cx.problems.len() != before {
        return None;
    }
    Some(Webhook {
        url: raw.url,
        secret_file,
        secret: secret?,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::is_http_url;

    #[test]
    fn webhook_urls_are_http_or_https_with_a_host() {
        for ok in ["https://panel.example/hooks", "http://127.0.0.1:8080/h"] {
            assert!(is_http_url(ok), "{ok}");
        }
        for bad in [
            "ftp://x",
            "https://",
            "http:///x",
            "https://a b",
            "panel.example",
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }
}

#[cfg(test)]
mod config_tests {
    use crate::config::delivery_log::tests::parse_in;

    #[test]
    fn webhooks_are_read_with_their_secrets_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hook.secret"), "s3cret\n").unwrap();
        let c = parse_in(
            dir.path(),
            "admin:\n  webhooks:\n    - url: https://panel.example/h\n      secret_file: hook.secret\n      events: [message.bounced]\n    - url: http://127.0.0.1:9/h\n      secret_file: hook.secret\n",
        )
        .unwrap();
        assert_eq!(c.webhooks.len(), 2);
        assert_eq!(c.webhooks[0].secret.expose(), "s3cret");
        assert_eq!(c.webhooks[0].events, ["message.bounced"]);
        assert_eq!(c.webhooks[1].events.len(), super::WEBHOOK_EVENTS.len());
        assert!(!format!("{:?}", c.webhooks[0]).contains("s3cret"));
        let e = parse_in(
            dir.path(),
            "admin:\n  webhooks:\n    - url: ftp://x\n      secret_file: missing.secret\n      events: [user.deleted]\n",
        )
        .unwrap_err();
        for key in [
            "admin.webhooks[0].url",
            "admin.webhooks[0].events",
            "admin.webhooks[0].secret_file",
        ] {
            assert!(e.iter().any(|p| p.contains(key)), "{key}: {e:?}");
        }
    }
}
