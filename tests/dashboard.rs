//! The dashboard's sign-in against the real binary, with curl acting as the
//! browser: cookie flags, the security headers, CSRF and origin refusals, session
//! expiry and sign-out, the sign-in throttle, and `postern demo` serving it all.
//! (tests/dashboard_browser.rs drives a real Chromium.)

mod common;

use common::web::{Reply, admin_addr, request};
use common::{Harness, Setup, free_port, have, postern_bin};
use std::time::{Duration, Instant};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn setup(admin_extra: &str) -> Setup {
    Setup {
        extra: format!(
            "admin:\n  address: \"127.0.0.1:0\"\n  token_file: admin.token\n{admin_extra}"
        ),
        files: vec![("admin.token", format!("{TOKEN}\n"))],
        ..Setup::default()
    }
}

/// A client that signed in: its cookie and CSRF token.
struct Signed {
    base: String,
    origin: String,
    cookie: String,
    csrf: String,
}

async fn sign_in_with(base: &str, token: &str, extra: &[&str]) -> Reply {
    let body = format!("token={token}");
    let headers = [
        "Content-Type: application/x-www-form-urlencoded".to_string(),
        format!("Origin: {base}"),
    ];
    request(
        "POST",
        &format!("{base}/signin"),
        &headers,
        Some(&body),
        extra,
    )
    .await
}

async fn sign_in(base: &str) -> Signed {
    let r = sign_in_with(base, TOKEN, &[]).await;
    assert_eq!(r.status, 303, "{r:?}");
    let set = r.header("set-cookie").expect("a session cookie");
    let cookie = set.split(';').next().unwrap().to_string();
    let s = request(
        "GET",
        &format!("{base}/session"),
        &[format!("Cookie: {cookie}")],
        None,
        &[],
    )
    .await;
    assert_eq!(s.status, 200, "{s:?}");
    let csrf = s.json()["csrf"].as_str().unwrap().to_string();
    Signed {
        base: base.to_string(),
        origin: base.to_string(),
        cookie,
        csrf,
    }
}

impl Signed {
    /// A request with the cookie and `headers` (e.g. the CSRF token, an Origin).
    async fn call(&self, method: &str, path: &str, headers: &[String]) -> Reply {
        let mut all = vec![format!("Cookie: {}", self.cookie)];
        all.extend_from_slice(headers);
        request(method, &format!("{}{path}", self.base), &all, None, &[]).await
    }

    fn csrf(&self) -> String {
        format!("X-CSRF-Token: {}", self.csrf)
    }

    fn origin(&self) -> String {
        format!("Origin: {}", self.origin)
    }
}

async fn bearer(base: &str, method: &str, path: &str) -> Reply {
    let auth = format!("Authorization: Bearer {TOKEN}");
    request(method, &format!("{base}{path}"), &[auth], None, &[]).await
}

fn assert_security_headers(r: &Reply) {
    let csp = r.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn the_page_is_strict_and_signing_in_sets_a_strict_cookie() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup("")).await;
    let base = format!("http://{}", admin_addr(&h));
    let page = request("GET", &format!("{base}/"), &[], None, &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_security_headers(&page);
    // Nothing inline for the CSP to forbid: scripts and styles come from files.
    assert!(
        page.body
            .contains("<script src=\"/assets/app.js\" defer></script>")
    );
    assert_eq!(page.body.matches("<script").count(), 1);
    assert!(!page.body.contains("style="), "inline style");
    assert!(!page.body.contains("<style"), "inline style");
    assert!(!page.body.contains(" on"), "inline handler");
    let js = request("GET", &format!("{base}/assets/app.js"), &[], None, &[]).await;
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.body.contains("replaceChildren"));
    assert!(
        !js.body.contains("innerHTML ="),
        "data goes in as text only"
    );
    assert!(!js.body.contains("insertAdjacentHTML"));
    let css = request("GET", &format!("{base}/assets/app.css"), &[], None, &[]).await;
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    // The API's answers carry the headers too, refusals included.
    let refused = request("GET", &format!("{base}/api/v1/users"), &[], None, &[]).await;
    assert_eq!(refused.status, 401);
    assert_security_headers(&refused);

    let wrong = sign_in_with(&base, "not-the-token-not-the-token", &[]).await;
    assert_eq!(wrong.status, 303);
    assert_eq!(wrong.header("location"), Some("/?signin=failed"));
    assert!(wrong.header("set-cookie").is_none());

    let r = sign_in_with(&base, TOKEN, &[]).await;
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(r.header("location"), Some("/"));
    let cookie = r.header("set-cookie").unwrap();
    let parts: Vec<&str> = cookie.split(';').map(str::trim).collect();
    let (name, id) = parts[0].split_once('=').unwrap();
    assert_eq!(name, "postern_session");
    assert_eq!(id.len(), 64, "256 random bits as hex");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(parts.contains(&flag), "{flag} missing: {cookie}");
    }
    assert!(!parts.contains(&"Secure"), "plain HTTP listener: {cookie}");
    assert!(!cookie.contains(TOKEN));
    let s = sign_in(&base).await;
    assert_ne!(s.cookie, parts[0], "each sign-in gets its own session");
    assert_eq!(s.csrf.len(), 64);
    let users = s.call("GET", "/api/v1/users", &[]).await;
    assert_eq!(users.status, 200, "{users:?}");
    assert_eq!(users.json()[0]["name"], "alice");
    let traffic = s.call("GET", "/api/v1/stats/traffic", &[]).await;
    assert_eq!(traffic.status, 200);
    assert!(traffic.json()["per_minute"].is_array(), "{traffic:?}");
    assert!(traffic.json()["per_hour"].is_array(), "{traffic:?}");
    // A bogus cookie is no session.
    let forged = request(
        "GET",
        &format!("{base}/api/v1/users"),
        &[format!("Cookie: postern_session={}", "ab".repeat(32))],
        None,
        &[],
    )
    .await;
    assert_eq!(forged.status, 401);
    // Neither the token nor a session id reaches the log.
    for line in h.logs() {
        assert!(!line.contains(TOKEN) && !line.contains(id), "{line}");
    }
    assert!(
        h.logs()
            .iter()
            .any(|l| l.contains("dashboard sign-in failed"))
    );
}

