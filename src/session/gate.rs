//! The header gate: message content is held back until its header section has been
//! read, checked and fixed, then released for relaying.
//!
//! The checks and the fixes work on the same parsed fields, and the bytes released
//! are those fields (less `Bcc:`, plus `Date:` and `Message-ID:` when missing) after
//! the `Received:` header: what was checked is exactly what is relayed.

use crate::policy::header_from::{HeaderFromError, MAX_HEADER_SECTION, check_header_senders};
use crate::policy::senders::{SenderRule, sender_allowed};
use crate::proto::address::Mailbox;
use crate::proto::header::{Additions, FieldScanner, HeaderDefect, SectionEnd, submission_fixups};
use crate::proto::mailbox_list::parse_address_list;
use crate::upstream::Relays;
use crate::upstream::graph::{Unsendable, named_recipients};
use std::fmt;
use std::sync::Arc;

/// Why the gate refused the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `From:` or `Sender:` not allowed for the user, or not a valid address list.
    Sender(HeaderFromError),
    /// The header section cannot be read.
    Malformed(HeaderDefect),
    /// No end of the header section within [`MAX_HEADER_SECTION`] bytes.
    TooLarge,
    /// The header names recipients a Graph smarthost would deliver to, but the
    /// envelope does not.
    Recipients(Unsendable),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Sender(e) => e.fmt(f),
            Refusal::Malformed(d) => write!(f, "malformed header section: {d}"),
            Refusal::TooLarge => write!(f, "header section larger than {MAX_HEADER_SECTION} bytes"),
            Refusal::Recipients(u) => write!(f, "{}", u.reply().text),
        }
    }
}

/// What the gate adds to a message that lacks it.
pub struct Fixups {
    pub date: String,
    pub message_id: String,
}

pub struct HeaderGate {
    /// The user's sender rules; `None` for a user with `allow_any_header_from`.
    rules: Option<Vec<SenderRule>>,
    /// The envelope sender is null: the message must say who sent it in `From:`.
    require_from: bool,
    fixups: Fixups,
    /// The header section has been released; content now passes straight through.
    released: bool,
    head: Vec<u8>,
    /// The fields of `head` read so far, each line read once.
    scan: FieldScanner,
    /// Content ready to be written out.
    pub ready: Vec<u8>,
    pub refused: Option<Refusal>,
    /// `Bcc:` fields removed.
    pub bcc_removed: usize,
    /// The route's view of the header's recipients (see [`RecipientCheck`]).
    recipients: Option<RecipientCheck>,
    /// For a null envelope sender: the header `From:` address (its first mailbox),
    /// when the user may send as it (only then may it pick the route).
    pub header_from: Option<String>,
    /// Every rule of the user's `senders`, even for a user allowed any `From:`.
    senders: Vec<SenderRule>,
    /// Every `From:` mailbox is one the user may send as: only then is the message
    /// DKIM-signed (a user allowed any `From:` gets no signature for others' domains).
    pub from_allowed: bool,
}

/// A route through Microsoft Graph delivers to whom the header names: then the
/// header may name only the envelope's recipients.
pub struct RecipientCheck {
    pub rcpts: Vec<String>,
    pub relays: Arc<Relays>,
    /// The address whose route the message takes; `None`: the header `From:` (a
    /// null-sender message in queue mode).
    pub route_key: Option<String>,
}

impl HeaderGate {
    pub fn new(
        received: &str,
        rules: Option<Vec<SenderRule>>,
        require_from: bool,
        fixups: Fixups,
    ) -> HeaderGate {
        HeaderGate {
            rules,
            require_from,
            fixups,
            released: false,
            head: Vec::new(),
            scan: FieldScanner::default(),
            ready: received.as_bytes().to_vec(),
            refused: None,
            bcc_removed: 0,
            recipients: None,
            header_from: None,
            senders: Vec::new(),
            from_allowed: false,
        }
    }

    /// The user's `senders`, which decide whether the header `From:` may pick the
    /// route (null sender) and be DKIM-signed.
    pub fn senders(mut self, senders: Vec<SenderRule>) -> HeaderGate {
        self.senders = senders;
        self
    }

    /// Checks the header's recipients against the route (see [`RecipientCheck`]).
    pub fn check_recipients(mut self, check: RecipientCheck) -> HeaderGate {
        self.recipients = Some(check);
        self
    }

