//! Delivery status notifications (RFC 3464) for recipients that failed for good.

use super::envelope::{Envelope, RcptState, Recipient};
use super::store::{new_id, unix_now};
use crate::proto::received::rfc5322_date;
use crate::upstream::Failure;
use std::time::{Duration, UNIX_EPOCH};

/// The header section of the original message (for `text/rfc822-headers`), at most
/// 64 KiB.
pub fn original_headers(message: &[u8]) -> &[u8] {
    let end = crate::proto::header::header_end(message).unwrap_or(message.len());
    &message[..end.min(64 * 1024)]
}

/// What the notification reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The recipients failed for good (a bounce).
    Failed,
    /// The recipients are still being retried (a delay warning).
    Delayed,
}

/// Builds the DSN message and its envelope (null sender, to the original sender).
///
/// `mailbox`: when the original's route sends as one mailbox (Microsoft 365 or
/// Google with OAuth 2.0), which refuses any other `From:`, the DSN comes from that
/// mailbox and takes the same route; otherwise from `MAILER-DAEMON@hostname` by the
/// default route.
pub fn build(
    hostname: &str,
    original: &Envelope,
    report: Report,
    failures: &[Failure],
    headers: &[u8],
    mailbox: Option<&str>,
) -> (Envelope, Vec<u8>) {
    let id = new_id();
    let now = unix_now();
    let dsn = Dsn {
        mailbox,
        hostname,
        original,
        report,
        failures,
        date: rfc5322_date(UNIX_EPOCH + Duration::from_secs(now)),
        boundary: format!("{id}/{hostname}"),
        id: &id,
    };
    let mut m = String::new();
    dsn.header_section(&mut m);
    dsn.text_part(&mut m);
    dsn.status_part(&mut m);
    m.push_str(&format!(
        "\r\n--{}\r\nContent-Type: text/rfc822-headers\r\n\r\n",
        dsn.boundary
    ));
    let mut bytes = m.into_bytes();
    bytes.extend_from_slice(headers);
    if !bytes.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{}--\r\n", dsn.boundary).as_bytes());
    let env = Envelope {
        id,
        client_ip: None,
        from: String::new(),
        rcpts: vec![Recipient {
            address: original.from.clone(),
            state: RcptState::Pending,
            last_reply: None,
        }],
        user: String::new(),
        created: now,
        attempts: 0,
        next_attempt: now,
        last_error: None,
        smtputf8: original.smtputf8,
        eight_bit: true,
        size: bytes.len() as u64,
        warned: false,
        // From MAILER-DAEMON: the default route; from the route's mailbox: its route.
        route_by: mailbox.map(|_| {
            original
                .route_by
                .clone()
                .unwrap_or_else(|| original.from.clone())
        }),
        unsigned: false,
    };
    (env, bytes)
}

/// What one notification is about, and the values its parts share.
struct Dsn<'a> {
    /// The mailbox the route sends as, if it is bound to one.
    mailbox: Option<&'a str>,
    hostname: &'a str,
    original: &'a Envelope,
    report: Report,
    failures: &'a [Failure],
    id: &'a str,
    date: String,
    boundary: String,
}

