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
//! [`FieldScanner`] reads a section as it arrives, each line once, and finds where
//! it ends; [`fields`] reads a complete one with the same scanner.
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

/// Splits a header section (without its blank line) into fields. Every line must be
/// a field or a continuation.
pub fn fields(head: &[u8]) -> Result<Vec<Field<'_>>, HeaderDefect> {
    let mut scan = FieldScanner::default();
    let at = scan.advance(head, true)?.map_or(head.len(), SectionEnd::at);
    if at == head.len() {
        return Ok(scan.fields(head));
    }
    // A blank line, or a line that is no field: here it is a defect.
    let end = crlf_after(head, at).unwrap_or(head.len());
    Err(not_a_field(&head[at..end], scan.lines + 1))
}

/// Where a header section ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionEnd {
    /// At its blank line, which starts here.
    Blank(usize),
    /// Here, without a blank line: at a line that is no field, or the content's end.
    Body(usize),
}

impl SectionEnd {
    /// Where the fields end.
    pub fn at(self) -> usize {
        match self {
            SectionEnd::Blank(at) | SectionEnd::Body(at) => at,
        }
    }
}

/// Reads a header section as it arrives, each line once, keeping where its fields
/// are: the session finds where the section ends and gets its fields from the same
/// reading.
#[derive(Debug, Default)]
pub struct FieldScanner {
    spans: Vec<Span>,
    /// Where the next unread line starts.
    scanned: usize,
    /// Lines read.
    lines: usize,
}

/// Where one field lies in the header section.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    name_end: usize,
    value_start: usize,
    /// After the CRLF of its last line.
    end: usize,
}

impl FieldScanner {
    /// Reads the complete lines of `head` not read yet (`head` only grows between
    /// calls). Returns where the section ends, once known: at its blank line, at the
    /// first line that is no field (where readers like Postfix end it too), or, with
    /// `done`, at the end of `head`, whose last line, if it has no CRLF, must then be
    /// a field or a continuation.
    pub fn advance(&mut self, head: &[u8], done: bool) -> Result<Option<SectionEnd>, HeaderDefect> {
        loop {
            let start = self.scanned;
            let (end, last) = match crlf_after(head, start) {
                Some(end) => (end, false),
                None if done && start < head.len() => (head.len(), true),
                None => return Ok(done.then_some(SectionEnd::Body(head.len()))),
            };
            let line = &head[start..end];
            match classify(line) {
                LineKind::Blank => return Ok(Some(SectionEnd::Blank(start))),
                LineKind::NotAField if last => return Err(not_a_field(line, self.lines + 1)),
                LineKind::NotAField => return Ok(Some(SectionEnd::Body(start))),
                LineKind::Continuation => {
                    let field = self
                        .spans
                        .last_mut()
                        .ok_or(HeaderDefect::LeadingContinuation)?;
                    field.end = end;
                }
                LineKind::Field { name_len } => {
                    let colon = line.iter().position(|&b| b == b':').unwrap_or(name_len);
                    self.spans.push(Span {
                        start,
                        name_end: start + name_len,
                        value_start: start + colon + 1,
                        end,
                    });
                }
            }
            self.scanned = end;
            self.lines += 1;
        }
    }

    /// The fields read so far, in the `head` they were read from.
    pub fn fields<'a>(&self, head: &'a [u8]) -> Vec<Field<'a>> {
        self.spans
            .iter()
            .map(|s| Field {
                name: &head[s.start..s.name_end],
                value: strip_crlf(&head[s.value_start..s.end]),
                raw: &head[s.start..s.end],
            })
            .collect()
    }
}

/// Just after the first CRLF at or after `from`.
fn crlf_after(head: &[u8], from: usize) -> Option<usize> {
    head[from..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i + 2)
}