    /// The header section was released, and nothing is waiting in [`Self::ready`]:
    /// what follows is body, which [`Self::push`] would pass on unchanged.
    pub fn passes_through(&self) -> bool {
        self.released && self.refused.is_none() && self.ready.is_empty()
    }

    /// Takes the next content lines; `done` after the last.
    pub fn push(&mut self, content: &[u8], done: bool) {
        if self.refused.is_some() {
            return;
        }
        if self.released {
            self.ready.extend_from_slice(content);
            return;
        }
        self.head.extend_from_slice(content);
        // The section ends at its blank line, at the first line that is no field,
        // or at the end of the message.
        match self.scan.advance(&self.head, done) {
            Ok(None) if self.head.len() > MAX_HEADER_SECTION => self.refuse(Refusal::TooLarge),
            Ok(None) => {}
            Ok(Some(end)) => match self.release(end) {
                Ok(()) => {
                    self.released = true;
                    self.head = Vec::new();
                    self.scan = FieldScanner::default();
                }
                Err(r) => self.refuse(r),
            },
            Err(d) => self.refuse(Refusal::Malformed(d)),
        }
    }

    /// Checks and fixes the fields read before `end`, then releases them, a blank
    /// line (the client's, or one of Postern's where the header section ended
    /// without one) and whatever followed: downstream sees exactly the fields
    /// checked here.
    fn release(&mut self, end: SectionEnd) -> Result<(), Refusal> {
        let (fields_end, blank) = match end {
            SectionEnd::Blank(at) => (at, &b""[..]),
            SectionEnd::Body(at) if at == self.head.len() => (at, &b""[..]),
            SectionEnd::Body(at) => (at, &b"\r\n"[..]),
        };
        let parsed = self.scan.fields(&self.head);
        if self.require_from && !parsed.iter().any(|f| f.is("From")) {
            return Err(Refusal::Sender(HeaderFromError::Missing));
        }
        let from: Vec<String> = parsed
            .iter()
            .filter(|f| f.is("From"))
            .map(|f| parse_address_list(f.value).map(|l| l.iter().map(Mailbox::wire).collect()))
            .collect::<Result<Vec<Vec<String>>, _>>()
            .map(|lists| lists.concat())
            .unwrap_or_default();
        self.from_allowed =
            !from.is_empty() && from.iter().all(|a| sender_allowed(&self.senders, a));
        if self.require_from && self.from_allowed {
            self.header_from = from.first().cloned();
        }
        if let Some(rules) = &self.rules {
            check_header_senders(&parsed, rules).map_err(Refusal::Sender)?;
        }
        if let Some(c) = &self.recipients {
            let key = c.route_key.as_deref().or(self.header_from.as_deref());
            if c.relays.through_graph(key.unwrap_or_default()) {
                named_recipients(&parsed, &c.rcpts).map_err(Refusal::Recipients)?;
            }
        }
        let (section, removed) = submission_fixups(&parsed, &self.additions());
        self.bcc_removed = removed;
        self.ready.extend_from_slice(&section);
        self.ready.extend_from_slice(blank);
        self.ready.extend_from_slice(&self.head[fields_end..]);
        Ok(())
    }

