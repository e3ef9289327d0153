//! Microsoft Graph `sendMail`: the MIME message, base64, as `text/plain`, with the
//! entry's bearer token, to `{graph_url}/users/{username}/sendMail`.
//!
//! Graph delivers to the recipients the message's header names, not to an envelope.
//! So envelope recipients that the header does not name are added as `Bcc:`, and a
//! message whose header names someone outside the envelope is refused: Graph would
//! deliver to them, past the user's recipient quota and the client's intent.
//!
//! `202` is delivered; `401` drops the token and tries once more with a new one;
//! `429` waits out a short `Retry-After` once, then is temporary, as `5xx` are;
//! other `4xx` are permanent.

use super::oauth::TokenSource;
use super::outcome::Failed;
use crate::proto::address::Mailbox;
use crate::proto::header::{Field, fields, header_end};
use crate::proto::mailbox_list::parse_recipient_list;
use crate::proto::printable::Printable;
use crate::proto::reply::{Esc, Reply};
use base64::Engine;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The largest message Graph takes in one request: its 4 MB limit, base64 (4/3),
/// less room for the `Bcc:` Postern may add.
pub const MAX_MESSAGE: u64 = 2_900_000;

/// What Postern may add to an accepted message before it goes to Graph (DKIM
/// signatures, the `Bcc:` header): room kept within Graph's limit, so that a message
/// accepted at [`MAX_MESSAGE`] is never bounced for its size afterwards.
pub const ADDED_ROOM: u64 = 64 * 1024;

/// The longest `Retry-After` waited out within one attempt.
const SHORT_RETRY: Duration = Duration::from_secs(30);

/// One Graph endpoint: a mailbox that sends.
pub struct Graph {
    http: reqwest::Client,
    /// `{graph_url}/users/{username}/sendMail`, the user part encoded.
    url: reqwest::Url,
    tokens: Arc<TokenSource>,
    /// For logs.
    pub name: String,
}

/// Why a message cannot go to Graph as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsendable {
    TooLarge,
    /// A `To:`, `Cc:` or `Bcc:` that cannot be read strictly.
    UnreadableRecipients,
    /// The header names this address, which is not an envelope recipient.
    NotInEnvelope(String),
}

impl Unsendable {
    /// The reply for it: permanent, since the message itself is the problem.
    pub fn reply(&self) -> Reply {
        match self {
            Unsendable::TooLarge => Reply::new(
                552,
                Esc(5, 3, 4),
                format!("Message too large for Microsoft Graph (at most {MAX_MESSAGE} bytes)"),
            ),
            Unsendable::UnreadableRecipients => Reply::new(
                554,
                Esc(5, 6, 0),
                "Message refused: a To, Cc or Bcc header cannot be read",
            ),
            Unsendable::NotInEnvelope(a) => Reply::new(
                554,
                Esc(5, 7, 1),
                format!(
                    "Message refused: the header names <{}>, which is not a recipient of this transaction",
                    Printable(a)
                ),
            ),
        }
    }
}

/// The envelope recipients (lowercased) that the header's `To:`, `Cc:` and `Bcc:`
/// name; an error when the header names anyone else or cannot be read. Pure.
pub fn named_recipients(fields: &[Field], rcpts: &[String]) -> Result<HashSet<String>, Unsendable> {
    let envelope: HashSet<String> = rcpts.iter().map(|r| r.to_lowercase()).collect();
    let mut named = HashSet::new();
    for f in fields
        .iter()
        .filter(|f| f.is("To") || f.is("Cc") || f.is("Bcc"))
    {
        let list = parse_recipient_list(f.value).map_err(|_| Unsendable::UnreadableRecipients)?;
        for m in list.iter().map(Mailbox::wire) {
            let key = m.to_lowercase();
            if !envelope.contains(&key) {
                return Err(Unsendable::NotInEnvelope(m));
            }
            named.insert(key);
        }
    }
    Ok(named)
}

