//! OAuth 2.0 access tokens for one smarthost entry: fetched once and shared by every
//! delivery, refreshed in the background before they expire, and dropped when the
//! smarthost refuses one.
//!
//! A token request is a form POST of `grant_type`, `client_id`, `client_secret`
//! and/or `refresh_token`, and `scope` to the entry's `token_url`; the JSON answer's
//! `access_token` is used until [`MARGIN`] before its `expires_in` runs out. Neither
//! the secrets nor the token ever reach a log: they are [`Secret`]s, and errors carry
//! only the endpoint's error code and description.

use crate::config::OAuth2;
use crate::lock::MutexExt;
use crate::proto::printable::Printable;
use crate::secret::Secret;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, watch};
use tracing::{info, warn};

/// A token is replaced this long before it expires (or at half its life, if that
/// is shorter).
pub const MARGIN: Duration = Duration::from_secs(300);

/// A token whose renewal failed is used until this long before it expires (or
/// the last tenth of its life, if that is shorter).
pub const USE_MARGIN: Duration = Duration::from_secs(30);

/// Why no token could be had. Always transient for the mail waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("token endpoint unreachable: {0}")]
    Unreachable(String),
    #[error("token endpoint refused the request ({status}): {error}")]
    Refused { status: u16, error: String },
    #[error("token endpoint sent an unreadable answer: {0}")]
    Malformed(String),
}

/// The answer of a token endpoint (RFC 6749 section 5.1).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// An error answer (RFC 6749 section 5.2).
#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Clone)]
struct Token {
    value: Arc<Secret>,
    /// When it should be replaced.
    renew_at: Instant,
    /// Until when it may still be used when no new one can be had: shortly
    /// before it expires.
    usable_until: Instant,
}

/// The shortest pause between two fetches by the background refresher, whatever
/// lifetime the endpoint grants.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// The access token of one smarthost entry.
pub struct TokenSource {
    http: reqwest::Client,
    config: OAuth2,
    /// Whose token this is, for logs: the entry's name.
    name: String,
    /// The token in use.
    current: std::sync::Mutex<Option<Token>>,
    /// Held across a fetch, so that concurrent deliveries wait for one request
    /// instead of each making their own.
    fetching: Mutex<()>,
    /// How many requests failed, and the last failure.
    last_failure: std::sync::Mutex<(u64, Option<TokenError>)>,
    /// How long one token request may take (the upstream command timeout: a
    /// message may be waiting on it).
    timeout: Duration,
}

impl TokenSource {
    pub fn new(
        http: reqwest::Client,
        config: OAuth2,
        name: String,
        timeout: Duration,
    ) -> TokenSource {
        TokenSource {
            http,
            config,
            name,
            current: std::sync::Mutex::new(None),
            fetching: Mutex::new(()),
            last_failure: std::sync::Mutex::new((0, None)),
            timeout,
        }
    }

    fn current(&self) -> Option<Token> {
        self.current.locked().clone()
    }

    /// A token valid for a while yet: the current one, or a fresh one. A token due
    /// for renewal but not expired is used while another task renews it, and when
    /// the endpoint cannot give a new one: a message waits for the endpoint only
    /// when there is no usable token.
    pub async fn token(&self) -> Result<Arc<Secret>, TokenError> {
        let now = Instant::now();
        let held = self.current();
        if let Some(t) = held.as_ref().filter(|t| t.renew_at > now) {
            return Ok(t.value.clone());
        }
        let usable = held.filter(|t| t.usable_until > now);
        if let (Some(t), Err(_)) = (&usable, self.fetching.try_lock()) {
            return Ok(t.value.clone());
        }
        match self.renew().await {
            Ok(value) => Ok(value),
            Err(e) => match self.current().filter(|t| t.usable_until > Instant::now()) {
                Some(t) => {
                    warn!(smarthost = %self.name, error = %Printable(&e), "cannot renew the access token; using the current one until it expires");
                    Ok(t.value.clone())
                }
                None => Err(e),
            },
        }
    }

