//! Who may call the API: a panel with `Authorization: Bearer <token>`, or the
//! dashboard in a browser with its session cookie. A browser also sends the cookie
//! on requests another site makes it send, so with the cookie every request that
//! changes something must also carry the session's CSRF token (in `X-CSRF-Token`,
//! which only the dashboard's own script can read and set) and come from the
//! dashboard's own origin; otherwise `403`.

use super::sessions::{SessionInfo, csrf_matches};
use super::{AdminState, ApiError, Peer};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;

/// The session cookie's name.
pub const COOKIE: &str = "postern_session";

/// The header the dashboard's script sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How a request proved itself.
pub enum Caller {
    Bearer,
    /// The session cookie's value, and its session.
    Session(String, SessionInfo),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `401`: no valid token or session.
    Unauthorized,
    /// `403`: a session, but a change without its CSRF token or from elsewhere.
    Forbidden,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthorized => unauthorized(),
            Refusal::Forbidden => ApiError::new(
                StatusCode::FORBIDDEN,
                "a change from the dashboard needs its CSRF token and origin",
            )
            .into_response(),
        }
    }
}

/// The bearer token, or a live session whose changes carry the CSRF token and come
/// from our own origin.
pub fn authorize(s: &AdminState, method: &Method, headers: &HeaderMap) -> Result<Caller, Refusal> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return match bearer(value.as_bytes()) {
            Some(t) if s.token_matches(t) => Ok(Caller::Bearer),
            _ => Err(Refusal::Unauthorized),
        };
    }
    let Some((id, session)) = session_cookie(headers)
        .and_then(|id| Some((id.to_string(), s.sessions.check(id, Instant::now())?)))
    else {
        return Err(Refusal::Unauthorized);
    };
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let token_ok = headers
            .get(CSRF_HEADER)
            .is_some_and(|v| csrf_matches(&session, v.as_bytes()));
        if !token_ok || !same_origin(headers, s.tls) {
            return Err(Refusal::Forbidden);
        }
    }
    Ok(Caller::Session(id, session))
}

/// Middleware for every `/api` path: [`authorize`], and a note at debug of what was refused.
pub async fn require_auth(State(s): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    if !super::is_api(req.uri().path()) {
        return next.run(req).await;
    }
    match authorize(&s, req.method(), req.headers()) {
        Ok(_) => next.run(req).await,
        Err(refusal) => {
            // At debug: a scanner would otherwise fill the log.
            let peer = req.extensions().get::<Peer>().map(|p| p.0);
            tracing::debug!(client = ?peer, refusal = ?refusal, "admin API: request refused");
            refusal.into_response()
        }
    }
}

fn unauthorized() -> Response {
    let mut answer = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token or session",
    )
    .into_response();
    answer
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    answer
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then_some(token.trim_ascii())
}

/// The session cookie's value, if one well-formed (64 hex digits) was sent.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether a browser says the request comes from the page it is sent to:
/// `Sec-Fetch-Site` (when sent) `same-origin`, and `Origin` equal to our own
/// (scheme and `Host`). A form POST under `Referrer-Policy: no-referrer` carries
/// `Origin: null`; that passes only with `Sec-Fetch-Site: same-origin`, which no
/// page's script can set. A request with neither header is refused: every browser
/// the dashboard supports sends one of them on a POST, PATCH or DELETE.
pub fn same_origin(headers: &HeaderMap, tls: bool) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let fetch_site = text(header::HeaderName::from_static("sec-fetch-site"));
    if fetch_site.is_some_and(|site| site != "same-origin") {
        return false;
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (Some("null"), _) => fetch_site.is_some(),
        (Some(origin), Some(host)) => {
            let scheme = if tls { "https://" } else { "http://" };
            origin
                .strip_prefix(scheme)
                .is_some_and(|o| o.eq_ignore_ascii_case(host))
        }
        (Some(_), None) => false,
        (None, _) => fetch_site.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn origin_must_be_ours() {
        let host = ("host", "127.0.0.1:8025");
        let ok = headers(&[host, ("origin", "http://127.0.0.1:8025")]);
        assert!(same_origin(&ok, false));
        assert!(!same_origin(&ok, true), "http origin on an https listener");
        let tls = headers(&[host, ("origin", "https://127.0.0.1:8025")]);
        assert!(same_origin(&tls, true));
        for bad in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:8026",
            "http://127.0.0.1:8025.evil",
        ] {
            assert!(
                !same_origin(&headers(&[host, ("origin", bad)]), false),
                "{bad}"
            );
        }
        let cross = headers(&[
            host,
            ("origin", "http://127.0.0.1:8025"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(!same_origin(&cross, false));
        assert!(same_origin(
            &headers(&[host, ("sec-fetch-site", "same-origin")]),
            false
        ));
        assert!(!same_origin(
            &headers(&[host, ("sec-fetch-site", "same-site")]),
            false
        ));
        assert!(!same_origin(&headers(&[host]), false), "neither header");
        // A same-origin form POST under no-referrer.
        let form = headers(&[host, ("origin", "null"), ("sec-fetch-site", "same-origin")]);
        assert!(same_origin(&form, false));
        let form = headers(&[host, ("origin", "null"), ("sec-fetch-site", "cross-site")]);
        assert!(!same_origin(&form, false));
    }

    #[test]
    fn cookies_are_found_among_others_and_must_look_like_ours() {
        let id = "a1".repeat(32);
        let h = headers(&[("cookie", &format!("theme=dark; {COOKIE}={id}; x=y"))]);
        assert_eq!(session_cookie(&h), Some(id.as_str()));
        let h = headers(&[
            ("cookie", "theme=dark"),
            ("cookie", &format!("{COOKIE}={id}")),
        ]);
        assert_eq!(session_cookie(&h), Some(id.as_str()));
        for bad in ["short", &"z".repeat(64), &format!("{id}0")] {
            let h = headers(&[("cookie", &format!("{COOKIE}={bad}"))]);
            assert_eq!(session_cookie(&h), None, "{bad}");
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bear"), None);
    }
}