#[tokio::test]
async fn over_tls_the_cookie_is_secure() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup("  tls: true\n")).await;
    let base = format!("https://{}", admin_addr(&h));
    let ca = h.dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let r = sign_in_with(&base, TOKEN, &["--cacert", ca]).await;
    assert_eq!(r.status, 303, "{r:?}");
    let cookie = r.header("set-cookie").unwrap();
    assert!(cookie.split(';').any(|p| p.trim() == "Secure"), "{cookie}");
    // An http:// origin is not this listener's.
    let http_origin = [
        "Content-Type: application/x-www-form-urlencoded".to_string(),
        format!("Origin: {}", base.replace("https", "http")),
    ];
    let body = format!("token={TOKEN}");
    let url = format!("{base}/signin");
    let cross = request("POST", &url, &http_origin, Some(&body), &["--cacert", ca]).await;
    assert_eq!(cross.status, 403);
}

#[tokio::test]
async fn changes_with_the_cookie_need_the_csrf_token_and_our_origin() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup("")).await;
    let base = format!("http://{}", admin_addr(&h));
    let s = sign_in(&base).await;
    let path = "/api/v1/users/alice/suspend";
    let evil = "Origin: http://evil.example".to_string();
    let wrong_csrf = format!("X-CSRF-Token: {}", "0".repeat(64));
    let cases: [(&str, Vec<String>); 6] = [
        ("no CSRF token", vec![s.origin()]),
        ("a wrong CSRF token", vec![wrong_csrf, s.origin()]),
        ("another site's origin", vec![s.csrf(), evil.clone()]),
        ("no origin at all", vec![s.csrf()]),
        (
            "a cross-site fetch",
            vec![s.csrf(), s.origin(), "Sec-Fetch-Site: cross-site".into()],
        ),
        ("origin null", vec![s.csrf(), "Origin: null".into()]),
    ];
    for (what, headers) in &cases {
        let r = s.call("POST", path, headers).await;
        assert_eq!(r.status, 403, "{what}: {r:?}");
        assert!(
            r.json()["error"].as_str().unwrap().contains("CSRF"),
            "{r:?}"
        );
    }
    let r = s.call("DELETE", "/api/v1/users/alice", &[s.origin()]).await;
    assert_eq!(r.status, 403);
    let r = s.call("POST", "/signout", &[s.origin()]).await;
    assert_eq!(r.status, 403, "sign-out is a change too");
    let alice = bearer(&base, "GET", "/api/v1/users/alice").await;
    assert_eq!(alice.status, 200, "not deleted");
    assert_eq!(alice.json()["suspended"], false, "{alice:?}");
    // Another user's session's token is not this one's.
    let other = sign_in(&base).await;
    let r = s
        .call(
            "POST",
            path,
            &[format!("X-CSRF-Token: {}", other.csrf), s.origin()],
        )
        .await;
    assert_eq!(r.status, 403);
    // Reading needs no token; a change with both goes through.
    assert_eq!(s.call("GET", "/api/v1/users/alice", &[]).await.status, 200);
    let r = s.call("POST", path, &[s.csrf(), s.origin()]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let same_origin_fetch = vec![s.csrf(), "Sec-Fetch-Site: same-origin".to_string()];
    let r = s
        .call("POST", "/api/v1/users/alice/unsuspend", &same_origin_fetch)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // A panel with the bearer token is not a browser: no CSRF token needed.
    let r = bearer(&base, "POST", path).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        bearer(&base, "GET", "/api/v1/users/alice").await.json()["suspended"],
        true
    );
    // A sign-in posted from another site is refused before the token is looked at.
    let headers = [
        "Content-Type: application/x-www-form-urlencoded".to_string(),
        evil,
    ];
    let body = format!("token={TOKEN}");
    let r = request(
        "POST",
        &format!("{base}/signin"),
        &headers,
        Some(&body),
        &[],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.header("set-cookie").is_none());
}