    /// Fetches a new token unless another task just did (single flight).
    /// A task that waited for another's request shares its outcome, failure
    /// included, instead of asking again.
    async fn renew(&self) -> Result<Arc<Secret>, TokenError> {
        let seen = self.last_failure.locked().0;
        let _fetching = self.fetching.lock().await;
        if let Some(t) = self.current().filter(|t| t.renew_at > Instant::now()) {
            return Ok(t.value.clone());
        }
        {
            let failure = self.last_failure.locked();
            if failure.0 != seen
                && let Some(e) = &failure.1
            {
                return Err(e.clone());
            }
        }
        match self.fetch().await {
            Ok(fresh) => {
                let value = fresh.value.clone();
                *self.current.locked() = Some(fresh);
                Ok(value)
            }
            Err(e) => {
                // The detail (the endpoint's error code and description, which may
                // name the tenant and the app) goes to the log only; what reaches
                // `queue list` and delay notices is generic.
                warn!(smarthost = %self.name, error = %Printable(&e), "token request failed");
                let mut failure = self.last_failure.locked();
                *failure = (failure.0 + 1, Some(e.clone()));
                Err(e)
            }
        }
    }

    /// The smarthost refused `token`: forget it, unless another delivery has
    /// already replaced it.
    pub async fn refused(&self, token: &Arc<Secret>) {
        let mut current = self.current.locked();
        if current
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(&t.value, token))
        {
            warn!(smarthost = %self.name, "the smarthost refused the access token; fetching a new one");
            *current = None;
        }
    }

    /// Keeps a fresh token at hand until `shutdown`, so that no message waits for
    /// the token endpoint in the common case. Failures are retried with backoff;
    /// deliveries meanwhile use the current token while it lasts, or fetch for
    /// themselves.
    pub async fn keep_fresh(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_secs(5);
        loop {
            let wait = match self.current().map(|t| t.renew_at) {
                Some(at) if at > Instant::now() => (at - Instant::now()).max(MIN_REFRESH),
                _ => match self.renew().await {
                    Ok(_) => {
                        backoff = Duration::from_secs(5);
                        MIN_REFRESH
                    }
                    Err(e) => {
                        warn!(smarthost = %self.name, error = %Printable(&e), retry_s = backoff.as_secs(), "cannot get an access token");
                        let wait = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(300));
                        wait
                    }
                },
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// One request to the token endpoint.
    async fn fetch(&self) -> Result<Token, TokenError> {
        let c = &self.config;
        let mut form: Vec<(&str, &str)> =
            vec![("grant_type", c.grant_type()), ("client_id", &c.client_id)];
        if let Some(s) = &c.client_secret {
            form.push(("client_secret", s.expose()));
        }
        if let Some(r) = &c.refresh_token {
            form.push(("refresh_token", r.expose()));
        }
        if let Some(s) = &c.scope {
            form.push(("scope", s));
        }
        let started = Instant::now();
        let answer = self
            .http
            .post(&c.token_url)
            .timeout(self.timeout)
            .form(&form)
            .send()
            .await
            .map_err(|e| TokenError::Unreachable(e.without_url().to_string()))?;
        let status = answer.status();
        let body = super::http::body(answer)
            .await
            .map_err(|e| TokenError::Unreachable(e.without_url().to_string()))?;
        let token = read_answer(status.as_u16(), &body, started)?;
        info!(smarthost = %self.name, valid_s = token.renew_at.saturating_duration_since(started).as_secs(), "access token fetched");
        Ok(token)
    }
}

/// Reads a token endpoint's answer; pure, for tests.
fn read_answer(status: u16, body: &[u8], now: Instant) -> Result<Token, TokenError> {
    if !(200..300).contains(&status) {
        let error = match serde_json::from_slice::<ErrorAnswer>(body) {
            Ok(e) => match e.error_description {
                Some(d) => format!("{}: {}", e.error, first_line(&d)),
                None => e.error,
            },
            Err(_) => "no error code".into(),
        };
        return Err(TokenError::Refused { status, error });
    }
    let answer: TokenAnswer =
        serde_json::from_slice(body).map_err(|e| TokenError::Malformed(e.to_string()))?;
    if answer.access_token.is_empty() {
        return Err(TokenError::Malformed("empty access_token".into()));
    }
    // `expires_in` is a number, or a string holding one at some endpoints; an hour
    // when it is missing.
    let lifetime = match &answer.expires_in {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => Some(3600),
    }
    .ok_or_else(|| TokenError::Malformed("expires_in is not a number".into()))?;
    // A day at most: a hostile or broken endpoint's huge lifetime must not
    // overflow the clock (and a token is renewed daily anyway).
    let lifetime = Duration::from_secs(lifetime.min(86_400));
    let early = MARGIN.min(lifetime / 2);
    Ok(Token {
        value: Arc::new(Secret::new(answer.access_token)),
        renew_at: now + lifetime - early,
        usable_until: now + lifetime - USE_MARGIN.min(lifetime / 10),
    })
}

/// The first line of an endpoint's description, at most 200 characters.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(200).collect()
}

