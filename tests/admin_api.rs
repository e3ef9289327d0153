//! The admin API against the real binary, driven with curl: the token on every
//! path, users created, changed, suspended and deleted with effect on SMTP at once
//! (no SIGHUP) and after a restart, the queue, and hostile input.

mod common;

use common::{Harness, Setup, have};
use serde_json::{Value, json};
use std::time::Duration;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// The admin listener, and no login penalties in the way of tests that refuse
/// logins on purpose.
const ADMIN: &str = "admin:\n  address: \"127.0.0.1:0\"\n  token_file: admin.token\n\
    abuse:\n  auth_tarpit_after: 1000\n  auth_block_ip_after: 1000\n  auth_block_user_after: 1000\n";

fn setup() -> Setup {
    Setup {
        extra: ADMIN.into(),
        files: vec![("admin.token", format!("{TOKEN}\n"))],
        ..Setup::default()
    }
}

/// The admin API's base URL, from the server's log.
fn base(h: &Harness) -> String {
    let logs = h.logs();
    let line = logs
        .iter()
        .find(|l| l.contains("serving the admin API"))
        .expect("admin API log line");
    let start = line.find("address=").unwrap() + "address=".len();
    let addr = line[start..].split_whitespace().next().unwrap();
    format!("http://{addr}")
}

/// An answer: the status and the body (JSON, or `Value::Null` when empty).
struct Answer {
    status: u16,
    body: Value,
    raw: String,
}

/// One request with curl; `token: None` sends no Authorization header.
async fn call(
    h: &Harness,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "20",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd
        .arg(format!("{}{path}", base(h)))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (raw, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Answer {
        status: code.trim().parse().unwrap_or(0),
        body: serde_json::from_str(raw).unwrap_or(Value::Null),
        raw: raw.to_string(),
    }
}

async fn api(h: &Harness, method: &str, path: &str, body: Option<Value>) -> Answer {
    let body = body.map(|b| b.to_string());
    call(h, method, path, Some(TOKEN), body.as_deref()).await
}

#[tokio::test]
async fn users_are_listed_with_the_token_only_and_never_with_a_hash() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup()).await;
    let no_token = call(&h, "GET", "/api/v1/users", None, None).await;
    assert_eq!(no_token.status, 401, "{}", no_token.raw);
    assert!(no_token.body["error"].is_string(), "{}", no_token.raw);
    let wrong = call(
        &h,
        "GET",
        "/api/v1/users",
        Some("0123456789abcdef0123456789abcdeX"),
        None,
    )
    .await;
    assert_eq!(wrong.status, 401);
    let a = api(&h, "GET", "/api/v1/users", None).await;
    assert_eq!(a.status, 200, "{}", a.raw);
    let names: Vec<&str> = a
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "mallory"]);
    let alice = &a.body[0];
    assert_eq!(
        alice["senders"],
        json!(["@alice.example", "boss@corp.example"])
    );
    assert_eq!(alice["disabled"], json!(false));
    assert_eq!(alice["suspended"], json!(false));
    assert_eq!(alice["usage"]["messages_last_hour"], json!(0));
    assert_eq!(a.body[1]["disabled"], json!(true));
    assert!(!a.raw.contains("argon2"), "{}", a.raw);
    let (ok, out) = common::cli(&h, &["check-config"]);
    assert!(
        ok && out.contains("admin API  http://127.0.0.1:0/api/v1/"),
        "{out}"
    );
}

/// A fresh STARTTLS session's AUTH PLAIN reply: code and enhanced code.
async fn login(h: &Harness, user: &str, password: &str) -> (u16, String) {
    let mut c = common::client::Client::connect(h.starttls).await;
    c.expect("EHLO client.test", 250).await;
    let mut c = c.starttls(&h.ca_pem()).await;
    c.expect("EHLO client.test", 250).await;
    let r = c.auth_plain(user, password).await;
    (r.code, r.esc.map(|e| e.to_string()).unwrap_or_default())
}

const OK: (u16, &str) = (235, "2.7.0");

fn ok() -> (u16, String) {
    (OK.0, OK.1.to_string())
}

fn refused() -> (u16, String) {
    (535, "5.7.8".to_string())
}

/// Sends one message as `user` and returns the final reply code.
async fn send(h: &Harness, user: &str, password: &str, from: &str, to: &[&str]) -> u16 {
    let mut c = h.session(user, password).await;
    let body = format!("From: <{from}>\r\nSubject: hi\r\n\r\nhello\r\n");
    c.send_mail(from, to, &body).await.code
}

