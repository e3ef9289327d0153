//! The admin API against the real binary, driven with curl: the token on every
//! path, users created, changed, suspended and deleted with effect on SMTP at once
//! (no SIGHUP) and after a restart, the queue, and hostile input.

mod common;

use common::{Harness, Setup, have};
use serde_json::{Value, json};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn setup() -> Setup {
    Setup {
        extra: "admin:\n  address: \"127.0.0.1:0\"\n  token_file: admin.token\n".into(),
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
}
