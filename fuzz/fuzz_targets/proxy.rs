//! PROXY headers: the framing never reads past the header, a header is accepted only
//! if ppp parses it, and nothing panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::proxy::{Need, header_need, parse_header};

fuzz_target!(|data: &[u8]| {
    let mut buf = Vec::new();
    let mut rest = data;
    loop {
        match header_need(&buf) {
            Ok(Need::Complete) => {
                let _ = parse_header(&buf);
                assert!(buf.len() <= 16 + 4096);
                assert_eq!(&data[..buf.len()], &buf[..]);
                break;
            }
            Ok(Need::More(n)) => {
                assert!(n > 0);
                if rest.len() < n {
                    break;
                }
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
            Err(_) => break,
        }
    }
    let _ = parse_header(data);
});