/// Every route of the API, with a body where it takes one.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/users"),
    ("POST", "/api/v1/users"),
    ("GET", "/api/v1/users/alice"),
    ("PATCH", "/api/v1/users/alice"),
    ("DELETE", "/api/v1/users/alice"),
    ("POST", "/api/v1/users/alice/suspend"),
    ("POST", "/api/v1/users/alice/unsuspend"),
    ("GET", "/api/v1/queue"),
    ("POST", "/api/v1/queue/flush"),
    ("DELETE", "/api/v1/queue/0123456789ABCDEF"),
    ("GET", "/api/v1/messages"),
    ("GET", "/api/v1/no-such-thing"),
    ("PUT", "/api/v1/users"),
    ("GET", "/api"),
    ("GET", "/api/"),
    ("GET", "/api/v1/users/"),
];

#[tokio::test]
async fn every_api_path_answers_401_without_the_right_token() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup()).await;
    let body = r#"{"name":"x","password":"y","senders":["@x.example"]}"#;
    for (method, path) in ROUTES {
        for token in [None, Some("wrong-token-wrong-token"), Some("")] {
            let a = call(&h, method, path, token, Some(body)).await;
            assert_eq!(a.status, 401, "{method} {path} {token:?}: {}", a.raw);
            assert!(a.body["error"].is_string(), "{method} {path}: {}", a.raw);
        }
    }
    // Nothing was done: alice is still there and no user x.
    let a = api(&h, "GET", "/api/v1/users", None).await;
    assert_eq!(a.body.as_array().unwrap().len(), 2, "{}", a.raw);
    // With the token, unknown paths and methods are JSON errors too.
    let a = api(&h, "GET", "/api/v1/no-such-thing", None).await;
    assert_eq!(
        (a.status, a.body["error"].is_string()),
        (404, true),
        "{}",
        a.raw
    );
    let a = api(&h, "PUT", "/api/v1/users", None).await;
    assert_eq!(a.status, 405, "{}", a.raw);
    // In passthrough mode there is no queue.
    let a = api(&h, "GET", "/api/v1/queue", None).await;
    assert_eq!(a.status, 409, "{}", a.raw);
}

#[tokio::test]
async fn a_created_user_can_send_at_once_and_a_second_create_conflicts() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup()).await;
    let new = json!({"name": "wp-new", "password": "new-user-secret", "senders": ["@new.example"],
        "rate_limits": {"messages_per_hour": 7}});
    let a = api(&h, "POST", "/api/v1/users", Some(new.clone())).await;
    assert_eq!(a.status, 201, "{}", a.raw);
    assert_eq!(a.body["name"], json!("wp-new"));
    assert_eq!(a.body["has_password"], json!(true));
    assert_eq!(a.body["rate_limits"]["messages_per_hour"], json!(7));
    assert!(!a.raw.contains("argon2") && !a.raw.contains("new-user-secret"));
    // No SIGHUP, no reload: the next login works and the mail goes out.
    assert_eq!(login(&h, "wp-new", "new-user-secret").await, ok());
    let code = send(
        &h,
        "wp-new",
        "new-user-secret",
        "site@new.example",
        &["x@dest.example"],
    )
    .await;
    assert_eq!(code, 250);
    let a = api(&h, "POST", "/api/v1/users", Some(new)).await;
    assert_eq!(a.status, 409, "{}", a.raw);
    // The user is in the file, hashed.
    let file = std::fs::read_to_string(h.dir.path().join("users.yaml")).unwrap();
    assert!(
        file.contains("name: wp-new") && file.contains("$argon2id$"),
        "{file}"
    );
    assert!(!file.contains("new-user-secret"));
    // A hash given instead of a password is taken as it is.
    let hash = postern::auth::hash_password("hashed-elsewhere").unwrap();
    let a = api(
        &h,
        "POST",
        "/api/v1/users",
        Some(json!({"name": "pre-hashed",
        "password_hash": hash, "senders": ["@pre.example"]})),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.raw);
    assert_eq!(login(&h, "pre-hashed", "hashed-elsewhere").await, ok());
    // The change is logged with who made it; no password reaches the log.
    assert!(
        h.wait_log("admin API: user created", Duration::from_secs(5))
            .await
    );
    let logs = h.logs();
    let line = logs.iter().find(|l| l.contains("user created")).unwrap();
    assert!(
        line.contains("client=127.0.0.1:") && line.contains("user=wp-new"),
        "{line}"
    );
    assert!(
        logs.iter()
            .all(|l| !l.contains("new-user-secret") && !l.contains(&hash))
    );
}

