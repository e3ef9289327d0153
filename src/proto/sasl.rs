//! SASL decoding for AUTH PLAIN (RFC 4616) and AUTH LOGIN.

use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// A username and password from a client.
#[derive(Debug)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// Why a SASL response is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("client cancelled the exchange")]
    Cancelled,
    #[error("response is not valid base64")]
    Base64,
    #[error("response is not valid UTF-8")]
    Utf8,
    #[error("response is not authzid NUL authcid NUL password")]
    Malformed,
    #[error("authorization identity differs from the username")]
    AuthzidMismatch,
}

/// The LOGIN mechanism's prompts, base64 of "Username:" and "Password:".
pub const LOGIN_USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
pub const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Decodes one base64 SASL response line (without CRLF). `*` cancels (RFC 4954).
pub fn decode_response(line: &str) -> Result<Vec<u8>, SaslError> {
    let line = line.trim_end_matches([' ', '\t']);
    if line == "*" {
        return Err(SaslError::Cancelled);
    }
    // RFC 4954: "=" stands for an empty initial response.
    if line == "=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(line).map_err(|_| SaslError::Base64)
}

/// Decodes an AUTH PLAIN response: `[authzid] NUL authcid NUL passwd`.
pub fn decode_plain(line: &str) -> Result<Credentials, SaslError> {
    let raw = Zeroizing::new(decode_response(line)?);
    let mut parts = raw.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let authzid = std::str::from_utf8(authzid).map_err(|_| SaslError::Utf8)?;
    let username = std::str::from_utf8(authcid).map_err(|_| SaslError::Utf8)?;
    let password = std::str::from_utf8(passwd).map_err(|_| SaslError::Utf8)?;
    if username.is_empty() || password.is_empty() {
        return Err(SaslError::Malformed);
    }
    if !authzid.is_empty() && authzid != username {
        return Err(SaslError::AuthzidMismatch);
    }
    Ok(Credentials {
        username: username.to_string(),
        password: Secret::new(password.to_string()),
    })
}

/// Decodes one AUTH LOGIN response (the username or the password) as UTF-8 text.
pub fn decode_login(line: &str) -> Result<String, SaslError> {
    let raw = Zeroizing::new(decode_response(line)?);
    String::from_utf8(raw.to_vec()).map_err(|_| SaslError::Utf8)
}

/// Encodes `\0user\0pass` for our own AUTH PLAIN to the smarthost.
pub fn encode_plain(username: &str, password: &str) -> String {
    let mut raw = Vec::with_capacity(username.len() + password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(username.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    STANDARD.encode(raw)
}

/// Base64 of a string, for AUTH LOGIN to the smarthost.
pub fn encode(text: &str) -> String {
    STANDARD.encode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(raw: &[u8]) -> String {
        STANDARD.encode(raw)
    }

    #[test]
    fn plain_table() {
        let ok = |raw: &[u8], user: &str, pass: &str| {
            let c = decode_plain(&b64(raw)).unwrap();
            assert_eq!((c.username.as_str(), c.password.expose()), (user, pass));
        };
        ok(b"\0alice\0secret", "alice", "secret");
        ok(b"alice\0alice\0secret", "alice", "secret");
        ok(
            "\0jos\u{e9}\0p\u{e4}ss w\u{f6}rd".as_bytes(),
            "jos\u{e9}",
            "p\u{e4}ss w\u{f6}rd",
        );

        let err = |line: &str, want: SaslError| {
            assert_eq!(decode_plain(line).unwrap_err(), want, "{line:?}");
        };
        err(&b64(b"bob\0alice\0secret"), SaslError::AuthzidMismatch);
        err(&b64(b"alice\0secret"), SaslError::Malformed);
        err(&b64(b"\0alice\0secret\0more"), SaslError::Malformed);
        err(&b64(b"\0\0secret"), SaslError::Malformed);
        err(&b64(b"\0alice\0"), SaslError::Malformed);
        err(&b64(b"\0al\xffice\0secret"), SaslError::Utf8);
        err("not base64!!", SaslError::Base64);
        err("*", SaslError::Cancelled);
        err("=", SaslError::Malformed);
    }

    #[test]
    fn login_table() {
        assert_eq!(decode_login(&b64(b"alice")).unwrap(), "alice");
        assert_eq!(decode_login("*"), Err(SaslError::Cancelled));
        assert_eq!(decode_login("@@@"), Err(SaslError::Base64));
        assert_eq!(decode_login(&b64(b"\xff")), Err(SaslError::Utf8));
        assert_eq!(decode_login("="), Ok(String::new()));
    }

    #[test]
    fn encode_round_trip() {
        let c = decode_plain(&encode_plain("u", "p w")).unwrap();
        assert_eq!((c.username.as_str(), c.password.expose()), ("u", "p w"));
        assert_eq!(encode("Username:"), LOGIN_USERNAME_PROMPT);
        assert_eq!(encode("Password:"), LOGIN_PASSWORD_PROMPT);
    }
}
