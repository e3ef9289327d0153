//! Devices identified by their network (printers, scanners): a client whose address
//! is in a user's `networks` is that user from its first command, on every listener,
//! without AUTH, and every policy applies as for a login.
//!
//! The clients bind loopback addresses (127.0.0.0/8) to be in or out of a network.

mod common;

use common::client::Client;
use common::{Harness, Setup, TestUser, crlf};
use postern::proto::reply::Reply;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const W: Duration = Duration::from_secs(10);

/// `printers` (127.2.3.0/24) lies inside `office` (127.2.0.0/16); both are password
/// less, `alice` logs in with a password, `retired` is a disabled device user.
fn device_users() -> Vec<TestUser> {
    vec![
        TestUser::new("alice", "alice-password", &["@alice.example"]),
        TestUser {
            extra: "    networks: [\"127.2.0.0/16\"]\n",
            ..TestUser::new("office", "", &["@office.example"])
        },
        TestUser {
            extra: "    networks: [\"127.2.3.0/24\", \"192.168.10.0/24\"]\n    rate_limits: { messages_per_hour: 2 }\n",
            ..TestUser::new("printers", "", &["printer@office.example"])
        },
        TestUser {
            disabled: true,
            extra: "    networks: [\"127.4.0.0/16\"]\n",
            ..TestUser::new("retired", "", &["@office.example"])
        },
    ]
}

async fn start() -> Harness {
    Harness::start(Setup {
        users: device_users(),
        plain_listener: true,
        ..Setup::default()
    })
    .await
}

/// A plain-text connection from `source` (a loopback address).
async fn connect_from(addr: SocketAddr, source: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    Client::over(socket.connect(addr).await.unwrap()).await
}

fn body(from: &str, subject: &str) -> String {
    crlf(&format!(
        "From: {from}\nTo: bob@example.org\nSubject: {subject}\n\nscanned page\n"
    ))
}

/// A printer's message from `printer@office.example` to bob, as devices send it.
async fn scan(c: &mut Client, subject: &str) -> Reply {
    c.send_mail(
        "printer@office.example",
        &["bob@example.org"],
        &body("printer@office.example", subject),
    )
    .await
}

