//! Stand-ins for Microsoft 365 on loopback: one HTTPS server (a certificate from the
//! harness's test CA) with an OAuth 2.0 token endpoint that checks the grant and
//! issues expiring tokens, and a Graph `sendMail` endpoint that checks the bearer
//! token and keeps the MIME it decoded. The stand-in smarthost checks XOAUTH2 tokens
//! against the same set of valid tokens ([`Provider::token_check`]).

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use postern::sink::TokenCheck;
use postern::tls::TestCa;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub const CLIENT_ID: &str = "00000000-1111-2222-3333-444444444444";
pub const CLIENT_SECRET: &str = "cs~Sup3rSecretClientValue.9f3a";
pub const REFRESH_TOKEN: &str = "1//0gRefreshTokenValueNeverLogged-c0ffee";
pub const SCOPE: &str = "https://outlook.office365.com/.default";
pub const MAILBOX: &str = "printer@contoso.example";

/// How the token endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenMode {
    Up,
    /// `503` with an HTML page.
    Unavailable,
    /// `401 invalid_client`, as for a revoked secret.
    Refuse,
    /// The connection is dropped without an answer.
    Hangup,
    /// No answer for two minutes.
    Stall,
}

/// A scripted Graph answer, used once each, after the token and body checks.
#[derive(Clone, Copy, Debug)]
pub enum GraphAnswer {
    /// `429` with `Retry-After` of that many seconds.
    Throttle(u64),
    Unavailable,
    /// `503` with `Retry-After` of that many seconds.
    UnavailableFor(u64),
    /// `400 ErrorInvalidRecipients`.
    BadRequest,
    /// A bare status (`200`, `301` with a Location, ...), the message not kept.
    Status(u16),
}

/// What the token endpoint wants to see.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    ClientCredentials,
    RefreshToken,
}

#[derive(Default)]
struct State {
    grant: Option<Grant>,
    lifetime: AtomicU64,
    mode: Mutex<Option<TokenMode>>,
    token_requests: AtomicUsize,
    /// Every token issued, with when it expires; removed ones were invalidated.
    issued: Mutex<Vec<String>>,
    valid: Mutex<HashMap<String, Instant>>,
    /// The smarthost refuses every XOAUTH2 token.
    smtp_refuses: std::sync::atomic::AtomicBool,
    /// Tokens presented after they expired (a delivery that waited on a stale one).
    expired_presented: AtomicUsize,
    script: Mutex<VecDeque<GraphAnswer>>,
    graph_requests: AtomicUsize,
    /// (mailbox, decoded MIME) per accepted sendMail.
    sent: Mutex<Vec<(String, Vec<u8>)>>,
    changed: Notify,
}

