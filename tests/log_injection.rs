//! Log and terminal injection: control characters, ESC sequences and bidi overrides
//! sent by a client (HELO name, addresses, header values) never reach the log raw,
//! and those stored in the spool never reach the operator's terminal raw through
//! `postern queue list`.

mod common;

use common::client::Client;
use common::{Harness, Setup, crlf, postern_bin};
use postern::spool::envelope::{Envelope, RcptState, Recipient};
use postern::spool::store::{Spool, unix_now};
use std::process::Command;
use std::time::Duration;

const W: Duration = Duration::from_secs(10);

/// Characters that must never come out raw: ESC, BEL, CR, NUL, DEL, a C1 control
/// and the right-to-left override.
const HIDDEN: [char; 7] = [
    '\u{1b}', '\u{7}', '\r', '\0', '\u{7f}', '\u{9b}', '\u{202e}',
];

fn assert_clean(what: &str, text: &str) {
    for c in HIDDEN {
        assert!(
            !text.contains(c),
            "{what} holds a raw {c:?}:\n{}",
            text.escape_debug()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_helo_addresses_and_headers_are_escaped_in_the_log() {
    let h = Harness::start(Setup::default()).await;
    let mut c = Client::connect(h.starttls).await;
    // Sent raw: EHLO with terminal sequences and a bidi override.
    c.send_raw("EHLO evil\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}moc.example\r\n".as_bytes())
        .await;
    let _ = c.read_reply().await;
    let mut c = h.session("alice", "alice-password").await;
    c.send_raw("EHLO x\u{1b}[31m\u{9b}\u{7f}\r\n".as_bytes())
        .await;
    let _ = c.read_reply().await;
    // Addresses with control characters inside quotes (accepted or refused: either
    // way, logged escaped), and a header From that is refused.
    for (mail, rcpt) in [
        (
            "MAIL FROM:<\"a\u{1b}[31mb\"@alice.example>",
            "RCPT TO:<\"r\u{1b}[5m\u{0}x\"@example.org>",
        ),
        (
            "MAIL FROM:<a@alice.example>",
            "RCPT TO:<\"reject550\u{1b}[8m\"@example.org>",
        ),
        (
            "MAIL FROM:<\"ceo\u{202e}\"@bank.example>",
            "RCPT TO:<b@example.org>",
        ),
    ] {
        let r = c.cmd(mail).await;
        if r.code == 250 {
            let r = c.cmd(rcpt).await;
            if r.code == 250 && c.cmd("DATA").await.code == 354 {
                let body = crlf(
                    "From: \"\u{1b}[31mBoss\" <ceo@bank.example>\nSubject: x\u{1b}[2J\n\nhi\n",
                );
                c.send_raw(body.as_bytes()).await;
                c.send_raw(b".\r\n").await;
                let _ = c.read_reply().await;
            }
        }
        c.expect("RSET", 250).await;
    }
    // A header From the rule refuses: its value is in the warning.
    let body = crlf("From: \"\u{1b}[31mBoss\u{7}\" <ceo@bank.example>\nSubject: x\n\nhi\n");
    let r = c
        .send_mail("a@alice.example", &["b@example.org"], &body)
        .await;
    assert_eq!(r.code / 100, 5, "{r:?}");
    c.expect("QUIT", 221).await;
    assert!(h.wait_log("client said hello", W).await);
    assert!(h.wait_log("header sender not allowed", W).await);
    let logs = h.logs().join("\n");
    assert_clean("the log", &logs);
    // The escaped form is there instead, so the values were logged, not dropped.
    assert!(logs.contains("\\u{1b}]0;pwned\\u{7}"), "{logs}");
    assert!(logs.contains("\\u{202e}moc.example"), "{logs}");
}

#[test]
fn queue_list_escapes_senders_recipients_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let config = format!(
        "hostname: relay.test\n\
         listeners:\n  - address: \"127.0.0.1:0\"\n    tls: none\n\
         users:\n  file: users.yaml\n\
         smarthost:\n  address: \"127.0.0.1:25\"\n  tls: none\n\
         delivery:\n  spool_directory: {}\n",
        spool_dir.display()
    );
    common::write(&dir.path().join("postern.yaml"), &config);
    common::write(&dir.path().join("users.yaml"), "users: []\n");
    // What a client and a smarthost could have put into an envelope.
    let spool = Spool::open(&spool_dir).unwrap();
    let env = Envelope {
        client_ip: None,
        id: postern::spool::store::new_id(),
        from: "\"ceo\u{1b}]0;pwned\u{7}\"@alice.example".into(),
        rcpts: vec![Recipient {
            address: "\"x\u{1b}[2J\u{202e}\"@example.org".into(),
            state: RcptState::Pending,
            last_reply: Some("450 4.2.1 busy\u{1b}[31m".into()),
        }],
        user: "alice".into(),
        created: unix_now(),
        attempts: 1,
        next_attempt: unix_now() + 3600,
        last_error: Some("451 4.3.0 try \r\n\u{1b}[1A\u{1b}[2Klater\u{9b}".into()),
        smtputf8: false,
        eight_bit: false,
        size: 4,
        warned: false,
        route_by: None,
        unsigned: false,
    };
    spool.store(&env, b"hi\r\n").unwrap();
    let out = Command::new(postern_bin())
        .args(["queue", "list", "-c"])
        .arg(dir.path().join("postern.yaml"))
        .env_remove("POSTERN_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 message(s) queued"), "{stdout}");
    assert_clean("queue list", &stdout);
    assert!(stdout.contains("\\u{1b}]0;pwned\\u{7}"), "{stdout}");
    assert!(stdout.contains("\\u{1b}[2J\\u{202e}"), "{stdout}");
    assert!(stdout.contains("\\u{d}\\u{a}\\u{1b}[1A"), "{stdout}");
}