    fn additions(&self) -> Additions<'_> {
        Additions {
            date: &self.fixups.date,
            message_id: &self.fixups.message_id,
        }
    }

    fn refuse(&mut self, r: Refusal) {
        self.refused = Some(r);
        self.head = Vec::new();
        self.ready.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(rules: Option<&[&str]>) -> HeaderGate {
        let rules = rules.map(|r| r.iter().map(|s| SenderRule::parse(s).unwrap()).collect());
        let fixups = Fixups {
            date: "Wed, 2 Dec 2026 05:00:00 +0000".into(),
            message_id: "<id@h.example>".into(),
        };
        HeaderGate::new("Received: x\r\n", rules, false, fixups)
    }

    /// Feeds `chunks`, the last one with `done`.
    fn run(g: &mut HeaderGate, chunks: &[&str]) -> String {
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            g.push(c.as_bytes(), i + 1 == chunks.len());
            out.append(&mut g.ready);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn releases_the_fixed_header_then_the_body() {
        let mut g = gate(Some(&["@site1.example"]));
        let out = run(
            &mut g,
            &[
                "From: a@site1.example\r\nBcc: b@x.example\r\n",
                "Subject: s\r\n\r\nbody\r\n",
                "more\r\n",
            ],
        );
        assert_eq!(g.refused, None);
        assert_eq!(g.bcc_removed, 1);
        assert_eq!(
            out,
            "Received: x\r\nFrom: a@site1.example\r\nSubject: s\r\nDate: Wed, 2 Dec 2026 05:00:00 +0000\r\nMessage-ID: <id@h.example>\r\n\r\nbody\r\nmore\r\n"
        );
        // No blank line at all: the whole message is header.
        let mut g = gate(None);
        assert_eq!(
            run(&mut g, &["Subject: s\r\nDate: d\r\nMessage-ID: <m@x>\r\n"]),
            "Received: x\r\nSubject: s\r\nDate: d\r\nMessage-ID: <m@x>\r\n"
        );
        // Body only: a first line that is no field makes it all body, behind a
        // blank line, whatever it says further down.
        let mut g = gate(Some(&["@site1.example"]));
        assert_eq!(
            run(
                &mut g,
                &["hello\r\nFrom: ceo@bank.example\r\n", "\r\nx\r\n"]
            ),
            "Received: x\r\nDate: Wed, 2 Dec 2026 05:00:00 +0000\r\nMessage-ID: <id@h.example>\r\n\r\nhello\r\nFrom: ceo@bank.example\r\n\r\nx\r\n"
        );
        let mut g = gate(Some(&["@site1.example"]));
        assert!(
            run(&mut g, &["Dear John, see: this\r\n"])
                .ends_with("\r\n\r\nDear John, see: this\r\n")
        );
        // A header section that ends at a line that is no field: Postern ends it
        // there too, with a blank line of its own.
        let mut g = gate(Some(&["@site1.example"]));
        assert_eq!(
            run(
                &mut g,
                &[
                    "Subject: hi\r\nThis is the body\r\n",
                    "From: ceo@bank.example\r\n"
                ]
            ),
            "Received: x\r\nSubject: hi\r\nDate: Wed, 2 Dec 2026 05:00:00 +0000\r\nMessage-ID: <id@h.example>\r\n\r\nThis is the body\r\nFrom: ceo@bank.example\r\n"
        );
        let mut g = gate(Some(&["@site1.example"]));
        assert!(run(&mut g, &["Status: OK\r\nall done\r\n"]).ends_with("\r\n\r\nall done\r\n"));
        // The null sender needs a From.
        let mut g = gate(Some(&["@site1.example"]));
        g.require_from = true;
        run(&mut g, &["Subject: no from\r\n\r\nx\r\n"]);
        assert_eq!(g.refused, Some(Refusal::Sender(HeaderFromError::Missing)));
        let mut g = gate(Some(&["@site1.example"]));
        g.require_from = true;
        run(&mut g, &["From: a@site1.example\r\n\r\nx\r\n"]);
        assert_eq!(g.refused, None);
        // Resent-Bcc goes too.
        let mut g = gate(None);
        assert!(!run(&mut g, &["Resent-Bcc: x@y.example\r\n\r\nx\r\n"]).contains("Resent-Bcc"));
        // No header at all.
        let mut g = gate(Some(&["@site1.example"]));
        assert!(
            run(&mut g, &["\r\nbody\r\n"]).ends_with("Message-ID: <id@h.example>\r\n\r\nbody\r\n")
        );
    }

    #[test]
    fn refusals() {
        let refused = |rules: Option<&[&str]>, msg: &str| {
            let mut g = gate(rules);
            let out = run(&mut g, &[msg]);
            assert!(g.refused.is_some(), "{msg:?} passed as {out:?}");
            assert!(g.ready.is_empty());
        };
        let site1: Option<&[&str]> = Some(&["@site1.example"]);
        // Finding 2: a whitespace-only first line hides the header from a lenient reader.
        refused(site1, " \r\nFrom: ceo@bank.example\r\n\r\nx\r\n");
        refused(None, " \r\nFrom: ceo@bank.example\r\n\r\nx\r\n");
        refused(site1, "\t\r\nFrom: ceo@bank.example\r\n\r\nx\r\n");
        // Finding 3: malformed lists.
        refused(site1, "From: <ceo@bank.example> <a@site1.example>\r\n\r\n");
        refused(site1, "From: ceo@bank.example a@site1.example\r\n\r\n");
        refused(site1, "From : ceo@bank.example\r\n\r\n");
        refused(site1, "FROM:ceo@bank.example\r\n\r\n");
        refused(
            site1,
            "From: a@site1.example\r\nSender: a@site1.example, b@site1.example\r\n\r\n",
        );
        let mut g = gate(site1);
        g.push(&vec![b'X'; MAX_HEADER_SECTION + 10], false);
        assert_eq!(g.refused, Some(Refusal::TooLarge));
    }

    mod props {
        use super::*;
        use crate::proto::header::{fields, header_end};
        use proptest::prelude::*;

        fn message() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(&b"From: a@site1.example\r\n"[..]),
                Just(&b"From: ceo@bank.example\r\n"[..]),
                Just(&b"From: \"a@site1.example\" <ceo@bank.example>\r\n"[..]),
                Just(&b"From:<ceo@bank.example> <a@site1.example>\r\n"[..]),
                Just(&b"Sender: a@site1.example\r\n"[..]),
                Just(&b"Bcc: x@y.example\r\n"[..]),
                Just(&b"Subject: s\r\n"[..]),
                Just(&b" folded\r\n"[..]),
                Just(&b"\t\r\n"[..]),
                Just(&b" \r\n"[..]),
                Just(&b"\r\n"[..]),
                Just(&b"no colon\r\n"[..]),
                Just(&b"From : ceo@bank.example\r\n"[..]),
                Just(&b"body text\r\n"[..]),
            ];
            proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            /// However the content arrives, the gate gives the same verdict and bytes;
            /// and what it releases, read again as a header section, has no Bcc,
            /// reads without a defect, and passes the sender check itself.
            #[test]
            fn released_bytes_pass_their_own_check(msg in message(), cut in 0usize..400) {
                let whole = {
                    let mut g = gate(Some(&["@site1.example"]));
                    let out = run(&mut g, &[std::str::from_utf8(&msg).unwrap()]);
                    // A refused message is dropped whole, whatever was released.
                    (g.refused.clone(), if g.refused.is_none() { out } else { String::new() })
                };
                let cut = cut.min(msg.len());
                let split = {
                    let mut g = gate(Some(&["@site1.example"]));
                    let (a, b) = msg.split_at(cut);
                    let out = run(&mut g, &[std::str::from_utf8(a).unwrap(), std::str::from_utf8(b).unwrap()]);
                    (g.refused.clone(), if g.refused.is_none() { out } else { String::new() })
                };
                prop_assert_eq!(&whole, &split);
                let (refused, out) = whole;
                if refused.is_none() {
                    let out = out.as_bytes();
                    let end = header_end(out).map_or(out.len(), |e| e - 2);
                    let parsed = fields(&out[..end]).expect("released header reads");
                    prop_assert!(!parsed.iter().any(|f| f.is("Bcc")));
                    prop_assert!(parsed.iter().any(|f| f.is("Message-ID")));
                    let rules = vec![SenderRule::parse("@site1.example").unwrap()];
                    prop_assert_eq!(check_header_senders(&parsed, &rules), Ok(()));
                }
            }
        }
    }

    /// A user allowed any `From:` may use another's address in the header, but it
    /// picks no route (null sender) and gets no DKIM signature.
    #[test]
    fn only_a_from_the_user_may_send_as_picks_the_route_or_is_signed() {
        let senders = || vec![SenderRule::parse("@site1.example").unwrap()];
        // (From lines, null sender, from_allowed, header_from)
        let cases: [(&str, bool, bool, Option<&str>); 6] = [
            (
                "From: a@site1.example\r\n",
                true,
                true,
                Some("a@site1.example"),
            ),
            ("From: ceo@bank.example\r\n", true, false, None),
            (
                "From: a@site1.example, ceo@bank.example\r\n",
                true,
                false,
                None,
            ),
            ("From: a@site1.example\r\n", false, true, None),
            ("From: ceo@bank.example\r\n", false, false, None),
            ("Subject: no from\r\n", false, false, None),
        ];
        for (head, null, allowed, route) in cases {
            let mut g = gate(None).senders(senders());
            g.require_from = null;
            run(&mut g, &[head, "\r\nx\r\n"]);
            assert_eq!(g.refused, None, "{head}");
            assert_eq!(g.from_allowed, allowed, "{head}");
            assert_eq!(g.header_from.as_deref(), route, "{head}");
        }
    }
}