#[tokio::test]
async fn invalid_users_get_422_with_the_reasons() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup()).await;
    let before = std::fs::read_to_string(h.dir.path().join("users.yaml")).unwrap();
    let i_hash = postern::auth::hash_password("x")
        .unwrap()
        .replacen("$argon2id$", "$argon2i$", 1);
    let slow_hash = postern::auth::hash_password("x")
        .unwrap()
        .replace("t=2", "t=100");
    let cases = [
        (
            json!({"name": "u1", "password": "p", "senders": ["nobody"]}),
            "senders[0]",
        ),
        (
            json!({"name": "u2", "password": "p", "senders": ["@a.example"], "networks": ["300.1.2.3/8"]}),
            "networks[0]",
        ),
        (
            json!({"name": "a b", "password": "p", "senders": ["@a.example"]}),
            "name",
        ),
        (
            json!({"name": "u3", "senders": ["@a.example"]}),
            "neither a password nor networks",
        ),
        (
            json!({"name": "u4", "password": "p", "password_hash": i_hash.clone()}),
            "not both",
        ),
        (
            json!({"name": "u5", "password_hash": i_hash}),
            "password_hash",
        ),
        (
            json!({"name": "u6", "password": "p", "color": "red"}),
            "unknown field",
        ),
        (
            json!({"name": "u7", "password": "", "senders": ["@a.example"]}),
            "password",
        ),
        (
            json!({"name": "u8", "password": "p", "rate_limits": {"messages_per_hour": -1}}),
            "body",
        ),
        // Every client on the Internet would be this user without AUTH.
        (
            json!({"name": "u9", "senders": ["@a.example"], "networks": ["0.0.0.0/0"]}),
            "networks[0]",
        ),
        (
            json!({"name": "u10", "senders": ["@a.example"], "networks": ["::/0"]}),
            "networks[0]",
        ),
        (
            json!({"name": "u11", "password": "p", "senders": ["@*"]}),
            "senders[0]",
        ),
        // A hash whose cost every login (and every unknown user's) would pay.
        (
            json!({"name": "u12", "password_hash": slow_hash, "senders": ["@a.example"]}),
            "password_hash",
        ),
    ];
    for (body, reason) in cases {
        let a = api(&h, "POST", "/api/v1/users", Some(body.clone())).await;
        assert_eq!(a.status, 422, "{body}: {}", a.raw);
        let reasons = a.body["reasons"].as_array().unwrap();
        assert!(
            reasons.iter().any(|r| r.as_str().unwrap().contains(reason)),
            "{body}: {reason:?} not in {}",
            a.raw
        );
        // The reasons never name the server's files.
        assert!(!a.raw.contains(h.dir.path().to_str().unwrap()), "{}", a.raw);
    }
    let a = call(&h, "POST", "/api/v1/users", Some(TOKEN), Some("{not json")).await;
    assert_eq!(a.status, 422, "{}", a.raw);
    // A PATCH that would make alice invalid is refused as a whole.
    let a = api(
        &h,
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"senders": ["@ok.example", "bad"]})),
    )
    .await;
    assert_eq!(a.status, 422, "{}", a.raw);
    assert_eq!(
        std::fs::read_to_string(h.dir.path().join("users.yaml")).unwrap(),
        before
    );
}

