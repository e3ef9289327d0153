//! `postern-bench sink --token-endpoint`: an OAuth 2.0 token endpoint next to the
//! sink, which then takes AUTH XOAUTH2 with the tokens issued here only. A benchmark
//! relaying through it counts the token requests: Postern should fetch a token once
//! per lifetime, never per message or per connection.
//!
//! The endpoint speaks just enough HTTP/1.1 over TLS for a token request (one POST
//! per connection, `Connection: close`) and checks the client-credentials grant.

use postern::sink::TokenCheck;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Most bytes of one token request, head and body.
const MAX_REQUEST: usize = 16 * 1024;

/// The tokens issued and still valid, and how many requests asked for one.
pub struct Tokens {
    /// The mailbox the tokens are for (XOAUTH2's `user=`).
    user: String,
    client_secret: String,
    lifetime: Duration,
    valid: Mutex<HashMap<String, Instant>>,
    fetches: AtomicUsize,
    /// Rewritten with the number of token requests after each one.
    count_file: Option<PathBuf>,
}

impl Tokens {
    pub fn new(
        user: String,
        client_secret: String,
        lifetime: Duration,
        count_file: Option<PathBuf>,
    ) -> Arc<Tokens> {
        Arc::new(Tokens {
            user,
            client_secret,
            lifetime,
            valid: Mutex::new(HashMap::new()),
            fetches: AtomicUsize::new(0),
            count_file,
        })
    }

    /// The sink's XOAUTH2 check: the mailbox, with a token issued here and unexpired.
    pub fn check(self: &Arc<Self>) -> TokenCheck {
        let tokens = self.clone();
        Arc::new(move |user: &str, token: &str| {
            let valid = tokens.valid.lock().expect("token table");
            user == tokens.user
                && valid
                    .get(token)
                    .is_some_and(|&until| Instant::now() < until)
        })
    }

    /// Answers one request body: a token for the right grant, else `None`.
    fn grant(&self, form: &str) -> Option<String> {
        let field = |name: &str| {
            form.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
        };
        if field("grant_type") != Some("client_credentials")
            || field("client_secret") != Some(self.client_secret.as_str())
        {
            return None;
        }
        let mut raw = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw).ok()?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let mut valid = self.valid.lock().expect("token table");
        let now = Instant::now();
        valid.retain(|_, until| *until > now);
        valid.insert(token.clone(), now + self.lifetime);
        Some(token)
    }

    fn counted(&self) {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(path) = &self.count_file {
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, format!("{n}\n")).is_ok() {
                let _ = std::fs::rename(&tmp, path);
            }
        }
    }
}

/// Serves token requests on `listen` until the process ends.
pub async fn serve(
    listen: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    tokens: Arc<Tokens>,
) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("{listen}: {e}"))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tokens) = (acceptor.clone(), tokens.clone());
            tokio::spawn(async move {
                let answer = async {
                    let mut tls = acceptor.accept(tcp).await.ok()?;
                    let body = read_request(&mut tls).await?;
                    tokens.counted();
                    let reply = match tokens.grant(&body) {
                        Some(t) => response(
                            "200 OK",
                            &format!(
                                r#"{{"token_type":"Bearer","expires_in":{},"access_token":"{t}"}}"#,
                                tokens.lifetime.as_secs()
                            ),
                        ),
                        None => response("401 Unauthorized", r#"{"error":"invalid_client"}"#),
                    };
                    tls.write_all(reply.as_bytes()).await.ok()?;
                    tls.shutdown().await.ok()
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), answer).await;
            });
        }
    });
    Ok(())
}

/// Reads one request; returns its body (the form), or `None` when it is not one.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())?;
            let body_start = head_end + 4;
            if buf.len() >= body_start + length {
                let body = &buf[body_start..body_start + length];
                return Some(String::from_utf8_lossy(body).into_owned());
            }
        }
        if buf.len() > MAX_REQUEST {
            return None;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn response(status: &str, json: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )
}
