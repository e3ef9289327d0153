//! The envelope file format: what a queued message's envelope and delivery state
//! look like on disk, encoded and decoded without touching a file.
//!
//! An envelope is YAML (the `Envelope` struct below, unknown fields refused). It is
//! stored either in a `.env` file of its own, or in front of the message in the
//! `.msg` file as a header block:
//!
//! ```text
//! POSTERN-ENVELOPE <length of the YAML in bytes>\n<YAML><the message>
//! ```
//!
//! Where these files live, how they are made durable and when each form is used is
//! [`super::store`]'s business. The format is the same as release 1's: a spool
//! written by any release since loads unchanged (the tests below pin the bytes).

use serde::{Deserialize, Serialize};

/// Where one recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptState {
    Pending,
    Delivered,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub address: String,
    pub state: RcptState,
    /// The last reply or error for this recipient.
    #[serde(default)]
    pub last_reply: Option<String>,
}

/// A queued message's envelope and delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub id: String,
    /// Envelope sender; empty for a bounce (null reverse-path).
    pub from: String,
    pub rcpts: Vec<Recipient>,
    /// The authenticated user who submitted it (empty for bounces).
    #[serde(default)]
    pub user: String,
    /// Unix seconds.
    pub created: u64,
    pub attempts: u32,
    /// Unix seconds of the next delivery attempt.
    pub next_attempt: u64,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub smtputf8: bool,
    #[serde(default)]
    pub eight_bit: bool,
    pub size: u64,
    /// A delayed-delivery warning was sent.
    #[serde(default)]
    pub warned: bool,
    /// For a null sender: the header `From:` address, whose route the message takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_by: Option<String>,
    /// Never DKIM-sign it: its `From:` is not one the user may send as (a user
    /// allowed any `From:`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub unsigned: bool,
    /// The submitting client's address, for the delivery log (absent in envelopes
    /// written before it was kept, and for bounces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Envelope {
    /// A pending one-recipient envelope (`a@b.example` to `c@d.example`), for tests.
    #[cfg(test)]
    pub(crate) fn sample(id: &str) -> Envelope {
        Envelope {
            client_ip: None,
            id: id.into(),
            from: "a@b.example".into(),
            rcpts: vec![Recipient {
                address: "c@d.example".into(),
                state: RcptState::Pending,
                last_reply: None,
            }],
            user: "u".into(),
            created: 1,
            attempts: 0,
            next_attempt: 0,
            last_error: None,
            smtputf8: false,
            eight_bit: false,
            size: 5,
            warned: false,
            route_by: None,
            unsigned: false,
        }
    }

    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.rcpts.iter().filter(|r| r.state == RcptState::Pending)
    }

    pub fn is_bounce(&self) -> bool {
        self.from.is_empty()
    }
}

/// The text of an envelope (the content of a `.env` file).
pub fn encode(env: &Envelope) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(env)
}

/// An envelope from its text (a `.env` file, or a message file's header block).
pub fn decode(yaml: &[u8]) -> Result<Envelope, serde_yaml::Error> {
    serde_yaml::from_slice(yaml)
}

/// The start of a message file that carries its own envelope.
pub(crate) const MAGIC: &[u8] = b"POSTERN-ENVELOPE ";

