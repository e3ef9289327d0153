//! The dashboard: one static page and its script and style, embedded in the
//! binary (no build step, nothing fetched from elsewhere), sign-in and sign-out,
//! and the headers every admin answer gets.
//!
//! Signing in is a plain form POST of the admin token; the answer sets the session
//! cookie and sends the browser back to `/`. The page's script then asks
//! `GET /session` for the CSRF token and calls the JSON API like a panel would,
//! with the cookie instead of the bearer token (see `auth`). Every value the
//! script puts on the page goes in as text, never as markup.

use super::auth::{COOKIE, Caller, Refusal, authorize, session_cookie};
use super::{AdminState, ApiError, Peer};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;
use tracing::{info, warn};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Only our own script and style, no inline code, no framing, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Puts the security headers on every answer of the admin listener.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut answer = next.run(req).await;
    let h = answer.headers_mut();
    let mut set = |name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set("content-security-policy", CONTENT_SECURITY_POLICY);
    set("x-frame-options", "DENY");
    set("x-content-type-options", "nosniff");
    set("referrer-policy", "no-referrer");
    set("cache-control", "no-store");
    set("cross-origin-opener-policy", "same-origin");
    set("cross-origin-resource-policy", "same-origin");
    answer
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `GET /`: the page (signed in or not; the script asks which).
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /assets/app.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /assets/app.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// `GET /session`: the session's CSRF token, or `401` (the page then shows the
/// sign-in form). Another site cannot read this answer (same-origin policy).
pub async fn session(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    match authorize(&s, &Method::GET, &headers) {
        Ok(Caller::Session(_, info)) => {
            Json(serde_json::json!({ "csrf": info.csrf })).into_response()
        }
        Ok(Caller::Bearer) => {
            ApiError::new(StatusCode::NOT_FOUND, "no session: bearer token").into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// `POST /signin` with the form field `token`: the session cookie and back to `/`;
/// a wrong token goes back to `/?signin=failed`. An address with too many failures
/// gets `429` until its window ends, without its token being looked at.
pub async fn sign_in(
    State(s): State<Arc<AdminState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.contains_key(header::ORIGIN) && !super::auth::same_origin(&headers, s.tls) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "sign in from the dashboard's own page",
        )
        .into_response();
    }
    let now = Instant::now();
    let ip = peer.0.ip();
    if let Some(wait) = s.sign_ins.blocked(ip, now) {
        warn!(client = %peer.0, "dashboard sign-in refused: too many failures from this address");
        let secs = wait.as_secs().max(1);
        let mut answer = (
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many failed sign-ins from your address; try again in {secs} seconds.\n"),
        )
            .into_response();
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return answer;
    }
    let token = form_field(&body, "token").unwrap_or_default();
    if !s.token_matches(token.trim().as_bytes()) {
        s.sign_ins.failed(ip, now);
        warn!(client = %peer.0, "dashboard sign-in failed: wrong token");
        return see_other("/?signin=failed", None);
    }
    s.sign_ins.succeeded(ip);
    let (id, _) = s.sessions.create(now);
    info!(client = %peer.0, "dashboard sign-in");
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        s.sessions_lifetime.as_secs(),
        if s.tls { "; Secure" } else { "" }
    );
    see_other("/", Some(cookie))
}

/// `POST /signout` (from the page's script, with the CSRF token): ends the session
/// and clears the cookie; `204`.
pub async fn sign_out(
    State(s): State<Arc<AdminState>>,
    Extension(peer): Extension<Peer>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    match authorize(&s, &method, &headers) {
        Ok(Caller::Session(id, _)) => {
            s.sessions.remove(&id);
            info!(client = %peer.0, "dashboard sign-out");
        }
        Ok(Caller::Bearer) => {}
        Err(refusal) => {
            // A cookie that is no longer valid is still cleared.
            if session_cookie(&headers).is_none() || refusal == Refusal::Forbidden {
                return refusal.into_response();
            }
        }
    }
    let clear = format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if s.tls { "; Secure" } else { "" }
    );
    let mut answer = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&clear) {
        answer.headers_mut().insert(header::SET_COOKIE, v);
    }
    answer
}

fn see_other(location: &'static str, cookie: Option<String>) -> Response {
    let mut answer = StatusCode::SEE_OTHER.into_response();
    let h = answer.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static(location));
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, v);
    }
    answer
}

/// The value of `name` in an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    body.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        (url_decode(k)? == name).then(|| url_decode(v)).flatten()
    })
}

/// `+` is a space, `%XX` a byte; the result must be UTF-8.
fn url_decode(s: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(form_field(b"token=abc", "token").as_deref(), Some("abc"));
        assert_eq!(
            form_field(b"x=1&token=a%2Bb+c%21&y", "token").as_deref(),
            Some("a+b c!")
        );
        assert_eq!(form_field(b"tok%65n=v", "token").as_deref(), Some("v"));
        assert_eq!(form_field(b"token", "token").as_deref(), Some(""));
        assert_eq!(form_field(b"other=1", "token"), None);
        assert_eq!(form_field(b"token=%zz", "token"), None);
        assert_eq!(form_field(b"token=%4", "token"), None);
        assert_eq!(form_field(b"token=%ff", "token"), None, "not UTF-8");
    }
}