/// The running stand-in.
pub struct Provider {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Provider {
    /// Serves on `127.0.0.1:0` with a certificate from `ca`; tokens live
    /// `lifetime_s` seconds.
    pub async fn start(ca: &TestCa, grant: Grant, lifetime_s: u64) -> Provider {
        let cert = ca.issue(&["localhost", "127.0.0.1"]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = postern::config::TlsFiles {
            certificate: dir.path().join("c.pem"),
            private_key: dir.path().join("k.pem"),
        };
        super::write(&files.certificate, &cert.cert_pem);
        super::write(&files.private_key, &cert.key_pem);
        let tls = postern::tls::load_server_config(&files).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            grant: Some(grant),
            lifetime: AtomicU64::new(lifetime_s),
            mode: Mutex::new(Some(TokenMode::Up)),
            ..State::default()
        });
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, state) = (acceptor.clone(), state.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move { answer(&state, req).await }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                    });
                }
            })
        };
        Provider { addr, state, task }
    }

    pub fn token_url(&self) -> String {
        format!(
            "https://localhost:{}/tenant-id/oauth2/v2.0/token",
            self.addr.port()
        )
    }

    pub fn graph_url(&self) -> String {
        format!("https://localhost:{}/v1.0", self.addr.port())
    }

    /// The `oauth2:` block (indented for a `smarthost:` entry) and the secret file
    /// it names, for `Setup::files`.
    pub fn oauth2_yaml(&self) -> (String, Vec<(&'static str, String)>) {
        let (line, file) = match self.state.grant {
            Some(Grant::RefreshToken) => (
                "    refresh_token_file: google.refresh\n",
                ("google.refresh", format!("{REFRESH_TOKEN}\n")),
            ),
            _ => (
                "    client_secret_file: m365.secret\n",
                ("m365.secret", format!("{CLIENT_SECRET}\n")),
            ),
        };
        let yaml = format!(
            "  oauth2:\n    token_url: {}\n    client_id: {CLIENT_ID}\n{line}    scope: {SCOPE}\n",
            self.token_url()
        );
        (yaml, vec![file])
    }

    /// A `smarthost:` section delivering to the harness's sink with XOAUTH2.
    pub fn smtp_smarthost(&self) -> (String, Vec<(&'static str, String)>) {
        let (oauth, files) = self.oauth2_yaml();
        let yaml = format!(
            "smarthost:\n  address: \"localhost:{{SINK}}\"\n  tls: starttls\n  ca_file: ca.pem\n  username: {MAILBOX}\n{oauth}"
        );
        (yaml, files)
    }

    /// A `smarthost:` section delivering through this Graph stand-in.
    pub fn graph_smarthost(&self) -> (String, Vec<(&'static str, String)>) {
        let (oauth, files) = self.oauth2_yaml();
        let yaml = format!(
            "smarthost:\n  transport: graph\n  graph_url: {}\n  ca_file: ca.pem\n  username: {MAILBOX}\n{oauth}",
            self.graph_url()
        );
        (yaml, files)
    }

    /// The check for the stand-in smarthost: the user is the mailbox and the token
    /// is currently valid.
    pub fn token_check(&self) -> TokenCheck {
        let state = self.state.clone();
        Arc::new(move |user: &str, token: &str| {
            user == MAILBOX && state.is_valid(token) && !state.smtp_refuses.load(Ordering::SeqCst)
        })
    }

    /// Makes the smarthost refuse every token, valid or not.
    pub fn set_smtp_refuses(&self, refuse: bool) {
        self.state.smtp_refuses.store(refuse, Ordering::SeqCst);
    }

    pub fn set_mode(&self, mode: TokenMode) {
        *self.state.mode.lock().unwrap() = Some(mode);
    }

    pub fn set_lifetime(&self, secs: u64) {
        self.state.lifetime.store(secs, Ordering::SeqCst);
    }

    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Every token issued so far, in order.
    pub fn issued(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().clone()
    }

    /// Makes every token issued so far invalid (revoked by the provider).
    pub fn invalidate_all(&self) {
        self.state.valid.lock().unwrap().clear();
    }

    /// How often an expired token was presented.
    pub fn expired_presented(&self) -> usize {
        self.state.expired_presented.load(Ordering::SeqCst)
    }

    /// Graph answers for the next requests, in order.
    pub fn script(&self, answers: &[GraphAnswer]) {
        self.state.script.lock().unwrap().extend(answers);
    }

    pub fn graph_requests(&self) -> usize {
        self.state.graph_requests.load(Ordering::SeqCst)
    }

    /// The messages Graph accepted: (mailbox, MIME).
    pub fn sent(&self) -> Vec<(String, Vec<u8>)> {
        self.state.sent.lock().unwrap().clone()
    }

    /// Waits until `cond` holds or `limit` passes; whether it held.
    pub async fn wait(&self, limit: Duration, cond: impl Fn(&Provider) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.state.changed.notified();
            if cond(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(100)),
                changed,
            )
            .await;
        }
    }
}

impl State {
    fn is_valid(&self, token: &str) -> bool {
        let valid = self.valid.lock().unwrap();
        match valid.get(token) {
            Some(&until) if Instant::now() < until => true,
            Some(_) => {
                self.expired_presented.fetch_add(1, Ordering::SeqCst);
                false
            }
            None => false,
        }
    }
}

type Answer = Response<Full<Bytes>>;

fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Answer {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap()
}

async fn answer(state: &State, req: Request<Incoming>) -> Result<Answer, std::io::Error> {
    let path = req.uri().path().to_string();
    let answer = if path.ends_with("/oauth2/v2.0/token") {
        token(state, req).await?
    } else if let Some(user) = path
        .strip_prefix("/v1.0/users/")
        .and_then(|p| p.strip_suffix("/sendMail"))
    {
        let user = user.replace("%40", "@");
        send_mail(state, user, req).await
    } else {
        reply(404, "text/plain", "no such endpoint")
    };
    state.changed.notify_waiters();
    Ok(answer)
}

