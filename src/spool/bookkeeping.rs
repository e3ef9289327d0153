//! The bookkeeping after an attempt, pure: which spooled addresses may go
//! upstream, what an outcome does to the envelope, and whether the change must be
//! written to disk.

use super::envelope::{Envelope, RcptState};
use crate::proto::address::is_canonical_path;
use crate::proto::printable::Printable;
use crate::upstream::{Failure, Outcome};
use tracing::warn;

/// Splits `pending` into the recipients that may go upstream and failures for those
/// that may not: an address in the spool that is not a valid path in its canonical
/// wire form (an envelope of an older release, or one edited by hand) never reaches an
/// upstream command. A bad sender fails every recipient.
pub(super) fn sendable(env: &Envelope, pending: Vec<String>) -> (Vec<String>, Vec<Failure>) {
    let bad_sender = !is_canonical_path(&env.from);
    let (ok, bad): (Vec<String>, Vec<String>) = pending
        .into_iter()
        .partition(|a| !bad_sender && is_canonical_path(a));
    let (status, what) = if bad_sender {
        ("5.1.7", "sender")
    } else {
        ("5.1.3", "recipient")
    };
    let failures = bad
        .into_iter()
        .map(|rcpt| {
            warn!(rcpt = %Printable(&rcpt), sender = %Printable(&env.from), "invalid {what} address in the spool; not sent");
            Failure {
                rcpt,
                status: status.into(),
                diagnostic: format!("invalid {what} address in the spool"),
            }
        })
        .collect();
    (ok, failures)
}

/// Applies one attempt's outcome to `env` (attempt count, recipient states, last
/// error; recipients still pending past `lifetime` seconds fail) and returns the
/// recipients that failed permanently.
pub(super) fn record(
    env: &mut Envelope,
    outcome: Outcome,
    now: u64,
    lifetime: u64,
) -> Vec<Failure> {
    env.attempts += 1;
    for r in env.rcpts.iter_mut() {
        if outcome.delivered.contains(&r.address) {
            r.state = RcptState::Delivered;
        }
        if let Some(f) = outcome.failed.iter().find(|f| f.rcpt == r.address) {
            r.state = RcptState::Failed;
            r.last_reply = Some(f.diagnostic.clone());
        }
        if let Some((_, why)) = outcome.deferred.iter().find(|(a, _)| *a == r.address) {
            r.last_reply = Some(why.clone());
        }
    }
    let mut failures = outcome.failed;
    if now.saturating_sub(env.created) >= lifetime {
        for r in env
            .rcpts
            .iter_mut()
            .filter(|r| r.state == RcptState::Pending)
        {
            r.state = RcptState::Failed;
            let why = r
                .last_reply
                .clone()
                .unwrap_or_else(|| "no answer from the smarthost".into());
            failures.push(Failure {
                rcpt: r.address.clone(),
                status: "4.4.7".into(),
                diagnostic: format!(
                    "message expired after {} attempts; last error: {why}",
                    env.attempts
                ),
            });
        }
    }
    env.last_error = outcome
        .deferred
        .first()
        .map(|(_, w)| w.clone())
        .or(env.last_error.take());
    failures
}

