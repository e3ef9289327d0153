//! Command framing and parsing: whatever a client sends, lines are cut only at CRLF,
//! a line handed to the parser is clean, and the parser answers without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::proto::command::parse_command;
use postern::proto::line::{Frame, next_line};

const MAX: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    while !buf.is_empty() {
        match next_line(buf, MAX) {
            Frame::Incomplete => break,
            Frame::Overflow => {
                assert!(buf.len() > MAX);
                match buf.iter().position(|&b| b == b'\n') {
                    Some(lf) => buf = &buf[lf + 1..],
                    None => break,
                }
            }
            Frame::Bad { len, .. } => {
                assert!(len >= 1 && len <= buf.len() && buf[len - 1] == b'\n');
                buf = &buf[len..];
            }
            Frame::Line(len) => {
                let line = &buf[..len];
                assert!(len <= MAX && line.ends_with(b"\r\n"));
                let body = &line[..len - 2];
                assert!(!body.contains(&b'\r') && !body.contains(&b'\n') && !body.contains(&0));
                let _ = parse_command(line);
                buf = &buf[len..];
            }
        }
    }
});
