//! The `Received:` trace header Postern prepends (RFC 5321 4.4, RFC 3848).

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the trace header says about one accepted message.
#[derive(Debug, Clone)]
pub struct Trace<'a> {
    /// The EHLO/HELO name the client gave.
    pub helo: &'a str,
    /// The client's address; `None` when the operator hides it.
    pub client_ip: Option<IpAddr>,
    /// Our own hostname.
    pub by: &'a str,
    /// `ESMTPSA` for an authenticated TLS session (RFC 3848), etc.
    pub with: &'a str,
    /// Session or queue id.
    pub id: &'a str,
    /// TLS version and cipher suite, when the session was encrypted (Postern's own text).
    pub tls: Option<&'a str>,
    /// The recipient, named only when there is exactly one.
    pub for_rcpt: Option<&'a str>,
    pub time: SystemTime,
}

/// Builds the header, folded over several lines, ending in CRLF.
pub fn received_header(t: &Trace<'_>) -> String {
    let mut h = String::from("Received:");
    if let Some(ip) = t.client_ip {
        h.push_str(&format!(
            " from {} ({})\r\n\t",
            clean(t.helo),
            address_literal(ip)
        ));
    } else {
        h.push(' ');
    }
    h.push_str(&format!(
        "by {} (Postern) with {} id {}",
        clean(t.by),
        t.with,
        clean(t.id)
    ));
    if let Some(tls) = t.tls {
        h.push_str(&format!("\r\n\t(using {tls})"));
    }
    if let Some(rcpt) = t.for_rcpt {
        h.push_str(&format!("\r\n\tfor <{}>", clean(rcpt)));
    }
    h.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(t.time)));
    h
}

/// Keeps a client-supplied word from breaking the header: no controls, no spaces,
/// no parentheses or semicolons that would change how it is read.
fn clean(s: &str) -> String {
    let s: String = s
        .chars()
        .take(255)
        .map(|c| {
            if c.is_control() || c.is_whitespace() || matches!(c, '(' | ')' | ';' | '<' | '>') {
                '_'
            } else {
                c
            }
        })
        .collect();
    if s.is_empty() { "unknown".into() } else { s }
}

/// Formats a time as an RFC 5322 date in UTC, e.g. `Sat, 28 Nov 2026 17:37:42 +0000`
/// (mail-parser's formatter).
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    mail_parser::DateTime::from_timestamp(secs as i64).to_rfc822()
}

/// An RFC 5321 address literal: `[192.0.2.7]`, `[IPv6:2001:db8::7]`; an IPv4 address
/// mapped into IPv6 (a dual-stack socket) is written as IPv4.
pub fn address_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("[{v4}]"),
            None => format!("[IPv6:{v6}]"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        let at = |s: u64| rfc5322_date(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(at(1_795_887_462), "Sat, 28 Nov 2026 17:37:42 +0000");
    }

    #[test]
    fn header_with_and_without_client() {
        let mut t = Trace {
            helo: "client.example",
            client_ip: Some("192.0.2.7".parse().unwrap()),
            by: "smtp.example.net",
            with: "ESMTPSA",
            id: "abc123",
            tls: Some("TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384"),
            for_rcpt: Some("bob@example.org"),
            time: UNIX_EPOCH,
        };
        assert_eq!(
            received_header(&t),
            "Received: from client.example ([192.0.2.7])\r\n\tby smtp.example.net (Postern) \
             with ESMTPSA id abc123\r\n\t(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\t\
             for <bob@example.org>;\r\n\tThu, 1 Jan 1970 00:00:00 +0000\r\n"
        );
        t.client_ip = Some("2001:db8::7".parse().unwrap());
        assert!(received_header(&t).contains(" from client.example ([IPv6:2001:db8::7])\r\n"));
        t.client_ip = Some("::ffff:192.0.2.8".parse().unwrap());
        assert!(received_header(&t).contains(" from client.example ([192.0.2.8])\r\n"));
        t.client_ip = None;
        t.tls = None;
        t.for_rcpt = None;
        assert_eq!(
            received_header(&t),
            "Received: by smtp.example.net (Postern) with ESMTPSA id abc123;\r\n\t\
             Thu, 1 Jan 1970 00:00:00 +0000\r\n"
        );
    }

    #[test]
    fn hostile_helo_cannot_inject_lines() {
        let t = Trace {
            helo: "x\r\nBcc: victim@example (evil);",
            client_ip: Some("192.0.2.7".parse().unwrap()),
            by: "h",
            with: "ESMTPSA",
            id: "i",
            tls: None,
            for_rcpt: None,
            time: UNIX_EPOCH,
        };
        let h = received_header(&t);
        assert!(h.starts_with("Received: from x__Bcc:_victim@example__evil__ ([192.0.2.7])"));
        assert_eq!(h.matches("\r\n").count(), 3);
    }
}
