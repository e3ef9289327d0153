//! How long and how much one session may do: junk commands (NOOP, VRFY, HELP, RSET,
//! ETRN), the time to authenticate, the whole session's lifetime, and messages per
//! session. Each bound ends the session with 421 4.7.0 and a log line. Every loop
//! here is bounded in count.

mod common;

use common::client::Client;
use common::{Harness, Setup, crlf};
use std::time::Duration;

const W: Duration = Duration::from_secs(10);

fn esc(r: &postern::proto::reply::Reply) -> String {
    r.esc.map(|e| e.to_string()).unwrap_or_default()
}

fn with(extra: &str) -> Setup {
    Setup {
        extra: extra.into(),
        ..Setup::default()
    }
}

/// Sends `line` until the server answers something other than `ok`, at most
/// `max` times; returns how many got `ok` and the reply that ended it.
async fn until_refused(c: &mut Client, line: &str, ok: u16, max: usize) -> (usize, (u16, String)) {
    for n in 0..max {
        let r = c.cmd(line).await;
        if r.code != ok {
            return (n, (r.code, esc(&r)));
        }
    }
    panic!("{line} was still answered {ok} after {max} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_loop_before_auth_is_cut_at_the_junk_limit() {
    let h = Harness::start(with("limits:\n  max_junk_commands: 5\n")).await;
    let mut c = Client::connect(h.starttls).await;
    c.expect("EHLO junk.example", 250).await;
    let (answered, end) = until_refused(&mut c, "NOOP", 250, 50).await;
    assert_eq!((answered, end), (5, (421, "4.7.0".into())));
    assert!(c.closed().await);
    assert!(h.wait_log("too many NOOP/VRFY/HELP/RSET/ETRN", W).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_junk_verb_counts_and_a_sent_message_resets_the_count() {
    let h = Harness::start(with("limits:\n  max_junk_commands: 5\n")).await;
    let mut c = h.session("alice", "alice-password").await;
    // VRFY, HELP, RSET, NOOP and ETRN each count (ETRN is refused as well).
    for (line, code) in [
        ("VRFY alice", 252),
        ("HELP", 214),
        ("RSET", 250),
        ("NOOP", 250),
        ("ETRN example.org", 502),
    ] {
        c.expect(line, code).await;
    }
    // An accepted message starts the count afresh.
    let body = crlf("From: a@alice.example\nSubject: hi\n\nhello\n");
    let r = c
        .send_mail("a@alice.example", &["b@example.org"], &body)
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let (answered, end) = until_refused(&mut c, "RSET", 250, 50).await;
    assert_eq!((answered, end), (5, (421, "4.7.0".into())));
    assert!(c.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_never_authenticates_is_closed_after_timeouts_unauthenticated() {
    let h = Harness::start(with(
        "timeouts:\n  command: 1m\n  unauthenticated: 2s\nlimits:\n  max_junk_commands: 1000\n",
    ))
    .await;
    let mut c = Client::connect(h.starttls).await;
    c.expect("EHLO slow.example", 250).await;
    // NOOP every 200 ms keeps the command timeout at bay, not the lifetime.
    let started = std::time::Instant::now();
    let mut end = None;
    for _ in 0..50 {
        let r = c.cmd("NOOP").await;
        if r.code != 250 {
            end = Some((r.code, esc(&r)));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = started.elapsed();
    assert_eq!(end, Some((421, "4.7.0".into())), "after {held:?}");
    assert!(held < Duration::from_secs(5), "held {held:?}");
    assert!(c.closed().await);
    assert!(
        h.wait_log("no successful AUTH within timeouts.unauthenticated", W)
            .await
    );
    // An idle client is cut too: the read waits no longer than the time left.
    let mut c = Client::connect(h.starttls).await;
    let started = std::time::Instant::now();
    let r = c.try_read_reply().await.expect("a 421 before closing");
    assert_eq!((r.code, esc(&r)), (421, "4.7.0".into()));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_session_lives_past_the_auth_deadline_but_not_past_timeouts_session() {
    let h = Harness::start(with(
        "timeouts:\n  command: 1m\n  unauthenticated: 2s\n  session: 6s\n\
         limits:\n  max_junk_commands: 1000\n",
    ))
    .await;
    let mut c = h.session("alice", "alice-password").await;
    let started = std::time::Instant::now();
    let mut end = None;
    for _ in 0..50 {
        let r = c.cmd("NOOP").await;
        if r.code != 250 {
            end = Some((r.code, esc(&r)));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = started.elapsed();
    assert_eq!(end, Some((421, "4.7.0".into())), "after {held:?}");
    // Authenticated in time, so the 2 s deadline no longer applied.
    assert!(held > Duration::from_secs(3), "cut after {held:?}");
    assert!(held < Duration::from_secs(10), "held {held:?}");
    assert!(c.closed().await);
    assert!(h.wait_log("session reached timeouts.session", W).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_after_the_messages_per_session_cap_gets_421_and_a_new_session_goes_on() {
    let h = Harness::start(with("limits:\n  max_messages_per_session: 2\n")).await;
    let body = crlf("From: a@alice.example\nSubject: hi\n\nhello\n");
    let mut c = h.session("alice", "alice-password").await;
    for _ in 0..2 {
        let r = c
            .send_mail("a@alice.example", &["b@example.org"], &body)
            .await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    let r = c.cmd("MAIL FROM:<a@alice.example>").await;
    assert_eq!((r.code, esc(&r)), (421, "4.7.0".into()), "{r:?}");
    assert!(c.closed().await);
    assert!(
        h.wait_log("session reached limits.max_messages_per_session", W)
            .await
    );
    let mut c = h.session("alice", "alice-password").await;
    let r = c
        .send_mail("a@alice.example", &["b@example.org"], &body)
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(h.sink.wait_for(3, W).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_auth_exchange_is_cut_at_the_time_to_authenticate() {
    let h = Harness::start(Setup {
        plain_listener: true,
        extra: "timeouts:\n  command: 1m\n  unauthenticated: 2s\n".into(),
        ..Setup::default()
    })
    .await;
    let mut c = Client::connect(h.plain.unwrap()).await;
    c.expect("EHLO stall.example", 250).await;
    let started = std::time::Instant::now();
    // The username prompt, then nothing: the 1 minute command timeout is not what
    // bounds the wait.
    c.expect("AUTH LOGIN", 334).await;
    let r = c.try_read_reply().await.expect("a 421 before closing");
    assert_eq!((r.code, esc(&r)), (421, "4.7.0".into()), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(c.closed().await);
    assert!(
        h.wait_log("no successful AUTH within timeouts.unauthenticated", W)
            .await
    );
}

/// Python's smtplib in a NOOP loop (at most 1000), as a keep-alive script would do
/// it: it sees the 421 and the connection drop.
const NOOP_LOOP: &str = r#"
import os, smtplib
s = smtplib.SMTP("127.0.0.1", int(os.environ["PORT"]), timeout=30)
s.ehlo("loop.example")
for i in range(1000):
    try:
        code, text = s.noop()
    except smtplib.SMTPServerDisconnected:
        print("disconnected", i)
        break
    if code != 250:
        print("refused", i, code, text.decode())
        break
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib_noop_loop_is_cut() {
    let h = Harness::start(with("limits:\n  max_junk_commands: 20\n")).await;
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(NOOP_LOOP)
        .env("PORT", h.starttls.port().to_string())
        .output()
        .await
        .expect("python3 is needed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("refused 20 421 4.7.0"), "{stdout}");
}
