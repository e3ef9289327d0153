//! The Prometheus endpoint counts what happens.

mod common;

use common::{Harness, Setup, free_port};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(port: u16, path: &str) -> String {
    try_get(port, path).await.unwrap()
}

/// The whole response; an error if the server reset the connection.
async fn try_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("the server neither answered nor closed")?;
    Ok(out)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_cap_are_refused_and_metrics_answer_again_after() {
    let port = free_port();
    let _h = Harness::start(Setup {
        extra: format!("metrics:\n  address: \"127.0.0.1:{port}\"\n"),
        ..Setup::default()
    })
    .await;
    // Fill every slot with connections that never send a request.
    let mut idle = Vec::new();
    for _ in 0..postern::metrics::MAX_CONNECTIONS {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    // One more, with a real request: closed at once, unanswered (EOF or reset).
    match try_get(port, "/metrics").await {
        Ok(answer) => assert_eq!(answer, "", "answered past the cap"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        ),
    }
    // Once they go, /metrics answers again.
    drop(idle);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = try_get(port, "/metrics").await.unwrap_or_default();
        if m.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still refused: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
