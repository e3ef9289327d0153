//! Authentication: only after TLS, only with the right password, never logged.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::client::Client;
use common::{Harness, Setup};

fn b64(raw: &[u8]) -> String {
    STANDARD.encode(raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_before_tls_on_587() {
    let h = Harness::start(Setup::default()).await;
    let mut c = Client::connect(h.starttls).await;
    assert_eq!(c.greeting.code, 220);
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(ehlo.text.contains("STARTTLS"));
    assert!(
        !ehlo.text.contains("AUTH"),
        "AUTH must not be offered before TLS: {ehlo:?}"
    );
    for line in [
        format!("AUTH PLAIN {}", b64(b"\0alice\0alice-password")),
        "AUTH LOGIN".to_string(),
    ] {
        let r = c.cmd(&line).await;
        assert_eq!((r.code, r.esc.unwrap().to_string()), (530, "5.7.0".into()));
    }
    let r = c.cmd("MAIL FROM:<a@alice.example>").await;
    assert_eq!((r.code, r.esc.unwrap().to_string()), (530, "5.7.0".into()));
    c.expect("RCPT TO:<b@example.org>", 530).await;
    c.expect("DATA", 530).await;
    assert!(h.sink.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_before_auth_after_tls() {
    let h = Harness::start(Setup::default()).await;
    let mut c = Client::connect(h.starttls).await;
    c.expect("EHLO client.test", 250).await;
    let mut c = c.starttls(&h.ca_pem()).await;
    c.expect("EHLO client.test", 250).await;
    let r = c.cmd("MAIL FROM:<a@alice.example>").await;
    assert_eq!((r.code, r.esc.unwrap().to_string()), (530, "5.7.0".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_unknown_and_disabled_credentials() {
    let h = Harness::start(Setup::default()).await;
    let cases = [
        ("alice", "wrong-password-1"),
        ("nobody", "secret-guess-2"),
        ("ALICE", "alice-password"),
        ("mallory", "mallory-password"),
    ];
    for (user, pass) in cases {
        let mut c = Client::connect_tls(h.implicit, &h.ca_pem()).await;
        c.expect("EHLO client.test", 250).await;
        let r = c.auth_plain(user, pass).await;
        assert_eq!(
            (r.code, r.esc.unwrap().to_string()),
            (535, "5.7.8".into()),
            "{user}"
        );
        c.expect("MAIL FROM:<a@alice.example>", 530).await;
    }
    let mut c = Client::connect_tls(h.implicit, &h.ca_pem()).await;
    c.expect("EHLO client.test", 250).await;
    let r = c.auth_login("alice", "wrong-password-3").await;
    assert_eq!(r.code, 535);
    // The right password still works afterwards.
    assert_eq!(c.auth_plain("alice", "alice-password").await.code, 235);
    c.expect("QUIT", 221).await;
    assert!(
        h.wait_log("user is disabled", std::time::Duration::from_secs(5))
            .await
    );
    let logs = h.logs().join("\n");
    for secret in [
        "wrong-password-1",
        "secret-guess-2",
        "mallory-password",
        "alice-password",
        "wrong-password-3",
    ] {
        assert!(!logs.contains(secret), "a password reached the log");
    }
    // Nor does any AUTH payload.
    assert!(!logs.contains(&b64(b"\0alice\0wrong-password-1")));
    assert!(logs.contains("authentication failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_exchanges() {
    let h = Harness::start(Setup::default()).await;
    let mut c = Client::connect_tls(h.implicit, &h.ca_pem()).await;
    c.expect("EHLO client.test", 250).await;
    // PLAIN without initial response: empty 334 challenge.
    let r = c.cmd("AUTH PLAIN").await;
    assert_eq!((r.code, r.text.as_str()), (334, ""));
    // '*' cancels.
    let r = c.cmd("*").await;
    assert_eq!((r.code, r.esc.unwrap().to_string()), (501, "5.0.0".into()));
    // LOGIN cancelled at the password prompt.
    c.expect("AUTH LOGIN", 334).await;
    c.expect(&b64(b"alice"), 334).await;
    c.expect("*", 501).await;
    // Garbage base64.
    c.expect("AUTH PLAIN !!!notbase64", 501).await;
    // An authzid other than the user is refused.
    let r = c
        .cmd(&format!(
            "AUTH PLAIN {}",
            b64(b"bob\0alice\0alice-password")
        ))
        .await;
    assert_eq!(r.code, 535);
    // Unknown mechanism.
    c.expect("AUTH CRAM-MD5", 504).await;
    // PLAIN in two steps, with authzid equal to the user.
    c.expect("AUTH PLAIN", 334).await;
    c.expect(&b64(b"alice\0alice\0alice-password"), 235).await;
    // No second AUTH.
    c.expect("AUTH LOGIN", 503).await;
    // LOGIN with the username as initial response works too (new session).
    let mut c = Client::connect_tls(h.implicit, &h.ca_pem()).await;
    c.expect("EHLO client.test", 250).await;
    c.expect(&format!("AUTH LOGIN {}", b64(b"alice")), 334)
        .await;
    c.expect(&b64(b"alice-password"), 235).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_listener_needs_insecure_auth_and_allows_it_when_set() {
    let h = Harness::start(Setup {
        plain_listener: true,
        ..Setup::default()
    })
    .await;
    let mut c = Client::connect(h.plain.unwrap()).await;
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(!ehlo.text.contains("STARTTLS"));
    assert!(ehlo.text.contains("AUTH PLAIN LOGIN"));
    assert_eq!(c.auth_plain("alice", "alice-password").await.code, 235);
    let r = c
        .send_mail(
            "a@alice.example",
            &["b@example.org"],
            "Subject: plain\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(r.code, 250);
    let msgs = h.sink.wait_for(1, std::time::Duration::from_secs(10)).await;
    assert!(String::from_utf8_lossy(&msgs[0].content).contains("with ESMTPA id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_rules() {
    let h = Harness::start(Setup::default()).await;
    let mut c = h.session("alice", "alice-password").await;
    for allowed in ["x@alice.example", "X@ALICE.EXAMPLE", "boss@corp.example"] {
        c.expect(&format!("MAIL FROM:<{allowed}>"), 250).await;
        c.expect("RSET", 250).await;
    }
    for denied in [
        "other@corp.example",
        "x@sub.alice.example",
        "x@alice.example.evil",
        "\"x y\"@corp.example",
    ] {
        let r = c.cmd(&format!("MAIL FROM:<{denied}>")).await;
        assert_eq!(
            (r.code, r.esc.unwrap().to_string()),
            (550, "5.7.1".into()),
            "{denied:?}"
        );
    }
    assert!(
        h.wait_log(
            "sender not allowed for this user",
            std::time::Duration::from_secs(5)
        )
        .await
    );
    assert!(h.sink.messages().is_empty());
}

/// Every way a session without a successful AUTH could try to reach RCPT or DATA, on
/// every kind of listener: all refused with 530 (or 503 for a bad sequence), and
/// nothing reaches the smarthost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_unauthenticated_path_reaches_rcpt() {
    let h = Harness::start(Setup {
        plain_listener: true,
        ..Setup::default()
    })
    .await;
    let ca = h.ca_pem();
    let attempts: &[&[&str]] = &[
        &[
            "MAIL FROM:<a@alice.example>",
            "RCPT TO:<v@example.org>",
            "DATA",
        ],
        &["RCPT TO:<v@example.org>"],
        &["MAIL FROM:<>", "RCPT TO:<v@example.org>"],
        &[
            "MAIL FROM:<a@alice.example> AUTH=alice",
            "RCPT TO:<v@example.org>",
        ],
        &["RSET", "MAIL FROM:<a@alice.example>"],
        &["EHLO again.test", "MAIL FROM:<a@alice.example>"],
        &["BDAT 10 LAST"],
        &["AUTH PLAIN *", "MAIL FROM:<a@alice.example>"],
        &["AUTH LOGIN", "*", "MAIL FROM:<a@alice.example>"],
        &["AUTH PLAIN AGFsaWNlAHdyb25n", "MAIL FROM:<a@alice.example>"],
        &[
            "AUTH PLAIN bWFsbG9yeQBtYWxsb3J5AG1hbGxvcnktcGFzc3dvcmQ=",
            "MAIL FROM:<a@alice.example>",
        ],
        &["AUTH XOAUTH2 dGVzdA==", "MAIL FROM:<a@alice.example>"],
        &["VRFY alice", "EXPN staff", "MAIL FROM:<a@alice.example>"],
    ];
    for listener in [
        "587 before TLS",
        "587 after TLS",
        "465",
        "plain with insecure_auth",
    ] {
        for attempt in attempts {
            let mut c = match listener {
                "587 before TLS" => Client::connect(h.starttls).await,
                "587 after TLS" => {
                    let mut c = Client::connect(h.starttls).await;
                    c.expect("EHLO client.test", 250).await;
                    c.starttls(&ca).await
                }
                "465" => Client::connect_tls(h.implicit, &ca).await,
                _ => Client::connect(h.plain.unwrap()).await,
            };
            c.expect("EHLO client.test", 250).await;
            for line in *attempt {
                let r = c.cmd(line).await;
                assert!(
                    r.code != 354 && r.code != 235,
                    "{listener}: {line:?} got {r:?} in {attempt:?}"
                );
                let transaction = ["MAIL", "RCPT", "DATA", "BDAT"]
                    .iter()
                    .any(|v| line.starts_with(v));
                if transaction {
                    assert!(
                        [530, 503, 502].contains(&r.code),
                        "{listener}: {line:?} got {r:?}"
                    );
                }
            }
            c.cmd("QUIT").await;
        }
    }
    assert!(h.sink.messages().is_empty());
    assert_eq!(
        h.sink.connections(),
        0,
        "nothing even connected to the smarthost"
    );
}

/// The metrics page's value of an unlabelled counter.
async fn counter(port: u16, name: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).await.unwrap();
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_wrong_password_runs_argon2_once() {
    let port = common::free_port();
    let h = Harness::start(Setup {
        extra: format!(
            "metrics:\n  address: \"127.0.0.1:{port}\"\n\
             abuse:\n  auth_failures_per_session: 50\n"
        ),
        ..Setup::default()
    })
    .await;
    let verifications = "postern_auth_verifications_total";
    // A printer with a stale password, or someone burning the verifier threads:
    // the same reply every time, argon2 once. An unknown user alike.
    for (user, password) in [("alice", "stale-password"), ("nobody", "guess")] {
        for _ in 0..2 {
            let mut c = Client::connect_tls(h.implicit, &h.ca_pem()).await;
            c.expect("EHLO printer", 250).await;
            for _ in 0..5 {
                let r = c.auth_plain(user, password).await;
                assert_eq!((r.code, r.esc.unwrap().to_string()), (535, "5.7.8".into()));
            }
        }
    }
    assert_eq!(counter(port, verifications).await, 2);
    // Another client's login is verified (and not held up).
    let mut c =
        Client::connect_tls_from(h.implicit, "127.0.0.2".parse().unwrap(), &h.ca_pem()).await;
    c.expect("EHLO client.test", 250).await;
    assert_eq!(c.auth_plain("alice", "alice-password").await.code, 235);
    assert_eq!(counter(port, verifications).await, 3);
    // A new guess is always verified.
    let mut c = Client::connect_tls(h.implicit, &h.ca_pem()).await;
    c.expect("EHLO x", 250).await;
    assert_eq!(c.auth_plain("alice", "another-guess").await.code, 535);
    assert_eq!(counter(port, verifications).await, 4);
}
