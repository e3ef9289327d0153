//! The DATA receiver: a byte state machine that finds the end of a message.
//!
//! Only `CRLF . CRLF` ends a message (the CRLF before the dot being the end of the
//! previous line, or of the DATA command itself). Every line must end in CRLF, hold
//! no other CR, no NUL, and be at most 1000 bytes with its CRLF (RFC 5321 4.5.3.1.6).
//! A message that breaks any rule is still read to its real end, so that nothing the
//! client sent after a smuggled terminator is taken as a command, and is then
//! refused whole. The output is the message content with dot-stuffing removed,
//! always made of complete CRLF lines.

use std::fmt;

/// Longest line allowed, CRLF included.
pub const MAX_LINE: usize = 1000;

/// Why a message is refused. The first problem found is the one kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    BareLf,
    BareCr,
    Nul,
    LineTooLong,
    TooBig,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataError::BareLf => "message contains a bare LF",
            DataError::BareCr => "message contains a bare CR",
            DataError::Nul => "message contains a NUL byte",
            DataError::LineTooLong => "message has a line longer than 998 characters",
            DataError::TooBig => "message exceeds the size limit",
        })
    }
}

/// What [`DataReceiver::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// All input consumed; the message goes on.
    NeedMore,
    /// The terminator ended the message after this many input bytes; the rest of the
    /// input belongs to the next command.
    Done { consumed: usize },
}

/// Receives one message. Create a new one for every DATA command.
#[derive(Debug)]
pub struct DataReceiver {
    /// The start of a line whose LF has not arrived yet (at most [`MAX_LINE`] bytes).
    partial: Vec<u8>,
    /// The current line is over-long: its bytes are dropped until its LF.
    overlong: bool,
    /// The previous line ended in CRLF, so a `.CRLF` line would end the message.
    at_crlf_line_start: bool,
    /// Last byte seen, to tell a CRLF from a bare LF across chunk boundaries.
    last_byte: u8,
    max_size: usize,
    size: usize,
    error: Option<DataError>,
}

impl DataReceiver {
    /// A receiver that refuses content over `max_size` bytes (after un-stuffing).
    pub fn new(max_size: usize) -> DataReceiver {
        DataReceiver {
            partial: Vec::with_capacity(128),
            overlong: false,
            at_crlf_line_start: true,
            last_byte: b'\n',
            max_size,
            size: 0,
            error: None,
        }
    }

    /// The first problem found so far, if any: the message must then be refused.
    pub fn error(&self) -> Option<DataError> {
        self.error
    }

    /// Bytes of content accepted so far.
    pub fn size(&self) -> usize {
        self.size
    }

    fn fail(&mut self, e: DataError) {
        self.error.get_or_insert(e);
    }

    /// Consumes `input`, appending complete content lines to `out`. After an error,
    /// nothing more is appended but the input is still scanned for the terminator.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Feed {
        let mut start = 0;
        while start < input.len() {
            let rest = &input[start..];
            let Some(lf) = memchr::memchr(b'\n', rest) else {
                self.buffer(rest);
                self.last_byte = rest[rest.len() - 1];
                return Feed::NeedMore;
            };
            let chunk = &rest[..=lf];
            start += lf + 1;
            let prev_byte = if lf > 0 { rest[lf - 1] } else { self.last_byte };
            self.last_byte = b'\n';
            if self.overlong {
                self.overlong = false;
                self.at_crlf_line_start = prev_byte == b'\r';
                continue;
            }
            let line: &[u8] = if self.partial.is_empty() {
                chunk
            } else {
                self.buffer(chunk);
                if self.overlong {
                    self.overlong = false;
                    self.partial.clear();
                    self.at_crlf_line_start = prev_byte == b'\r';
                    continue;
                }
                &self.partial
            };
            if line.len() > MAX_LINE {
                self.error.get_or_insert(DataError::LineTooLong);
                self.partial.clear();
                self.at_crlf_line_start = prev_byte == b'\r';
                continue;
            }
            if self.at_crlf_line_start && line == b".\r\n" {
                self.partial.clear();
                return Feed::Done { consumed: start };
            }
            let problem = check_line(line);
            let ends_crlf = prev_byte == b'\r';
            match problem {
                Some(e) => {
                    self.error.get_or_insert(e);
                }
                None if self.error.is_none() => {
                    let content = if line[0] == b'.' { &line[1..] } else { line };
                    if self.size + content.len() > self.max_size {
                        self.error = Some(DataError::TooBig);
                    } else {
                        self.size += content.len();
                        out.extend_from_slice(content);
                    }
                }
                None => {}
            }
            self.partial.clear();
            self.at_crlf_line_start = ends_crlf;
        }
        Feed::NeedMore
    }

    /// Keeps the start of a line, or marks it over-long.
    fn buffer(&mut self, bytes: &[u8]) {
        if self.overlong {
            return;
        }
        if self.partial.len() + bytes.len() > MAX_LINE {
            self.partial.clear();
            self.overlong = true;
            self.fail(DataError::LineTooLong);
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }
}

