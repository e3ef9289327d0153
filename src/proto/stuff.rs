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
    /// Appends `input`, stuffed, to `out`.
    pub fn stuff(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            self.at_line_start = b == b'\n';
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
