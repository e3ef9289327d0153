//! What one delivery attempt decided for each recipient: pure bookkeeping, shared
//! by every transport, with table tests.

use super::client::UpstreamError;
use crate::proto::reply::Reply;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// One recipient that failed for good, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub rcpt: String,
    /// Enhanced status, e.g. `5.1.1`, or `4.4.7` for an expired message.
    pub status: String,
    /// The smarthost's reply, or Postern's own reason.
    pub diagnostic: String,
}

/// Why one step of a transaction at the smarthost did not succeed.
#[derive(Debug)]
pub enum Failed {
    /// The smarthost answered no (4xx or 5xx); its connection is still usable.
    Refused(Reply),
    /// No working connection could be had before MAIL (connect, TLS, greeting,
    /// AUTH).
    Unavailable(UpstreamError),
    /// The connection broke mid-transaction, or the smarthost closed it with 421.
    Lost(UpstreamError),
    /// The message needs SMTPUTF8 and no smarthost on the route offers it.
    NoSmtpUtf8,
    /// A temporary refusal that says when to come back (Graph's `429` with a
    /// `Retry-After` longer than Postern waits within an attempt).
    Later(Reply, Duration),
}

/// Why a message needing SMTPUTF8 cannot go to a smarthost that lacks it.
pub const NO_SMTPUTF8: &str =
    "553 5.6.7 the message needs SMTPUTF8 and the smarthost does not offer it";

impl Failed {
    /// Whether this failure is final for the recipients it concerns.
    pub fn is_permanent(&self) -> bool {
        match self {
            Failed::Refused(r) => r.is_permanent(),
            Failed::NoSmtpUtf8 => true,
            Failed::Unavailable(_) | Failed::Lost(_) | Failed::Later(..) => false,
        }
    }

    /// Whether the smarthost asked us to slow down; `chosen` are the strings the
    /// client chose (its sender, its recipients) that the reply may echo.
    pub fn throttled(&self, chosen: &[&str]) -> bool {
        match self {
            Failed::Refused(r) | Failed::Later(r, _) => !r.is_permanent() && is_throttle(r, chosen),
            Failed::Unavailable(UpstreamError::Refused { reply, .. })
            | Failed::Lost(UpstreamError::Refused { reply, .. }) => is_throttle(reply, chosen),
            _ => false,
        }
    }

    /// How long the smarthost asked us to wait (`Retry-After`), if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failed::Later(_, wait) => Some(*wait),
            _ => None,
        }
    }

    /// What to record as the reason: the smarthost's reply or the error.
    pub fn reason(&self) -> String {
        match self {
            Failed::Refused(r) | Failed::Later(r, _) => r.to_string(),
            // The token endpoint's own words stay in the log (see `oauth`).
            Failed::Unavailable(UpstreamError::Token(_)) => {
                "no access token for the smarthost; see the server log".into()
            }
            Failed::Unavailable(e) | Failed::Lost(e) => e.to_string(),
            Failed::NoSmtpUtf8 => NO_SMTPUTF8.into(),
        }
    }

    /// The enhanced status for a permanent failure.
    fn status(&self) -> String {
        match self {
            Failed::Refused(r) | Failed::Later(r, _) => status_of(r),
            _ => "5.6.7".into(),
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason())
    }
}

/// Whether a reply asks the sender to slow down: `421` and `454` by their code, any
/// other reply only when the smarthost's own words say "throttl". Words the client
/// chose do not count: a smarthost that echoes an address (`450 4.1.2
/// <throttling@x.invalid>: Recipient address rejected`) must not let one client put
/// every tenant's mail on hold. Left out are whatever stands between `<` and `>`
/// and every word that holds one of `chosen` (the client's sender and recipients),
/// its local part or its domain.
pub fn is_throttle(r: &Reply, chosen: &[&str]) -> bool {
    r.code == 421 || r.code == 454 || says_throttle(&r.text, chosen)
}

fn says_throttle(text: &str, chosen: &[&str]) -> bool {
    let mut unbracketed = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.to_lowercase().chars() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            _ if depth == 0 => {
                unbracketed.push(c);
                continue;
            }
            _ => {}
        }
        unbracketed.push(' ');
    }
    let pieces = client_pieces(chosen);
    unbracketed
        .split(|c: char| c.is_whitespace() || ",;:()[]\"'".contains(c))
        .any(|word| word.contains("throttl") && !pieces.iter().any(|p| word.contains(p.as_str())))
}

/// The client's strings as a smarthost may echo them: whole, and for an address
/// its local part and its domain; lower-cased, three characters or more (a shorter
/// one would match inside the smarthost's own words).
fn client_pieces(chosen: &[&str]) -> Vec<String> {
    let mut pieces = Vec::new();
    for c in chosen.iter().map(|c| c.to_lowercase()) {
        if let Some((local, domain)) = c.rsplit_once('@') {
            pieces.push(local.trim_matches('"').to_string());
            pieces.push(domain.to_string());
        }
        pieces.push(c);
    }
    pieces.retain(|p| p.chars().count() >= 3);
    pieces
}

