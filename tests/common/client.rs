//! A raw SMTP client for tests: sends exact bytes, reads whole replies.

use postern::proto::reply::{Reply, ReplyBuilder};
use postern::proto::sasl;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

const T: Duration = Duration::from_secs(30);

pub enum Stream {
    Plain(BufReader<TcpStream>),
    Tls(BufReader<Box<dyn Io>>),
}

pub struct Client {
    pub stream: Stream,
    pub greeting: Reply,
}

pub fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

impl Client {
    /// Connects in plain text and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> Client {
        Self::over(TcpStream::connect(addr).await.unwrap()).await
    }

    /// Reads the greeting on a connection already open (after a PROXY header, say).
    pub async fn over(tcp: TcpStream) -> Client {
        let mut c = Client {
            stream: Stream::Plain(BufReader::new(tcp)),
            greeting: Reply::plain(0, ""),
        };
        c.greeting = c.read_reply().await;
        c
    }

    /// Connects with implicit TLS and reads the greeting.
    pub async fn connect_tls(addr: SocketAddr, ca_pem: &str) -> Client {
        Self::connect_tls_from(addr, "127.0.0.1".parse().unwrap(), ca_pem).await
    }

    /// Connects with implicit TLS from a chosen loopback source address (127.0.0.x),
    /// so a test can play several clients.
    pub async fn connect_tls_from(
        addr: SocketAddr,
        source: std::net::IpAddr,
        ca_pem: &str,
    ) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        Self::over_tls(socket.connect(addr).await.unwrap(), ca_pem).await
    }

    /// Does the TLS handshake on a connection already open and reads the greeting.
    pub async fn over_tls(tcp: TcpStream, ca_pem: &str) -> Client {
        let tls = tls_connector(ca_pem)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut c = Client {
            stream: Stream::Tls(BufReader::new(Box::new(tls))),
            greeting: Reply::plain(0, ""),
        };
        c.greeting = c.read_reply().await;
        c
    }

    /// Sends STARTTLS, expects 220, and does the handshake.
    pub async fn starttls(mut self, ca_pem: &str) -> Client {
        self.expect("STARTTLS", 220).await;
        let Stream::Plain(r) = self.stream else {
            panic!("already TLS")
        };
        assert!(
            r.buffer().is_empty(),
            "server sent data after 220 to STARTTLS"
        );
        let tls = tls_connector(ca_pem)
            .connect(ServerName::try_from("localhost").unwrap(), r.into_inner())
            .await
            .unwrap();
        Client {
            stream: Stream::Tls(BufReader::new(Box::new(tls))),
            greeting: self.greeting,
        }
    }

    /// The TLS stream underneath, for a test that drives bytes itself.
    pub fn into_tls_stream(self) -> Option<Box<dyn Io>> {
        match self.stream {
            Stream::Tls(r) => Some(r.into_inner()),
            Stream::Plain(_) => None,
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let w = async {
            match &mut self.stream {
                Stream::Plain(s) => {
                    s.get_mut().write_all(bytes).await?;
                    s.get_mut().flush().await
                }
                Stream::Tls(s) => {
                    s.get_mut().write_all(bytes).await?;
                    s.get_mut().flush().await
                }
            }
        };
        tokio::time::timeout(T, w)
            .await
            .expect("write timed out")
            .expect("write failed");
    }

    /// Reads one line; `None` when the server closed the connection.
    pub async fn read_line(&mut self) -> Option<Vec<u8>> {
        let mut line = Vec::new();
        let n = tokio::time::timeout(T, async {
            match &mut self.stream {
                Stream::Plain(s) => s.read_until(b'\n', &mut line).await,
                Stream::Tls(s) => s.read_until(b'\n', &mut line).await,
            }
        })
        .await
        .expect("read timed out");
        match n {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line),
        }
    }

    /// Reads one whole reply; panics if the connection closes first.
    pub async fn read_reply(&mut self) -> Reply {
        self.try_read_reply()
            .await
            .expect("connection closed while waiting for a reply")
    }

    /// Reads one whole reply, or `None` if the connection closed.
    pub async fn try_read_reply(&mut self) -> Option<Reply> {
        let mut b = ReplyBuilder::default();
        loop {
            let line = self.read_line().await?;
            if let Some(r) = b.push(&line).expect("malformed reply") {
                return Some(r);
            }
        }
    }

    /// Whether the server has closed the connection (reads to EOF).
    pub async fn closed(&mut self) -> bool {
        self.read_line().await.is_none()
    }

    /// Sends one command line and returns the reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
        self.read_reply().await
    }

    /// Sends a command and asserts the reply code.
    pub async fn expect(&mut self, line: &str, code: u16) -> Reply {
        let r = self.cmd(line).await;
        assert_eq!(r.code, code, "{line:?} -> {r:?}");
        r
    }

    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Reply {
        self.cmd(&format!(
            "AUTH PLAIN {}",
            sasl::encode_plain(user, password)
        ))
        .await
    }

    pub async fn auth_login(&mut self, user: &str, password: &str) -> Reply {
        let r = self.cmd("AUTH LOGIN").await;
        assert_eq!(
            (r.code, r.text.as_str()),
            (334, sasl::LOGIN_USERNAME_PROMPT)
        );
        let r = self.cmd(&sasl::encode(user)).await;
        assert_eq!(
            (r.code, r.text.as_str()),
            (334, sasl::LOGIN_PASSWORD_PROMPT)
        );
        self.cmd(&sasl::encode(password)).await
    }

    /// MAIL, RCPT for each recipient, DATA, the body (CRLF-terminated, not yet
    /// dot-stuffed) and the end marker; returns the final reply.
    pub async fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        if r.code != 250 {
            return r;
        }
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            if r.code != 250 {
                return r;
            }
        }
        let r = self.cmd("DATA").await;
        if r.code != 354 {
            return r;
        }
        self.send_raw(&stuff(body.as_bytes())).await;
        self.send_raw(b".\r\n").await;
        self.read_reply().await
    }
}

/// Dot-stuffs a CRLF body.
pub fn stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut start = true;
    for &b in body {
        if start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        start = b == b'\n';
    }
    out
}
