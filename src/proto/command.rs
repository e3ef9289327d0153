//! Command parsing: smtp-proto does the grammar; this maps its errors to replies.

use super::address::parse_path;
use super::reply::{Esc, Reply};
pub use smtp_proto::{MailFrom, RcptTo, Request};

/// A parsed command with owned strings.
pub type Command = Request<String>;

/// Parses one complete command line (CRLF included, already checked by
/// [`super::line::next_line`]). Errors come back as the reply to send.
///
/// The path of MAIL and RCPT is read by [`super::address`], never by smtp-proto
/// (which unquotes it and loses where the quotes were): the command's `address` is
/// the canonical wire form, and smtp-proto only parses the parameters after it.
pub fn parse_command(line: &[u8]) -> Result<Command, Reply> {
    if let Some((mail, after)) = envelope_command(line) {
        return parse_envelope(mail, after);
    }
    let mut it = line.iter();
    let command = Request::parse(&mut it)
        .map(Request::into_owned)
        .map_err(error_reply)?;
    if matches!(command, Request::Mail { .. } | Request::Rcpt { .. }) {
        // A spelling smtp-proto takes but the strict path reader was not given.
        return Err(Reply::new(
            501,
            Esc(5, 5, 4),
            "Syntax: MAIL FROM:<address> or RCPT TO:<address>",
        ));
    }
    Ok(command)
}

/// `MAIL FROM:` (true) or `RCPT TO:` (false), and what follows the colon up to CRLF.
fn envelope_command(line: &[u8]) -> Option<(bool, &[u8])> {
    let body = line.strip_suffix(b"\r\n").unwrap_or(line);
    for (prefix, mail) in [(&b"MAIL FROM:"[..], true), (&b"RCPT TO:"[..], false)] {
        if body.len() >= prefix.len() && body[..prefix.len()].eq_ignore_ascii_case(prefix) {
            return Some((mail, &body[prefix.len()..]));
        }
    }
    None
}

/// MAIL or RCPT: the path by the strict reader, the parameters by smtp-proto.
fn parse_envelope(mail: bool, after: &[u8]) -> Result<Command, Reply> {
    let (path, params) = parse_path(after).map_err(|e| {
        if mail {
            Reply::new(501, Esc(5, 1, 7), format!("Bad sender address syntax: {e}"))
        } else {
            Reply::new(
                501,
                Esc(5, 1, 3),
                format!("Bad recipient address syntax: {e}"),
            )
        }
    })?;
    let verb: &[u8] = if mail {
        b"MAIL FROM:<a@a>"
    } else {
        b"RCPT TO:<a@a>"
    };
    let mut synthetic = Vec::with_capacity(verb.len() + params.len() + 2);
    synthetic.extend_from_slice(verb);
    synthetic.extend_from_slice(params);
    synthetic.extend_from_slice(b"\r\n");
    let mut it = synthetic.iter();
    let mut command = Request::parse(&mut it)
        .map(Request::into_owned)
        .map_err(error_reply)?;
    match &mut command {
        Request::Mail { from } => from.address = path.wire(),
        Request::Rcpt { to } => to.address = path.wire(),
        _ => unreachable!("the synthetic line is MAIL or RCPT"),
    }
    Ok(command)
}

