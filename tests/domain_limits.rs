//! Per-domain limits over real sessions: users of one domain share its quota,
//! the stricter of user and domain wins, the null sender counts against its header
//! From's domain, and the admin API changes a domain's limits at once and for good.

mod common;

use common::client::Client;
use common::{Harness, Setup, TestUser, users_yaml};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;

const W: Duration = Duration::from_secs(10);

fn esc(r: &postern::proto::reply::Reply) -> String {
    r.esc.map(|e| e.to_string()).unwrap_or_default()
}

fn users() -> Vec<TestUser> {
    vec![
        TestUser::new("site1-a", "a-password", &["@site1.example"]),
        TestUser::new("site1-b", "b-password", &["@site1.example"]),
        TestUser {
            extra: "    rate_limits: { messages_per_hour: 1 }\n",
            ..TestUser::new("strict", "strict-password", &["@site3.example"])
        },
        TestUser::new("other", "other-password", &["@other.example"]),
        TestUser::new("lists", "lists-password", &["@rcpt.example"]),
        TestUser::new(
            "idn",
            "idn-password",
            &["@bücher.example", "@xn--bcher-kva.example"],
        ),
    ]
}

/// The users file with a `domains:` list.
fn users_file() -> String {
    users_yaml(&users())
        + "domains:\n\
           \x20 - name: site1.example\n    rate_limits: { messages_per_hour: 5 }\n\
           \x20 - name: site3.example\n    rate_limits: { messages_per_hour: 10 }\n\
           \x20 - name: Bücher.Example\n    rate_limits: { messages_per_hour: 1 }\n\
           \x20 - name: rcpt.example\n    rate_limits: { recipients_per_hour: 3 }\n"
}

async fn start(queue: bool) -> Harness {
    Harness::start(Setup {
        users: users(),
        files: vec![("users.yaml", users_file())],
        queue,
        ..Setup::default()
    })
    .await
}

