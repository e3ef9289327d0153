//! The header section of a message, read exactly as it will be relayed.
//!
//! A header section is a run of fields, each a `name:` line followed by any number of
//! continuation lines that start with a space or tab (RFC 5322 section 2.2). What a
//! downstream reader makes of bytes that are not that grammar varies: a first line
//! that starts with whitespace is a continuation of nothing here, but once Postern
//! has put `Received:` in front of it, it continues that header and the line after it
//! becomes a real field. So every defect refuses the message: a check that passed on
//! bytes it could not read would pass forged headers on.
//!
//! [`submission_fixups`] then does what RFC 6409 section 8 asks of a submission
//! server: `Bcc:` fields go, `Date:` and `Message-ID:` are added when missing.

use std::fmt;

/// One field: its name (as written, without trailing whitespace), its value (after
/// the colon, folding included, without the final CRLF) and its whole bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    pub raw: &'a [u8],
}

impl Field<'_> {
    /// Whether this field is `name` (ASCII case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// Why a header section cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderDefect {
    /// The first line starts with a space or tab.
    LeadingContinuation,
    /// A line that is neither a field nor a continuation (line number, from 1).
    NotAField(usize),
    /// A field name with a character RFC 5322 does not allow (line number).
    BadName(usize),
}

impl fmt::Display for HeaderDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderDefect::LeadingContinuation => {
                f.write_str("the header section starts with a continuation line")
            }
            HeaderDefect::NotAField(n) => write!(f, "header line {n} is not a header field"),
            HeaderDefect::BadName(n) => write!(f, "header line {n} has an invalid field name"),
        }
    }
}

/// Where the header section ends: just after its blank line, if it has one.
pub fn header_end(content: &[u8]) -> Option<usize> {
    if content.starts_with(b"\r\n") {
        return Some(2);
    }
    content
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// What one line of a header section is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// The empty line that ends the section.
    Blank,
    /// Starts with a space or tab: continues the field before it.
    Continuation,
    /// `name:` with a valid name; the name's length (trailing whitespace dropped).
    Field { name_len: usize },
    /// Anything else: the end of the header section for readers like Postfix.
    NotAField,
}

/// Classifies one line (with or without its CRLF).
pub fn classify(line: &[u8]) -> LineKind {
    match line.first() {
        None | Some(b'\r') if strip_crlf(line).is_empty() => LineKind::Blank,
        Some(b' ' | b'\t') => LineKind::Continuation,
        _ => {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return LineKind::NotAField;
            };
            // Obsolete syntax allows whitespace before the colon (`From :`); readers
            // downstream take it as the field, so it is the field here too.
            let name = trim_end_wsp(&line[..colon]);
            if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
                LineKind::NotAField
            } else {
                LineKind::Field {
                    name_len: name.len(),
                }
            }
        }
    }
}

/// Splits a header section (without its blank line) into fields.
pub fn fields(head: &[u8]) -> Result<Vec<Field<'_>>, HeaderDefect> {
    // Per field: where it starts, where its name ends, where its value starts, and
    // where it ends (after the CRLF of its last line).
    let mut spans: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut start = 0;
    let mut line_no = 0;
    while start < head.len() {
        line_no += 1;
        let end = head[start..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(head.len(), |i| start + i + 2);
        let line = &head[start..end];
        match classify(line) {
            LineKind::Continuation => {
                let last = spans.last_mut().ok_or(HeaderDefect::LeadingContinuation)?;
                last.3 = end;
            }
            LineKind::Field { name_len } => {
                let colon = line.iter().position(|&b| b == b':').unwrap_or(name_len);
                spans.push((start, start + name_len, start + colon + 1, end));
            }
            LineKind::Blank | LineKind::NotAField => {
                return Err(if line.contains(&b':') {
                    HeaderDefect::BadName(line_no)
                } else {
                    HeaderDefect::NotAField(line_no)
                });
            }
        }
        start = end;
    }
    Ok(spans
        .into_iter()
        .map(|(start, name_end, value_start, end)| Field {
            name: &head[start..name_end],
            value: strip_crlf(&head[value_start..end]),
            raw: &head[start..end],
        })
        .collect())
}

fn strip_crlf(s: &[u8]) -> &[u8] {
    s.strip_suffix(b"\r\n").unwrap_or(s)
}

fn trim_end_wsp(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    &s[..end]
}