/// The token endpoint: a form POST with the configured grant.
async fn token(state: &State, req: Request<Incoming>) -> Result<Answer, std::io::Error> {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let mode = state.mode.lock().unwrap().unwrap_or(TokenMode::Up);
    match mode {
        TokenMode::Up => {}
        TokenMode::Unavailable => return Ok(reply(503, "text/html", "<html>down</html>")),
        TokenMode::Refuse => {
            return Ok(reply(
                401,
                "application/json",
                r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#,
            ));
        }
        TokenMode::Hangup => return Err(std::io::Error::other("hang up")),
        TokenMode::Stall => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            return Err(std::io::Error::other("stalled"));
        }
    }
    let form_ok = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/x-www-form-urlencoded");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let url =
        reqwest::Url::parse(&format!("http://form/?{}", String::from_utf8_lossy(&body))).unwrap();
    let form: HashMap<String, String> = url.query_pairs().into_owned().collect();
    let get = |k: &str| form.get(k).map(String::as_str);
    let grant_ok = match state.grant {
        Some(Grant::RefreshToken) => {
            get("grant_type") == Some("refresh_token")
                && get("refresh_token") == Some(REFRESH_TOKEN)
        }
        _ => {
            get("grant_type") == Some("client_credentials")
                && get("client_secret") == Some(CLIENT_SECRET)
                && get("scope") == Some(SCOPE)
        }
    };
    if !form_ok || !grant_ok || get("client_id") != Some(CLIENT_ID) {
        return Ok(reply(
            400,
            "application/json",
            r#"{"error":"invalid_grant","error_description":"the stand-in did not get the grant it expects"}"#,
        ));
    }
    let lifetime = state.lifetime.load(Ordering::SeqCst);
    let token = {
        let mut issued = state.issued.lock().unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        // As long as Microsoft's JWTs (about 2 KB): the AUTH line is far longer
        // than 512 octets.
        let t = format!(
            "tok-{}-{nanos:08x}AccessTokenValue.{}",
            issued.len() + 1,
            "eyJ0eXAiOiJKV1QiLCJub25jZSI6".repeat(70)
        );
        issued.push(t.clone());
        t
    };
    state.valid.lock().unwrap().insert(
        token.clone(),
        Instant::now() + Duration::from_secs(lifetime),
    );
    Ok(reply(
        200,
        "application/json",
        format!(
            r#"{{"token_type":"Bearer","expires_in":{lifetime},"ext_expires_in":{lifetime},"access_token":"{token}"}}"#
        ),
    ))
}

/// Graph `sendMail` with a MIME body.
async fn send_mail(state: &State, user: String, req: Request<Incoming>) -> Answer {
    state.graph_requests.fetch_add(1, Ordering::SeqCst);
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    if !bearer.is_some_and(|t| state.is_valid(&t)) {
        return reply(
            401,
            "application/json",
            r#"{"error":{"code":"InvalidAuthenticationToken","message":"Access token has expired or is not yet valid."}}"#,
        );
    }
    let text_plain = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "text/plain");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mime = base64::engine::general_purpose::STANDARD.decode(&body).ok();
    let Some(mime) = mime.filter(|_| text_plain) else {
        return reply(
            400,
            "application/json",
            r#"{"error":{"code":"ErrorMimeContentInvalidBase64String","message":"bad MIME"}}"#,
        );
    };
    let scripted = state.script.lock().unwrap().pop_front();
    match scripted {
        Some(GraphAnswer::Throttle(secs)) => Response::builder()
            .status(429)
            .header("retry-after", secs.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"error":{"code":"ApplicationThrottled","message":"throttled"}}"#,
            )))
            .unwrap(),
        Some(GraphAnswer::Unavailable) => reply(
            503,
            "application/json",
            r#"{"error":{"code":"ServiceUnavailable","message":"try later"}}"#,
        ),
        Some(GraphAnswer::UnavailableFor(secs)) => Response::builder()
            .status(503)
            .header("retry-after", secs.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"error":{"code":"ServiceUnavailable","message":"try later"}}"#,
            )))
            .unwrap(),
        Some(GraphAnswer::Status(status)) => Response::builder()
            .status(status)
            .header("location", "https://localhost/elsewhere")
            .body(Full::new(Bytes::new()))
            .unwrap(),
        Some(GraphAnswer::BadRequest) => reply(
            400,
            "application/json",
            r#"{"error":{"code":"ErrorInvalidRecipients","message":"At least one recipient is not valid."}}"#,
        ),
        None => {
            state.sent.lock().unwrap().push((user, mime.to_vec()));
            reply(202, "text/plain", "")
        }
    }
}