/// The reply for each of smtp-proto's parse errors.
pub fn error_reply(e: smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match e {
        E::UnknownCommand => Reply::new(500, Esc(5, 5, 1), "Command unrecognized"),
        E::InvalidSenderAddress => Reply::new(501, Esc(5, 1, 7), "Bad sender address syntax"),
        E::InvalidRecipientAddress => Reply::new(501, Esc(5, 1, 3), "Bad recipient address syntax"),
        E::SyntaxError { syntax } => Reply::new(501, Esc(5, 5, 4), format!("Syntax: {syntax}")),
        E::InvalidParameter { param } => {
            Reply::new(501, Esc(5, 5, 4), format!("Invalid parameter {param}"))
        }
        E::UnsupportedParameter { param } => Reply::new(
            555,
            Esc(5, 5, 4),
            format!(
                "Unsupported parameter {}",
                param.chars().take(32).collect::<String>()
            ),
        ),
        E::NeedsMoreData { .. } | E::ResponseTooLong | E::InvalidResponse { .. } => {
            Reply::new(500, Esc(5, 5, 2), "Syntax error")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8};

    fn ok(line: &str) -> Command {
        parse_command(line.as_bytes()).unwrap_or_else(|r| panic!("{line:?} -> {r}"))
    }

    fn err(line: &str) -> String {
        match parse_command(line.as_bytes()) {
            Ok(c) => panic!("{line:?} parsed as {c:?}"),
            Err(r) => r.to_string(),
        }
    }

    #[test]
    fn simple_verbs() {
        assert_eq!(
            ok("EHLO client.example\r\n"),
            Request::Ehlo {
                host: "client.example".into()
            }
        );
        assert_eq!(
            ok("ehlo [127.0.0.1]\r\n"),
            Request::Ehlo {
                host: "[127.0.0.1]".into()
            }
        );
        assert_eq!(ok("HELO x\r\n"), Request::Helo { host: "x".into() });
        assert_eq!(ok("STARTTLS\r\n"), Request::StartTls);
        assert_eq!(ok("DATA\r\n"), Request::Data);
        assert_eq!(ok("RSET\r\n"), Request::Rset);
        assert_eq!(ok("QUIT\r\n"), Request::Quit);
        assert!(matches!(ok("NOOP\r\n"), Request::Noop { .. }));
        assert!(matches!(ok("HELP\r\n"), Request::Help { .. }));
        assert!(matches!(ok("VRFY postmaster\r\n"), Request::Vrfy { .. }));
    }

    #[test]
    fn mail_and_rcpt() {
        let Request::Mail { from } = ok("MAIL FROM:<a@b.example>\r\n") else {
            panic!()
        };
        assert_eq!(from.address, "a@b.example");
        let Request::Mail { from } = ok("mail from:<a@b.example> SIZE=1000 BODY=8BITMIME\r\n")
        else {
            panic!()
        };
        assert_eq!(
            (from.size, from.flags & MAIL_BODY_8BITMIME != 0),
            (1000, true)
        );
        let Request::Mail { from } = ok("MAIL FROM:<j\u{f6}s\u{e9}@b.example> SMTPUTF8\r\n") else {
            panic!()
        };
        assert_eq!(from.address, "j\u{f6}s\u{e9}@b.example");
        assert!(from.flags & MAIL_SMTPUTF8 != 0);
        let Request::Mail { from } = ok("MAIL FROM:<>\r\n") else {
            panic!()
        };
        assert_eq!(from.address, "");
        let Request::Rcpt { to } = ok("RCPT TO:<c@d.example>\r\n") else {
            panic!()
        };
        assert_eq!(to.address, "c@d.example");
    }

    #[test]
    fn auth() {
        let Request::Auth {
            mechanism,
            initial_response,
        } = ok("AUTH PLAIN AGEAYg==\r\n")
        else {
            panic!()
        };
        assert_eq!(
            (mechanism, initial_response.as_str()),
            (AUTH_PLAIN, "AGEAYg==")
        );
        let Request::Auth {
            mechanism,
            initial_response,
        } = ok("AUTH LOGIN\r\n")
        else {
            panic!()
        };
        assert_eq!((mechanism, initial_response.as_str()), (AUTH_LOGIN, ""));
    }

    #[test]
    fn errors_carry_their_reply() {
        assert!(err("FOO\r\n").starts_with("500 5.5.1"));
        assert!(err("MAIL TO:<a@b>\r\n").starts_with("501 5.5.4"));
        assert!(err("RCPT FROM:<a@b>\r\n").starts_with("501 5.5.4"));
        assert!(err("EHLO\r\n").starts_with("501 5.5.4"));
        assert!(err("MAIL FROM:<a@b> FOO=BAR\r\n").starts_with("555 5.5.4"));
    }
}
