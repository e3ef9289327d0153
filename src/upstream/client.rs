//! An SMTP client for one smarthost connection: connect, TLS (STARTTLS or implicit,
//! certificate verified), EHLO, AUTH, then MAIL/RCPT/DATA as the session asks.

use super::oauth::{TokenError, TokenSource, xoauth2};
use crate::config::{Smarthost, Timeouts, TlsMode};
use crate::proto::reply::{Esc, Reply, ReplyBuilder, ReplyError};
use crate::proto::sasl;
use crate::secret::Secret;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Any byte stream the client can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Everything needed to open a connection to the smarthost.
#[derive(Clone)]
pub struct UpstreamSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub tls_config: Arc<ClientConfig>,
    pub credentials: Credentials,
    /// Our EHLO name.
    pub ehlo_name: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub data_done_timeout: Duration,
}

/// How Postern logs in to a smarthost.
#[derive(Clone)]
pub enum Credentials {
    None,
    /// AUTH PLAIN or LOGIN.
    Password {
        user: String,
        password: Secret,
    },
    /// AUTH XOAUTH2 with the entry's access token.
    OAuth2 {
        user: String,
        tokens: Arc<TokenSource>,
    },
}

impl UpstreamSettings {
    /// `host:port`, for logs.
    pub fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn new(
        s: &Smarthost,
        t: &Timeouts,
        ehlo_name: &str,
        tls_config: Arc<ClientConfig>,
        tokens: Option<Arc<TokenSource>>,
    ) -> Self {
        let credentials = match (&s.username, &s.password, tokens) {
            (Some(user), _, Some(tokens)) => Credentials::OAuth2 {
                user: user.clone(),
                tokens,
            },
            (Some(user), Some(password), None) => Credentials::Password {
                user: user.clone(),
                password: password.clone(),
            },
            _ => Credentials::None,
        };
        UpstreamSettings {
            host: s.host.clone(),
            port: s.port,
            tls: s.tls,
            tls_config,
            credentials,
            ehlo_name: ehlo_name.to_string(),
            connect_timeout: t.upstream_connect,
            command_timeout: t.upstream_command,
            data_done_timeout: t.upstream_data_done,
        }
    }
}

