//! Behind a load balancer: listeners with `proxy_protocol: true` read a PROXY v1 or v2
//! header from a trusted proxy first, and the client address it names is what the
//! Received header, the logs and the connection limits see.

mod common;

use common::client::Client;
use common::{Harness, Setup, crlf};
use ppp::v2;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const W: Duration = Duration::from_secs(10);

fn v2_header(source: &str, dest: &str) -> Vec<u8> {
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (
            source.parse::<SocketAddr>().unwrap(),
            dest.parse::<SocketAddr>().unwrap(),
        ),
    )
    .build()
    .unwrap()
}

async fn with_header(addr: SocketAddr, header: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(header).await.unwrap();
    tcp
}

async fn submit(c: &mut Client, body_tag: &str) {
    c.expect("EHLO client.test", 250).await;
    let r = c.auth_plain("alice", "alice-password").await;
    assert_eq!(r.code, 235, "{r:?}");
    let body = crlf(&format!(
        "From: a@alice.example\nSubject: {body_tag}\n\nvia the load balancer\n"
    ));
    let r = c
        .send_mail("a@alice.example", &["bob@example.org"], &body)
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221).await;
}

/// Asserts the connection is closed without a single byte from the server.
async fn closed_silently(mut tcp: TcpStream) {
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(W, tcp.read(&mut buf))
        .await
        .expect("the server neither answered nor closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "got {:?}", String::from_utf8_lossy(&buf[..n]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_on_starttls_and_v2_on_implicit_tls_from_a_trusted_proxy() {
    let h = Harness::start(Setup {
        proxy_from: Some("127.0.0.0/8"),
        ..Setup::default()
    })
    .await;

    // v1, then plain SMTP and STARTTLS on the same connection.
    let tcp = with_header(
        h.starttls,
        b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 587\r\n",
    )
    .await;
    let c = Client::over(tcp).await;
    assert_eq!(c.greeting.code, 220);
    let mut c = c;
    c.expect("EHLO client.test", 250).await;
    let mut c = c.starttls(&h.ca_pem()).await;
    submit(&mut c, "v1").await;

    // v2 (IPv6 client), then the TLS ClientHello.
    let tcp = with_header(
        h.implicit,
        &v2_header("[2001:db8::9]:5555", "[2001:db8::1]:465"),
    )
    .await;
    let mut c = Client::over_tls(tcp, &h.ca_pem()).await;
    assert_eq!(c.greeting.code, 220);
    submit(&mut c, "v2").await;

    let msgs = h.sink.wait_for(2, W).await;
    let received = |tag: &str| {
        let m = msgs
            .iter()
            .find(|m| String::from_utf8_lossy(&m.content).contains(&format!("Subject: {tag}")))
            .expect("message arrived");
        let text = String::from_utf8_lossy(&m.content).to_string();
        text.lines().next().unwrap().to_string()
    };
    assert_eq!(received("v1"), "Received: from client.test ([203.0.113.7])");
    assert_eq!(
        received("v2"),
        "Received: from client.test ([IPv6:2001:db8::9])"
    );
    assert!(h.wait_log("peer=203.0.113.7:40000", W).await);
    assert!(h.wait_log("peer=[2001:db8::9]:5555", W).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_count_the_client_behind_the_proxy() {
    let h = Harness::start(Setup {
        proxy_from: Some("127.0.0.1"),
        extra: "limits:\n  max_connections_per_ip: 1\n".into(),
        ..Setup::default()
    })
    .await;
    let header = |ip: &str| format!("PROXY TCP4 {ip} 127.0.0.1 40000 587\r\n");
    // Every connection comes from 127.0.0.1, but they are different clients.
    let first = Client::over(with_header(h.starttls, header("192.0.2.1").as_bytes()).await).await;
    assert_eq!(first.greeting.code, 220);
    let other = Client::over(with_header(h.starttls, header("192.0.2.2").as_bytes()).await).await;
    assert_eq!(other.greeting.code, 220);
    // The same client twice is over its cap.
    let again = Client::over(with_header(h.starttls, header("192.0.2.1").as_bytes()).await).await;
    assert_eq!(again.greeting.code, 421, "{:?}", again.greeting);
    assert!(h.wait_log("max_connections_per_ip", W).await);
    drop((first, other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_peers_and_missing_headers_are_closed_without_a_greeting() {
    let h = Harness::start(Setup {
        proxy_from: Some("127.0.0.2/32"),
        ..Setup::default()
    })
    .await;
    // A header from 127.0.0.1, which is not a trusted proxy: it could name any address.
    closed_silently(
        with_header(
            h.starttls,
            b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 587\r\n",
        )
        .await,
    )
    .await;
    assert!(h.wait_log("not in trusted_proxies", W).await);

    // From the trusted proxy but without a header: SMTP straight away.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut tcp = socket.connect(h.starttls).await.unwrap();
    tcp.write_all(b"EHLO spoofer.test\r\n").await.unwrap();
    closed_silently(tcp).await;
    assert!(h.wait_log("no valid PROXY header", W).await);

    // A header that does not parse.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut tcp = socket.connect(h.implicit).await.unwrap();
    tcp.write_all(b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n")
        .await
        .unwrap();
    closed_silently(tcp).await;

    // The trusted proxy with a good header is served.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut tcp = socket.connect(h.starttls).await.unwrap();
    tcp.write_all(b"PROXY TCP4 198.51.100.4 127.0.0.1 40000 587\r\n")
        .await
        .unwrap();
    let c = Client::over(tcp).await;
    assert_eq!(c.greeting.code, 220);
    assert!(h.sink.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_local_header_is_the_proxy_itself_and_its_addresses_are_ignored() {
    let h = Harness::start(Setup {
        proxy_from: Some("127.0.0.0/8"),
        ..Setup::default()
    })
    .await;
    // LOCAL (a health check, say) with addresses in it: they name no client.
    let local = v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Local,
        v2::Protocol::Stream,
        (
            "203.0.113.9:5555".parse::<SocketAddr>().unwrap(),
            "198.51.100.1:465".parse::<SocketAddr>().unwrap(),
        ),
    )
    .build()
    .unwrap();
    let mut c = Client::over_tls(with_header(h.implicit, &local).await, &h.ca_pem()).await;
    assert_eq!(c.greeting.code, 220);
    submit(&mut c, "local").await;
    let msgs = h.sink.wait_for(1, W).await;
    let text = String::from_utf8_lossy(&msgs[0].content).to_string();
    assert_eq!(
        text.lines().next().unwrap(),
        "Received: from client.test ([127.0.0.1])"
    );
    assert!(h.wait_log("peer=127.0.0.1:", W).await);
    assert!(!h.logs().iter().any(|l| l.contains("203.0.113.9")));
}
