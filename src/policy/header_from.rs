//! The header From and Sender must belong to the user too: a leaked password must not
//! let anyone write `From: ceo@bank.example` under a permitted envelope sender.
//!
//! Headers are parsed with mail-parser. Every address in every `From:` and `Sender:`
//! header must be allowed by the user's `senders`; a header that does not parse as
//! addresses is refused. A message with no `From:` at all passes (there is nothing to
//! forge, and RFC 6409 lets a submission server accept it).

use super::senders::{SenderRule, sender_allowed};
use mail_parser::{HeaderName, HeaderValue, MessageParser};
use std::fmt;

/// Why the headers are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderFromError {
    NotAllowed {
        header: &'static str,
        address: String,
    },
    Unparseable {
        header: &'static str,
    },
    /// No end of the header section within [`MAX_HEADER_SECTION`] bytes.
    TooLarge,
}

/// Most bytes of header section held back for the check.
pub const MAX_HEADER_SECTION: usize = 1 << 20;

impl fmt::Display for HeaderFromError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderFromError::NotAllowed { header, address } => {
                write!(f, "{header} address <{address}> not allowed for this user")
            }
            HeaderFromError::Unparseable { header } => {
                write!(f, "{header} header is not a valid address list")
            }
            HeaderFromError::TooLarge => {
                write!(f, "header section larger than {MAX_HEADER_SECTION} bytes")
            }
        }
    }
}

/// Where the header section ends (just after its blank line), if it has ended.
pub fn header_end(content: &[u8]) -> Option<usize> {
    if content.starts_with(b"\r\n") {
        return Some(2);
    }
    content
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// Checks `From:` and `Sender:` in a header section against the user's rules.
pub fn check_header_senders(head: &[u8], rules: &[SenderRule]) -> Result<(), HeaderFromError> {
    let Some(message) = MessageParser::default().parse_headers(head) else {
        return Ok(());
    };
    for (name, label) in [(HeaderName::From, "From"), (HeaderName::Sender, "Sender")] {
        for value in message.header_values(name) {
            let HeaderValue::Address(list) = value else {
                return Err(HeaderFromError::Unparseable { header: label });
            };
            let mut any = false;
            for addr in list.iter() {
                any = true;
                let Some(address) = addr.address() else {
                    return Err(HeaderFromError::Unparseable { header: label });
                };
                if !sender_allowed(rules, address) {
                    return Err(HeaderFromError::NotAllowed {
                        header: label,
                        address: address.to_string(),
                    });
                }
            }
            if !any {
                return Err(HeaderFromError::Unparseable { header: label });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<SenderRule> {
        ["@site1.example", "alerts@site2.example"]
            .iter()
            .map(|s| SenderRule::parse(s).unwrap())
            .collect()
    }

    fn check(head: &str) -> Result<(), HeaderFromError> {
        check_header_senders(head.as_bytes(), &rules())
    }

    #[test]
    fn allowed_forms() {
        assert_eq!(check("From: a@site1.example\r\n\r\n"), Ok(()));
        assert_eq!(
            check("From: \"Site One\" <news@SITE1.example>\r\nSubject: x\r\n\r\n"),
            Ok(())
        );
        assert_eq!(
            check("From: =?UTF-8?Q?J=C3=B6rg?= <j@site1.example>\r\n\r\n"),
            Ok(())
        );
        assert_eq!(
            check("From: a@site1.example, Alerts <alerts@site2.example>\r\n\r\n"),
            Ok(())
        );
        assert_eq!(
            check("From: a@site1.example\r\nSender: alerts@site2.example\r\n\r\n"),
            Ok(())
        );
        assert_eq!(check("Subject: no from at all\r\n\r\n"), Ok(()));
        assert_eq!(
            check("From: team: a@site1.example, b@site1.example;\r\n\r\n"),
            Ok(())
        );
    }

    #[test]
    fn forged_forms() {
        let not = |h: &str, header: &'static str, address: &str| {
            assert_eq!(
                check(h),
                Err(HeaderFromError::NotAllowed {
                    header,
                    address: address.into()
                }),
                "{h:?}"
            );
        };
        not("From: ceo@bank.example\r\n\r\n", "From", "ceo@bank.example");
        not(
            "From: \"a@site1.example\" <ceo@bank.example>\r\n\r\n",
            "From",
            "ceo@bank.example",
        );
        not(
            "From: a@site1.example, ceo@bank.example\r\n\r\n",
            "From",
            "ceo@bank.example",
        );
        not(
            "From: a@site1.example\r\nSender: x@bank.example\r\n\r\n",
            "Sender",
            "x@bank.example",
        );
        not(
            "From: a@site1.example\r\nFrom: ceo@bank.example\r\n\r\n",
            "From",
            "ceo@bank.example",
        );
        not(
            "From: x@site1.example.evil\r\n\r\n",
            "From",
            "x@site1.example.evil",
        );
        not(
            "From: a@site1.example\r\n (folded)\r\nFrom: \r\n ceo@bank.example\r\n\r\n",
            "From",
            "ceo@bank.example",
        );
        assert_eq!(
            check("From: Just A Name\r\n\r\n"),
            Err(HeaderFromError::Unparseable { header: "From" })
        );
    }

    #[test]
    fn header_end_positions() {
        assert_eq!(header_end(b"\r\nbody"), Some(2));
        assert_eq!(header_end(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(header_end(b"A: b\r\nC: d\r\n"), None);
    }
}
