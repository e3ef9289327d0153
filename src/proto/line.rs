//! Framing of command lines: find the next CRLF-terminated line in a buffer.
//!
//! SMTP lines end in CRLF and nothing else. A bare CR or a bare LF is where SMTP
//! smuggling starts (two parsers disagreeing on where a line ends), so any line that
//! contains one is reported as bad rather than "repaired".

/// What the next bytes of a buffer hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// No LF yet and the buffer is within the limit: read more.
    Incomplete,
    /// A well-formed line of this many bytes, CRLF included.
    Line(usize),
    /// A complete line of `len` bytes (LF included) that must be refused.
    Bad { len: usize, why: LineError },
    /// More than the limit without an LF: the caller discards up to the next LF.
    Overflow,
}

/// Why a line is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    TooLong,
    BareCr,
    BareLf,
    Nul,
}

impl LineError {
    /// Human-readable reason, used in replies and logs.
    pub fn describe(self) -> &'static str {
        match self {
            LineError::TooLong => "line too long",
            LineError::BareCr => "bare CR not allowed",
            LineError::BareLf => "bare LF not allowed",
            LineError::Nul => "NUL byte not allowed",
        }
    }
}

/// Looks at the start of `buf` for one line of at most `max` bytes (CRLF included).
pub fn next_line(buf: &[u8], max: usize) -> Frame {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > max {
            Frame::Overflow
        } else {
            Frame::Incomplete
        };
    };
    let len = lf + 1;
    let why = if len > max {
        Some(LineError::TooLong)
    } else if lf == 0 || buf[lf - 1] != b'\r' {
        Some(LineError::BareLf)
    } else if buf[..lf - 1].contains(&b'\r') {
        Some(LineError::BareCr)
    } else if buf[..lf].contains(&0) {
        Some(LineError::Nul)
    } else {
        None
    };
    match why {
        Some(why) => Frame::Bad { len, why },
        None => Frame::Line(len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&[u8], usize, Frame)] = &[
            (b"", 10, Frame::Incomplete),
            (b"NOOP", 10, Frame::Incomplete),
            (b"NOOP\r", 10, Frame::Incomplete),
            (b"NOOP\r\n", 10, Frame::Line(6)),
            (b"NOOP\r\nQUIT\r\n", 10, Frame::Line(6)),
            (
                b"NOOP\n",
                10,
                Frame::Bad {
                    len: 5,
                    why: LineError::BareLf,
                },
            ),
            (
                b"\n",
                10,
                Frame::Bad {
                    len: 1,
                    why: LineError::BareLf,
                },
            ),
            (
                b"NO\rOP\r\n",
                10,
                Frame::Bad {
                    len: 7,
                    why: LineError::BareCr,
                },
            ),
            (
                b"NO\0OP\r\n",
                10,
                Frame::Bad {
                    len: 7,
                    why: LineError::Nul,
                },
            ),
            (
                b"0123456789\r\n",
                10,
                Frame::Bad {
                    len: 12,
                    why: LineError::TooLong,
                },
            ),
            (b"01234567\r\n", 10, Frame::Line(10)),
            (b"0123456789A", 10, Frame::Overflow),
            (b"0123456789", 10, Frame::Incomplete),
        ];
        for (input, max, want) in cases {
            assert_eq!(
                next_line(input, *max),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
