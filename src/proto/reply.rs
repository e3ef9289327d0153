//! SMTP replies: the ones Postern sends, and parsing the ones the smarthost sends.
//!
//! Every reply Postern sends carries an RFC 3463 enhanced status code (except the
//! EHLO capability list, where RFC 2034 does not use them).

use std::fmt;

/// An RFC 3463 enhanced status code such as `5.7.8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Esc(pub u8, pub u16, pub u16);

impl fmt::Display for Esc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Esc {
    /// Parses `d.ddd.ddd` at the start of `text`; returns it and the rest of the text.
    pub fn parse_prefix(text: &str) -> Option<(Esc, &str)> {
        let (token, rest) = match text.find(' ') {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => (text, ""),
        };
        let mut parts = token.split('.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
            return None;
        }
        Some((Esc(class, subject, detail), rest))
    }
}

/// One SMTP reply. `text` may hold several lines separated by `\n` (a multiline reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub esc: Option<Esc>,
    pub text: String,
}

impl Reply {
    /// A reply with an enhanced status code.
    pub fn new(code: u16, esc: Esc, text: impl Into<String>) -> Reply {
        Reply {
            code,
            esc: Some(esc),
            text: text.into(),
        }
    }

    /// A reply without an enhanced status code (greeting, EHLO capabilities).
    pub fn plain(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            esc: None,
            text: text.into(),
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The first line of text, for log lines.
    pub fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    /// Serializes the reply as it goes on the wire, CRLF after every line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let lines: Vec<&str> = if self.text.is_empty() {
            vec![""]
        } else {
            self.text.split('\n').collect()
        };
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let mut s = format!("{}{}", self.code, sep);
            if let Some(esc) = self.esc {
                s.push_str(&esc.to_string());
                s.push(' ');
            }
            s.push_str(line);
            out.extend_from_slice(s.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The reply as a string, for tests and logs.
    pub fn to_wire(&self) -> String {
        let mut out = Vec::new();
        self.write_to(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.esc {
            Some(esc) => write!(f, "{} {} {}", self.code, esc, self.first_line()),
            None => write!(f, "{} {}", self.code, self.first_line()),
        }
    }
}

/// Why a line from the smarthost is not an SMTP reply line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("malformed reply line")]
    Malformed,
    #[error("reply code changed within a multiline reply")]
    CodeChanged,
    #[error("reply too long")]
    TooLong,
}

/// One parsed reply line: code, whether it is the last line, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    pub code: u16,
    pub last: bool,
    pub text: &'a str,
}

