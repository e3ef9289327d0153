//! `client_certificate`/`client_key` on a smarthost entry: Postern presents the
//! certificate to a smarthost that demands one (a Microsoft 365 inbound connector
//! that trusts a certificate), in both delivery modes; without it the smarthost
//! refuses the connection, and the message is kept (queue) or answered 4xx
//! (passthrough), never lost or bounced.

mod common;

use common::{Harness, Setup, free_port, postern_bin};
use postern::tls::{TestCa, fingerprint, load_certs};
use std::time::Duration;

const W: Duration = Duration::from_secs(20);

/// A Postern whose one smarthost, on `port`, is entered with the client
/// certificate when `with_cert`; the files of a connector CA and its client
/// certificate are in the config folder.
async fn start(queue: bool, port: u16, with_cert: bool) -> Harness {
    let connector = TestCa::new("connector CA").unwrap();
    let client = connector.issue(&["printer.contoso.example"]).unwrap();
    let cert_lines = if with_cert {
        "    client_certificate: client-cert.pem\n    client_key: client-key.pem\n"
    } else {
        ""
    };
    Harness::start(Setup {
        queue,
        files: vec![
            ("connector-ca.pem", connector.cert_pem.clone()),
            ("client-cert.pem", client.cert_pem),
            ("client-key.pem", client.key_pem),
        ],
        smarthost_yaml: Some(format!(
            "smarthost:\n  - address: \"localhost:{port}\"\n    {{RELAY}}\n{cert_lines}"
        )),
        ..Setup::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smarthost_sees_the_client_certificate_in_both_modes() {
    for queue in [false, true] {
        let port = free_port();
        let h = start(queue, port, true).await;
        let dir = h.dir.path();
        let connector = h
            .sink_requiring_client_cert(port, &dir.join("connector-ca.pem"))
            .await;
        let mut c = h.session("alice", "alice-password").await;
        let r = c
            .send_mail(
                "a@alice.example",
                &["b@example.org"],
                "Subject: c\r\n\r\nx\r\n",
            )
            .await;
        assert_eq!(r.code, 250, "queue={queue}: {r:?}");
        let msgs = connector.wait_for(1, W).await;
        assert_eq!(msgs.len(), 1, "queue={queue}");
        let presented = load_certs(&dir.join("client-cert.pem")).unwrap();
        assert_eq!(
            msgs[0].client_cert_sha256.as_deref(),
            Some(fingerprint(&presented[0]).as_str()),
            "queue={queue}"
        );
        assert!(msgs[0].tls && msgs[0].authenticated_as.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_certificate_the_connector_refuses_and_nothing_is_lost() {
    // Passthrough: the client is told to try later.
    let port = free_port();
    let h = start(false, port, false).await;
    let connector = h
        .sink_requiring_client_cert(port, &h.dir.path().join("connector-ca.pem"))
        .await;
    let mut c = h.session("alice", "alice-password").await;
    let r = c.cmd("MAIL FROM:<a@alice.example>").await;
    assert_eq!(r.code / 100, 4, "{r:?}");
    drop(h);

    // Queue: the message stays queued with the reason, and is not bounced.
    let port = free_port();
    let h = start(true, port, false).await;
    let connector_q = h
        .sink_requiring_client_cert(port, &h.dir.path().join("connector-ca.pem"))
        .await;
    let mut c = h.session("alice", "alice-password").await;
    let r = c
        .send_mail(
            "a@alice.example",
            &["b@example.org"],
            "Subject: c\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    assert!(h.wait_log("delivery attempt", W).await);
    let attempt = h
        .logs()
        .into_iter()
        .find(|l| l.contains("delivery attempt"))
        .unwrap();
    assert!(
        attempt.contains("deferred=1") && attempt.contains("failed=0"),
        "{attempt}"
    );
    let out = std::process::Command::new(postern_bin())
        .args(["queue", "list", "-c"])
        .arg(&h.config_path)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("1 message(s) queued"), "{list}");
    assert!(connector.messages().is_empty() && connector_q.messages().is_empty());
}

#[test]
fn check_config_names_a_key_that_does_not_fit_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("connector CA").unwrap();
    let (mine, other) = (ca.issue(&["a"]).unwrap(), ca.issue(&["b"]).unwrap());
    common::write(&dir.path().join("c.pem"), &mine.cert_pem);
    common::write(&dir.path().join("k.pem"), &other.key_pem);
    common::write(&dir.path().join("users.yaml"), "users: []\n");
    let config = dir.path().join("postern.yaml");
    common::write(
        &config,
        "hostname: relay.test\nlisteners:\n  - address: \"127.0.0.1:2525\"\n    tls: none\nusers:\n  file: users.yaml\nsmarthost:\n  address: \"smtp.example:587\"\n  client_certificate: c.pem\n  client_key: k.pem\n",
    );
    let out = std::process::Command::new(postern_bin())
        .args(["check-config", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("smarthost.client_key: does not belong to client_certificate"),
        "{text}"
    );
}
