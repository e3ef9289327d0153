//! Envelope addresses as they go on the wire (RFC 5321 section 4.1.2, RFC 6531).
//!
//! smtp-proto unquotes a quoted local part and forgets where the quotes were, so the
//! address it returns can be neither checked nor written back safely:
//! `<"ceo@bank.example> AUTH="@site1.example>` would look like a `site1.example`
//! sender and reach the smarthost as `<ceo@bank.example> AUTH=@site1.example>`.
//! This parser reads the path from the command line itself, refuses anything outside
//! the grammar (control characters above all), and gives the address in one canonical
//! wire form: a dot-string local part as it came, any other local part quoted, with
//! only `"` and `\` escaped. The sender rules check that form, and that form alone is
//! written into upstream commands, so what was checked is what is sent.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest local part (RFC 5321 section 4.5.3.1.1), in its wire form.
pub const MAX_LOCAL: usize = 64;
/// Longest domain (RFC 5321 section 4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Longest path, brackets included (RFC 5321 section 4.5.3.1.3).
pub const MAX_PATH: usize = 256;

/// A reverse-path or forward-path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// `<>`: the null reverse-path.
    Null,
    Mailbox(Mailbox),
}

/// One mailbox: its local part without quoting, and its domain as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub local: String,
    pub domain: String,
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    /// Not `<...>` or a plain mailbox; unbalanced quotes; junk after `>`.
    Syntax,
    /// A control character (or DEL) anywhere in the address.
    Control,
    /// No `@domain`.
    NoDomain,
    /// Not a domain name or an IPv4/IPv6 address literal.
    BadDomain,
    /// Empty local part, or a dot where RFC 5321 has none.
    BadLocal,
    /// Over the lengths of RFC 5321 section 4.5.3.1.
    TooLong,
    /// Bytes that are not UTF-8.
    NotUtf8,
    /// A quoted local part with `@`, `<`, `>` or another RFC 5322 special in it.
    QuotedSpecial,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressError::Syntax => "not a valid path",
            AddressError::Control => "control character in address",
            AddressError::NoDomain => "address has no domain",
            AddressError::BadDomain => "invalid domain",
            AddressError::BadLocal => "invalid local part",
            AddressError::TooLong => "address too long",
            AddressError::NotUtf8 => "address is not valid UTF-8",
            AddressError::QuotedSpecial => "special characters in a quoted local part",
        })
    }
}

impl Mailbox {
    /// The canonical wire form: `local@domain`, the local part quoted only when it is
    /// not a dot-string.
    pub fn wire(&self) -> String {
        let mut s = quote_local(&self.local);
        s.push('@');
        s.push_str(&self.domain);
        s
    }
}

impl Path {
    /// The wire form between the brackets (empty for the null path).
    pub fn wire(&self) -> String {
        match self {
            Path::Null => String::new(),
            Path::Mailbox(m) => m.wire(),
        }
    }
}

/// Whether `s`, an address stored earlier (in a spool envelope), is exactly the
/// canonical wire form of a valid path. A spool written by an older release, or
/// edited by hand, may hold anything; only an address that passes this goes into an
/// upstream command.
pub fn is_canonical_path(s: &str) -> bool {
    let line = format!("<{s}>");
    matches!(parse_path(line.as_bytes()), Ok((p, rest)) if rest.is_empty() && p.wire() == s)
}