/// Whether a deferred message's envelope must be written back: when what a restart
/// must know changed (a recipient's state, the delay warning) or the reason for the
/// deferral did (so `postern queue list` shows it). A deferral that changed only the
/// attempt count and next attempt (every attempt during a smarthost outage) is kept
/// in memory: after a crash the message is simply tried again sooner.
pub(super) fn worth_persisting(stored: &Envelope, now: &Envelope) -> bool {
    let states = |e: &Envelope| e.rcpts.iter().map(|r| r.state).collect::<Vec<_>>();
    states(stored) != states(now)
        || stored.warned != now.warned
        || stored.last_error != now.last_error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            client_ip: None,
            created: 100,
            attempts: 1,
            next_attempt: 200,
            last_error: Some("451 busy".into()),
            ..Envelope::sample("A")
        }
    }

    /// An envelope written by release 1 may hold an unquoted injection; it fails
    /// instead of reaching MAIL or RCPT.
    #[test]
    fn stored_addresses_that_are_not_canonical_never_go_upstream() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (ok, failed) = sendable(
            &env(),
            list(&[
                "c@d.example",
                "x@y.example> NOTIFY=NEVER",
                "\"q\"@d.example",
            ]),
        );
        assert_eq!(ok, list(&["c@d.example"]));
        assert_eq!(failed.len(), 2);
        assert!(failed.iter().all(|f| f.status == "5.1.3"));
        let mut bad = env();
        bad.from = "ceo@bank.example> AUTH=@site1.example".into();
        let (ok, failed) = sendable(&bad, list(&["c@d.example"]));
        assert!(ok.is_empty());
        assert_eq!(failed[0].status, "5.1.7");
        let mut null = env();
        null.from = String::new();
        assert_eq!(sendable(&null, list(&["c@d.example"])).0.len(), 1);
    }

    #[test]
    fn only_a_change_worth_keeping_is_written_back() {
        let stored = env();
        type Case = (&'static str, fn(&mut Envelope), bool);
        let cases: [Case; 6] = [
            ("nothing", |_| {}, false),
            (
                "attempts and next attempt",
                |e| {
                    e.attempts = 7;
                    e.next_attempt = 999;
                },
                false,
            ),
            (
                "a deferral reply",
                |e| e.rcpts[0].last_reply = Some("451 busy".into()),
                false,
            ),
            (
                "the last error",
                |e| e.last_error = Some("421 down".into()),
                true,
            ),
            (
                "a recipient's state",
                |e| e.rcpts[0].state = RcptState::Failed,
                true,
            ),
            ("the delay warning", |e| e.warned = true, true),
        ];
        for (what, change, expected) in cases {
            let mut now = env();
            change(&mut now);
            assert_eq!(worth_persisting(&stored, &now), expected, "{what}");
        }
    }

    #[test]
    fn an_outage_deferral_keeps_the_same_last_error() {
        let mut e = env();
        let outcome = Outcome {
            deferred: vec![("c@d.example".into(), "451 busy".into())],
            ..Outcome::default()
        };
        let failures = record(&mut e, outcome, 150, 3600);
        assert!(failures.is_empty());
        assert_eq!(e.attempts, 2);
        assert!(!worth_persisting(&env(), &e));
        // Past the lifetime, the pending recipient fails with 4.4.7.
        let failures = record(&mut e, Outcome::default(), 100 + 3600, 3600);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].status, "4.4.7");
        assert!(worth_persisting(&env(), &e));
    }

    /// Three pending recipients; each case is an outcome and what it leaves:
    /// (states of a, b, c; recipients bounced with their status; last error).
    #[test]
    fn an_outcome_settles_each_recipient_of_the_envelope() {
        use RcptState::{Delivered as D, Failed as F, Pending as P};
        let fail = |rcpt: &str, status: &str| Failure {
            rcpt: rcpt.into(),
            status: status.into(),
            diagnostic: format!("{status} refused"),
        };
        let defer = |rcpt: &str| (rcpt.to_string(), "451 4.3.0 busy".to_string());
        type Case = (
            &'static str,
            Outcome,
            u64,
            [RcptState; 3],
            Vec<(&'static str, &'static str)>,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "all delivered",
                Outcome {
                    delivered: vec!["a@x".into(), "b@x".into(), "c@x".into()],
                    ..Outcome::default()
                },
                10,
                [D, D, D],
                vec![],
                Some("old"),
            ),
            (
                "one each way",
                Outcome {
                    delivered: vec!["a@x".into()],
                    failed: vec![fail("b@x", "5.1.1")],
                    deferred: vec![defer("c@x")],
                    ..Outcome::default()
                },
                10,
                [D, F, P],
                vec![("b@x", "5.1.1")],
                Some("451 4.3.0 busy"),
            ),
            (
                "nothing decided",
                Outcome::default(),
                10,
                [P, P, P],
                vec![],
                Some("old"),
            ),
            (
                "deferred past the lifetime",
                Outcome {
                    deferred: vec![defer("a@x"), defer("b@x")],
                    delivered: vec!["c@x".into()],
                    ..Outcome::default()
                },
                1000,
                [F, F, D],
                vec![("a@x", "4.4.7"), ("b@x", "4.4.7")],
                Some("451 4.3.0 busy"),
            ),
            (
                "refused past the lifetime",
                Outcome {
                    failed: vec![fail("a@x", "5.7.1")],
                    ..Outcome::default()
                },
                1000,
                [F, F, F],
                vec![("a@x", "5.7.1"), ("b@x", "4.4.7"), ("c@x", "4.4.7")],
                Some("old"),
            ),
        ];
        for (what, outcome, now, states, bounced, last_error) in cases {
            let mut e = Envelope::sample("A");
            e.rcpts = ["a@x", "b@x", "c@x"]
                .iter()
                .map(|a| super::super::envelope::Recipient {
                    address: a.to_string(),
                    state: RcptState::Pending,
                    last_reply: None,
                })
                .collect();
            e.last_error = Some("old".into());
            let failures = record(&mut e, outcome, now, 500);
            let got: Vec<RcptState> = e.rcpts.iter().map(|r| r.state).collect();
            assert_eq!(got, states, "{what}");
            let got: Vec<(&str, &str)> = failures
                .iter()
                .map(|f| (f.rcpt.as_str(), f.status.as_str()))
                .collect();
            assert_eq!(got, bounced, "{what}");
            assert_eq!(e.last_error.as_deref(), last_error, "{what}");
            assert_eq!(e.attempts, 1, "{what}");
        }
    }
}