/// Parses one reply line (`250-text` or `250 text`), with or without its CRLF.
pub fn parse_reply_line(line: &[u8]) -> Result<ReplyLine<'_>, ReplyError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
        return Err(ReplyError::Malformed);
    }
    let code =
        (line[0] - b'0') as u16 * 100 + (line[1] - b'0') as u16 * 10 + (line[2] - b'0') as u16;
    if !(200..600).contains(&code) {
        return Err(ReplyError::Malformed);
    }
    let (last, text) = match line.get(3) {
        None => (true, &[][..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return Err(ReplyError::Malformed),
    };
    let text = std::str::from_utf8(text).map_err(|_| ReplyError::Malformed)?;
    Ok(ReplyLine { code, last, text })
}

/// Gathers the lines of one (possibly multiline) reply from the smarthost.
#[derive(Debug, Default)]
pub struct ReplyBuilder {
    code: Option<u16>,
    lines: Vec<String>,
    bytes: usize,
}

/// Most text Postern keeps of one upstream reply.
pub const MAX_REPLY_BYTES: usize = 16 * 1024;

impl ReplyBuilder {
    /// Adds one line; returns the finished reply after its last line.
    pub fn push(&mut self, raw: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let line = parse_reply_line(raw)?;
        self.bytes += raw.len();
        if self.bytes > MAX_REPLY_BYTES {
            return Err(ReplyError::TooLong);
        }
        match self.code {
            Some(code) if code != line.code => return Err(ReplyError::CodeChanged),
            _ => self.code = Some(line.code),
        }
        self.lines.push(sanitize(line.text));
        if !line.last {
            return Ok(None);
        }
        let code = line.code;
        let mut esc = None;
        let mut texts = Vec::with_capacity(self.lines.len());
        for text in std::mem::take(&mut self.lines) {
            match Esc::parse_prefix(&text) {
                Some((e, rest)) if e.0 as u16 == code / 100 => {
                    esc.get_or_insert(e);
                    texts.push(rest.to_string());
                }
                _ => texts.push(text),
            }
        }
        self.code = None;
        self.bytes = 0;
        Ok(Some(Reply {
            code,
            esc,
            text: texts.join("\n"),
        }))
    }
}

/// Keeps only printable ASCII so that a smarthost's text relayed to a client cannot
/// carry control characters.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_single_and_multiline() {
        let r = Reply::new(535, Esc(5, 7, 8), "Authentication credentials invalid");
        assert_eq!(
            r.to_wire(),
            "535 5.7.8 Authentication credentials invalid\r\n"
        );
        let r = Reply::plain(250, "mx.example\nPIPELINING\nSIZE 10");
        assert_eq!(
            r.to_wire(),
            "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        );
        let r = Reply::new(451, Esc(4, 4, 1), "a\nb");
        assert_eq!(r.to_wire(), "451-4.4.1 a\r\n451 4.4.1 b\r\n");
    }

    #[test]
    fn parses_reply_lines() {
        let ok = parse_reply_line(b"250-PIPELINING\r\n").unwrap();
        assert_eq!((ok.code, ok.last, ok.text), (250, false, "PIPELINING"));
        let ok = parse_reply_line(b"220 ready\r\n").unwrap();
        assert_eq!((ok.code, ok.last, ok.text), (220, true, "ready"));
        let ok = parse_reply_line(b"250\r\n").unwrap();
        assert_eq!((ok.code, ok.last, ok.text), (250, true, ""));
        for bad in [
            &b"25 x\r\n"[..],
            b"abc def",
            b"250x",
            b"999 x",
            b"",
            b"\xff\xff\xff",
        ] {
            assert_eq!(parse_reply_line(bad), Err(ReplyError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn builds_multiline_reply_with_esc() {
        let mut b = ReplyBuilder::default();
        assert_eq!(b.push(b"550-5.1.1 first\r\n").unwrap(), None);
        let r = b.push(b"550 5.1.1 second\r\n").unwrap().unwrap();
        assert_eq!(r.code, 550);
        assert_eq!(r.esc, Some(Esc(5, 1, 1)));
        assert_eq!(r.text, "first\nsecond");
        // The builder is reusable after a reply.
        let r = b.push(b"250 ok\r\n").unwrap().unwrap();
        assert_eq!((r.code, r.esc, r.text.as_str()), (250, None, "ok"));
    }

    #[test]
    fn refuses_code_change_and_mismatched_esc_class() {
        let mut b = ReplyBuilder::default();
        b.push(b"250-a\r\n").unwrap();
        assert_eq!(b.push(b"251 b\r\n"), Err(ReplyError::CodeChanged));
        let mut b = ReplyBuilder::default();
        let r = b.push(b"250 5.0.0 odd\r\n").unwrap().unwrap();
        assert_eq!(r.esc, None);
        assert_eq!(r.text, "5.0.0 odd");
    }

    #[test]
    fn sanitizes_control_characters() {
        let mut b = ReplyBuilder::default();
        let r = b.push(b"250 a\x1bb\r\n").unwrap().unwrap();
        assert_eq!(r.text, "a?b");
    }

    #[test]
    fn esc_prefix() {
        assert_eq!(
            Esc::parse_prefix("4.7.1 slow down"),
            Some((Esc(4, 7, 1), "slow down"))
        );
        assert_eq!(Esc::parse_prefix("2.0.0"), Some((Esc(2, 0, 0), "")));
        assert_eq!(Esc::parse_prefix("3.0.0 x"), None);
        assert_eq!(Esc::parse_prefix("hello"), None);
        assert_eq!(Esc::parse_prefix("2.0 x"), None);
    }
}
