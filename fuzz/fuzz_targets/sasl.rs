//! SASL responses: decoding never panics, and what AUTH PLAIN accepts is what our own
//! encoder would have produced for the same credentials.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::proto::sasl::{decode_login, decode_plain, decode_response, encode_plain};

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let _ = decode_response(&line);
    let _ = decode_login(&line);
    if let Ok(c) = decode_plain(&line) {
        assert!(!c.username.is_empty() && !c.username.contains('\0'));
        assert!(!c.password.expose().is_empty() && !c.password.expose().contains('\0'));
        let again = decode_plain(&encode_plain(&c.username, c.password.expose())).unwrap();
        assert_eq!(again.username, c.username);
        assert_eq!(again.password.expose(), c.password.expose());
    }
});