/// A reply's enhanced status, or its class's generic one.
pub fn status_of(r: &Reply) -> String {
    r.esc
        .map(|e| e.to_string())
        .unwrap_or_else(|| format!("{}.0.0", r.code / 100))
}

/// What one attempt decided, recipient by recipient.
#[derive(Debug, Default)]
pub struct Outcome {
    pub delivered: Vec<String>,
    /// Recipients to try again, with the reason.
    pub deferred: Vec<(String, String)>,
    pub failed: Vec<Failure>,
    /// When the smarthost answered 250 to the message's DATA.
    pub accepted_at: Option<Instant>,
    /// The message needs SMTPUTF8 and this smarthost does not offer it.
    pub no_smtputf8: bool,
    /// The longest wait the smarthost asked for (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// The smarthost's reply to the message's DATA when it took it (for the
    /// delivery log; the last one's, when two smarthosts of a route each took some).
    pub delivered_reply: Option<String>,
}

impl Outcome {
    /// Defers every recipient of `pending` that this attempt has not yet settled.
    pub fn defer_rest(&mut self, pending: &[String], why: String) {
        let done: HashSet<&str> = self
            .delivered
            .iter()
            .map(String::as_str)
            .chain(self.failed.iter().map(|f| f.rcpt.as_str()))
            .chain(self.deferred.iter().map(|(a, _)| a.as_str()))
            .collect();
        let rest: Vec<String> = pending
            .iter()
            .filter(|a| !done.contains(a.as_str()))
            .cloned()
            .collect();
        self.deferred
            .extend(rest.into_iter().map(|a| (a, why.clone())));
    }

    /// Settles `rcpts` with a failed step: failed when it is permanent, deferred
    /// otherwise. (A throttle holds the smarthost: `Relays::note_failure`.)
    pub fn settle(&mut self, rcpts: &[String], why: &Failed) {
        self.no_smtputf8 |= matches!(why, Failed::NoSmtpUtf8);
        self.retry_after = self.retry_after.max(why.retry_after());
        if !why.is_permanent() || matches!(why, Failed::NoSmtpUtf8) {
            // Without SMTPUTF8 the next smarthost on the route may still take it.
            self.defer_rest(rcpts, why.reason());
            return;
        }
        let (status, diagnostic) = (why.status(), why.reason());
        self.failed.extend(rcpts.iter().map(|a| Failure {
            rcpt: a.clone(),
            status: status.clone(),
            diagnostic: diagnostic.clone(),
        }));
    }

    /// Turns what was deferred for want of SMTPUTF8 into failures: no smarthost
    /// left on the route can take it.
    pub fn fail_for_smtputf8(&mut self) {
        let deferred = std::mem::take(&mut self.deferred);
        self.failed
            .extend(deferred.into_iter().map(|(rcpt, _)| Failure {
                rcpt,
                status: "5.6.7".into(),
                diagnostic: NO_SMTPUTF8.into(),
            }));
    }