fn status(r: &Reply) -> String {
    r.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_sends_from_its_network_without_auth_after_helo() {
    let h = start().await;
    // Plain text on the STARTTLS port, HELO with a name that is not fully qualified.
    let mut c = connect_from(h.starttls, "127.2.3.4").await;
    c.expect("HELO NPI3F2A1B", 250).await;
    let r = scan(&mut c, "scan 1").await;
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221).await;
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs[0].from, "printer@office.example");
    let content = String::from_utf8_lossy(&msgs[0].content).to_string();
    // Not an SMTP AUTH login (RFC 3848): plain SMTP after HELO.
    assert!(content.contains("with SMTP id"), "{content}");
    assert!(h.wait_log("identified by network", W).await);
    let logs = h.logs().join("\n");
    assert!(
        logs.lines()
            .any(|l| l.contains("identified by network") && l.contains("user=printers")),
        "{logs}"
    );
    // The session span carries the user on its later lines too.
    assert!(
        logs.lines()
            .any(|l| l.contains("message relayed") && l.contains("user=\"printers\"")),
        "{logs}"
    );

    // Every listener: implicit TLS from the same network, EHLO this time.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.2.3.5:0".parse().unwrap()).unwrap();
    let tcp = socket.connect(h.implicit).await.unwrap();
    let mut c = Client::over_tls(tcp, &h.ca_pem()).await;
    c.expect("EHLO scanner", 250).await;
    let r = scan(&mut c, "scan 2").await;
    assert_eq!(r.code, 250, "{r:?}");
    let msgs = h.sink.wait_for(2, W).await;
    let content = String::from_utf8_lossy(&msgs[1].content).to_string();
    assert!(content.contains("with ESMTPS id"), "{content}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_policies_sender_quota_and_outsiders() {
    let h = start().await;
    let plain = h.plain.unwrap();
    let mut c = connect_from(plain, "127.2.3.4").await;
    c.expect("HELO printer", 250).await;
    // Not one of the user's senders: envelope, then header From.
    let r = c.cmd("MAIL FROM:<boss@office.example>").await;
    assert!(status(&r).starts_with("550 5.7.1"), "{r:?}");
    let r = c
        .send_mail(
            "printer@office.example",
            &["bob@example.org"],
            &body("boss@office.example", "forged"),
        )
        .await;
    assert!(status(&r).starts_with("550 5.7.1"), "{r:?}");
    assert!(h.wait_log("sender not allowed for this user", W).await);
    // The quota: two messages an hour, counted for the user (its first try above was
    // refused at the header, and gave its reservation back).
    for n in 0..2 {
        c.expect("RSET", 250).await;
        let r = scan(&mut c, &format!("page {n}")).await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    // A second device in the same network shares the user's quota.
    let mut c2 = connect_from(plain, "127.2.3.77").await;
    c2.expect("EHLO printer2", 250).await;
    let r = c2.cmd("MAIL FROM:<printer@office.example>").await;
    assert!(status(&r).starts_with("450 4.7.1"), "{r:?}");
    assert!(h.wait_log("rate limit reached", W).await);
    assert_eq!(h.sink.wait_for(2, W).await.len(), 2);

    // Outside every network: a login is needed, on the plain listener too.
    for outsider in ["127.0.0.1", "127.3.0.1"] {
        let mut c = connect_from(plain, outsider).await;
        let r = c.expect("EHLO outside", 250).await;
        assert!(r.text.contains("AUTH PLAIN LOGIN"), "{r:?}");
        let r = c.cmd("MAIL FROM:<printer@office.example>").await;
        assert!(status(&r).starts_with("530 5.7.0"), "{outsider}: {r:?}");
    }
    // A disabled user's network identifies no one.
    let mut c = connect_from(plain, "127.4.0.9").await;
    c.expect("EHLO retired", 250).await;
    let r = c.cmd("MAIL FROM:<x@office.example>").await;
    assert!(status(&r).starts_with("530 5.7.0"), "{r:?}");
    assert!(
        h.wait_log("client in the networks of a disabled user", W)
            .await
    );
    assert_eq!(h.sink.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_specific_network_wins() {
    let h = start().await;
    let plain = h.plain.unwrap();
    // 127.2.3.4 is in office's /16 and printers' /24: printers.
    let mut c = connect_from(plain, "127.2.3.4").await;
    c.expect("EHLO a", 250).await;
    let r = c.cmd("MAIL FROM:<boss@office.example>").await;
    assert!(status(&r).starts_with("550 5.7.1"), "{r:?}");
    // 127.2.9.9 is only in the /16: office, who may send as @office.example.
    let mut c = connect_from(plain, "127.2.9.9").await;
    c.expect("EHLO b", 250).await;
    let r = c
        .send_mail(
            "boss@office.example",
            &["bob@example.org"],
            &body("boss@office.example", "from the office"),
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs[0].from, "boss@office.example");
    let logs = h.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("identified by network") && l.contains("user=office")),
        "{logs:#?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("sender not allowed") && l.contains("user=printers")),
        "{logs:#?}"
    );
}

/// A client in a device network that has a password of its own may still log in,
/// and is then that user; a failed login leaves it what its network says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_from_a_device_network_replaces_the_network_identity() {
    let h = start().await;
    let mut c = connect_from(h.starttls, "127.2.3.4").await;
    let r = c.expect("EHLO pc", 250).await;
    assert!(!r.text.contains("AUTH"), "no AUTH before TLS: {r:?}");
    let mut c = c.starttls(&h.ca_pem()).await;
    let r = c.expect("EHLO pc", 250).await;
    assert!(r.text.contains("AUTH PLAIN LOGIN"), "{r:?}");
    // Still the device after STARTTLS, without a login.
    let r = c.cmd("MAIL FROM:<printer@office.example>").await;
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("RSET", 250).await;
    let r = c.auth_plain("alice", "wrong").await;
    assert!(status(&r).starts_with("535 5.7.8"), "{r:?}");
    let r = c.cmd("MAIL FROM:<printer@office.example>").await;
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("RSET", 250).await;
    let r = c.auth_plain("alice", "alice-password").await;
    assert_eq!(r.code, 235, "{r:?}");
    let r = c.cmd("MAIL FROM:<printer@office.example>").await;
    assert!(status(&r).starts_with("550 5.7.1"), "alice now: {r:?}");
    let r = c.auth_plain("alice", "alice-password").await;
    assert!(status(&r).starts_with("503 5.5.1"), "{r:?}");
    let r = c
        .send_mail(
            "a@alice.example",
            &["bob@example.org"],
            &body("a@alice.example", "from the pc"),
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let msgs = h.sink.wait_for(1, W).await;
    let content = String::from_utf8_lossy(&msgs[0].content).to_string();
    assert!(content.contains("with ESMTPSA id"), "{content}");
    // The user with no password cannot be logged in to.
    let mut c = connect_from(h.starttls, "127.0.0.1").await;
    c.expect("EHLO x", 250).await;
    let mut c = c.starttls(&h.ca_pem()).await;
    c.expect("EHLO x", 250).await;
    let r = c.auth_plain("printers", "").await;
    assert_ne!(r.code, 235, "{r:?}");
    let r = c.auth_plain("printers", "anything").await;
    assert!(status(&r).starts_with("535 5.7.8"), "{r:?}");
}

/// Behind a load balancer, the PROXY header's client address is the one matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_header_address_identifies_the_device() {
    let h = Harness::start(Setup {
        users: device_users(),
        proxy_from: Some("127.0.0.0/8"),
        ..Setup::default()
    })
    .await;
    // From the balancer at 127.0.0.1 on behalf of 192.168.10.7: printers.
    let mut tcp = tokio::net::TcpStream::connect(h.starttls).await.unwrap();
    tcp.write_all(b"PROXY TCP4 192.168.10.7 127.0.0.1 40000 587\r\n")
        .await
        .unwrap();
    let mut c = Client::over(tcp).await;
    c.expect("HELO printer", 250).await;
    let r = scan(&mut c, "behind the balancer").await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(h.sink.wait_for(1, W).await.len(), 1);
    // The balancer itself sits in printers' network, but speaks for a client that
    // is not: the header's address counts, not the balancer's.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.2.3.4:0".parse().unwrap()).unwrap();
    let mut tcp = socket.connect(h.starttls).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 40001 587\r\n")
        .await
        .unwrap();
    let mut c = Client::over(tcp).await;
    c.expect("EHLO outside", 250).await;
    let r = c.cmd("MAIL FROM:<printer@office.example>").await;
    assert!(status(&r).starts_with("530 5.7.0"), "{r:?}");
    // An IPv6 PROXY header naming an IPv4-mapped address matches the IPv4 network.
    let mut tcp = tokio::net::TcpStream::connect(h.starttls).await.unwrap();
    tcp.write_all(b"PROXY TCP6 ::ffff:192.168.10.8 ::1 40002 587\r\n")
        .await
        .unwrap();
    let mut c = Client::over(tcp).await;
    c.expect("EHLO mapped", 250).await;
    let r = c.cmd("MAIL FROM:<printer@office.example>").await;
    assert_eq!(r.code, 250, "{r:?}");
}