#[tokio::test]
async fn sessions_end_when_idle_when_old_and_on_sign_out() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup("  session_idle: 2s\n  session_lifetime: 5s\n")).await;
    let base = format!("http://{}", admin_addr(&h));
    let t0 = Instant::now();
    let busy = sign_in(&base).await;
    let idle = sign_in(&base).await;
    let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
    // The busy one is used every second and lives until its lifetime ends.
    for t in [1.0, 2.0, 3.0, 4.0] {
        tokio::time::sleep_until(at(t).into()).await;
        let r = busy.call("GET", "/api/v1/users", &[]).await;
        assert_eq!(r.status, 200, "busy session at {t}s");
        if t == 3.0 {
            let r = idle.call("GET", "/session", &[]).await;
            assert_eq!(r.status, 401, "idle for 3s (limit 2s): {r:?}");
        }
    }
    tokio::time::sleep_until(at(5.3).into()).await;
    let r = busy.call("GET", "/api/v1/users", &[]).await;
    assert_eq!(r.status, 401, "past the 5s lifetime");

    let s = sign_in(&base).await;
    let out = s.call("POST", "/signout", &[s.csrf(), s.origin()]).await;
    assert_eq!(out.status, 204, "{out:?}");
    let clear = out.header("set-cookie").unwrap();
    assert!(clear.starts_with("postern_session=;"), "{clear}");
    assert!(clear.contains("Max-Age=0"), "{clear}");
    assert_eq!(s.call("GET", "/session", &[]).await.status, 401);
    assert_eq!(s.call("GET", "/api/v1/users", &[]).await.status, 401);
    let r = s
        .call(
            "POST",
            "/api/v1/users/alice/suspend",
            &[s.csrf(), s.origin()],
        )
        .await;
    assert_eq!(r.status, 401, "a signed-out cookie changes nothing");
    assert!(h.logs().iter().any(|l| l.contains("dashboard sign-out")));
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_address() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup("")).await;
    let base = format!("http://{}", admin_addr(&h));
    for i in 0..5 {
        let r = sign_in_with(&base, &format!("guess-number-{i}-xxxxxxxx"), &[]).await;
        assert_eq!(r.status, 303, "failure {i}: {r:?}");
        assert_eq!(r.header("location"), Some("/?signin=failed"));
    }
    // Now even the right token is not looked at from this address.
    let r = sign_in_with(&base, TOKEN, &[]).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.header("set-cookie").is_none());
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((250..=300).contains(&wait), "{wait}");
    // Another address (loopback has all of 127/8) is not held back...
    let r = sign_in_with(&base, TOKEN, &["--interface", "127.0.0.2"]).await;
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").is_some());
    // ...and the bearer token still works for a panel on the throttled address.
    assert_eq!(bearer(&base, "GET", "/api/v1/users").await.status, 200);
    assert!(h.logs().iter().any(|l| l.contains("too many failures")));
}

/// `postern demo` prints a token, and the dashboard and API answer to it.
#[tokio::test]
async fn the_demo_serves_the_dashboard_with_a_printed_token() {
    if !have("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sub, smtps, admin) = (free_port(), free_port(), free_port());
    let mut demo = KillOnDrop(
        std::process::Command::new(postern_bin())
            .args(["demo", "--dir"])
            .arg(dir.path())
            .args(["--submission", &format!("127.0.0.1:{sub}")])
            .args(["--smtps", &format!("127.0.0.1:{smtps}")])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = demo.0.stderr.take().unwrap();
    let token = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr).lines();
        let token = lines
            .by_ref()
            .map_while(Result::ok)
            .take(200)
            .find_map(|l| l.trim().strip_prefix("admin token: ").map(str::to_string));
        // Keep draining so that the demo never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        token
    })
    .await
    .unwrap()
    .expect("the demo prints its admin token");
    assert_eq!(token.len(), 64);
    let base = format!("http://127.0.0.1:{admin}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let users = loop {
        let auth = format!("Authorization: Bearer {token}");
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "-H", &auth, &format!("{base}/api/v1/users")])
            .output()
            .await
            .unwrap();
        if out.status.success() || Instant::now() > deadline {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(users.contains("\"name\":\"demo\""), "{users}");
    let r = sign_in_with(&base, &token, &[]).await;
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").is_some());
    let page = request("GET", &format!("{base}/"), &[], None, &[]).await;
    assert!(page.body.contains("Postern"));
}

/// Stops the demo however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
