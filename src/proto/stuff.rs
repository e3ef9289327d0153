//! Dot-stuffing for the upstream side: content in, SMTP DATA transparency out.

/// Adds a `.` before every line that starts with one (RFC 5321 4.5.2), across chunks.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
        }
    }
}

impl DotStuffer {
    /// Appends `input`, stuffed, to `out`. Only dots are looked at (with SIMD), and
    /// the runs between those that start a line are copied whole: this is on every
    /// byte of every relayed message.
    pub fn stuff(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len());
        let mut copied = 0;
        for dot in memchr::memchr_iter(b'.', input) {
            let line_start = match dot {
                0 => self.at_line_start,
                _ => input[dot - 1] == b'\n',
            };
            if line_start {
                out.extend_from_slice(&input[copied..dot]);
                out.push(b'.');
                copied = dot;
            }
        }
        out.extend_from_slice(&input[copied..]);
        if let Some(&last) = input.last() {
            self.at_line_start = last == b'\n';
        }
    }

    /// Appends the end-of-data marker, closing the last line first if needed.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.at_line_start = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::data::{DataReceiver, Feed};

    #[test]
    fn stuffs_across_chunks() {
        let mut s = DotStuffer::default();
        let mut out = Vec::new();
        s.stuff(b".a\r\nb\r", &mut out);
        s.stuff(b"\n.", &mut out);
        s.stuff(b".c\r\n", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"..a\r\nb\r\n...c\r\n.\r\n");
    }

    #[test]
    fn stuffs_like_the_byte_by_byte_rule() {
        // Every split of inputs rich in dots and line ends, against the rule itself.
        let inputs: [&[u8]; 4] = [b"..\r\n.\r\n", b"a.b\r\n.c.\r\n\n..", b".", b"x\n.\n"];
        for input in inputs {
            let mut want = Vec::new();
            let mut start = true;
            for &b in input {
                if start && b == b'.' {
                    want.push(b'.');
                }
                want.push(b);
                start = b == b'\n';
            }
            for cut in 0..=input.len() {
                let mut s = DotStuffer::default();
                let mut out = Vec::new();
                s.stuff(&input[..cut], &mut out);
                s.stuff(&[], &mut out);
                s.stuff(&input[cut..], &mut out);
                assert_eq!(out, want, "{input:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn closes_unterminated_last_line() {
        let mut s = DotStuffer::default();
        let mut out = Vec::new();
        s.stuff(b"x", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"x\r\n.\r\n");
    }

    #[test]
    fn receiver_then_stuffer_round_trips() {
        let wire = b"..one\r\ntwo\r\n...\r\n.\r\n";
        let mut rx = DataReceiver::new(1000);
        let mut content = Vec::new();
        assert_eq!(
            rx.feed(wire, &mut content),
            Feed::Done {
                consumed: wire.len()
            }
        );
        let mut s = DotStuffer::default();
        let mut out = Vec::new();
        s.stuff(&content, &mut out);
        s.finish(&mut out);
        assert_eq!(out, wire);
    }
}