/// A PROXY header that names no client (v2 `LOCAL`, a balancer's health check,
/// with or without addresses; v1 `UNKNOWN`) leaves the balancer's own address,
/// which must not identify anyone even inside a device network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_without_a_client_identifies_nobody() {
    let h = Harness::start(Setup {
        users: device_users(),
        proxy_from: Some("127.0.0.0/8"),
        ..Setup::default()
    })
    .await;
    let signature = b"\r\n\r\n\0\r\nQUIT\n";
    let mut local_bare = signature.to_vec();
    local_bare.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    // LOCAL carrying a device's address: ignored all the same.
    let mut local_with_addresses = signature.to_vec();
    local_with_addresses.extend_from_slice(&[0x20, 0x11, 0x00, 0x0c]);
    local_with_addresses.extend_from_slice(&[192, 168, 10, 7, 127, 0, 0, 1]);
    local_with_addresses.extend_from_slice(&[0x9c, 0x40, 0x02, 0x4b]);
    let unknown = b"PROXY UNKNOWN\r\n".to_vec();
    for header in [local_bare, local_with_addresses, unknown] {
        // The balancer sits in printers' network.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.2.3.4:0".parse().unwrap()).unwrap();
        let mut tcp = socket.connect(h.starttls).await.unwrap();
        tcp.write_all(&header).await.unwrap();
        let mut c = Client::over(tcp).await;
        c.expect("EHLO balancer", 250).await;
        let r = c.cmd("MAIL FROM:<printer@office.example>").await;
        assert!(status(&r).starts_with("530 5.7.0"), "{header:?}: {r:?}");
    }
    assert!(h.sink.messages().is_empty());
}

