//! Smarthost replies: whatever a smarthost sends, the parsed reply is well formed and
//! relaying it to our client cannot inject a line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::proto::reply::ReplyBuilder;

fuzz_target!(|data: &[u8]| {
    let mut builder = ReplyBuilder::default();
    for raw in data.split_inclusive(|&b| b == b'\n') {
        match builder.push(raw) {
            Ok(Some(reply)) => {
                assert!((200..=599).contains(&reply.code), "{}", reply.code);
                let wire = reply.to_wire();
                // Every line of what we would send is "DDD-" or "DDD " and ends in CRLF.
                for line in wire.split_inclusive("\r\n") {
                    assert!(line.ends_with("\r\n"), "{wire:?}");
                    let body = &line[..line.len() - 2];
                    assert!(!body.contains('\r') && !body.contains('\n'), "{wire:?}");
                    assert!(body.len() >= 4 && body.as_bytes()[..3].iter().all(u8::is_ascii_digit));
                }
                builder = ReplyBuilder::default();
            }
            Ok(None) => {}
            Err(_) => builder = ReplyBuilder::default(),
        }
    }
});