/// The local part as written on the wire: as it is when it is a dot-string,
/// otherwise a quoted string with `"` and `\` escaped.
pub fn quote_local(local: &str) -> String {
    if is_dot_string(local.as_bytes()) {
        return local.to_string();
    }
    let mut s = String::with_capacity(local.len() + 2);
    s.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// RFC 5322 atext, plus UTF-8 (RFC 6531's extension of it).
pub fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

/// `Atom *("." Atom)`.
pub fn is_dot_string(s: &[u8]) -> bool {
    !s.is_empty()
        && s.split(|&b| b == b'.')
            .all(|atom| !atom.is_empty() && atom.iter().all(|&b| is_atext(b)))
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Parses the path at the start of `s` (the text after `MAIL FROM:` or `RCPT TO:`,
/// without the CRLF) and returns it with the rest of the line (the parameters).
/// Spaces before the path are tolerated; a path without brackets is read up to the
/// first space, as lenient servers do.
pub fn parse_path(s: &[u8]) -> Result<(Path, &[u8]), AddressError> {
    if s.iter().any(|&b| is_control(b)) {
        // Nothing in a command line may carry one, parameters included.
        return Err(AddressError::Control);
    }
    let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    let s = &s[start..];
    let (inner, rest) = if s.first() == Some(&b'<') {
        let end = path_end(s)?;
        (&s[1..end], &s[end + 1..])
    } else {
        let end = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
        if end == 0 {
            return Err(AddressError::Syntax);
        }
        (&s[..end], &s[end..])
    };
    if !rest.is_empty() && rest[0] != b' ' {
        return Err(AddressError::Syntax);
    }
    if inner.len() + 2 > MAX_PATH {
        return Err(AddressError::TooLong);
    }
    if inner.is_empty() {
        return Ok((Path::Null, rest));
    }
    let mailbox = parse_mailbox(strip_source_route(inner)?)?;
    Ok((Path::Mailbox(mailbox), rest))
}

/// Where the closing `>` is, honouring quoted strings.
fn path_end(s: &[u8]) -> Result<usize, AddressError> {
    let mut i = 1;
    let mut quoted = false;
    while i < s.len() {
        match s[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Ok(i),
            _ => {}
        }
        i += 1;
    }
    Err(AddressError::Syntax)
}

/// Drops an obsolete source route (`@a,@b:`), which RFC 5321 says to ignore.
fn strip_source_route(s: &[u8]) -> Result<&[u8], AddressError> {
    if s.first() != Some(&b'@') {
        return Ok(s);
    }
    let colon = s
        .iter()
        .position(|&b| b == b':')
        .ok_or(AddressError::Syntax)?;
    for hop in s[..colon].split(|&b| b == b',') {
        let domain = hop.strip_prefix(b"@").ok_or(AddressError::Syntax)?;
        check_domain(domain)?;
    }
    Ok(&s[colon + 1..])
}

/// `Local-part "@" ( Domain / address-literal )`.
pub fn parse_mailbox(s: &[u8]) -> Result<Mailbox, AddressError> {
    let (local, wire_len, rest) = if s.first() == Some(&b'"') {
        parse_quoted(s)?
    } else {
        let end = s.iter().position(|&b| b == b'@').unwrap_or(s.len());
        let local = &s[..end];
        if !is_dot_string(local) {
            return Err(AddressError::BadLocal);
        }
        (local.to_vec(), end, &s[end..])
    };
    let domain = rest.strip_prefix(b"@").ok_or(AddressError::NoDomain)?;
    if wire_len > MAX_LOCAL {
        return Err(AddressError::TooLong);
    }
    mailbox(local, domain)
}

/// Builds a mailbox from a local part (unquoted) and a domain, with every check
/// that both the envelope and the header addresses get: valid UTF-8 with no control
/// or bidirectional-formatting character, a quoted local part with none of RFC
/// 5322's specials (a next hop that unquotes it must not find `<`, `>`, `@` or a
/// parameter in it), a valid domain, and the lengths of RFC 5321.
pub fn mailbox(local: Vec<u8>, domain: &[u8]) -> Result<Mailbox, AddressError> {
    check_domain(domain)?;
    let local = String::from_utf8(local).map_err(|_| AddressError::NotUtf8)?;
    let domain = String::from_utf8(domain.to_vec()).map_err(|_| AddressError::NotUtf8)?;
    if !safe_text(&local) || !safe_text(&domain) {
        return Err(AddressError::Control);
    }
    if local.is_empty() {
        return Err(AddressError::BadLocal);
    }
    if !is_dot_string(local.as_bytes()) && local.contains(QUOTED_SPECIALS) {
        return Err(AddressError::QuotedSpecial);
    }
    let mailbox = Mailbox { local, domain };
    let wire = mailbox.wire();
    let local_len = wire.len() - mailbox.domain.len() - 1;
    if local_len > MAX_LOCAL || wire.len() > MAX_LOCAL + 1 + MAX_DOMAIN {
        return Err(AddressError::TooLong);
    }
    Ok(mailbox)
}

/// What a quoted local part may not hold: the specials of RFC 5322 section 3.2.3.
const QUOTED_SPECIALS: &[char] = &['@', '<', '>', '(', ')', '[', ']', ',', ';', ':', '\\', '"'];

/// No control character (C0, DEL, C1) and no invisible formatting character that
/// could reorder or hide text in a log, a terminal or a mail client.
pub fn safe_text(s: &str) -> bool {
    !s.chars().any(|c| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
    })
}

/// A quoted local part: its content unescaped, its length on the wire, and the rest.
fn parse_quoted(s: &[u8]) -> Result<(Vec<u8>, usize, &[u8]), AddressError> {
    let mut out = Vec::new();
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => {
                if out.is_empty() {
                    return Err(AddressError::BadLocal);
                }
                return Ok((out, i + 1, &s[i + 1..]));
            }
            b'\\' => {
                let next = *s.get(i + 1).ok_or(AddressError::Syntax)?;
                if is_control(next) {
                    return Err(AddressError::Control);
                }
                out.push(next);
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Err(AddressError::Syntax)
}

/// A domain name (LDH labels, or UTF-8 U-labels) or an IPv4/IPv6 address literal.
pub fn check_domain(d: &[u8]) -> Result<(), AddressError> {
    if d.is_empty() {
        return Err(AddressError::NoDomain);
    }
    if d.len() > MAX_DOMAIN {
        return Err(AddressError::TooLong);
    }
    if let Some(literal) = d.strip_prefix(b"[") {
        let literal = literal.strip_suffix(b"]").ok_or(AddressError::BadDomain)?;
        let text = std::str::from_utf8(literal).map_err(|_| AddressError::BadDomain)?;
        let ok = match text.strip_prefix("IPv6:") {
            Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
            None => text.parse::<Ipv4Addr>().is_ok(),
        };
        return if ok {
            Ok(())
        } else {
            Err(AddressError::BadDomain)
        };
    }
    let label_ok = |l: &[u8]| {
        !l.is_empty()
            && l.len() <= 63
            && l.first() != Some(&b'-')
            && l.last() != Some(&b'-')
            && l.iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b >= 0x80)
    };
    if d.split(|&b| b == b'.').all(label_ok) {
        Ok(())
    } else {
        Err(AddressError::BadDomain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(s: &str) -> Result<(String, String), AddressError> {
        parse_path(s.as_bytes())
            .map(|(p, rest)| (p.wire(), String::from_utf8(rest.to_vec()).unwrap()))
    }

    #[test]
    fn plain_forms() {
        let ok = |s: &str, w: &str, rest: &str| {
            assert_eq!(wire(s), Ok((w.to_string(), rest.to_string())), "{s:?}");
        };
        ok("<a@b.example>", "a@b.example", "");
        ok("<a@b.example> SIZE=10", "a@b.example", " SIZE=10");
        ok(
            " <first.last+tag@B.Example>",
            "first.last+tag@B.Example",
            "",
        );
        ok("<>", "", "");
        ok("<> BODY=8BITMIME", "", " BODY=8BITMIME");
        ok("a@b.example SIZE=1", "a@b.example", " SIZE=1");
        ok(
            "<@relay.example,@r2.example:a@b.example>",
            "a@b.example",
            "",
        );
        ok("<a@[192.0.2.1]>", "a@[192.0.2.1]", "");
        ok("<a@[IPv6:2001:db8::1]>", "a@[IPv6:2001:db8::1]", "");
        ok(
            "<j\u{f6}rg@b\u{fc}ro.example>",
            "j\u{f6}rg@b\u{fc}ro.example",
            "",
        );
    }

    #[test]
    fn quoted_local_parts_are_canonical() {
        let ok = |s: &str, w: &str| assert_eq!(wire(s).map(|x| x.0), Ok(w.to_string()), "{s:?}");
        ok("<\"john smith\"@example.org>", "\"john smith\"@example.org");
        // Needless quotes go.
        ok("<\"alerts\"@site2.example>", "alerts@site2.example");
        ok("<\"a\\lerts\"@site2.example>", "alerts@site2.example");
        ok("<\"a..b\"@x.example>", "\"a..b\"@x.example");
        ok("<\".x\"@x.example>", "\".x\"@x.example");
    }

    #[test]
    fn quoted_specials_are_refused() {
        // The attack of finding 1, and every special a next hop that unquotes
        // would read as syntax: refused, never relayed.
        for s in [
            "<\"ceo@bank.example> AUTH=\"@site1.example>",
            "<\"ceo@bank.example\"@site1.example>",
            "<\"a>b\"@x.example> NOTIFY=NEVER",
            "<\"a\\\"b\"@x.example>",
            "<\"a\\\\b\"@x.example>",
            "<\"a,b\"@x.example>",
            "<\"a;b\"@x.example>",
            "<\"a:b\"@x.example>",
            "<\"(a)\"@x.example>",
            "<\"[a]\"@x.example>",
            "<\"<a\"@x.example>",
        ] {
            assert_eq!(wire(s), Err(AddressError::QuotedSpecial), "{s:?}");
        }
    }

    #[test]
    fn refused() {
        let bad = |s: &str, e: AddressError| assert_eq!(wire(s), Err(e), "{s:?}");
        bad("<a\u{1}b@x.example>", AddressError::Control);
        bad("<\"a\u{1}b\"@x.example>", AddressError::Control);
        bad("<\"a\tb\"@x.example>", AddressError::Control);
        bad("<\"a\u{7f}\"@x.example>", AddressError::Control);
        bad("<a\u{85}b@x.example>", AddressError::Control);
        bad("<\"x\u{9b}31m\"@x.example>", AddressError::Control);
        bad("<a\u{202e}b@x.example>", AddressError::Control);
        bad("<a\u{200b}@x.example>", AddressError::Control);
        bad("<a@x\u{2066}.example>", AddressError::Control);
        bad("<a@x.example> X=\u{1b}[31m", AddressError::Control);
        bad("<a@b.example", AddressError::Syntax);
        bad("<\"a@b.example>", AddressError::Syntax);
        bad("<a@b.example>junk", AddressError::Syntax);
        bad("<a b@x.example>", AddressError::BadLocal);
        bad("<a..b@x.example>", AddressError::BadLocal);
        bad("<.a@x.example>", AddressError::BadLocal);
        bad("<a.@x.example>", AddressError::BadLocal);
        bad("<@x.example>", AddressError::Syntax);
        bad("<\"\"@x.example>", AddressError::BadLocal);
        bad("<postmaster>", AddressError::NoDomain);
        bad("<a@>", AddressError::NoDomain);
        bad("<a@b@c.example>", AddressError::BadDomain);
        bad("<a@b..example>", AddressError::BadDomain);
        bad("<a@-b.example>", AddressError::BadDomain);
        bad("<a@b.example.>", AddressError::BadDomain);
        bad("<a@\"b\".example>", AddressError::BadDomain);
        bad("<a@[300.1.1.1]>", AddressError::BadDomain);
        bad("<a@[x]>", AddressError::BadDomain);
        bad(
            &format!("<{}@x.example>", "a".repeat(65)),
            AddressError::TooLong,
        );
        bad(
            &format!("<a@{}.example>", "b".repeat(250)),
            AddressError::TooLong,
        );
        bad("<a\u{1}b@x.example>", AddressError::Control);
    }

    #[test]
    fn stored_addresses_are_checked_before_going_upstream() {
        for ok in [
            "a@b.example",
            "\"a b\"@b.example",
            "",
            "j\u{f6}rg@b\u{fc}ro.example",
        ] {
            assert!(is_canonical_path(ok), "{ok:?}");
        }
        for bad in [
            "ceo@bank.example> AUTH=@site1.example",
            "\"alerts\"@b.example",
            "a@b.example> NOTIFY=NEVER",
            "a@b.example\r\nRSET",
            "a b@b.example",
            "<a@b.example>",
        ] {
            assert!(!is_canonical_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn wire_forms_parse_back_to_themselves() {
        for local in [
            "a",
            "a.b",
            "john smith",
            "a..b",
            ".x",
            "x.",
            "\u{f6}",
            "a b c",
        ] {
            let m = Mailbox {
                local: local.into(),
                domain: "x.example".into(),
            };
            let w = m.wire();
            let line = format!("<{w}>");
            let (p, rest) = parse_path(line.as_bytes()).unwrap();
            assert_eq!(p, Path::Mailbox(m), "{w}");
            assert!(rest.is_empty());
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// Lines of bytes that address attacks are made of.
        fn hostile() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(b"<".to_vec()),
                Just(b">".to_vec()),
                Just(b"\"".to_vec()),
                Just(b"\\".to_vec()),
                Just(b"@".to_vec()),
                Just(b" ".to_vec()),
                Just(b".".to_vec()),
                Just(b":".to_vec()),
                Just(b",".to_vec()),
                Just(b"[".to_vec()),
                Just(b"]".to_vec()),
                Just(b"AUTH=".to_vec()),
                Just("\u{e9}".as_bytes().to_vec()),
                Just(vec![0xff]),
                Just(vec![1]),
                Just(vec![0x7f]),
                Just(b"site1.example".to_vec()),
                proptest::collection::vec(b'a'..=b'z', 1..5),
            ];
            proptest::collection::vec(piece, 0..16).prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]

            /// Whatever the client wrote, an accepted path has a wire form with no
            /// control character, that reads back as the same path and closes with
            /// its only top-level `>`: nothing after it can be smuggled upstream.
            #[test]
            fn accepted_paths_are_canonical(line in hostile()) {
                if let Ok((path, rest)) = parse_path(&line) {
                    let wire = path.wire();
                    prop_assert!(!wire.bytes().any(is_control));
                    let again = format!("<{wire}>");
                    let (back, tail) = parse_path(again.as_bytes()).expect("the wire form reads back");
                    prop_assert_eq!(back, path);
                    prop_assert!(tail.is_empty());
                    prop_assert_eq!(path_end(again.as_bytes()), Ok(again.len() - 1));
                    prop_assert!(rest.is_empty() || rest[0] == b' ');
                }
            }

            /// Any mailbox goes out and comes back unchanged.
            #[test]
            fn any_mailbox_round_trips(local in "[ -~\u{e9}\u{85}\u{202e}]{1,20}", domain in "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}") {
                // Whatever the checks let through goes out and comes back unchanged.
                if let Ok(m) = mailbox(local.into_bytes(), domain.as_bytes()) {
                    prop_assert!(safe_text(&m.local));
                    let line = format!("<{}> SIZE=1", m.wire());
                    let (back, rest) = parse_path(line.as_bytes()).expect("a valid mailbox");
                    prop_assert_eq!(back, Path::Mailbox(m));
                    prop_assert_eq!(rest, b" SIZE=1");
                }
            }
        }
    }
}