/// The XOAUTH2 initial response (before base64): `user=U ^A auth=Bearer T ^A ^A`.
pub fn xoauth2(user: &str, token: &Secret) -> Secret {
    Secret::new(format!(
        "user={user}\x01auth=Bearer {}\x01\x01",
        token.expose()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_rfc_6749_says() {
        // A huge lifetime from a broken endpoint is a day, not a panic.
        for huge in [
            &br#"{"access_token":"a","expires_in":18446744073709551615}"#[..],
            br#"{"access_token":"a","expires_in":1e30}"#,
        ] {
            let t = read_answer(200, huge, Instant::now()).unwrap();
            assert!(t.renew_at <= Instant::now() + Duration::from_secs(86_400));
        }
        let now = Instant::now();
        let t = read_answer(
            200,
            br#"{"token_type":"Bearer","expires_in":3599,"access_token":"eyJ0"}"#,
            now,
        )
        .unwrap();
        assert_eq!(t.value.expose(), "eyJ0");
        assert_eq!(t.renew_at - now, Duration::from_secs(3599 - 300));
        // Used past its renewal only while the endpoint cannot give a new one, and
        // not in its last 30 s.
        assert_eq!(t.usable_until - now, Duration::from_secs(3599 - 30));
        // A string lifetime (some endpoints), and a short one renewed at half-life.
        let t = read_answer(200, br#"{"access_token":"a","expires_in":"60"}"#, now).unwrap();
        assert_eq!(t.renew_at - now, Duration::from_secs(30));
        let t = read_answer(200, br#"{"access_token":"a","expires_in":60.0}"#, now).unwrap();
        assert_eq!(t.renew_at - now, Duration::from_secs(30));
        assert_eq!(t.usable_until - now, Duration::from_secs(54));
        let refused = read_answer(
            401,
            br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1"}"#,
            now,
        );
        match refused {
            Err(TokenError::Refused { status, error }) => {
                assert_eq!(status, 401);
                assert_eq!(
                    error,
                    "invalid_client: AADSTS7000215: Invalid client secret provided."
                );
            }
            _ => panic!("expected a refusal"),
        }
        for bad in [
            &b"{}"[..],
            b"not json",
            br#"{"access_token":""}"#,
            br#"{"access_token":"a","expires_in":"soon"}"#,
        ] {
            assert!(matches!(
                read_answer(200, bad, now),
                Err(TokenError::Malformed(_))
            ));
        }
        assert!(matches!(
            read_answer(503, b"<html>", now),
            Err(TokenError::Refused { status: 503, .. })
        ));
    }

    #[test]
    fn the_xoauth2_string_is_as_microsoft_and_google_document() {
        let s = xoauth2(
            "someone@example.com",
            &Secret::new("ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg".into()),
        );
        assert_eq!(
            crate::proto::sasl::encode(s.expose()),
            "dXNlcj1zb21lb25lQGV4YW1wbGUuY29tAWF1dGg9QmVhcmVyIHlhMjkudkY5ZGZ0NHFtVGMyTnZiM1JsY2tCaGRIUmhkbWx6ZEdFdVkyOXRDZwEB"
        );
    }
}