/// `n` sessions of each of `logins` send one message each, all MAILs at once;
/// returns the final replies' codes.
async fn concurrently(h: &Harness, logins: &[(&str, &str)], n: usize) -> Vec<u16> {
    let barrier = Arc::new(Barrier::new(logins.len() * n));
    let mut tasks = Vec::new();
    for (user, password) in logins {
        for i in 0..n {
            let mut c = h.session(user, password).await;
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let body = format!("From: x@site1.example\r\nSubject: {i}\r\n\r\nx\r\n");
                let r = c
                    .send_mail("x@site1.example", &["r@example.org"], &body)
                    .await;
                if r.code != 250 {
                    assert_eq!((r.code, esc(&r)), (450, "4.7.1".into()), "{r:?}");
                    assert!(r.text.contains("of domain site1.example (5)"), "{r:?}");
                }
                r.code
            }));
        }
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(tokio::time::timeout(W, t).await.unwrap().unwrap());
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_of_one_domain_share_its_limit_exactly_under_concurrency() {
    let h = start(false).await;
    let logins = [("site1-a", "a-password"), ("site1-b", "b-password")];
    let codes = concurrently(&h, &logins, 6).await;
    let accepted = codes.iter().filter(|&&c| c == 250).count();
    assert_eq!(accepted, 5, "{codes:?}");
    assert_eq!(h.sink.wait_for(5, W).await.len(), 5);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.sink.messages().len(),
        5,
        "nothing over the limit was forwarded"
    );
    assert!(h.wait_log("domain rate limit reached", W).await);
    let logs = h.logs().join("\n");
    let line = logs
        .lines()
        .find(|l| l.contains("domain rate limit reached"))
        .unwrap();
    assert!(
        line.contains("site1.example") && line.contains("messages_per_hour"),
        "{line}"
    );
    // An unlisted domain is not affected, nor is a listed one the others did not use.
    let mut o = h.session("other", "other-password").await;
    for _ in 0..6 {
        let r = o
            .send_mail("o@other.example", &["r@example.org"], "x\r\n")
            .await;
        assert_eq!(r.code, 250, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stricter_of_user_and_domain_limit_wins() {
    let h = start(false).await;
    let mut c = h.session("strict", "strict-password").await;
    let r = c
        .send_mail("s@site3.example", &["r@example.org"], "x\r\n")
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.cmd("MAIL FROM:<s@site3.example>").await;
    assert_eq!((r.code, esc(&r)), (450, "4.7.1".into()));
    // The user's own limit: the reply does not blame the domain.
    assert!(r.text.contains("messages_per_hour (1)"), "{}", r.text);
    assert!(!r.text.contains("domain"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domains_recipient_limit_refuses_at_rcpt() {
    let h = start(false).await;
    let mut c = h.session("lists", "lists-password").await;
    c.expect("MAIL FROM:<news@rcpt.example>", 250).await;
    for i in 0..3 {
        c.expect(&format!("RCPT TO:<r{i}@example.org>"), 250).await;
    }
    let r = c.cmd("RCPT TO:<r3@example.org>").await;
    assert_eq!((r.code, esc(&r)), (450, "4.7.1".into()));
    assert!(
        r.text
            .contains("recipients_per_hour of domain rcpt.example (3)"),
        "{}",
        r.text
    );
    c.expect("DATA", 354).await;
    c.send_raw(b"Subject: three\r\n\r\nx\r\n.\r\n").await;
    assert_eq!(c.read_reply().await.code, 250);
    assert_eq!(h.sink.wait_for(1, W).await[0].rcpts.len(), 3);
    c.expect("MAIL FROM:<news@rcpt.example>", 250).await;
    let r = c.cmd("RCPT TO:<r4@example.org>").await;
    assert_eq!(r.code, 450, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_counts_once_whether_written_as_u_label_or_a_label() {
    let h = start(false).await;
    let mut c = h.session("idn", "idn-password").await;
    let r = c.cmd("MAIL FROM:<a@BÜCHER.example> SMTPUTF8").await;
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("RCPT TO:<r@example.org>", 250).await;
    c.expect("DATA", 354).await;
    c.send_raw(b"From: a@xn--bcher-kva.example\r\n\r\nx\r\n.\r\n")
        .await;
    assert_eq!(c.read_reply().await.code, 250);
    let r = c.cmd("MAIL FROM:<a@xn--bcher-kva.example>").await;
    assert_eq!((r.code, esc(&r)), (450, "4.7.1".into()));
    assert!(
        r.text.contains("of domain xn--bcher-kva.example (1)"),
        "{}",
        r.text
    );
}

/// A null-sender message (an auto-reply) from `c`, with `from` as header From.
async fn null_sender(c: &mut Client, from: &str) -> postern::proto::reply::Reply {
    let body = format!("From: {from}\r\nSubject: Auto-reply\r\n\r\naway\r\n");
    c.send_mail("", &["r@example.org"], &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_sender_message_counts_against_its_header_from_domain() {
    for queue in [false, true] {
        let h = start(queue).await;
        let mut a = h.session("site1-a", "a-password").await;
        for i in 0..3 {
            let r = null_sender(&mut a, "a@site1.example").await;
            assert_eq!(r.code, 250, "null sender {i}: {r:?}");
        }
        let mut b = h.session("site1-b", "b-password").await;
        for _ in 0..2 {
            let r = b
                .send_mail("b@site1.example", &["r@example.org"], "x\r\n")
                .await;
            assert_eq!(r.code, 250, "{r:?}");
        }
        // Five used: a sixth is refused at MAIL, and a null-sender one at the end of DATA.
        let r = b.cmd("MAIL FROM:<b@site1.example>").await;
        assert_eq!((r.code, esc(&r)), (450, "4.7.1".into()), "queue: {queue}");
        let r = null_sender(&mut a, "a@site1.example").await;
        assert_eq!(
            (r.code, esc(&r)),
            (450, "4.7.1".into()),
            "queue: {queue}: {r:?}"
        );
        assert!(r.text.contains("of domain site1.example"), "{}", r.text);
        assert_eq!(h.sink.wait_for(5, W).await.len(), 5);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(h.sink.messages().len(), 5, "queue: {queue}");
        // The refused one cost nothing: the session goes on.
        a.expect("RSET", 250).await;
    }
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// One admin API call with curl: the status and the JSON body (`Null` if none).
async fn api(
    h: &Harness,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut headers = Vec::new();
    if let Some(t) = token {
        headers.push(format!("Authorization: Bearer {t}"));
    }
    if body.is_some() {
        headers.push("Content-Type: application/json".to_string());
    }
    let url = format!("http://{}{path}", common::web::admin_addr(h));
    let r = common::web::request(method, &url, &headers, body, &[]).await;
    (r.status, r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_changes_a_domains_limits_at_once_and_for_good() {
    if !common::have("curl") {
        return;
    }
    let mut h = Harness::start(Setup {
        users: users(),
        files: vec![
            (
                "users.yaml",
                format!("# the panel's users\n{}", users_file()),
            ),
            ("admin.token", format!("{TOKEN}\n")),
        ],
        extra: "admin:\n  address: \"127.0.0.1:0\"\n  token_file: admin.token\n\
                domain_rate_limits: { recipients_per_day: 1000 }\n"
            .into(),
        ..Setup::default()
    })
    .await;
    let (ok, out) = common::cli(&h, &["check-config"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "domains    4 with their own limits; domain_rate_limits for every other domain"
        ),
        "{out}"
    );
    let t = Some(TOKEN);
    assert_eq!(api(&h, "GET", "/api/v1/domains", None, None).await.0, 401);
    let put = Some(r#"{"rate_limits": {"messages_per_hour": 1}}"#);
    assert_eq!(
        api(&h, "PUT", "/api/v1/domains/other.example", None, put)
            .await
            .0,
        401
    );
    let (status, list) = api(&h, "GET", "/api/v1/domains", t, None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "rcpt.example",
            "site1.example",
            "site3.example",
            "xn--bcher-kva.example"
        ]
    );
    assert_eq!(list[1]["rate_limits"]["messages_per_hour"], 5);
    assert_eq!(
        list[1]["rate_limits"]["recipients_per_day"], 1000,
        "the default fills in"
    );

    // other.example is unlisted: only the default applies, so 2 messages pass.
    let mut o = h.session("other", "other-password").await;
    for _ in 0..2 {
        let r = o
            .send_mail("o@other.example", &["r@example.org"], "x\r\n")
            .await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    let (status, d) = api(&h, "GET", "/api/v1/domains/Other.Example", t, None).await;
    assert_eq!((status, d["listed"].as_bool()), (200, Some(false)), "{d}");
    assert_eq!(d["usage"]["messages_last_hour"], 2, "{d}");
    // Limited to 2 per hour by the API: the very next MAIL is refused.
    let two = Some(r#"{"rate_limits": {"messages_per_hour": 2}}"#);
    let (status, d) = api(&h, "PUT", "/api/v1/domains/other.example", t, two).await;
    assert_eq!((status, d["listed"].as_bool()), (201, Some(true)), "{d}");
    let r = o.cmd("MAIL FROM:<o@other.example>").await;
    assert_eq!((r.code, esc(&r)), (450, "4.7.1".into()));
    assert!(r.text.contains("of domain other.example (2)"), "{}", r.text);
    assert_eq!(
        api(&h, "PUT", "/api/v1/domains/other.example", t, two)
            .await
            .0,
        200
    );

    // Refusals: a name that is not a domain, an unknown key, a domain never listed.
    let bad = api(&h, "PUT", "/api/v1/domains/a%20b", t, two).await;
    assert_eq!(bad.0, 422, "{}", bad.1);
    let typo = Some(r#"{"rate_limits": {"messages_per_hours": 2}}"#);
    assert_eq!(
        api(&h, "PUT", "/api/v1/domains/x.example", t, typo).await.0,
        422
    );
    assert_eq!(
        api(&h, "DELETE", "/api/v1/domains/never.example", t, None)
            .await
            .0,
        404
    );

    // Persisted in the users file, its comment kept, and in force after a restart.
    let file = std::fs::read_to_string(h.dir.path().join("users.yaml")).unwrap();
    assert!(file.starts_with("# the panel's users\n"), "{file}");
    assert!(file.contains("\"other.example\""), "{file}");
    assert!(h.terminate().success());
    h.launch().await;
    // Counts are in memory (a restart forgets them); the limit of 2 is kept.
    let mut o = h.session("other", "other-password").await;
    for _ in 0..2 {
        let r = o
            .send_mail("o@other.example", &["r@example.org"], "x\r\n")
            .await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    let r = o.cmd("MAIL FROM:<o@other.example>").await;
    assert!(r.text.contains("of domain other.example (2)"), "{}", r.text);
    let (_, d) = api(&h, "GET", "/api/v1/domains/other.example", t, None).await;
    assert_eq!(d["own_rate_limits"]["messages_per_hour"], 2, "{d}");
    // Unlisted again: the default applies, nothing else.
    assert_eq!(
        api(&h, "DELETE", "/api/v1/domains/other.example", t, None)
            .await
            .0,
        204
    );
    let (_, d) = api(&h, "GET", "/api/v1/domains/other.example", t, None).await;
    assert_eq!(d["listed"].as_bool(), Some(false), "{d}");
    // Users and domains go on working: a new user through the API still appends.
    let user = r#"{"name": "new", "password": "new-password-1234", "senders": ["@other.example"]}"#;
    assert_eq!(api(&h, "POST", "/api/v1/users", t, Some(user)).await.0, 201);
    let file = std::fs::read_to_string(h.dir.path().join("users.yaml")).unwrap();
    assert!(file.starts_with("# the panel's users\n"), "{file}");
    assert!(!file.contains("name: \"other.example\""), "{file}");
}