impl Dsn<'_> {
    /// The subject, the DSN action and the sentence telling the sender what happened.
    fn wording(&self) -> (&'static str, &'static str, &'static str) {
        match self.report {
            Report::Failed => (
                "Undelivered Mail Returned to Sender",
                "failed",
                "could not be delivered to one or more\r\nrecipients",
            ),
            Report::Delayed => (
                "Delayed Mail (still being retried)",
                "delayed",
                "has not yet been delivered to one or more\r\nrecipients. Delivery is still being retried; no action is needed",
            ),
        }
    }

    /// The message's header section, up to the MIME preamble.
    fn header_section(&self, m: &mut String) {
        let (hostname, id, date, boundary) = (self.hostname, self.id, &self.date, &self.boundary);
        let (subject, _, _) = self.wording();
        match self.mailbox {
            Some(mailbox) => m.push_str(&format!("From: Mail Delivery System <{mailbox}>\r\n")),
            None => m.push_str(&format!(
                "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
            )),
        }
        m.push_str(&format!("To: <{}>\r\n", self.original.from));
        m.push_str(&format!("Subject: {subject}\r\n"));
        m.push_str(&format!("Date: {date}\r\n"));
        m.push_str(&format!("Message-ID: <{id}@{hostname}>\r\n"));
        m.push_str("Auto-Submitted: auto-replied\r\n");
        m.push_str("MIME-Version: 1.0\r\n");
        m.push_str(&format!(
            "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
        ));
        m.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    }

    /// The human-readable part: what happened, and each recipient's reason.
    fn text_part(&self, m: &mut String) {
        let (hostname, boundary) = (self.hostname, &self.boundary);
        let (_, _, explanation) = self.wording();
        m.push_str(&format!(
            "--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        ));
        m.push_str(&format!(
            "This is the mail system at host {hostname}.\r\n\r\nYour message (queue id {}) {explanation}.\r\nIts headers are attached below.\r\n\r\n",
            self.original.id
        ));
        for f in self.failures {
            m.push_str(&format!("<{}>: {}\r\n", f.rcpt, f.diagnostic));
        }
    }

    /// The `message/delivery-status` part (RFC 3464): one block per recipient.
    fn status_part(&self, m: &mut String) {
        let (hostname, date, boundary) = (self.hostname, &self.date, &self.boundary);
        let (_, action, _) = self.wording();
        let arrival = rfc5322_date(UNIX_EPOCH + Duration::from_secs(self.original.created));
        m.push_str(&format!(
            "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        ));
        m.push_str(&format!(
            "Reporting-MTA: dns; {hostname}\r\nX-Postern-Queue-ID: {}\r\nArrival-Date: {arrival}\r\n",
            self.original.id
        ));
        for f in self.failures {
            m.push_str(&format!(
                "\r\nFinal-Recipient: rfc822; {}\r\nAction: {action}\r\nStatus: {}\r\nDiagnostic-Code: smtp; {}\r\nLast-Attempt-Date: {date}\r\n",
                f.rcpt, f.status, f.diagnostic
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_is_a_valid_multipart_report() {
        let original = Envelope {
            client_ip: None,
            id: "ABC".into(),
            from: "alice@site.example".into(),
            rcpts: vec![],
            user: "u".into(),
            created: 0,
            attempts: 2,
            next_attempt: 0,
            last_error: None,
            smtputf8: false,
            eight_bit: false,
            size: 10,
            warned: false,
            route_by: None,
            unsigned: false,
        };
        let msg = b"Subject: hello\r\nFrom: alice@site.example\r\n\r\nbody text\r\n";
        let (env, bytes) = build(
            "relay.test",
            &original,
            Report::Failed,
            &[Failure {
                rcpt: "nobody@example.org".into(),
                status: "5.1.1".into(),
                diagnostic: "550 5.1.1 No such user".into(),
            }],
            original_headers(msg),
            None,
        );
        assert_eq!(env.from, "");
        assert_eq!(
            env.route_by, None,
            "from MAILER-DAEMON, by the default route"
        );
        assert_eq!(env.rcpts[0].address, "alice@site.example");
        let text = String::from_utf8(bytes).unwrap();
        for needle in [
            "Content-Type: multipart/report; report-type=delivery-status;",
            "Content-Type: message/delivery-status",
            "Reporting-MTA: dns; relay.test",
            "Final-Recipient: rfc822; nobody@example.org",
            "Action: failed",
            "Status: 5.1.1",
            "Diagnostic-Code: smtp; 550 5.1.1 No such user",
            "Content-Type: text/rfc822-headers\r\n\r\nSubject: hello\r\n",
            "Auto-Submitted: auto-replied",
        ] {
            assert!(text.contains(needle), "missing {needle:?}");
        }
        assert!(!text.contains("body text"), "only the headers are returned");
        // Every line ends in CRLF.
        assert!(!text.replace("\r\n", "").contains('\n'));
        let parsed = mail_parser::MessageParser::default()
            .parse(text.as_bytes())
            .unwrap();
        assert_eq!(
            parsed.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
        assert_eq!(parsed.parts.len(), 4, "multipart with three parts");
        assert!(text.contains("From: Mail Delivery System <MAILER-DAEMON@relay.test>\r\n"));

        // A route bound to one mailbox (Microsoft 365): the DSN comes from it, by it.
        let (env, bytes) = build(
            "relay.test",
            &original,
            Report::Failed,
            &[],
            b"",
            Some("printer@contoso.example"),
        );
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.contains("From: Mail Delivery System <printer@contoso.example>\r\n"),
            "{text}"
        );
        assert_eq!(env.route_by.as_deref(), Some("alice@site.example"));
    }
}
