//! `smarthost.oauth2`: how Postern gets an OAuth 2.0 access token for a smarthost
//! (Microsoft 365 client credentials, or a Google refresh token). The secrets are
//! read once, at start, like the smarthost password.

use super::ctx::Ctx;
use crate::secret::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A validated `oauth2` block.
#[derive(Debug, Clone)]
pub struct OAuth2 {
    /// The token endpoint (`https://`).
    pub token_url: String,
    pub client_id: String,
    /// Sent with either grant when configured (Google's refresh grant needs it too).
    pub client_secret: Option<Secret>,
    /// With it, `grant_type=refresh_token`; without, `client_credentials`.
    pub refresh_token: Option<Secret>,
    pub scope: Option<String>,
    /// The files the secrets came from, for the permission audit.
    pub secret_files: Vec<PathBuf>,
}

impl OAuth2 {
    /// The OAuth 2.0 grant this block asks for.
    pub fn grant_type(&self) -> &'static str {
        if self.refresh_token.is_some() {
            "refresh_token"
        } else {
            "client_credentials"
        }
    }
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOAuth2 {
    token_url: String,
    client_id: String,
    client_secret_file: Option<PathBuf>,
    refresh_token_file: Option<PathBuf>,
    scope: Option<String>,
}

/// Whether `url` is an `https://` URL with a host.
pub(super) fn is_https_url(url: &str) -> bool {
    url.strip_prefix("https://").is_some_and(|rest| {
        !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace)
    })
}

pub(super) fn validate(cx: &mut Ctx, raw: RawOAuth2, key: &str) -> Option<OAuth2> {
    let before = cx.problems.len();
    if !is_https_url(&raw.token_url) {
        cx.add(
            &format!("{key}.token_url"),
            format!("{:?} is not an https:// URL", raw.token_url),
        );
    }
    if raw.client_id.trim().is_empty() {
        cx.add(&format!("{key}.client_id"), "must not be empty");
    }
    let mut secret_files = Vec::new();
    let mut read = |cx: &mut Ctx, name: &str, file: Option<PathBuf>| {
        let file = cx.resolve(file?);
        let secret = read_secret(cx, &format!("{key}.{name}"), &file);
        secret_files.push(file);
        secret
    };
    let client_secret = read(cx, "client_secret_file", raw.client_secret_file);
    let refresh_token = read(cx, "refresh_token_file", raw.refresh_token_file);
    match (&client_secret, &refresh_token) {
        (None, None) if !cx.has_problem(&format!("{key}.client_secret_file")) => cx.add(
            key,
            "needs client_secret_file (client credentials, Microsoft 365) or refresh_token_file (Google)",
        ),
        (Some(_), None) if raw.scope.is_none() => cx.add(
            &format!("{key}.scope"),
            "needed for client credentials, e.g. https://outlook.office365.com/.default",
        ),
        _ => {}
    }
    (cx.problems.len() == before).then(|| OAuth2 {
        token_url: raw.token_url,
        client_id: raw.client_id,
        client_secret,
        refresh_token,
        scope: raw.scope,
        secret_files,
    })
}

/// A secret file's contents without the line end, which must not be empty.
pub(super) fn read_secret(cx: &mut Ctx, key: &str, file: &Path) -> Option<Secret> {
    match std::fs::read_to_string(file).map(zeroize::Zeroizing::new) {
        Ok(text) => {
            let s = text.trim_end_matches(['\r', '\n']).to_string();
            if s.is_empty() {
                cx.add(key, format!("{} is empty", file.display()));
            }
            Some(Secret::new(s))
        }
        Err(e) => {
            cx.add(key, format!("cannot read {}: {e}", file.display()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_https_url;

    #[test]
    fn only_https_urls_with_a_host_pass() {
        for ok in [
            "https://login.microsoftonline.com/T/oauth2/v2.0/token",
            "https://127.0.0.1:8443/token",
        ] {
            assert!(is_https_url(ok), "{ok}");
        }
        for bad in [
            "http://x/token",
            "https://",
            "https:///x",
            "ftp://x",
            "https://a b/",
        ] {
            assert!(!is_https_url(bad), "{bad}");
        }
    }
}