#[tokio::test]
async fn patch_changes_password_senders_and_disabled_at_once() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup()).await;
    // A session opened before the change sees new senders at its next MAIL.
    let mut open = h.session("alice", "alice-password").await;
    let a = api(
        &h,
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"password": "alice-new-password"})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.raw);
    assert_eq!(login(&h, "alice", "alice-password").await, refused());
    assert_eq!(login(&h, "alice", "alice-new-password").await, ok());
    let a = api(
        &h,
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"senders": ["@moved.example"],
        "rate_limits": {"recipients_per_day": 9}})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.raw);
    assert_eq!(a.body["senders"], json!(["@moved.example"]));
    assert_eq!(a.body["rate_limits"]["recipients_per_day"], json!(9));
    open.expect("MAIL FROM:<x@alice.example>", 550).await;
    open.expect("MAIL FROM:<x@moved.example>", 250).await;
    open.expect("RSET", 250).await;
    // Disabled: refused; enabled again: back.
    let a = api(
        &h,
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(
        (a.status, &a.body["disabled"]),
        (200, &json!(true)),
        "{}",
        a.raw
    );
    assert_eq!(login(&h, "alice", "alice-new-password").await.0, 535);
    let a = api(
        &h,
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"disabled": false, "rate_limits": null})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.raw);
    assert_eq!(a.body["rate_limits"]["recipients_per_day"], json!(null));
    assert_eq!(login(&h, "alice", "alice-new-password").await, ok());
    // Unknown user, empty change.
    let a = api(
        &h,
        "PATCH",
        "/api/v1/users/nobody",
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(a.status, 404, "{}", a.raw);
    let a = api(&h, "PATCH", "/api/v1/users/alice", Some(json!({}))).await;
    assert_eq!(a.status, 422, "{}", a.raw);
    assert!(h.logs().iter().all(|l| !l.contains("alice-new-password")));
}

#[tokio::test]
async fn a_deleted_user_is_gone_and_cannot_log_in() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup()).await;
    assert_eq!(login(&h, "alice", "alice-password").await, ok());
    let a = api(&h, "DELETE", "/api/v1/users/alice", None).await;
    assert_eq!(a.status, 204, "{}", a.raw);
    let a = api(&h, "GET", "/api/v1/users/alice", None).await;
    assert_eq!(a.status, 404, "{}", a.raw);
    let a = api(&h, "DELETE", "/api/v1/users/alice", None).await;
    assert_eq!(a.status, 404, "{}", a.raw);
    assert_eq!(login(&h, "alice", "alice-password").await, refused());
    let file = std::fs::read_to_string(h.dir.path().join("users.yaml")).unwrap();
    assert!(
        !file.contains("alice") && file.contains("name: mallory"),
        "{file}"
    );
}

#[tokio::test]
async fn suspend_refuses_logins_until_unsuspended() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup()).await;
    // A reason that would reorder or hide text where it is shown: refused.
    for hostile in ["spam\u{202e}24 tekcit", "zero\u{200b}width", "bell\u{7}"] {
        let a = api(
            &h,
            "POST",
            "/api/v1/users/alice/suspend",
            Some(json!({ "reason": hostile })),
        )
        .await;
        assert_eq!(a.status, 422, "{hostile:?}: {}", a.raw);
    }
    let a = api(
        &h,
        "POST",
        "/api/v1/users/alice/suspend",
        Some(json!({"reason": "spam run, ticket 42"})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.raw);
    assert_eq!(a.body["suspended"], json!(true));
    assert_eq!(a.body["suspension"]["reason"], json!("spam run, ticket 42"));
    assert_eq!(login(&h, "alice", "alice-password").await, refused());
    let a = api(&h, "GET", "/api/v1/users/alice", None).await;
    assert_eq!(a.body["suspended"], json!(true), "{}", a.raw);
    let a = api(&h, "POST", "/api/v1/users/nobody/suspend", None).await;
    assert_eq!(a.status, 404, "{}", a.raw);
    let a = api(&h, "POST", "/api/v1/users/alice/unsuspend", None).await;
    assert_eq!(
        (a.status, &a.body["suspended"]),
        (200, &json!(false)),
        "{}",
        a.raw
    );
    assert_eq!(login(&h, "alice", "alice-password").await, ok());
    // A suspension without a body gets a default reason.
    let a = call(&h, "POST", "/api/v1/users/alice/suspend", Some(TOKEN), None).await;
    assert_eq!(a.status, 200, "{}", a.raw);
    assert!(
        a.body["suspension"]["reason"]
            .as_str()
            .unwrap()
            .contains("admin API")
    );
}

