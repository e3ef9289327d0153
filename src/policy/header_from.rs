//! The header From and Sender must belong to the user too: a leaked password must not
//! let anyone write `From: ceo@bank.example` under a permitted envelope sender.
//!
//! The check reads the fields of [`crate::proto::header`], the very bytes that are
//! relayed, and their address lists with [`crate::proto::mailbox_list`], strictly:
//! every address in every `From:` and `Sender:` field must be one valid addr-spec
//! allowed by the user's `senders`, in the same wire form the envelope rules see. A
//! value that is not a valid list is refused, never passed. A message with no
//! `From:` at all passes (there is nothing to forge, and RFC 6409 lets a submission
//! server accept it).

use super::senders::{SenderRule, sender_allowed};
use crate::proto::header::Field;
use crate::proto::mailbox_list::{parse_address_list, parse_single_mailbox};
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
    /// The null sender with no `From:`: nobody would be accountable for the message,
    /// and a smarthost would fill in its own MAILER-DAEMON.
    Missing,
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
            HeaderFromError::Missing => {
                write!(f, "a message with the null sender must have a From header")
            }
        }
    }
}

/// The fields that name who sent a message, and whether each holds a list (`From:`)
/// or one mailbox. `Resent-*` fields name whoever resent it, and mail clients show
/// them, so they are held to the same rules.
const SENDER_FIELDS: [(&str, bool); 4] = [
    ("From", true),
    ("Sender", false),
    ("Resent-From", true),
    ("Resent-Sender", false),
];

/// Checks every `From:`, `Sender:`, `Resent-From:` and `Resent-Sender:` field against
/// the user's rules.
pub fn check_header_senders(
    fields: &[Field<'_>],
    rules: &[SenderRule],
) -> Result<(), HeaderFromError> {
    for field in fields {
        let Some(&(header, list)) = SENDER_FIELDS.iter().find(|(name, _)| field.is(name)) else {
            continue;
        };
        let mailboxes = if list {
            parse_address_list(field.value)
        } else {
            parse_single_mailbox(field.value).map(|m| vec![m])
        };
        let mailboxes = mailboxes.map_err(|_| HeaderFromError::Unparseable { header })?;
        for m in mailboxes {
            let address = m.wire();
            if !sender_allowed(rules, &address) {
                return Err(HeaderFromError::NotAllowed { header, address });
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
        let head = head.strip_suffix("\r\n").unwrap_or(head);
        let fields = crate::proto::header::fields(head.as_bytes()).expect("a readable header");
        check_header_senders(&fields, &rules())
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
            "From: a@site1.example\r\nResent-From: ceo@bank.example\r\n\r\n",
            "Resent-From",
            "ceo@bank.example",
        );
        not(
            "From: a@site1.example\r\nresent-sender: <ceo@bank.example>\r\n\r\n",
            "Resent-Sender",
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
}
