//! The client side shared by `load` and `idle`: a connection that is plain until
//! STARTTLS, reading replies, and one session set up to the point of sending mail
//! (greeting, EHLO, TLS, AUTH PLAIN).

use crate::args::{Target, Tls};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The connection: plain until STARTTLS, then TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

pub struct Conn {
    io: BufReader<Stream>,
}

impl Conn {
    /// Reads one whole reply; returns its code.
    pub async fn reply(&mut self) -> Result<u16, String> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .io
                .read_line(&mut line)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            if line.len() < 4 {
                return Err(format!("bad reply {line:?}"));
            }
            if line.as_bytes()[3] != b'-' {
                return line[..3].parse().map_err(|_| format!("bad reply {line:?}"));
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let w = self.io.get_mut();
        w.write_all(bytes).await.map_err(|e| e.to_string())?;
        w.flush().await.map_err(|e| e.to_string())
    }

    pub async fn expect(&mut self, line: &str, want: u16) -> Result<(), Failure> {
        self.send(line.as_bytes()).await.map_err(Failure::Io)?;
        match self.reply().await.map_err(Failure::Io)? {
            code if code == want => Ok(()),
            code => Err(Failure::Code(code)),
        }
    }
}

pub enum Failure {
    Io(String),
    Code(u16),
}

pub struct Client {
    connector: Option<tokio_rustls::TlsConnector>,
    target: Target,
    credentials: Vec<(String, String)>,
}

impl Client {
    pub fn new(target: Target) -> Result<Client, String> {
        let connector = match (&target.ca, target.tls) {
            (_, Tls::None) => None,
            (Some(ca), _) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca)
                    .map_err(|e| format!("{}: {e}", ca.display()))?
                {
                    roots
                        .add(c.map_err(|e| e.to_string())?)
                        .map_err(|e| e.to_string())?;
                }
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
                Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
            }
            (None, _) => return Err("--ca is needed with TLS".into()),
        };
        let mut credentials = Vec::new();
        if let (Some(u), Some(p)) = (&target.user, &target.password_file) {
            let pw = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            credentials.push((u.clone(), pw.trim_end().to_string()));
        }
        if let Some(f) = &target.users_file {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                let (u, p) = l
                    .split_once(':')
                    .ok_or_else(|| format!("{}: lines are user:password", f.display()))?;
                credentials.push((u.to_string(), p.to_string()));
            }
        }
        Ok(Client {
            connector,
            target,
            credentials,
        })
    }

    async fn tls(&self, tcp: TcpStream) -> Result<Stream, Failure> {
        let connector = self.connector.as_ref().expect("TLS configured");
        let name = ServerName::try_from(self.target.server_name.clone())
            .map_err(|e| Failure::Io(e.to_string()))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| Failure::Io(format!("TLS: {e}")))?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// Connects, greets, does TLS and (with `auth`) AUTH PLAIN as user number `n`.
    pub async fn session(&self, n: usize, auth: bool) -> Result<Conn, Failure> {
        let tcp = TcpStream::connect(self.target.target)
            .await
            .map_err(|e| Failure::Io(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut conn = match self.target.tls {
            Tls::Implicit => Conn {
                io: BufReader::new(self.tls(tcp).await?),
            },
            _ => Conn {
                io: BufReader::new(Stream::Plain(tcp)),
            },
        };
        match conn.reply().await.map_err(Failure::Io)? {
            220 => {}
            code => return Err(Failure::Code(code)),
        }
        conn.expect("EHLO bench.example\r\n", 250).await?;
        if self.target.tls == Tls::Starttls {
            conn.expect("STARTTLS\r\n", 220).await?;
            let Stream::Plain(tcp) = conn.io.into_inner() else {
                return Err(Failure::Io("STARTTLS inside TLS".into()));
            };
            conn = Conn {
                io: BufReader::new(self.tls(tcp).await?),
            };
            conn.expect("EHLO bench.example\r\n", 250).await?;
        }
        if auth && !self.credentials.is_empty() {
            let (u, p) = &self.credentials[n % self.credentials.len()];
            let line = format!(
                "AUTH PLAIN {}\r\n",
                postern::proto::sasl::encode_plain(u, p)
            );
            conn.expect(&line, 235).await?;
        }
        Ok(conn)
    }
}