/// Puts a comment at the top of the users file, as an operator would.
fn comment_users_file(dir: &std::path::Path) {
    let path = dir.join("users.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    common::write(&path, &format!("# Kept by hand: do not lose me\n{text}"));
}

#[tokio::test]
async fn changes_persist_across_a_restart() {
    if !have("curl") {
        return;
    }
    let mut h = Harness::start(Setup {
        before_launch: Some(comment_users_file),
        ..setup()
    })
    .await;
    let new = json!({"name": "kept", "password": "kept-password", "senders": ["@kept.example"]});
    assert_eq!(
        api(&h, "POST", "/api/v1/users", Some(new)).await.status,
        201
    );
    let a = api(
        &h,
        "POST",
        "/api/v1/users/alice/suspend",
        Some(json!({"reason": "held"})),
    )
    .await;
    assert_eq!(a.status, 200);
    let a = api(
        &h,
        "PATCH",
        "/api/v1/users/mallory",
        Some(json!({"disabled": false})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.raw);
    assert!(h.terminate().success());
    let file = std::fs::read_to_string(h.dir.path().join("users.yaml")).unwrap();
    assert!(
        file.starts_with("# Kept by hand: do not lose me\n"),
        "{file}"
    );
    h.launch().await;
    let a = api(&h, "GET", "/api/v1/users", None).await;
    let users = a.body.as_array().unwrap();
    let by_name = |n: &str| {
        users
            .iter()
            .find(|u| u["name"] == json!(n))
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("kept")["senders"], json!(["@kept.example"]));
    assert_eq!(by_name("alice")["suspension"]["reason"], json!("held"));
    assert_eq!(by_name("mallory")["disabled"], json!(false));
    assert_eq!(login(&h, "kept", "kept-password").await, ok());
    assert_eq!(login(&h, "alice", "alice-password").await, refused());
    assert_eq!(login(&h, "mallory", "mallory-password").await, ok());
}

#[tokio::test]
async fn usage_shows_what_a_user_sent() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup()).await;
    let to = ["a@dest.example", "b@dest.example"];
    assert_eq!(
        send(&h, "alice", "alice-password", "me@alice.example", &to).await,
        250
    );
    let a = api(&h, "GET", "/api/v1/users/alice", None).await;
    assert_eq!(
        a.body["usage"],
        json!({"messages_last_hour": 1, "recipients_last_hour": 2, "recipients_last_day": 2}),
        "{}",
        a.raw
    );
    let a = api(&h, "GET", "/api/v1/users", None).await;
    assert_eq!(
        a.body[0]["usage"]["messages_last_hour"],
        json!(1),
        "{}",
        a.raw
    );
    assert_eq!(
        a.body[1]["usage"]["messages_last_hour"],
        json!(0),
        "{}",
        a.raw
    );
}

#[tokio::test]
async fn the_delivery_log_shows_each_users_messages_newest_first() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup()).await;
    let to = ["a@dest.example", "b@dest.example"];
    assert_eq!(
        send(&h, "alice", "alice-password", "me@alice.example", &to).await,
        250
    );
    assert_eq!(
        send(&h, "alice", "alice-password", "me@alice.example", &to[..1]).await,
        250
    );
    // The log is written off the session's path: give it a moment.
    let mut a = api(&h, "GET", "/api/v1/messages?user=alice", None).await;
    for _ in 0..50 {
        if a.body.as_array().is_some_and(|l| l.len() == 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        a = api(&h, "GET", "/api/v1/messages?user=alice", None).await;
    }
    assert_eq!(a.status, 200, "{}", a.raw);
    let log = a.body.as_array().expect("a list");
    assert_eq!(log.len(), 2, "{}", a.raw);
    // Newest first: the one-recipient message.
    assert_eq!(
        log[0]["recipients"].as_array().unwrap().len(),
        1,
        "{}",
        a.raw
    );
    assert_eq!(
        log[1]["recipients"].as_array().unwrap().len(),
        2,
        "{}",
        a.raw
    );
    for e in log {
        assert_eq!(e["user"], "alice", "{}", a.raw);
        assert_eq!(e["from"], "me@alice.example", "{}", a.raw);
        assert_eq!(e["client_ip"], "127.0.0.1", "{}", a.raw);
        assert!(e["size"].as_u64().unwrap() > 0, "{}", a.raw);
        for field in ["id", "time", "status"] {
            assert!(e[field].is_string(), "{field}: {}", a.raw);
        }
        for r in e["recipients"].as_array().unwrap() {
            assert!(r["address"].as_str().unwrap().ends_with("@dest.example"));
            assert!(r["status"].is_string(), "{}", a.raw);
        }
    }
    let a = api(&h, "GET", "/api/v1/messages?user=alice&limit=1", None).await;
    assert_eq!(a.body.as_array().unwrap().len(), 1, "{}", a.raw);
    let a = api(&h, "GET", "/api/v1/messages?user=bob", None).await;
    assert_eq!(a.body, json!([]), "{}", a.raw);
    // Every malformed query or path is a JSON 422, never a plain-text 400.
    for path in [
        "/api/v1/messages?limit=0",
        "/api/v1/messages?limit=abc",
        "/api/v1/messages?limit=-1",
        "/api/v1/messages?limit=1&limit=2",
        "/api/v1/messages?x=1",
        "/api/v1/users/%FF%FE",
    ] {
        let a = api(&h, "GET", path, None).await;
        assert_eq!(a.status, 422, "{path}: {}", a.raw);
        assert!(a.body["reasons"].is_array(), "{path}: {}", a.raw);
    }
}