/// Checks one complete line (LF included) for bare CR/LF and NUL.
fn check_line(line: &[u8]) -> Option<DataError> {
    let body = &line[..line.len() - 1];
    let Some(body) = body.strip_suffix(b"\r") else {
        return Some(DataError::BareLf);
    };
    // One vectorised pass for both (the slice's own `contains` was two slower ones).
    match memchr::memchr2(b'\r', 0, body).map(|i| body[i]) {
        Some(b'\r') => Some(DataError::BareCr),
        Some(_) => Some(DataError::Nul),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every `step` bytes; returns content, consumed count, error.
    fn run(input: &[u8], step: usize, max: usize) -> (Vec<u8>, Option<usize>, Option<DataError>) {
        let mut rx = DataReceiver::new(max);
        let mut out = Vec::new();
        let mut offset = 0;
        for chunk in input.chunks(step.max(1)) {
            if let Feed::Done { consumed } = rx.feed(chunk, &mut out) {
                return (out, Some(offset + consumed), rx.error());
            }
            offset += chunk.len();
        }
        (out, None, rx.error())
    }

    fn all_splits(input: &[u8], max: usize) -> (Vec<u8>, Option<usize>, Option<DataError>) {
        let whole = run(input, input.len(), max);
        for step in 1..input.len().max(2) {
            assert_eq!(run(input, step, max), whole, "split every {step} bytes");
        }
        whole
    }

    #[test]
    fn plain_message() {
        let (out, done, err) = all_splits(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n", 1 << 20);
        assert_eq!(out, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(done, Some(24));
        assert_eq!(err, None);
    }

    #[test]
    fn empty_message_and_dot_stuffing() {
        assert_eq!(all_splits(b".\r\n", 100), (vec![], Some(3), None));
        let (out, done, err) = all_splits(b"..leading dot\r\n...\r\n.\r\n", 100);
        assert_eq!(out, b".leading dot\r\n..\r\n");
        assert_eq!((done, err), (Some(23), None));
    }

    #[test]
    fn smuggling_variants_never_end_the_message() {
        // Each of these contains a fake terminator followed by a smuggled command,
        // then the real CRLF.CRLF. The message must end only at the real one and be
        // refused; the smuggled command is swallowed as content.
        let variants: &[(&[u8], DataError)] = &[
            (b"a\n.\nMAIL FROM:<x@y>\r\n", DataError::BareLf),
            (b"a\n.\r\nMAIL FROM:<x@y>\r\n", DataError::BareLf),
            (b"a\r.\r\nMAIL FROM:<x@y>\r\n", DataError::BareCr),
            (b"a\r\n.\rMAIL FROM:<x@y>\r\n", DataError::BareCr),
            (b"a\r\n.\nMAIL FROM:<x@y>\r\n", DataError::BareLf),
            (b"a\r\n\0.\r\nMAIL FROM:<x@y>\r\n", DataError::Nul),
        ];
        for (body, want) in variants {
            let mut input = body.to_vec();
            input.extend_from_slice(b"real end\r\n.\r\nNEXT\r\n");
            let (_, done, err) = all_splits(&input, 1 << 20);
            assert_eq!(
                done,
                Some(input.len() - 6),
                "{:?}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(err, Some(*want), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn bare_lf_terminator_alone_does_not_end() {
        let (_, done, err) = all_splits(b"a\n.\n", 100);
        assert_eq!((done, err), (None, Some(DataError::BareLf)));
    }

    #[test]
    fn line_length_limit() {
        let mut ok = vec![b'x'; 998];
        ok.extend_from_slice(b"\r\n.\r\n");
        let (out, done, err) = all_splits(&ok, 1 << 20);
        assert_eq!((out.len(), done, err), (1000, Some(1003), None));

        let mut long = vec![b'x'; 999];
        long.extend_from_slice(b"\r\nok\r\n.\r\n");
        let (_, done, err) = all_splits(&long, 1 << 20);
        assert_eq!(
            (done, err),
            (Some(long.len()), Some(DataError::LineTooLong))
        );
    }

    #[test]
    fn overlong_line_followed_by_terminator() {
        // An over-long line ending in CRLF still lets the next ".\r\n" end the message.
        let mut input = vec![b'y'; 5000];
        input.extend_from_slice(b"\r\n.\r\n");
        let (_, done, err) = all_splits(&input, 1 << 20);
        assert_eq!(
            (done, err),
            (Some(input.len()), Some(DataError::LineTooLong))
        );
        // But an over-long line ending in a bare LF does not.
        let mut input = vec![b'y'; 5000];
        input.extend_from_slice(b"\n.\r\n");
        let (_, done, _) = run(&input, 7, 1 << 20);
        assert_eq!(done, None);
    }

    #[test]
    fn size_limit() {
        let (out, done, err) = all_splits(b"12345\r\n12345\r\n.\r\n", 10);
        assert_eq!(out, b"12345\r\n");
        assert_eq!((done, err), (Some(17), Some(DataError::TooBig)));
        let (_, _, err) = all_splits(b"1234\r\n1234\r\n.\r\n", 12);
        assert_eq!(err, None);
    }

    #[test]
    fn first_error_is_kept() {
        let (_, _, err) = all_splits(b"a\nb\rc\r\n.\r\n", 100);
        assert_eq!(err, Some(DataError::BareLf));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `input` cut at `cuts`; returns where the message ended, content, error.
    fn feed_cut(input: &[u8], cuts: &[usize]) -> (Option<usize>, Vec<u8>, Option<DataError>) {
        let mut rx = DataReceiver::new(4096);
        let mut out = Vec::new();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.push(input.len());
        points.sort_unstable();
        let mut start = 0;
        for end in points {
            if let Feed::Done { consumed } = rx.feed(&input[start..end], &mut out) {
                return (Some(start + consumed), out, rx.error());
            }
            start = end;
        }
        (None, out, rx.error())
    }

    /// Bytes that matter to the state machine, plus some plain ones.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\r\n".to_vec()),
            Just(b"\r\n.\r\n".to_vec()),
            Just(b"\n.\n".to_vec()),
            Just(b"\r.\r\n".to_vec()),
            Just(b"\n.\r\n".to_vec()),
            Just(b"\r\n.\r".to_vec()),
            Just(b"..".to_vec()),
            Just(vec![0u8]),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b".".to_vec()),
            proptest::collection::vec(b'a'..=b'z', 0..40),
            Just(vec![b'x'; 999]),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any split of any stream: the same end, the same content, the same verdict;
        /// the end is always right after CRLF.CRLF; clean output is canonical CRLF.
        #[test]
        fn splits_never_change_the_message(
            input in stream(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let whole = feed_cut(&input, &[]);
            prop_assert_eq!(&whole, &feed_cut(&input, &cuts));
            let (end, out, error) = whole;
            if let Some(end) = end {
                let taken = &input[..end];
                prop_assert!(taken == b".\r\n" || taken.ends_with(b"\r\n.\r\n"));
            } else {
                // No end found: the stream holds no CRLF.CRLF after a CRLF line.
                prop_assert!(!input.starts_with(b".\r\n"));
                prop_assert!(!input.windows(5).any(|w| w == b"\r\n.\r\n"));
            }
            if error.is_none() {
                for (i, &b) in out.iter().enumerate() {
                    match b {
                        b'\n' => prop_assert!(i > 0 && out[i - 1] == b'\r'),
                        b'\r' => prop_assert_eq!(out.get(i + 1), Some(&b'\n')),
                        0 => prop_assert!(false, "NUL in the output"),
                        _ => {}
                    }
                }
            }
        }
    }
}