    /// Adds what a later smarthost on the route decided.
    pub fn absorb(&mut self, next: Outcome) {
        self.delivered.extend(next.delivered);
        self.failed.extend(next.failed);
        self.deferred.extend(next.deferred);
        self.retry_after = self.retry_after.max(next.retry_after);
        self.accepted_at = self.accepted_at.or(next.accepted_at);
        self.delivered_reply = next.delivered_reply.or(self.delivered_reply.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::reply::Esc;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defer_rest_leaves_settled_recipients_alone() {
        let mut out = Outcome {
            delivered: names(&["a@x"]),
            deferred: vec![("b@x".into(), "451 busy".into())],
            failed: vec![Failure {
                rcpt: "c@x".into(),
                status: "5.1.1".into(),
                diagnostic: "550 no".into(),
            }],
            ..Outcome::default()
        };
        out.defer_rest(&names(&["a@x", "b@x", "c@x", "d@x", "e@x"]), "lost".into());
        let deferred: Vec<(&str, &str)> = out
            .deferred
            .iter()
            .map(|(a, w)| (a.as_str(), w.as_str()))
            .collect();
        assert_eq!(
            deferred,
            [("b@x", "451 busy"), ("d@x", "lost"), ("e@x", "lost")]
        );
        assert_eq!(out.delivered, names(&["a@x"]));
        assert_eq!(out.failed.len(), 1);
    }

    /// Each kind of failed step, and what it does to two recipients: (failed
    /// statuses, deferred count, throttled, no SMTPUTF8).
    #[test]
    fn each_failed_step_settles_recipients_as_it_should() {
        let refused = |code, esc, text: &str| Failed::Refused(Reply::new(code, esc, text));
        let lost_421 = || UpstreamError::Refused {
            phase: "RCPT",
            reply: Reply::plain(421, "closing"),
        };
        type Case = (
            &'static str,
            Failed,
            &'static [&'static str],
            usize,
            bool,
            bool,
        );
        let cases: Vec<Case> = vec![
            (
                "550 user unknown",
                refused(550, Esc(5, 1, 1), "no such user"),
                &["5.1.1", "5.1.1"],
                0,
                false,
                false,
            ),
            (
                "554 without an enhanced code",
                Failed::Refused(Reply::plain(554, "no")),
                &["5.0.0", "5.0.0"],
                0,
                false,
                false,
            ),
            (
                "451 busy",
                refused(451, Esc(4, 3, 0), "busy"),
                &[],
                2,
                false,
                false,
            ),
            (
                "454 throttled",
                refused(454, Esc(4, 7, 0), "later"),
                &[],
                2,
                true,
                false,
            ),
            (
                "452 throttling in the text",
                refused(452, Esc(4, 3, 1), "Throttling"),
                &[],
                2,
                true,
                false,
            ),
            (
                "421 closed the connection",
                Failed::Lost(lost_421()),
                &[],
                2,
                true,
                false,
            ),
            (
                "connection broke",
                Failed::Lost(UpstreamError::Closed),
                &[],
                2,
                false,
                false,
            ),
            (
                "cannot connect",
                Failed::Unavailable(UpstreamError::Timeout("connect")),
                &[],
                2,
                false,
                false,
            ),
            ("no SMTPUTF8 here", Failed::NoSmtpUtf8, &[], 2, false, true),
        ];
        for (what, step, failed, deferred, throttled, no_utf8) in cases {
            let mut out = Outcome::default();
            out.settle(&names(&["a@x", "b@x"]), &step);
            let statuses: Vec<&str> = out.failed.iter().map(|f| f.status.as_str()).collect();
            assert_eq!(statuses, failed, "{what}");
            assert_eq!(out.deferred.len(), deferred, "{what}");
            assert_eq!(step.throttled(&[]), throttled, "{what}");
            assert_eq!(out.no_smtputf8, no_utf8, "{what}");
            let why = step.reason();
            assert!(out.failed.iter().all(|f| f.diagnostic == why), "{what}");
            assert!(out.deferred.iter().all(|(_, w)| *w == why), "{what}");
        }
    }

    #[test]
    fn without_smtputf8_anywhere_the_deferred_fail_with_5_6_7() {
        let mut out = Outcome::default();
        out.settle(&names(&["a@x"]), &Failed::NoSmtpUtf8);
        out.fail_for_smtputf8();
        assert!(out.deferred.is_empty());
        assert_eq!(out.failed[0].status, "5.6.7");
        assert_eq!(out.failed[0].diagnostic, NO_SMTPUTF8);
    }

    #[test]
    fn a_later_smarthost_adds_to_what_the_first_decided() {
        let mut first = Outcome {
            delivered: names(&["a@x"]),
            ..Outcome::default()
        };
        let next = Outcome {
            delivered: names(&["b@x"]),
            deferred: vec![("c@x".into(), "451".into())],
            ..Outcome::default()
        };
        first.absorb(next);
        assert_eq!(first.delivered, names(&["a@x", "b@x"]));
        assert_eq!(first.deferred.len(), 1);
    }

    #[test]
    fn words_the_client_chose_never_make_a_throttle() {
        let reply = |code, text: &str| Reply::new(code, Esc(4, 1, 2), text);
        let chosen = [
            "a@alice.example",
            "throttling@nowhere.invalid",
            "x@throttled-shop.example",
        ];
        for (code, text, want) in [
            (451, "Throttled: too many messages, slow down", true),
            // The price: the client's own word is not counted even when the
            // smarthost says it too (454 and 421 still are, by their code).
            (451, "Throttling: too many messages", false),
            (450, "4.7.0 you are being throttled", true),
            (421, "<throttling@nowhere.invalid> service closing", true),
            (454, "anything", true),
            (
                450,
                "<throttling@nowhere.invalid>: Recipient address rejected",
                false,
            ),
            (
                450,
                "throttling@nowhere.invalid: Recipient address rejected",
                false,
            ),
            (450, "domain throttled-shop.example not found", false),
            (450, "user 'throttling' unknown", false),
            (451, "message <throttle-1234@x> deferred", false),
            (451, "greylisted, try again later", false),
        ] {
            let f = Failed::Refused(reply(code, text));
            assert_eq!(f.throttled(&chosen), want, "{code} {text}");
        }
        // A permanent refusal is never a throttle, whatever it says.
        assert!(!Failed::Refused(Reply::new(550, Esc(5, 7, 1), "throttled")).throttled(&[]));
        // Short strings would match inside the smarthost's words: ignored.
        assert!(Failed::Refused(reply(451, "throttled")).throttled(&["t@o"]));
    }
}