/// Queue mode takes a device's message like a login's, and the metrics count the
/// identification and the user's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_and_metrics_for_a_device() {
    let port = common::free_port();
    let h = Harness::start(Setup {
        users: device_users(),
        queue: true,
        extra: format!("metrics:\n  address: \"127.0.0.1:{port}\"\n  per_user: true\n"),
        ..Setup::default()
    })
    .await;
    let mut c = connect_from(h.starttls, "127.2.3.4").await;
    c.expect("HELO printer", 250).await;
    let r = scan(&mut c, "queued scan").await;
    assert_eq!(r.code, 250, "{r:?}");
    c.expect("QUIT", 221).await;
    let msgs = h.sink.wait_for(1, W).await;
    assert_eq!(msgs[0].from, "printer@office.example");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut m = String::new();
    tokio::time::timeout(W, tokio::io::AsyncReadExt::read_to_string(&mut s, &mut m))
        .await
        .unwrap()
        .unwrap();
    for line in [
        "postern_auth_total{result=\"network\"} 1",
        "postern_user_messages_total{user=\"printers\",result=\"accepted\"} 1",
    ] {
        assert!(m.contains(line), "{line} not in\n{m}");
    }
}

/// Suspension applies to a device user as to a login: its clients are no longer
/// identified (an open session loses the identity at its next MAIL), until lifted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_device_user_is_not_identified_until_lifted() {
    let h = start().await;
    let plain = h.plain.unwrap();
    let mut during = connect_from(plain, "127.2.3.4").await;
    during.expect("EHLO during", 250).await;
    let spool = h.dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    common::write(
        &spool.join("suspended.yaml"),
        "suspended:\n  printers:\n    reason: test\n    since: 1700000000\n",
    );
    let pid = h.pid().to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(h.wait_log("reload complete", W).await);
    let r = during.cmd("MAIL FROM:<printer@office.example>").await;
    assert!(status(&r).starts_with("530 5.7.0"), "{r:?}");
    let mut c = connect_from(plain, "127.2.3.5").await;
    c.expect("EHLO suspended", 250).await;
    let r = c.cmd("MAIL FROM:<printer@office.example>").await;
    assert!(status(&r).starts_with("530 5.7.0"), "{r:?}");
    assert!(
        h.wait_log("client in the networks of a suspended user", W)
            .await
    );
    let (code, text) = postern(&["user", "enable", "printers"], &h.config_path);
    assert_eq!(code, Some(0), "{text}");
    let mut c = connect_from(plain, "127.2.3.6").await;
    c.expect("EHLO lifted", 250).await;
    let r = c.cmd("MAIL FROM:<printer@office.example>").await;
    assert_eq!(r.code, 250, "{r:?}");
}

/// A reload that changes the networks applies to new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_a_network_to_new_connections() {
    let mut users = device_users();
    let h = Harness::start(Setup {
        users: users.clone(),
        plain_listener: true,
        ..Setup::default()
    })
    .await;
    let plain = h.plain.unwrap();
    let mut before = connect_from(plain, "127.5.0.1").await;
    before.expect("EHLO before", 250).await;
    // Give 127.5.0.0/16 to office.
    users[1].extra = "    networks: [\"127.2.0.0/16\", \"127.5.0.0/16\"]\n";
    common::write(
        &h.dir.path().join("users.yaml"),
        &common::users_yaml(&users),
    );
    let pid = h.pid().to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(h.wait_log("reload complete", W).await);
    let mut after = connect_from(plain, "127.5.0.2").await;
    after.expect("EHLO after", 250).await;
    let r = after.cmd("MAIL FROM:<boss@office.example>").await;
    assert_eq!(r.code, 250, "{r:?}");
    // The connection from before the reload stays what it was: no one.
    let r = before.cmd("MAIL FROM:<boss@office.example>").await;
    assert!(status(&r).starts_with("530 5.7.0"), "{r:?}");
}

