//! The Prometheus endpoint counts what happens.

mod common;

use common::{Harness, Setup, free_port};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_delivery_and_a_failed_login() {
    let port = free_port();
    let h = Harness::start(Setup {
        extra: format!("metrics:\n  address: \"127.0.0.1:{port}\"\n  per_user: true\n"),
        ..Setup::default()
    })
    .await;
    let mut c = h.session("alice", "alice-password").await;
    assert_eq!(
        c.send_mail("a@alice.example", &["b@example.org"], "x\r\n")
            .await
            .code,
        250
    );
    let mut bad = common::client::Client::connect_tls(h.implicit, &h.ca_pem()).await;
    bad.expect("EHLO x", 250).await;
    assert_eq!(bad.auth_plain("alice", "nope").await.code, 535);

    let health = get(port, "/healthz").await;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    assert!(get(port, "/nothing").await.starts_with("HTTP/1.1 404"));
    let m = get(port, "/metrics").await;
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    for line in [
        "postern_messages_total{result=\"accepted\",reason=\"relayed\"} 1",
        "postern_auth_total{result=\"failure\"} 1",
        "postern_auth_total{result=\"success\"} 1",
        "postern_connections_total{tls=\"starttls\"} 1",
        "postern_connections_total{tls=\"implicit\"} 1",
        "postern_recipients_total{result=\"accepted\"} 1",
        "postern_user_messages_total{user=\"alice\",result=\"accepted\"} 1",
        "postern_upstream_replies_total{code=\"2xx\"} 1",
        "postern_upstream_duration_seconds_count 1",
    ] {
        assert!(m.contains(line), "missing {line:?} in\n{m}");
    }
}
