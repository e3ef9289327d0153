//! The delivery log and webhooks, with the real binary: what the smarthost and
//! Postern answered is what the log says, and webhooks arrive signed, retried and
//! once per event.

mod common;

use common::{Harness, Setup, TestUser, free_port};
use postern::journal::{DeliveryLog, Entry, Retention};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const W: Duration = Duration::from_secs(20);

/// The log in the harness's spool, as the admin API reads it.
fn log_of(h: &Harness) -> std::sync::Arc<DeliveryLog> {
    let dir = h.dir.path().join("spool/delivery-log");
    DeliveryLog::open(&dir, Retention::new(Duration::from_secs(86_400), 1 << 30)).unwrap()
}

/// Waits until `user`'s newest entries number at least `n`; returns them newest first.
async fn wait_entries(h: &Harness, user: &str, n: usize) -> Vec<Entry> {
    let log = log_of(h);
    let deadline = Instant::now() + W;
    loop {
        let got = log.query(Some(user), 100);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rcpt<'a>(e: &'a Entry, address: &str) -> &'a postern::journal::Recipient {
    e.recipients
        .iter()
        .find(|r| r.address == address)
        .unwrap_or_else(|| panic!("{address} not in {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_records_what_the_smarthost_and_postern_answered() {
    let h = Harness::start(Setup::default()).await;
    let mut c = h.session("alice", "alice-password").await;
    c.expect("MAIL FROM:<a@alice.example>", 250).await;
    c.expect("RCPT TO:<ok@example.org>", 250).await;
    c.expect("RCPT TO:<reject550@example.org>", 550).await;
    c.expect("DATA", 354).await;
    c.send_raw(b"From: a@alice.example\r\nSubject: one\r\n\r\nhello\r\n.\r\n")
        .await;
    assert_eq!(c.read_reply().await.code, 250);
    // Refused by the smarthost at the end of DATA.
    let r = c
        .send_mail(
            "a@alice.example",
            &["b@example.org"],
            "From: a@alice.example\r\nX-Sink-Reply: 554\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(r.code, 554, "{r:?}");
    // Refused by Postern: a From: alice may not use.
    let r = c
        .send_mail(
            "a@alice.example",
            &["c@example.org"],
            "From: ceo@elsewhere.example\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(r.code, 550, "{r:?}");

    let got = wait_entries(&h, "alice", 3).await;
    assert_eq!(got.len(), 3, "{got:#?}");
    let (forged, refused, sent) = (&got[0], &got[1], &got[2]);

    assert_eq!(sent.status, "delivered");
    assert_eq!(sent.user, "alice");
    assert_eq!(sent.from, "a@alice.example");
    assert_eq!(sent.client_ip.as_deref(), Some("127.0.0.1"));
    assert!(sent.size > 40, "{sent:?}");
    let ok = rcpt(sent, "ok@example.org");
    assert_eq!(ok.status, "delivered");
    assert!(
        ok.reply.as_deref().unwrap_or("").starts_with("250"),
        "{ok:?}"
    );
    let no = rcpt(sent, "reject550@example.org");
    assert_eq!(no.status, "refused");
    assert!(
        no.reply
            .as_deref()
            .unwrap()
            .contains("550 5.1.1 No such user here"),
        "{no:?}"
    );
    // The message's id is the one the Received header carries.
    let delivered = h.sink.wait_for(1, W).await;
    let content = String::from_utf8_lossy(&delivered[0].content);
    assert!(
        content.contains(&format!("id {}", sent.id)),
        "{} / {content}",
        sent.id
    );

    assert_eq!(refused.status, "refused");
    assert_eq!(refused.reason.as_deref(), Some("smarthost"));
    let b = rcpt(refused, "b@example.org");
    assert!(
        b.reply.as_deref().unwrap().starts_with("554 5.7.1"),
        "{b:?}"
    );

    assert_eq!(forged.status, "refused");
    assert_eq!(forged.reason.as_deref(), Some("header_from"));
    assert!(
        forged.reply.as_deref().unwrap().starts_with("550 5.7.1"),
        "{forged:?}"
    );
    assert_eq!(rcpt(forged, "c@example.org").status, "refused");

    assert!(log_of(&h).query(Some("bob"), 10).is_empty());
    assert_eq!(log_of(&h).query(None, 2).len(), 2, "the limit holds");
}

/// Starts the Python receiver; returns it and the file it writes to.
fn receiver(dir: &Path, port: u16, fail_first: u32) -> (Child, std::path::PathBuf) {
    let out = dir.join(format!("webhook-{port}.jsonl"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook_receiver.py");
    let child = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(&out)
        .arg(fail_first.to_string())
        .arg(dir.join("webhook.secret"))
        .spawn()
        .unwrap();
    // Until it listens.
    let deadline = Instant::now() + W;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "webhook receiver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, out)
}

/// The receiver's record: (calls made, bodies of the valid calls).
fn received(out: &Path) -> (usize, Vec<serde_json::Value>) {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let mut calls = 0;
    let mut valid = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v.get("call").is_some() {
            calls += 1;
        } else {
            assert_eq!(v["valid"], true, "bad signature: {v}");
            valid.push(v["body"].clone());
        }
    }
    (calls, valid)
}

fn webhook_yaml(port: u16, events: &str) -> String {
    format!(
        "admin:\n  webhooks:\n    - url: http://127.0.0.1:{port}/hooks/postern\n      secret_file: webhook.secret\n      events: [{events}]\n"
    )
}

const SECRET: &str = "whsec_0123456789abcdef0123456789abcdef\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_fires_one_signed_webhook_retried_after_failures() {
    if !common::have("python3") {
        return;
    }
    let port = free_port();
    let h = Harness::start(Setup {
        users: vec![limited_alice()],
        extra: webhook_yaml(port, "rate_limit.reached"),
        files: vec![("webhook.secret", SECRET.into())],
        ..Setup::default()
    })
    .await;
    let (mut child, out) = receiver(h.dir.path(), port, 2);
    let mut c = h.session("alice", "alice-password").await;
    let r = c
        .send_mail(
            "a@alice.example",
            &["b@example.org"],
            "From: a@alice.example\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    for _ in 0..3 {
        c.expect("MAIL FROM:<a@alice.example>", 450).await;
    }
    // The first two calls fail and are retried (after about 1 s, then 2 s).
    let deadline = Instant::now() + W;
    while received(&out).1.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Long enough for a wrongly repeated event to arrive too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (calls, valid) = received(&out);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(valid.len(), 1, "one event for three refusals: {valid:#?}");
    assert_eq!(calls, 3, "two failed calls, then the one that worked");
    let limit = &valid[0];
    assert_eq!(limit["event"], "rate_limit.reached");
    assert_eq!(limit["user"], "alice");
    assert_eq!(limit["limit"], "messages_per_hour");
    assert_eq!(limit["max"], 1);
    assert!(limit["time"].as_str().unwrap().ends_with('Z'));
    // The secret never reaches the log.
    common::assert_no_secrets(&h.logs(), &[SECRET.trim().to_string()]);
}

fn limited_alice() -> TestUser {
    TestUser {
        extra: "    rate_limits: { messages_per_hour: 1 }\n",
        ..TestUser::new("alice", "alice-password", &["@alice.example"])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brake_fires_user_suspended() {
    if !common::have("python3") {
        return;
    }
    let port = free_port();
    let h = Harness::start(Setup {
        users: vec![limited_alice()],
        extra: format!(
            "abuse:\n  suspend_after_limited_hours: 1\n{}",
            webhook_yaml(port, "user.suspended")
        ),
        files: vec![("webhook.secret", SECRET.into())],
        ..Setup::default()
    })
    .await;
    let (mut child, out) = receiver(h.dir.path(), port, 0);
    let mut c = h.session("alice", "alice-password").await;
    let r = c
        .send_mail(
            "a@alice.example",
            &["b@example.org"],
            "From: a@alice.example\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("MAIL FROM:<a@alice.example>", 450).await;
    // Suspended now: the login is withdrawn.
    c.expect("MAIL FROM:<a@alice.example>", 530).await;
    let deadline = Instant::now() + W;
    while received(&out).1.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, valid) = received(&out);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(valid.len(), 1, "{valid:#?}");
    assert_eq!(valid[0]["event"], "user.suspended");
    assert_eq!(valid[0]["user"], "alice");
    assert_eq!(valid[0]["by"], "brake");
    assert!(valid[0]["reason"].as_str().unwrap().contains("rate limit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_records_intake_and_each_attempt_and_a_bounce_fires() {
    if !common::have("python3") {
        return;
    }
    let port = free_port();
    let h = Harness::start(Setup {
        queue: true,
        extra: webhook_yaml(port, "message.bounced"),
        files: vec![("webhook.secret", SECRET.into())],
        ..Setup::default()
    })
    .await;
    let (mut child, out) = receiver(h.dir.path(), port, 0);
    let mut c = h.session("alice", "alice-password").await;
    let r = c
        .send_mail(
            "a@alice.example",
            &["ok@example.org", "reject550@example.org"],
            "From: a@alice.example\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let id = r.text.rsplit(' ').next().unwrap().to_string();
    let got = wait_entries(&h, "alice", 2).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    let (attempt, intake) = (&got[0], &got[1]);
    assert_eq!(
        (intake.id.as_str(), intake.status.as_str()),
        (id.as_str(), "accepted")
    );
    assert_eq!(intake.kind, postern::journal::Kind::Submission);
    assert!(
        intake
            .recipients
            .iter()
            .all(|r| r.status == "queued" && r.reply.is_none())
    );
    assert_eq!(attempt.id, id);
    assert_eq!(attempt.kind, postern::journal::Kind::Attempt);
    assert_eq!(attempt.attempt, Some(1));
    assert_eq!(attempt.status, "partial");
    assert_eq!(attempt.client_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(rcpt(attempt, "ok@example.org").status, "delivered");
    let failed = rcpt(attempt, "reject550@example.org");
    assert_eq!(failed.status, "failed");
    assert!(
        failed.reply.as_deref().unwrap().contains("550"),
        "{failed:?}"
    );

    let deadline = Instant::now() + W;
    while received(&out).1.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, valid) = received(&out);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(valid.len(), 1, "{valid:#?}");
    assert_eq!(valid[0]["event"], "message.bounced");
    assert_eq!(valid[0]["id"], id.as_str());
    assert_eq!(
        valid[0]["recipients"][0]["address"],
        "reject550@example.org"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_survives_a_restart() {
    let mut h = Harness::start(Setup {
        queue: true,
        ..Setup::default()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    let r = c
        .send_mail(
            "a@alice.example",
            &["ok@example.org"],
            "From: a@alice.example\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(r.code, 250);
    h.sink.wait_for(1, W).await;
    assert_eq!(wait_entries(&h, "alice", 2).await.len(), 2);
    assert!(h.terminate().success());
    h.launch().await;
    let mut c = h.session("alice", "alice-password").await;
    let r = c
        .send_mail(
            "a@alice.example",
            &["ok@example.org"],
            "From: a@alice.example\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(r.code, 250);
    let got = wait_entries(&h, "alice", 4).await;
    assert_eq!(got.len(), 4, "{got:#?}");
    let segments = std::fs::read_dir(h.dir.path().join("spool/delivery-log"))
        .unwrap()
        .count();
    assert_eq!(segments, 2, "one segment per run");
}