#[tokio::test]
async fn the_queue_is_listed_flushed_and_deleted_in_queue_mode() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(Setup {
        queue: true,
        smarthost_down: true,
        ..setup()
    })
    .await;
    let to = ["a@dest.example"];
    assert_eq!(
        send(&h, "alice", "alice-password", "me@alice.example", &to).await,
        250
    );
    // Wait for the first (failed) attempt.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let entry = loop {
        let a = api(&h, "GET", "/api/v1/queue", None).await;
        assert_eq!(a.status, 200, "{}", a.raw);
        let list = a.body.as_array().unwrap().clone();
        assert_eq!(list.len(), 1, "{}", a.raw);
        if list[0]["attempts"].as_u64().unwrap() >= 1 {
            break list[0].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no attempt: {}",
            a.raw
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entry["from"], json!("me@alice.example"));
    assert_eq!(entry["user"], json!("alice"));
    assert_eq!(entry["recipients"], json!(["a@dest.example"]));
    assert!(entry["last_error"].is_string(), "{entry}");
    let a = api(&h, "POST", "/api/v1/queue/flush", None).await;
    assert_eq!(
        (a.status, &a.body["scheduled"]),
        (200, &json!(1)),
        "{}",
        a.raw
    );
    let id = entry["id"].as_str().unwrap();
    let a = api(&h, "DELETE", &format!("/api/v1/queue/{id}"), None).await;
    assert_eq!(a.status, 204, "{}", a.raw);
    let a = api(&h, "GET", "/api/v1/queue", None).await;
    assert_eq!(a.body, json!([]), "{}", a.raw);
    let a = api(&h, "DELETE", &format!("/api/v1/queue/{id}"), None).await;
    assert_eq!(a.status, 404, "{}", a.raw);
    let a = api(&h, "DELETE", "/api/v1/queue/..%2F..%2Fetc", None).await;
    assert_eq!(a.status, 404, "{}", a.raw);
}