/// A message file's content with its envelope in front.
pub fn embed(env: &Envelope, body: &[u8]) -> Result<Vec<u8>, serde_yaml::Error> {
    let yaml = encode(env)?;
    let mut out = Vec::with_capacity(MAGIC.len() + 12 + yaml.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(format!("{}\n", yaml.len()).as_bytes());
    out.extend_from_slice(yaml.as_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Splits a message file into its embedded envelope text (if any) and the message.
/// A file whose start only looks like a header block (no length, or a length past
/// the end) is all message.
pub fn split_embedded(bytes: &[u8]) -> (Option<&[u8]>, &[u8]) {
    let Some(rest) = bytes.strip_prefix(MAGIC) else {
        return (None, bytes);
    };
    let Some(nl) = rest.iter().take(20).position(|&b| b == b'\n') else {
        return (None, bytes);
    };
    let len: Option<usize> = std::str::from_utf8(&rest[..nl])
        .ok()
        .and_then(|n| n.parse().ok());
    match len {
        Some(len) if rest.len() >= nl + 1 + len => {
            (Some(&rest[nl + 1..nl + 1 + len]), &rest[nl + 1 + len..])
        }
        _ => (None, bytes),
    }
}

/// The message itself, without an embedded envelope.
pub fn body_of(bytes: &[u8]) -> &[u8] {
    split_embedded(bytes).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_of_a_null_sender_message_is_kept_and_absent_otherwise() {
        let mut e = Envelope::sample("A");
        assert!(!encode(&e).unwrap().contains("route_by"));
        e.from = String::new();
        e.route_by = Some("news@client-a.example".into());
        let text = encode(&e).unwrap();
        assert_eq!(decode(text.as_bytes()).unwrap(), e);
    }

    /// The sample with a second, failed recipient and a last error: every field set.
    fn full() -> Envelope {
        let mut e = Envelope::sample("ID1");
        e.rcpts.push(Recipient {
            address: "e@f.example".into(),
            state: RcptState::Failed,
            last_reply: Some("550 5.1.1 no".into()),
        });
        e.last_error = Some("451 busy".into());
        e
    }

    /// `full()` as release 1 (and every release since) writes it to a `.env` file.
    const FULL_YAML: &str = "id: ID1\nfrom: a@b.example\nrcpts:\n- address: c@d.example\n  state: pending\n  last_reply: null\n- address: e@f.example\n  state: failed\n  last_reply: 550 5.1.1 no\nuser: u\ncreated: 1\nattempts: 0\nnext_attempt: 0\nlast_error: 451 busy\nsmtputf8: false\neight_bit: false\nsize: 5\nwarned: false\n";

    #[test]
    fn the_format_is_release_1s() {
        assert_eq!(encode(&full()).unwrap(), FULL_YAML);
        assert_eq!(decode(FULL_YAML.as_bytes()).unwrap(), full());
        let file = format!("POSTERN-ENVELOPE 281\n{FULL_YAML}Subject: x\r\n\r\nhi\r\n");
        assert_eq!(
            embed(&full(), b"Subject: x\r\n\r\nhi\r\n").unwrap(),
            file.as_bytes()
        );
        let (yaml, body) = split_embedded(file.as_bytes());
        assert_eq!(decode(yaml.unwrap()).unwrap(), full());
        assert_eq!(body, b"Subject: x\r\n\r\nhi\r\n");
    }

    #[test]
    fn optional_fields_default_and_unknown_ones_are_refused() {
        let minimal = "id: B\nfrom: ''\nrcpts:\n- address: x@y.example\n  state: delivered\ncreated: 7\nattempts: 2\nnext_attempt: 9\nsize: 3\n";
        let e = decode(minimal.as_bytes()).unwrap();
        assert!(e.is_bounce());
        assert_eq!(
            (e.user.as_str(), e.last_error.clone(), e.warned),
            ("", None, false)
        );
        assert_eq!(e.rcpts[0].last_reply, None);
        assert_eq!(e.pending().count(), 0);
        let extra = format!("{FULL_YAML}priority: 1\n");
        assert!(decode(extra.as_bytes()).is_err());
        assert!(decode(b"not: [an envelope").is_err());
    }

    #[test]
    fn text_that_only_looks_like_a_header_block_is_message() {
        for text in [
            &b"POSTERN-ENVELOPE x\nhello"[..],
            b"POSTERN-ENVELOPE 99\nshort",
            b"POSTERN-ENVELOPE 5",
            b"POSTERN-ENVELOPE 123456789012345678901234\nlong",
            b"Subject: POSTERN-ENVELOPE 3\nabc",
        ] {
            assert_eq!(split_embedded(text), (None, text));
            assert_eq!(body_of(text), text);
        }
        // An empty envelope block is still a block.
        assert_eq!(
            split_embedded(b"POSTERN-ENVELOPE 0\nmsg"),
            (Some(&b""[..]), &b"msg"[..])
        );
    }
}
