//! Benchmark tools: a load generator for any SMTP submission server, and a fast
//! discarding stand-in smarthost. Used by `bench/compare.sh`; never by the tests.
//!
//! ```text
//! postern-bench load --target 127.0.0.1:587 --tls starttls --ca ca.pem \
//!     --user bench1 --password-file pw --concurrency 50 --total 20000 --size 1024
//! postern-bench idle --target 127.0.0.1:587 --tls starttls --ca ca.pem --sessions 5000 --hold 20
//! postern-bench sink --listen 127.0.0.1:2525 --tls starttls --cert c.pem --key k.pem \
//!     --user relay --password-file pw
//! ```

use clap::{Parser, Subcommand, ValueEnum};
use postern::config::{TlsFiles, TlsMode};
use postern::sink::{Sink, SinkConfig};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(name = "postern-bench", about = "SMTP load generator and fast sink")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Tls {
    Starttls,
    Implicit,
    None,
}

#[derive(clap::Args, Clone)]
struct Target {
    /// Server to submit to.
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, value_enum, default_value = "starttls")]
    tls: Tls,
    /// CA certificate (PEM) that signed the server's certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Server name to verify (SNI).
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// AUTH PLAIN as this user (repeat with --users-file for several).
    #[arg(long)]
    user: Option<String>,
    /// The user's password, in a file.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Lines of `user:password`; connections use them in turn.
    #[arg(long)]
    users_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Submit messages and report throughput, latency and errors.
    Load {
        #[command(flatten)]
        target: Target,
        /// Concurrent client connections.
        #[arg(long, default_value_t = 20)]
        concurrency: usize,
        /// Messages per connection before QUIT and a new connection (1: the
        /// WordPress pattern, one message per connection; 0: log in and QUIT only,
        /// counting sessions instead of messages).
        #[arg(long, default_value_t = 100)]
        messages_per_connection: u64,
        /// Messages in all.
        #[arg(long, default_value_t = 10_000)]
        total: u64,
        /// Stop after this many seconds even if `total` is not reached.
        #[arg(long, default_value_t = 120)]
        max_seconds: u64,
        /// Message size in bytes (headers included).
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value = "bench@bench.example")]
        from: String,
        #[arg(long, default_value = "rcpt@example.org")]
        to: String,
        /// Print one JSON line instead of the text report.
        #[arg(long)]
        json: bool,
    },
    /// Open idle sessions (TLS and EHLO done) and hold them.
    Idle {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Seconds to hold them once all are open.
        #[arg(long, default_value_t = 10)]
        hold: u64,
        /// Also authenticate each session.
        #[arg(long)]
        auth: bool,
    },
    /// A discarding smarthost stand-in that demands STARTTLS (or implicit TLS) and AUTH.
    Sink {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, value_enum, default_value = "starttls")]
        tls: Tls,
        #[arg(long)]
        cert: Option<PathBuf>,
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Keep the number of accepted messages in this file (rewritten every 20 ms),
        /// for measuring end-to-end delivery.
        #[arg(long)]
        count_file: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Load {
                target,
                concurrency,
                messages_per_connection,
                total,
                max_seconds,
                size,
                from,
                to,
                json,
            } => {
                let plan = Plan {
                    concurrency,
                    per_connection: messages_per_connection,
                    total,
                    deadline: Duration::from_secs(max_seconds),
                    message: Arc::new(message(size, &from, &to)),
                    from,
                    to,
                };
                load(target, plan, json).await
            }
            Cmd::Idle {
                target,
                sessions,
                hold,
                auth,
            } => idle(target, sessions, Duration::from_secs(hold), auth).await,
            Cmd::Sink {
                listen,
                tls,
                cert,
                key,
                user,
                password_file,
                count_file,
            } => sink(listen, tls, cert, key, user, password_file, count_file).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postern-bench: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// A message of about `size` bytes: a few headers, then 76-character lines.
fn message(size: usize, from: &str, to: &str) -> Vec<u8> {
    let mut m = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: benchmark\r\nMessage-ID: <bench@bench.example>\r\n\r\n"
    )
    .into_bytes();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123\r\n";
    while m.len() + line.len() <= size.max(m.len() + line.len()) && m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

struct Plan {
    concurrency: usize,
    per_connection: u64,
    total: u64,
    deadline: Duration,
    message: Arc<Vec<u8>>,
    from: String,
    to: String,
}

/// The connection: plain until STARTTLS, then TLS.
enum Stream {
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

struct Conn {
    io: BufReader<Stream>,
}

impl Conn {
    /// Reads one whole reply; returns its code.
    async fn reply(&mut self) -> Result<u16, String> {
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

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let w = self.io.get_mut();
        w.write_all(bytes).await.map_err(|e| e.to_string())?;
        w.flush().await.map_err(|e| e.to_string())
    }