/// The message as Graph must get it: every envelope recipient the header does not
/// name added as `Bcc:`. Pure.
pub fn prepare(message: &[u8], rcpts: &[String]) -> Result<Vec<u8>, Unsendable> {
    if message.len() as u64 > MAX_MESSAGE + ADDED_ROOM {
        return Err(Unsendable::TooLarge);
    }
    let end = header_end(message).unwrap_or(message.len());
    let head = message[..end]
        .strip_suffix(b"\r\n")
        .unwrap_or(&message[..end]);
    let fields = fields(head).map_err(|_| Unsendable::UnreadableRecipients)?;
    let named = named_recipients(&fields, rcpts)?;
    let hidden: Vec<&str> = rcpts
        .iter()
        .filter(|r| !named.contains(&r.to_lowercase()))
        .map(String::as_str)
        .collect();
    let mut out = Vec::with_capacity(message.len() + 64 * hidden.len());
    if !hidden.is_empty() {
        // One address a line, folded: no line grows past RFC 5322's limit.
        out.extend_from_slice(b"Bcc: ");
        out.extend_from_slice(hidden.join(",\r\n ").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(message);
    Ok(out)
}

impl Graph {
    pub fn new(
        http: reqwest::Client,
        graph_url: &str,
        username: &str,
        tokens: Arc<TokenSource>,
    ) -> Result<Graph, String> {
        let mut url = reqwest::Url::parse(graph_url).map_err(|e| format!("graph_url: {e}"))?;
        url.path_segments_mut()
            .map_err(|_| "graph_url cannot take a path".to_string())?
            .pop_if_empty()
            .extend(["users", username, "sendMail"]);
        Ok(Graph {
            http,
            name: format!("graph:{username}"),
            url,
            tokens,
        })
    }

    /// Sends `message` (already [`prepare`]d). `Ok` once Graph answered `202`.
    pub async fn send(&self, message: &[u8]) -> Result<Reply, Failed> {
        let body = base64::engine::general_purpose::STANDARD.encode(message);
        let mut token_refused = false;
        let mut waited = false;
        loop {
            let token = self
                .tokens
                .token()
                .await
                .map_err(|e| Failed::Unavailable(e.into()))?;
            let answer = self
                .http
                .post(self.url.clone())
                .bearer_auth(token.expose())
                .header(reqwest::header::CONTENT_TYPE, "text/plain")
                .body(body.clone())
                .send()
                .await;
            let answer = match answer {
                Ok(a) => a,
                Err(e) => return Err(transient(format!("Graph unreachable: {}", e.without_url()))),
            };
            let status = answer.status().as_u16();
            let retry_after = retry_after(answer.headers());
            let body = super::http::body(answer).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            match status {
                // 202 as documented; any 2xx means Graph took it, and must not be
                // bounced.
                200..=299 => {
                    info!(graph = %self.name, status, "Graph accepted the message");
                    return Ok(Reply::new(250, Esc(2, 0, 0), "Accepted by Microsoft Graph"));
                }
                401 if !token_refused => {
                    self.tokens.refused(&token).await;
                    token_refused = true;
                }
                429 if !waited && retry_after.is_some_and(|d| d <= SHORT_RETRY) => {
                    let wait = retry_after.unwrap_or_default();
                    warn!(graph = %self.name, wait_s = wait.as_secs(), "Graph is throttling; waiting once");
                    tokio::time::sleep(wait).await;
                    waited = true;
                }
                _ => return Err(verdict(status, &text, retry_after)),
            }
        }
    }
}

/// A temporary failure with Graph's reason.
fn transient(why: String) -> Failed {
    Failed::Refused(Reply::new(451, Esc(4, 4, 1), why))
}

/// A temporary refusal, with Graph's `Retry-After` when it sent one.
fn temporary(reply: Reply, retry_after: Option<Duration>) -> Failed {
    match retry_after {
        Some(wait) => Failed::Later(reply, wait),
        None => Failed::Refused(reply),
    }
}

/// What a final status other than `202` means for the message. Pure.
fn verdict(status: u16, body: &str, retry_after: Option<Duration>) -> Failed {
    let code = graph_error(body);
    match status {
        429 => temporary(
            Reply::new(
                451,
                Esc(4, 7, 0),
                format!(
                    "Graph is throttling (429 {code}); retry after {} s",
                    retry_after.map_or(0, |d| d.as_secs())
                ),
            ),
            retry_after,
        ),
        401 => transient(format!("Graph refused the access token (401 {code})")),
        // A redirect (not followed) or an informational status: graph_url is
        // wrong or something sits in between; not the message's fault.
        100..=399 => transient(format!("Graph answered {status} {code}; check graph_url")),
        500..=599 => temporary(
            Reply::new(451, Esc(4, 4, 1), format!("Graph failed ({status} {code})")),
            retry_after,
        ),
        _ => {
            // A 404 is the sending mailbox (the entry's `username`) not found, not
            // a recipient: the system's fault, 5.7.0 rather than 5.1.1.
            let (reply, esc) = match status {
                403 | 404 => (554, Esc(5, 7, 0)),
                413 => (552, Esc(5, 3, 4)),
                _ => (554, Esc(5, 0, 0)),
            };
            Failed::Refused(Reply::new(
                reply,
                esc,
                format!("Graph refused the message ({status} {code})"),
            ))
        }
    }
}

/// Graph's error code (`{"error":{"code":"ErrorInvalidRecipients",...}}`), made safe
/// for a log line and a bounce.
fn graph_error(body: &str) -> String {
    let code: String = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(80)
        .collect();
    if code.is_empty() {
        "no error code".into()
    } else {
        code
    }
}

/// `Retry-After` in seconds (Graph does not send dates).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcpts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn envelope_only_recipients_become_bcc() {
        let msg =
            b"From: a@x.example\r\nTo: B <b@y.example>, c@y.example\r\nSubject: s\r\n\r\nbody\r\n";
        let out = prepare(
            msg,
            &rcpts(&[
                "b@y.example",
                "C@Y.example",
                "d@z.example",
                "\"e f\"@z.example",
            ]),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("Bcc: d@z.example,\r\n \"e f\"@z.example\r\nFrom: a@x.example\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nbody\r\n"));
        // Everyone named: nothing added.
        assert_eq!(
            prepare(msg, &rcpts(&["b@y.example", "c@y.example"])).unwrap(),
            msg
        );
        // An empty group names nobody.
        let undisclosed = b"To: undisclosed-recipients:;\r\n\r\nx\r\n";
        assert!(
            prepare(undisclosed, &rcpts(&["b@y.example"]))
                .unwrap()
                .starts_with(b"Bcc: b@y.example\r\nTo:")
        );
    }

    #[test]
    fn a_header_recipient_outside_the_envelope_is_refused() {
        for (msg, why) in [
            (
                &b"To: b@y.example, boss@y.example\r\n\r\nx\r\n"[..],
                Unsendable::NotInEnvelope("boss@y.example".into()),
            ),
            (
                b"To: b@y.example\r\nCc: c@y.example\r\n\r\nx\r\n",
                Unsendable::NotInEnvelope("c@y.example".into()),
            ),
            (
                b"To: b@y.example\r\nBCC: (hidden) <d@y.example>\r\n\r\nx\r\n",
                Unsendable::NotInEnvelope("d@y.example".into()),
            ),
            (
                b"To: <b@y.example> <boss@y.example>\r\n\r\nx\r\n",
                Unsendable::UnreadableRecipients,
            ),
            (
                b"To: b@y.example\r\n bad line\r\nnot a field\r\n\r\nx\r\n",
                Unsendable::UnreadableRecipients,
            ),
        ] {
            assert_eq!(
                prepare(msg, &rcpts(&["b@y.example"])),
                Err(why.clone()),
                "{}",
                String::from_utf8_lossy(msg)
            );
            let r = why.reply();
            assert!(r.is_permanent());
        }
        let big = vec![b'x'; (MAX_MESSAGE + ADDED_ROOM) as usize + 1];
        assert_eq!(
            prepare(&big, &rcpts(&["b@y.example"])),
            Err(Unsendable::TooLarge)
        );
        assert_eq!(Unsendable::TooLarge.reply().esc, Some(Esc(5, 3, 4)));
    }

    /// Each final status and whether it bounces (permanent) or waits (temporary).
    #[test]
    fn statuses_map_as_the_interface_says() {
        let body = r#"{"error":{"code":"ErrorInvalidRecipients","message":"x"}}"#;
        for (status, permanent, esc) in [
            (400, true, Esc(5, 0, 0)),
            (403, true, Esc(5, 7, 0)),
            (404, true, Esc(5, 7, 0)),
            (413, true, Esc(5, 3, 4)),
            (429, false, Esc(4, 7, 0)),
            (401, false, Esc(4, 4, 1)),
            (301, false, Esc(4, 4, 1)),
            (307, false, Esc(4, 4, 1)),
            (500, false, Esc(4, 4, 1)),
            (503, false, Esc(4, 4, 1)),
        ] {
            let (Failed::Refused(r) | Failed::Later(r, _)) =
                verdict(status, body, Some(Duration::from_secs(60)))
            else {
                panic!("{status}: expected a reply");
            };
            assert_eq!(
                (r.is_permanent(), r.esc),
                (permanent, Some(esc)),
                "{status}: {r}"
            );
            assert!(r.text.contains(&status.to_string()), "{r}");
        }
        let Failed::Refused(r) = verdict(400, body, None) else {
            panic!()
        };
        assert!(r.text.contains("ErrorInvalidRecipients"), "{r}");
        // Whatever Graph says is reduced to printable ASCII.
        assert_eq!(graph_error(r#"{"error":{"code":"a\r\nb c"}}"#), "abc");
        assert_eq!(graph_error("<html>"), "no error code");
        assert_eq!(
            graph_error(r#"{"error":{"code":" \r\n"}}"#),
            "no error code"
        );
        // A 429's or 5xx's Retry-After goes with it, for the queue.
        for status in [429, 500, 503] {
            assert!(matches!(
                verdict(status, body, Some(Duration::from_secs(60))),
                Failed::Later(_, d) if d == Duration::from_secs(60)
            ));
            assert!(matches!(verdict(status, body, None), Failed::Refused(_)));
        }
        // 429's reason says "throttl", which slows the queue down.
        let Failed::Refused(r) = verdict(429, "", None) else {
            panic!()
        };
        assert!(super::super::outcome::is_throttle(&r, &[]));
    }
}