/// The defect of a line (number `line_no`) that should have been a field.
fn not_a_field(line: &[u8], line_no: usize) -> HeaderDefect {
    if line.contains(&b':') {
        HeaderDefect::BadName(line_no)
    } else {
        HeaderDefect::NotAField(line_no)
    }
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

    /// How `fields` read a header section before the scanner: a line loop of its own.
    /// Kept to show that the scanner reads exactly as it did.
    fn former_fields(head: &[u8]) -> Result<Vec<Field<'_>>, HeaderDefect> {
        let mut spans: Vec<(usize, usize, usize, usize)> = Vec::new();
        let (mut start, mut line_no) = (0, 0);
        while start < head.len() {
            line_no += 1;
            let end = crlf_after(head, start).unwrap_or(head.len());
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
                LineKind::Blank | LineKind::NotAField => return Err(not_a_field(line, line_no)),
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

    /// How the header gate found the section's end before the scanner (a second
    /// line loop, with `former_fields` then run over the fields).
    fn former_end(head: &[u8], done: bool) -> Result<Option<SectionEnd>, HeaderDefect> {
        let mut scanned = 0;
        while let Some(end) = crlf_after(head, scanned) {
            match classify(&head[scanned..end]) {
                LineKind::Blank => return Ok(Some(SectionEnd::Blank(scanned))),
                LineKind::NotAField => return Ok(Some(SectionEnd::Body(scanned))),
                LineKind::Continuation if scanned == 0 => {
                    return Err(HeaderDefect::LeadingContinuation);
                }
                LineKind::Continuation | LineKind::Field { .. } => scanned = end,
            }
        }
        Ok(done.then_some(SectionEnd::Body(head.len())))
    }

    type Reading<'a> = Result<Option<(SectionEnd, Vec<Field<'a>>)>, HeaderDefect>;

    /// The scanner fed `head` in growing prefixes ending at `cuts`, then whole.
    fn scanned<'a>(head: &'a [u8], cuts: &[usize], done: bool) -> Reading<'a> {
        let mut scan = FieldScanner::default();
        let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(head.len())).collect();
        ends.sort();
        ends.push(head.len());
        for (i, &end) in ends.iter().enumerate() {
            if let Some(at) = scan.advance(&head[..end], done && i + 1 == ends.len())? {
                return Ok(Some((at, scan.fields(head))));
            }
        }
        Ok(None)
    }

    #[test]
    fn scanner_cases() {
        let head = b"From: a@b\r\n folded\r\nSubject: s\r\n\r\nbody";
        let (end, got) = scanned(head, &[3, 11, 12], false).unwrap().unwrap();
        assert_eq!(end, SectionEnd::Blank(32));
        assert_eq!(got, fields(&head[..32]).unwrap());
        assert_eq!(scanned(b"A: b\r\nC", &[], false), Ok(None));
        // With the end of the message, a last line without CRLF is read too.
        let (end, got) = scanned(b"A: b\r\nC: d", &[], true).unwrap().unwrap();
        assert_eq!((end, got.len()), (SectionEnd::Body(10), 2));
        assert_eq!(
            scanned(b"A: b\r\nno field", &[], true),
            Err(HeaderDefect::NotAField(2))
        );
        let (end, _) = scanned(b"A: b\r\nno field\r\n", &[], true)
            .unwrap()
            .unwrap();
        assert_eq!(end, SectionEnd::Body(6));
        assert_eq!(
            scanned(b" x\r\nA: b\r\n\r\n", &[1], false),
            Err(HeaderDefect::LeadingContinuation)
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Header lines, good and bad, some without their CRLF.
        fn section() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(&b"From: a@b.example\r\n"[..]),
                Just(&b"Subject : s\r\n"[..]),
                Just(&b"X-Empty:\r\n"[..]),
                Just(&b" folded\r\n"[..]),
                Just(&b"\t\r\n"[..]),
                Just(&b"\r\n"[..]),
                Just(&b"no colon\r\n"[..]),
                Just(&b": x\r\n"[..]),
                Just(&b"Fr om: x\r\n"[..]),
                Just(&b"A: b"[..]),
                Just(&b" tail"[..]),
                Just(&b"partial"[..]),
                Just(&b"\r"[..]),
                Just(&b"\n"[..]),
            ];
            proptest::collection::vec(piece, 0..10).prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            /// `fields` reads every section as the former reader did.
            #[test]
            fn fields_read_as_before(head in section()) {
                prop_assert_eq!(fields(&head), former_fields(&head));
            }

            /// One scan, in any chunks, finds the end, fields and defects that the
            /// former two passes found.
            #[test]
            fn one_scan_reads_as_the_former_two(
                head in section(),
                cuts in proptest::collection::vec(0usize..200, 0..4),
                done in any::<bool>(),
            ) {
                let former: Reading<'_> = former_end(&head, done).and_then(|end| match end {
                    None => Ok(None),
                    Some(end) => former_fields(&head[..end.at()]).map(|f| Some((end, f))),
                });
                prop_assert_eq!(scanned(&head, &cuts, done), former);
            }
        }
    }
}