/// What a submission server adds when the message lacks it.
pub struct Additions<'a> {
    /// The value for a missing `Date:` (RFC 5322 date-time).
    pub date: &'a str,
    /// The value for a missing `Message-ID:` (`<...>`).
    pub message_id: &'a str,
}

/// The header section to relay: every field but `Bcc:` and `Resent-Bcc:`, as it came,
/// then `Date:` and `Message-ID:` if the message had none. Returns the bytes and how
/// many Bcc fields were removed.
pub fn submission_fixups(fields: &[Field<'_>], add: &Additions<'_>) -> (Vec<u8>, usize) {
    let size = fields.iter().map(|f| f.raw.len()).sum::<usize>() + 128;
    let mut out = Vec::with_capacity(size);
    let mut removed = 0;
    for f in fields {
        if f.is("Bcc") || f.is("Resent-Bcc") {
            removed += 1;
            continue;
        }
        out.extend_from_slice(f.raw);
        if !f.raw.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    if !fields.iter().any(|f| f.is("Date")) {
        out.extend_from_slice(format!("Date: {}\r\n", add.date).as_bytes());
    }
    if !fields.iter().any(|f| f.is("Message-ID")) {
        out.extend_from_slice(format!("Message-ID: {}\r\n", add.message_id).as_bytes());
    }
    (out, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(head: &str) -> Result<Vec<(String, String)>, HeaderDefect> {
        fields(head.as_bytes()).map(|v| {
            v.iter()
                .map(|f| {
                    (
                        String::from_utf8(f.name.to_vec()).unwrap(),
                        String::from_utf8(f.value.to_vec()).unwrap(),
                    )
                })
                .collect()
        })
    }

    #[test]
    fn fields_with_folding() {
        let got = names("From: a@b\r\nSubject: one\r\n two\r\n\tthree\r\nX-Empty:\r\nTo : c@d\r\n")
            .unwrap();
        let want = [
            ("From", " a@b"),
            ("Subject", " one\r\n two\r\n\tthree"),
            ("X-Empty", ""),
            ("To", " c@d"),
        ];
        assert_eq!(got.len(), want.len());
        for ((n, v), (wn, wv)) in got.iter().zip(want) {
            assert_eq!((n.as_str(), v.as_str()), (wn, wv));
        }
        assert_eq!(names("").unwrap(), vec![]);
        assert_eq!(names("A: b").unwrap(), vec![("A".into(), " b".into())]);
    }

    #[test]
    fn defects() {
        let cases = [
            (
                " \r\nFrom: ceo@bank.example\r\n",
                HeaderDefect::LeadingContinuation,
            ),
            ("\tX\r\n", HeaderDefect::LeadingContinuation),
            (
                "Subject: x\r\nFrom ceo@bank.example\r\n",
                HeaderDefect::NotAField(2),
            ),
            ("hello world\r\n", HeaderDefect::NotAField(1)),
            (": x\r\n", HeaderDefect::BadName(1)),
            ("Fr om: x\r\n", HeaderDefect::BadName(1)),
            ("Fr\u{f6}m: x\r\n", HeaderDefect::BadName(1)),
        ];
        for (head, want) in cases {
            assert_eq!(names(head), Err(want), "{head:?}");
        }
    }

    #[test]
    fn header_end_positions() {
        assert_eq!(header_end(b"\r\nbody"), Some(2));
        assert_eq!(header_end(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(header_end(b"A: b\r\nC: d\r\n"), None);
    }

    #[test]
    fn fixups() {
        let add = Additions {
            date: "Wed, 2 Dec 2026 05:00:00 +0000",
            message_id: "<x@h.example>",
        };
        let head = "From: a@b\r\nBcc: secret@x,\r\n hidden@y\r\nbcc: z@w\r\nSubject: s\r\n";
        let (out, removed) = submission_fixups(&fields(head.as_bytes()).unwrap(), &add);
        assert_eq!(removed, 2);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "From: a@b\r\nSubject: s\r\nDate: Wed, 2 Dec 2026 05:00:00 +0000\r\nMessage-ID: <x@h.example>\r\n"
        );
        let head = "date: x\r\nMESSAGE-ID: <y@z>\r\nSubject: s";
        let (out, removed) = submission_fixups(&fields(head.as_bytes()).unwrap(), &add);
        assert_eq!(removed, 0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "date: x\r\nMESSAGE-ID: <y@z>\r\nSubject: s\r\n"
        );
    }
}
