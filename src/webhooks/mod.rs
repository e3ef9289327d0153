//! Webhooks: what happened, POSTed as JSON to the panel's URLs (`admin.webhooks`),
//! each call signed ([`sign`]) and retried with exponential backoff and jitter.
//!
//! The events hub offers every event to the [`Dispatcher`], which never waits:
//! each call runs in a task of its own, at most [`MAX_IN_FLIGHT`] at once
//! (retries included); beyond that a call is dropped and counted
//! (`postern_webhook_calls_total{result="dropped"}`). Calls still waiting for a
//! retry at shutdown are lost. The secret never reaches a log, and neither does
//! the URL's path or query (which may hold a token): logs name the host.

mod payload;
pub mod sign;

use crate::config::Webhook;
use crate::events::Event;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Calls (each with its retries) under way at once.
pub const MAX_IN_FLIGHT: usize = 256;
/// Tries per call, the first included.
pub const MAX_ATTEMPTS: u32 = 6;
/// The wait before the first retry; it doubles after each (1 s, 2 s, 4 s, 8 s, 16 s).
const FIRST_RETRY: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends each event to the webhooks that asked for it.
pub struct Dispatcher {
    hooks: Vec<Arc<Webhook>>,
    client: reqwest::Client,
    slots: Arc<Semaphore>,
}

impl Dispatcher {
    /// `None` when no webhook is configured.
    pub fn new(hooks: &[Webhook]) -> Result<Option<Dispatcher>, String> {
        if hooks.is_empty() {
            return Ok(None);
        }
        let tls = crate::tls::client_config(None).map_err(|e| e.to_string())?;
        let mut tls = rustls::ClientConfig::clone(&tls);
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Postern/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot set up the webhook client: {e}"))?;
        Ok(Some(Dispatcher {
            hooks: hooks.iter().cloned().map(Arc::new).collect(),
            client,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }))
    }

    /// Starts a call to every webhook that asked for `event`; never waits.
    pub fn offer(&self, event: &Event) {
        let Some(name) = event.name() else { return };
        let body = payload::body(name, event, SystemTime::now());
        for hook in self
            .hooks
            .iter()
            .filter(|h| h.events.iter().any(|e| e == name))
        {
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                warn!(webhook = %host(&hook.url), event = name, "too many webhook calls under way; this one is dropped");
                metrics::counter!("postern_webhook_calls_total", "result" => "dropped")
                    .increment(1);
                continue;
            };
            let (client, hook, body) = (self.client.clone(), hook.clone(), body.clone());
            tokio::spawn(async move {
                call(&client, &hook, name, &body).await;
                drop(slot);
            });
        }
    }
}

/// One call with its retries.
async fn call(client: &reqwest::Client, hook: &Webhook, event: &str, body: &[u8]) {
    for attempt in 1..=MAX_ATTEMPTS {
        let why = match post(client, hook, body).await {
            Ok(()) => {
                debug!(webhook = %host(&hook.url), event, attempt, "webhook delivered");
                metrics::counter!("postern_webhook_calls_total", "result" => "delivered")
                    .increment(1);
                return;
            }
            Err(Failure::Permanent(why)) => {
                warn!(webhook = %host(&hook.url), event, attempt, error = %why, "webhook refused the call; not retried");
                metrics::counter!("postern_webhook_calls_total", "result" => "refused")
                    .increment(1);
                return;
            }
            Err(Failure::Temporary(why)) => why,
        };
        if attempt == MAX_ATTEMPTS {
            warn!(webhook = %host(&hook.url), event, attempts = attempt, error = %why, "webhook call failed; giving up");
            metrics::counter!("postern_webhook_calls_total", "result" => "failed").increment(1);
            return;
        }
        let wait = backoff(attempt, jitter());
        debug!(webhook = %host(&hook.url), event, attempt, error = %why, wait_ms = wait.as_millis() as u64, "webhook call failed; will retry");
        tokio::time::sleep(wait).await;
    }
}

enum Failure {
    /// Worth another try: no answer, 5xx, 408 or 429.
    Temporary(String),
    /// The receiver said no (any other 4xx, or a redirect, which is not followed).
    Permanent(String),
}

async fn post(client: &reqwest::Client, hook: &Webhook, body: &[u8]) -> Result<(), Failure> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let signature = sign::signature(hook.secret.expose().as_bytes(), now, body);
    let answer = client
        .post(&hook.url)
        .header("Content-Type", "application/json")
        .header("Postern-Signature", signature)
        .body(body.to_vec())
        .send()
        .await
        // Without the URL: it may carry a token.
        .map_err(|e| Failure::Temporary(e.without_url().to_string()))?;
    let status = answer.status();
    if status.is_success() {
        Ok(())
    } else if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        Err(Failure::Temporary(format!("HTTP {status}")))
    } else {
        Err(Failure::Permanent(format!("HTTP {status}")))
    }
}

/// The wait after failed attempt `attempt` (from 1): `FIRST_RETRY` doubling,
/// times `jitter` (0.75 to 1.25) so that calls failed together spread out.
fn backoff(attempt: u32, jitter: f64) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << (attempt - 1).min(10))
        .mul_f64(jitter)
}

/// A factor between 0.75 and 1.25 (not for anything secret).
fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    0.75 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX) / 2.0
}

/// The URL's host (and port), for logs.
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    // A user:password@ part is not for logs either.
    rest[..end].rsplit('@').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_the_jitter() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(5, 0.75), Duration::from_secs(12));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.75..=1.25).contains(&j), "{j}");
        }
    }

    #[test]
    fn logs_name_the_host_only() {
        assert_eq!(host("https://panel.example/hooks?token=x"), "panel.example");
        assert_eq!(host("http://u:p@127.0.0.1:8080/h"), "127.0.0.1:8080");
        assert_eq!(host("https://panel.example"), "panel.example");
    }
}