/// Why talking to the smarthost failed. None of these is the client's fault, so
/// each becomes a 4xx for the client.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the smarthost: {0}")]
    Connect(std::io::Error),
    #[error("smarthost timed out during {0}")]
    Timeout(&'static str),
    #[error("TLS with the smarthost failed: {0}")]
    Tls(String),
    #[error("connection to the smarthost broke: {0}")]
    Io(#[from] std::io::Error),
    #[error("smarthost closed the connection")]
    Closed,
    #[error("smarthost sent a malformed reply: {0}")]
    Protocol(#[from] ReplyError),
    #[error("smarthost refused {phase}: {reply}")]
    Refused { phase: &'static str, reply: Reply },
    #[error("smarthost does not offer {0}")]
    Missing(&'static str),
    #[error("no access token for the smarthost: {0}")]
    Token(#[from] TokenError),
}

/// What the smarthost said it supports in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    pub pipelining: bool,
    pub size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub starttls: bool,
    pub auth_plain: bool,
    pub auth_login: bool,
    pub auth_xoauth2: bool,
}

impl Caps {
    /// Reads the capability lines of an EHLO reply (every line after the first).
    pub fn parse(reply: &Reply) -> Caps {
        let mut caps = Caps::default();
        for line in reply.text.split('\n').skip(1) {
            let mut words = line.split([' ', '=']);
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = words.next().and_then(|w| w.parse().ok()),
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "STARTTLS" => caps.starttls = true,
                "AUTH" => {
                    for m in words {
                        match m.to_ascii_uppercase().as_str() {
                            "PLAIN" => caps.auth_plain = true,
                            "LOGIN" => caps.auth_login = true,
                            "XOAUTH2" => caps.auth_xoauth2 = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        caps
    }
}

/// Most bytes in one reply line from the smarthost.
const MAX_LINE: usize = 4096;

/// Reads one line (LF included) of at most [`MAX_LINE`] bytes.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
) -> Result<(), UpstreamError> {
    line.clear();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Err(UpstreamError::Closed);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if line.len() > MAX_LINE {
            return Err(UpstreamError::Protocol(ReplyError::TooLong));
        }
        if done {
            return Ok(());
        }
    }
}

/// Reads one whole (possibly multiline) reply within `limit`.
async fn read_reply<R: AsyncBufRead + Unpin>(
    r: &mut R,
    limit: Duration,
    phase: &'static str,
) -> Result<Reply, UpstreamError> {
    let fut = async {
        let mut builder = ReplyBuilder::default();
        let mut line = Vec::with_capacity(128);
        loop {
            read_line(r, &mut line).await?;
            if let Some(reply) = builder.push(&line)? {
                return Ok(reply);
            }
        }
    };
    timeout(limit, fut)
        .await
        .map_err(|_| UpstreamError::Timeout(phase))?
}

/// Writes a command line and reads its reply.
async fn exchange<S: AsyncBufRead + AsyncWrite + Unpin>(
    s: &mut S,
    line: &str,
    limit: Duration,
    phase: &'static str,
) -> Result<Reply, UpstreamError> {
    // One write: over TLS every write is its own record and its own syscall.
    // Zeroed when dropped: the line may be an AUTH one.
    let mut wire = zeroize::Zeroizing::new(Vec::with_capacity(line.len() + 2));
    wire.extend_from_slice(line.as_bytes());
    wire.extend_from_slice(b"\r\n");
    let write = async {
        s.write_all(&wire).await?;
        s.flush().await
    };
    timeout(limit, write)
        .await
        .map_err(|_| UpstreamError::Timeout(phase))??;
    read_reply(s, limit, phase).await
}

fn expect(reply: Reply, code: u16, phase: &'static str) -> Result<Reply, UpstreamError> {
    if reply.code == code {
        Ok(reply)
    } else {
        Err(UpstreamError::Refused { phase, reply })
    }
}

/// One open, authenticated connection to the smarthost.
pub struct Upstream {
    stream: BufReader<Box<dyn Io>>,
    pub caps: Caps,
    settings: Arc<UpstreamSettings>,
    /// Messages sent on this connection, to cap reuse.
    pub messages: u32,
    pub opened: Instant,
    /// Set once a reply could not be read or a write failed: never reuse.
    pub broken: bool,
    /// Which pool (smarthost) it belongs to; see [`super::Relays`].
    pub pool: usize,
}

impl Upstream {
    /// Connects, sets up TLS, says EHLO and authenticates.
    pub async fn connect(settings: Arc<UpstreamSettings>) -> Result<Upstream, UpstreamError> {
        let s = &settings;
        let addr = (s.host.as_str(), s.port);
        let tcp = timeout(s.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::Timeout("connect"))?
            .map_err(UpstreamError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let t = s.command_timeout;
        // With STARTTLS the greeting comes before the handshake; otherwise after.
        let (stream, greeted): (Box<dyn Io>, bool) = match s.tls {
            TlsMode::Implicit => (Box::new(Self::handshake(s, tcp).await?), false),
            TlsMode::None => (Box::new(tcp), false),
            TlsMode::Starttls => (Box::new(Self::starttls(s, tcp).await?), true),
        };
        let mut stream = BufReader::new(stream);
        if !greeted {
            expect(
                read_reply(&mut stream, t, "greeting").await?,
                220,
                "greeting",
            )?;
        }
        let caps = Self::ehlo(&mut stream, s).await?;
        let mut up = Upstream {
            stream,
            caps,
            settings: settings.clone(),
            messages: 0,
            opened: Instant::now(),
            broken: false,
            pool: 0,
        };
        up.authenticate().await?;
        Ok(up)
    }

    /// Greeting, EHLO and STARTTLS in clear, then the handshake.
    async fn starttls(
        s: &UpstreamSettings,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
        let t = s.command_timeout;
        let mut plain = BufReader::new(tcp);
        expect(
            read_reply(&mut plain, t, "greeting").await?,
            220,
            "greeting",
        )?;
        let caps = Self::ehlo(&mut plain, s).await?;
        if !caps.starttls {
            return Err(UpstreamError::Missing("STARTTLS"));
        }
        expect(
            exchange(&mut plain, "STARTTLS", t, "STARTTLS").await?,
            220,
            "STARTTLS",
        )?;
        if !plain.buffer().is_empty() {
            // Anything sent before the handshake could be an injection attempt.
            return Err(UpstreamError::Tls(
                "smarthost sent data after its STARTTLS reply".into(),
            ));
        }
        Self::handshake(s, plain.into_inner()).await
    }

    async fn handshake(
        s: &UpstreamSettings,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, UpstreamError> {
        let name = ServerName::try_from(s.host.clone())
            .map_err(|e| UpstreamError::Tls(format!("bad server name {:?}: {e}", s.host)))?;
        let connector = tokio_rustls::TlsConnector::from(s.tls_config.clone());
        timeout(s.command_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| UpstreamError::Timeout("TLS handshake"))?
            .map_err(|e| UpstreamError::Tls(e.to_string()))
    }

    async fn ehlo<S: AsyncBufRead + AsyncWrite + Unpin>(
        stream: &mut S,
        s: &UpstreamSettings,
    ) -> Result<Caps, UpstreamError> {
        let reply = exchange(
            stream,
            &format!("EHLO {}", s.ehlo_name),
            s.command_timeout,
            "EHLO",
        )
        .await?;
        Ok(Caps::parse(&expect(reply, 250, "EHLO")?))
    }

    async fn authenticate(&mut self) -> Result<(), UpstreamError> {
        match self.settings.credentials.clone() {
            Credentials::None => Ok(()),
            Credentials::Password { user, password } => self.password(&user, &password).await,
            Credentials::OAuth2 { user, tokens } => self.xoauth2(&user, &tokens).await,
        }
    }

    /// AUTH PLAIN, or LOGIN when PLAIN is not offered.
    async fn password(&mut self, user: &str, pass: &Secret) -> Result<(), UpstreamError> {
        let t = self.settings.command_timeout;
        if self.caps.auth_plain {
            let line = Secret::new(format!(
                "AUTH PLAIN {}",
                sasl::encode_plain(user, pass.expose())
            ));
            let reply = exchange(&mut self.stream, line.expose(), t, "AUTH").await?;
            expect(reply, 235, "AUTH")?;
        } else if self.caps.auth_login {
            expect(
                exchange(&mut self.stream, "AUTH LOGIN", t, "AUTH").await?,
                334,
                "AUTH",
            )?;
            expect(
                exchange(&mut self.stream, &sasl::encode(user), t, "AUTH").await?,
                334,
                "AUTH",
            )?;
            let line = Secret::new(sasl::encode(pass.expose()));
            expect(
                exchange(&mut self.stream, line.expose(), t, "AUTH").await?,
                235,
                "AUTH",
            )?;
        } else {
            return Err(UpstreamError::Missing("AUTH PLAIN or LOGIN"));
        }
        Ok(())
    }

    /// AUTH XOAUTH2. A refused token (Microsoft and Google answer `334` with a
    /// base64 JSON error, then `535` after our empty line) is dropped, and a new one
    /// fetched and tried once.
    async fn xoauth2(&mut self, user: &str, tokens: &TokenSource) -> Result<(), UpstreamError> {
        if !self.caps.auth_xoauth2 {
            return Err(UpstreamError::Missing("AUTH XOAUTH2"));
        }
        let t = self.settings.command_timeout;
        let mut retried = false;
        loop {
            let token = tokens.token().await?;
            let line = Secret::new(format!(
                "AUTH XOAUTH2 {}",
                sasl::encode(xoauth2(user, &token).expose())
            ));
            let mut reply = exchange(&mut self.stream, line.expose(), t, "AUTH").await?;
            // A refused token: 334 with the error, then 535 after our empty line
            // (or 5.7.3 / 5.7.8 at once). Another 535 (say 5.7.139, SMTP AUTH off
            // for the tenant) is not the token's fault: no new one is fetched.
            let token_refused =
                reply.code == 334 || matches!(reply.esc, Some(Esc(5, 7, 3)) | Some(Esc(5, 7, 8)));
            if reply.code == 334 {
                reply = exchange(&mut self.stream, "", t, "AUTH").await?;
            }
            if reply.code == 235 {
                return Ok(());
            }
            if token_refused && reply.is_permanent() && !retried {
                tokens.refused(&token).await;
                retried = true;
                continue;
            }
            return Err(UpstreamError::Refused {
                phase: "AUTH",
                reply,
            });
        }
    }

    /// Sends one command and reads its reply; marks the connection broken on failure.
    pub async fn command(
        &mut self,
        line: &str,
        phase: &'static str,
    ) -> Result<Reply, UpstreamError> {
        let t = self.settings.command_timeout;
        let r = exchange(&mut self.stream, line, t, phase).await;
        self.broken |= r.is_err();
        r
    }

    /// Sends `line` and DATA in one write (the smarthost offers PIPELINING) and
    /// reads their replies in order: `line`'s, then DATA's unless `line` lost the
    /// connection (an error or a 421, after which no second reply comes).
    pub async fn command_then_data(
        &mut self,
        line: &str,
        phase: &'static str,
    ) -> (
        Result<Reply, UpstreamError>,
        Option<Result<Reply, UpstreamError>>,
    ) {
        let t = self.settings.command_timeout;
        let both = format!("{line}\r\nDATA");
        let first = exchange(&mut self.stream, &both, t, phase).await;
        let second = match &first {
            Ok(r) if r.code != 421 => Some(read_reply(&mut self.stream, t, "DATA").await),
            _ => None,
        };
        self.broken |= first.is_err() || second.as_ref().is_some_and(|r| r.is_err());
        (first, second)
    }

    /// Writes raw DATA bytes (already dot-stuffed).
    pub async fn write_data(&mut self, bytes: &[u8]) -> Result<(), UpstreamError> {
        let t = self.settings.command_timeout;
        let r = match timeout(t, self.stream.get_mut().write_all(bytes)).await {
            Ok(r) => r.map_err(UpstreamError::Io),
            Err(_) => Err(UpstreamError::Timeout("DATA")),
        };
        self.broken |= r.is_err();
        r
    }

    /// Flushes and reads the reply after the end-of-data marker was written.
    pub async fn finish_data(&mut self) -> Result<Reply, UpstreamError> {
        let t = self.settings.data_done_timeout;
        let r = async {
            timeout(t, self.stream.get_mut().flush())
                .await
                .map_err(|_| UpstreamError::Timeout("end of data"))??;
            read_reply(&mut self.stream, t, "end of data").await
        }
        .await;
        self.broken |= r.is_err();
        if r.is_ok() {
            self.messages += 1;
        }
        r
    }

    /// Says QUIT and closes, ignoring errors (the connection is being dropped anyway).
    pub async fn quit(mut self) {
        let _ = timeout(
            Duration::from_secs(5),
            exchange(&mut self.stream, "QUIT", Duration::from_secs(5), "QUIT"),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ehlo_capabilities() {
        let r = Reply::plain(
            250,
            "mx.example\nPIPELINING\nSIZE 10240000\n8BITMIME\nAUTH=PLAIN LOGIN\nAUTH LOGIN PLAIN XOAUTH2\nSMTPUTF8\nSTARTTLS",
        );
        let c = Caps::parse(&r);
        assert_eq!(
            c,
            Caps {
                pipelining: true,
                size: Some(10_240_000),
                eight_bit_mime: true,
                smtputf8: true,
                starttls: true,
                auth_plain: true,
                auth_login: true,
                auth_xoauth2: true,
            }
        );
        assert_eq!(
            Caps::parse(&Reply::plain(250, "only.greeting")),
            Caps::default()
        );
    }
}