    async fn expect(&mut self, line: &str, want: u16) -> Result<(), Failure> {
        self.send(line.as_bytes()).await.map_err(Failure::Io)?;
        match self.reply().await.map_err(Failure::Io)? {
            code if code == want => Ok(()),
            code => Err(Failure::Code(code)),
        }
    }
}

enum Failure {
    Io(String),
    Code(u16),
}

struct Client {
    connector: Option<tokio_rustls::TlsConnector>,
    target: Target,
    credentials: Vec<(String, String)>,
}

impl Client {
    fn new(target: Target) -> Result<Client, String> {
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
    async fn session(&self, n: usize, auth: bool) -> Result<Conn, Failure> {
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

#[derive(Default)]
struct Stats {
    setup: Vec<Duration>,
    message: Vec<Duration>,
    errors: BTreeMap<String, u64>,
}

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn cpu_seconds() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    match usage {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => 0.0,
    }
}

async fn load(target: Target, plan: Plan, json: bool) -> Result<(), String> {
    let client = Arc::new(Client::new(target)?);
    let plan = Arc::new(plan);
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(Stats::default()));
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let mut workers = Vec::new();
    for w in 0..plan.concurrency {
        let (client, plan, issued, done, stop, stats) = (
            client.clone(),
            plan.clone(),
            issued.clone(),
            done.clone(),
            stop.clone(),
            stats.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut local = Stats::default();
            let mut n = w;
            'conns: while !stop.load(Ordering::Relaxed)
                && started.elapsed() < plan.deadline
                && issued.load(Ordering::Relaxed) < plan.total
            {
                let t0 = Instant::now();
                let mut conn = match client.session(n, true).await {
                    Ok(c) => c,
                    Err(e) => {
                        record(&mut local, e, "setup");
                        // A server that refuses everyone: report, do not hammer.
                        if local.errors.values().sum::<u64>() >= 100
                            && done.load(Ordering::Relaxed) == 0
                        {
                            stop.store(true, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        n += plan.concurrency;
                        continue;
                    }
                };
                local.setup.push(t0.elapsed());
                n += plan.concurrency;
                if plan.per_connection == 0 {
                    if issued.fetch_add(1, Ordering::Relaxed) >= plan.total {
                        stop.store(true, Ordering::Relaxed);
                    } else {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = conn.send(b"QUIT\r\n").await;
                    let _ = conn.reply().await;
                    continue;
                }
                for _ in 0..plan.per_connection {
                    if issued.fetch_add(1, Ordering::Relaxed) >= plan.total
                        || started.elapsed() >= plan.deadline
                    {
                        stop.store(true, Ordering::Relaxed);
                        let _ = conn.send(b"QUIT\r\n").await;
                        break 'conns;
                    }
                    let t1 = Instant::now();
                    match send_one(&mut conn, &plan).await {
                        Ok(()) => {
                            local.message.push(t1.elapsed());
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            record(&mut local, e, "message");
                            continue 'conns;
                        }
                    }
                }
                let _ = conn.send(b"QUIT\r\n").await;
                let _ = conn.reply().await;
            }
            let mut all = stats.lock().unwrap();
            all.setup.extend(local.setup);
            all.message.extend(local.message);
            for (k, v) in local.errors {
                *all.errors.entry(k).or_default() += v;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let mut s = std::mem::take(&mut *stats.lock().unwrap());
    let ok = done.load(Ordering::Relaxed);
    let rate = ok as f64 / elapsed;
    let (s50, s99) = (
        percentile(&mut s.setup, 0.5),
        percentile(&mut s.setup, 0.99),
    );
    let (m50, m99) = (
        percentile(&mut s.message, 0.5),
        percentile(&mut s.message, 0.99),
    );
    if json {
        let errors: Vec<String> = s
            .errors
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        println!(
            "{{\"messages\":{ok},\"seconds\":{elapsed:.3},\"rate\":{rate:.1},\"sessions\":{},\
             \"setup_p50_ms\":{s50:.3},\"setup_p99_ms\":{s99:.3},\"message_p50_ms\":{m50:.3},\
             \"message_p99_ms\":{m99:.3},\"client_cpu_s\":{cpu:.2},\"errors\":{{{}}}}}",
            s.setup.len(),
            errors.join(",")
        );
    } else {
        println!("messages      {ok} in {elapsed:.2} s: {rate:.0} msg/s");
        println!(
            "sessions      {} (setup p50 {s50:.2} ms, p99 {s99:.2} ms)",
            s.setup.len()
        );
        println!("per message   p50 {m50:.2} ms, p99 {m99:.2} ms");
        println!("client CPU    {cpu:.2} s");
        for (k, v) in &s.errors {
            println!("error         {k}: {v}");
        }
    }
    Ok(())
}

fn record(stats: &mut Stats, e: Failure, phase: &str) {
    let key = match e {
        Failure::Io(_) => format!("{phase}_io"),
        Failure::Code(c) => format!("{phase}_{c}"),
    };
    *stats.errors.entry(key).or_default() += 1;
}

/// One transaction, pipelined (RFC 2920): MAIL, RCPT and DATA in one write.
async fn send_one(conn: &mut Conn, plan: &Plan) -> Result<(), Failure> {
    let head = format!(
        "MAIL FROM:<{}>\r\nRCPT TO:<{}>\r\nDATA\r\n",
        plan.from, plan.to
    );
    conn.send(head.as_bytes()).await.map_err(Failure::Io)?;
    for want in [250, 250, 354] {
        let code = conn.reply().await.map_err(Failure::Io)?;
        if code != want {
            if want == 354 {
                return Err(Failure::Code(code));
            }
            // Keep the session in step: read the rest, then RSET.
            for _ in 0..(if want == 250 { 2 } else { 1 }) {
                let _ = conn.reply().await;
            }
            conn.expect("RSET\r\n", 250).await.ok();
            return Err(Failure::Code(code));
        }
    }
    let mut body = Vec::with_capacity(plan.message.len() + 5);
    body.extend_from_slice(&plan.message);
    body.extend_from_slice(b".\r\n");
    conn.send(&body).await.map_err(Failure::Io)?;
    match conn.reply().await.map_err(Failure::Io)? {
        250 => Ok(()),
        code => Err(Failure::Code(code)),
    }
}

async fn idle(target: Target, sessions: usize, hold: Duration, auth: bool) -> Result<(), String> {
    let client = Arc::new(Client::new(target)?);
    let started = Instant::now();
    let mut open = Vec::with_capacity(sessions);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    // Open in batches so the server sees a realistic arrival, not one burst.
    for batch in (0..sessions).collect::<Vec<_>>().chunks(200) {
        let tasks: Vec<_> = batch
            .iter()
            .map(|&n| {
                let client = client.clone();
                tokio::spawn(async move { client.session(n, auth).await })
            })
            .collect();
        for t in tasks {
            match t.await {
                Ok(Ok(c)) => open.push(c),
                Ok(Err(Failure::Code(c))) => *errors.entry(format!("code_{c}")).or_default() += 1,
                Ok(Err(Failure::Io(e))) => *errors.entry(format!("io: {e}")).or_default() += 1,
                Err(_) => *errors.entry("panic".into()).or_default() += 1,
            }
        }
    }
    println!(
        "open {} of {sessions} sessions in {:.1} s; errors {errors:?}",
        open.len(),
        started.elapsed().as_secs_f64()
    );
    // The compare script measures the server now.
    tokio::time::sleep(hold).await;
    drop(open);
    Ok(())
}

async fn sink(
    listen: SocketAddr,
    tls: Tls,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    count_file: Option<PathBuf>,
) -> Result<(), String> {
    let server_tls = match (cert, key) {
        (Some(certificate), Some(private_key)) => Some(
            postern::tls::load_server_config(&TlsFiles {
                certificate,
                private_key,
            })
            .map_err(|e| e.to_string())?,
        ),
        _ => None,
    };
    let credentials = match (user, password_file) {
        (Some(u), Some(p)) => Some((
            u,
            std::fs::read_to_string(&p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .trim_end()
                .to_string(),
        )),
        _ => None,
    };
    let config = SinkConfig {
        hostname: "bench-sink".into(),
        tls: match tls {
            Tls::Starttls => TlsMode::Starttls,
            Tls::Implicit => TlsMode::Implicit,
            Tls::None => TlsMode::None,
        },
        server_tls,
        credentials,
        save_dir: None,
        verbose: false,
        discard: true,
        smtputf8: true,
    };
    let sink = Sink::start(listen, config)
        .await
        .map_err(|e| format!("{listen}: {e}"))?;
    println!("sink listening on {}", sink.addr);
    let sink = Arc::new(sink);
    if let Some(path) = count_file {
        let sink = sink.clone();
        tokio::spawn(async move {
            let mut last = usize::MAX;
            loop {
                let n = sink.accepted();
                if n != last {
                    let tmp = path.with_extension("tmp");
                    if std::fs::write(&tmp, format!("{n}\n")).is_ok() {
                        let _ = std::fs::rename(&tmp, &path);
                    }
                    last = n;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("sink accepted {} messages", sink.accepted());
    Ok(())
}