/// A config (no server running) over `users_yaml`, in a folder of its own.
fn config_dir(users_yaml: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    common::write(&dir.path().join("users.yaml"), users_yaml);
    common::write(&dir.path().join("relay.secret"), "x\n");
    let config = "hostname: postern.test\n\
                  listeners:\n  - address: \"127.0.0.1:2525\"\n    tls: none\n\
                  users:\n  file: users.yaml\n\
                  smarthost:\n  address: \"127.0.0.1:25\"\n  tls: none\n\
                  delivery:\n  mode: passthrough\n";
    let path = dir.path().join("postern.yaml");
    common::write(&path, &format!("{config}  spool_directory: spool\n"));
    (dir, path)
}

/// Runs `postern ARGS -c CONFIG`: the exit code and everything it printed.
fn postern(args: &[&str], config: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(common::postern_bin())
        .args(args)
        .arg("-c")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn check_config(users_yaml: &str) -> (Option<i32>, String) {
    let (_dir, path) = config_dir(users_yaml);
    postern(&["check-config"], &path)
}

#[test]
fn user_add_with_networks_and_user_list() {
    let (dir, path) = config_dir("users: []\n");
    // No password is read for a device user (stdin is empty).
    let (code, text) = postern(
        &[
            "user",
            "add",
            "scanner",
            "--sender",
            "scanner@office.example",
            "--network",
            "192.168.10.0/24",
            "--network",
            "2001:db8:10::/64",
        ],
        &path,
    );
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = postern(&["user", "list"], &path);
    assert_eq!(code, Some(0), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("scanner "))
        .unwrap_or_default();
    assert!(
        line.contains("active")
            && line.contains("scanner@office.example")
            && line.contains("networks: 192.168.10.0/24, 2001:db8:10::/64"),
        "{text}"
    );
    // The same network for another user: refused, naming both, nothing written.
    let before = std::fs::read_to_string(dir.path().join("users.yaml")).unwrap();
    let (code, text) = postern(
        &[
            "user",
            "add",
            "printer",
            "--sender",
            "p@office.example",
            "--network",
            "192.168.10.0/24",
        ],
        &path,
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(
            "network 192.168.10.0/24 of user \"printer\" is also a network of user \"scanner\""
        ),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("users.yaml")).unwrap(),
        before
    );
    let (code, text) = postern(
        &["user", "add", "printer", "--network", "printer.lan"],
        &path,
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("--network \"printer.lan\" is not an address or network"),
        "{text}"
    );
}

#[test]
fn check_config_refuses_a_network_on_two_users_and_bad_networks() {
    let (code, text) = check_config(
        "users:\n  - name: scanner\n    networks: [\"192.168.10.0/24\"]\n    senders: [\"s@office.example\"]\n  - name: printer\n    networks: [\"192.168.10.0/24\"]\n    senders: [\"p@office.example\"]\n",
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("users[1].networks[0]: network 192.168.10.0/24 of user \"printer\" is also a network of user \"scanner\""),
        "{text}"
    );
    let (code, text) = check_config(
        "users:\n  - name: scanner\n    networks: [\"192.168.10.0/33\", \"192.168.10.5/24\"]\n  - name: nobody\n    senders: [\"n@office.example\"]\n",
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("3 problem(s)"), "{text}");
    assert!(
        text.contains("users[0].networks[0]: \"192.168.10.0/33\" has a bad prefix length"),
        "{text}"
    );
    assert!(
        text.contains("users[0].networks[1]: \"192.168.10.5/24\" has host bits set"),
        "{text}"
    );
    assert!(
        text.contains("users[1]: user \"nobody\" has neither a password nor networks"),
        "{text}"
    );
    // Valid: listed in the summary, with a warning for a public network.
    let (code, text) = check_config(
        "users:\n  - name: scanner\n    networks: [\"192.168.10.0/24\", \"203.0.113.0/24\"]\n    senders: [\"s@office.example\"]\n",
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("network    192.168.10.0/24 -> scanner"),
        "{text}"
    );
    assert!(
        text.contains("warning    network 203.0.113.0/24 of user scanner holds public addresses"),
        "{text}"
    );
    assert!(
        !text.contains("network 192.168.10.0/24 of user scanner holds"),
        "{text}"
    );
}