#[tokio::test]
async fn hostile_names_get_422_and_never_reach_the_log_unescaped() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup()).await;
    let long = "x".repeat(5000);
    let names = [
        "evil\r\nINFO forged line",
        "../../etc/passwd",
        "\u{1b}[31mred",
        "a\u{202e}b",
        long.as_str(),
        "",
    ];
    for name in names {
        let body = json!({"name": name, "password": "p", "senders": ["@a.example"]});
        let a = api(&h, "POST", "/api/v1/users", Some(body)).await;
        assert_eq!(a.status, 422, "{name:?}: {}", a.raw);
        assert!(
            a.body["reasons"][0].as_str().unwrap().starts_with("name:"),
            "{}",
            a.raw
        );
    }
    // Hostile names in paths are simply unknown users.
    for path in [
        "evil%0D%0AINFO%20forged",
        "..%2F..%2Fetc%2Fpasswd",
        "%1B%5B31m",
    ] {
        let a = api(
            &h,
            "PATCH",
            &format!("/api/v1/users/{path}"),
            Some(json!({"disabled": true})),
        )
        .await;
        assert_eq!(a.status, 404, "{path}: {}", a.raw);
        let a = api(&h, "POST", &format!("/api/v1/users/{path}/suspend"), None).await;
        assert_eq!(a.status, 404, "{path}: {}", a.raw);
    }
    // A reason with control characters is refused; one with quotes and = is quoted.
    let a = api(
        &h,
        "POST",
        "/api/v1/users/alice/suspend",
        Some(json!({"reason": "x\ny"})),
    )
    .await;
    assert_eq!(a.status, 422, "{}", a.raw);
    let a = api(
        &h,
        "POST",
        "/api/v1/users/alice/suspend",
        Some(json!({"reason": "a=b \"c\""})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.raw);
    assert!(
        h.wait_log("admin API: user suspended", Duration::from_secs(5))
            .await
    );
    let users = std::fs::read_to_string(h.dir.path().join("users.yaml")).unwrap();
    assert!(
        !users.contains("passwd") && !users.contains("forged"),
        "{users}"
    );
    for line in h.logs() {
        assert!(
            !line.contains('\u{1b}') && !line.contains('\u{202e}'),
            "{line:?}"
        );
        assert!(!line.starts_with("INFO forged"), "{line:?}");
        if line.contains("user suspended") {
            assert!(line.contains(r#"reason="a=b \"c\"""#), "{line}");
        }
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup()).await;
    let senders: Vec<String> = (0..5000)
        .map(|i| format!("sender{i}@big.example"))
        .collect();
    let body = json!({"name": "big", "password": "p", "senders": senders}).to_string();
    assert!(body.len() > 64 * 1024);
    let a = call(&h, "POST", "/api/v1/users", Some(TOKEN), Some(&body)).await;
    assert_eq!(a.status, 413, "{}", a.raw);
    assert!(a.body["error"].is_string(), "{}", a.raw);
    let a = api(&h, "GET", "/api/v1/users/big", None).await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn https_with_the_tls_certificate_when_asked() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(Setup {
        extra: ADMIN.replace(
            "token_file: admin.token\n",
            "token_file: admin.token\n  tls: true\n",
        ),
        ..setup()
    })
    .await;
    let url = base(&h)
        .replace("http://", "https://")
        .replace("127.0.0.1", "localhost");
    let port = url.rsplit(':').next().unwrap().to_string();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(h.dir.path().join("ca.pem"))
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("{url}/api/v1/users/alice"))
        .output()
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        body["name"],
        json!("alice"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP is not answered there.
    let a = api(&h, "GET", "/api/v1/users", None).await;
    assert_ne!(a.status, 200);
}

#[tokio::test]
async fn a_client_that_sends_no_request_is_closed() {
    use tokio::io::AsyncReadExt;
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup()).await;
    let addr = base(&h).trim_start_matches("http://").to_string();
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(20), idle.read(&mut buf)).await;
    assert!(read.is_ok(), "still open after 20 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5),
        "closed too soon: {waited:?}"
    );
    // Others are served meanwhile and after.
    assert_eq!(
        api(&h, "GET", "/api/v1/users/alice", None).await.status,
        200
    );
}

/// A connection from `source` (a loopback address) that sends nothing.
async fn idle_from(addr: &str, source: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr.parse().unwrap()).await.unwrap()
}

/// Whether the server closes `stream` at once, unanswered.
async fn closed_at_once(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    matches!(read, Ok(Ok(0)) | Ok(Err(_)))
}

/// One request with curl from `source`; its status.
async fn status_from(h: &Harness, source: &str) -> u16 {
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args(["--interface", source])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("{}/api/v1/users/alice", base(h)))
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

#[tokio::test]
async fn a_flood_of_connections_is_capped_and_served_again_once_they_close() {
    if !have("curl") {
        return;
    }
    let h = Harness::start(setup()).await;
    let addr = base(&h).trim_start_matches("http://").to_string();
    // One address gets 16 connections that send nothing (each would be closed
    // after the 10 s head timeout; the checks below finish well before)...
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(idle_from(&addr, "127.0.0.1").await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = idle_from(&addr, "127.0.0.1").await;
    assert!(
        closed_at_once(&mut extra).await,
        "a 17th from one address was kept"
    );
    assert!(
        h.wait_log("too many open from this address", Duration::from_secs(5))
            .await
    );
    // ...while the panel, elsewhere, is served.
    assert_eq!(status_from(&h, "127.0.0.2").await, 200);
    // 64 in all, from several addresses: the 65th is closed, whoever it is.
    for source in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        for _ in 0..16 {
            held.push(idle_from(&addr, source).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = idle_from(&addr, "127.0.0.6").await;
    assert!(
        closed_at_once(&mut extra).await,
        "the 65th connection was kept"
    );
    assert!(h.wait_log("limit=64", Duration::from_secs(5)).await);
    drop(held);
    let mut status = 0;
    for _ in 0..50 {
        status = status_from(&h, "127.0.0.1").await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "not served again after the flood closed");
}
