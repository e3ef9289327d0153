//! The end-to-end case: an office printer that speaks plain SMTP from its
//! LAN (identified by its network, HELO with a bare name, no AUTH) and a WordPress
//! site with its own Postern password both send through one Microsoft 365 mailbox,
//! by XOAUTH2 and by Graph, in both delivery modes. The tenant secret stays in
//! Postern: the clients never see it, and it is in no log.

mod common;

use common::client::Client;
use common::oauth_standins::{Grant, MAILBOX, Provider};
use common::{Harness, Setup, TestUser, crlf};
use postern::tls::TestCa;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const W: Duration = Duration::from_secs(20);

fn users() -> Vec<TestUser> {
    vec![
        TestUser {
            extra: "    networks: [\"127.2.3.0/24\"]\n",
            ..TestUser::new("printer-2nd-floor", "", &["scanner@office.example"])
        },
        TestUser::new("wordpress", "wp-password", &["wordpress@office.example"]),
    ]
}

/// A plain-text connection from 127.2.3.4, inside the printer's network.
async fn printer(h: &Harness) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new("127.2.3.4".parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    Client::over(socket.connect(h.plain.unwrap()).await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lan_printer_and_a_website_send_through_one_m365_mailbox() {
    for graph in [false, true] {
        for queue in [false, true] {
            let ca = TestCa::new("Postern test CA").unwrap();
            let p = Provider::start(&ca, Grant::ClientCredentials, 3600).await;
            let (yaml, files) = if graph {
                p.graph_smarthost()
            } else {
                p.smtp_smarthost()
            };
            let h = Harness::start(Setup {
                ca: Some(ca),
                users: users(),
                plain_listener: true,
                sink_xoauth2: Some(p.token_check()),
                smarthost_yaml: Some(yaml),
                files,
                queue,
                ..Setup::default()
            })
            .await;
            let case = format!("graph={graph} queue={queue}");
            let mut c = printer(&h).await;
            c.expect("HELO printer", 250).await;
            let r = c
                .send_mail(
                    "scanner@office.example",
                    &["bob@example.org"],
                    &crlf("From: scanner@office.example\nTo: bob@example.org\nSubject: scan\n\npage\n"),
                )
                .await;
            assert_eq!(r.code, 250, "{case}: printer: {r:?}");
            let mut c = h.session("wordpress", "wp-password").await;
            let r = c
                .send_mail(
                    "wordpress@office.example",
                    &["customer@example.net"],
                    &crlf("From: wordpress@office.example\nTo: customer@example.net\nSubject: order\n\nthanks\n"),
                )
                .await;
            assert_eq!(r.code, 250, "{case}: website: {r:?}");
            let delivered: Vec<String> = if graph {
                assert!(p.wait(W, |p| p.sent().len() == 2).await, "{case}");
                p.sent()
                    .into_iter()
                    .map(|(mailbox, mime)| {
                        assert_eq!(mailbox, MAILBOX);
                        String::from_utf8_lossy(&mime).into_owned()
                    })
                    .collect()
            } else {
                let msgs = h.sink.wait_for(2, W).await;
                assert_eq!(msgs.len(), 2, "{case}");
                msgs.into_iter()
                    .map(|m| {
                        assert_eq!(m.authenticated_as.as_deref(), Some(MAILBOX));
                        String::from_utf8_lossy(&m.content).into_owned()
                    })
                    .collect()
            };
            assert!(
                delivered.iter().any(|m| m.contains("Subject: scan")),
                "{case}"
            );
            assert!(
                delivered.iter().any(|m| m.contains("Subject: order")),
                "{case}"
            );
            assert_eq!(p.token_requests(), 1, "{case}");
            common::assert_no_secrets(&h.logs(), &p.issued());
        }
    }
}
