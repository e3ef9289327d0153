//! Test harness: a stand-in smarthost that demands STARTTLS and AUTH, and the real
//! `postern` binary started on loopback against it with a throw-away CA.
#![allow(dead_code)]

pub mod client;
pub mod oauth_standins;
pub mod postgres;
pub mod quota;
pub mod redis;
pub mod web;

use postern::config::{TlsFiles, TlsMode};
use postern::sink::{Sink, SinkConfig, TokenCheck};
use postern::tls::{TestCa, load_server_config};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const RELAY_USER: &str = "relay-user";
pub const RELAY_PASSWORD: &str = "relay-password";

/// A user for the users file.
#[derive(Clone)]
pub struct TestUser {
    pub name: &'static str,
    pub password: &'static str,
    pub senders: Vec<&'static str>,
    pub disabled: bool,
    /// Extra YAML lines for this user (indented four spaces), e.g. rate_limits.
    pub extra: &'static str,
}

impl TestUser {
    pub fn new(name: &'static str, password: &'static str, senders: &[&'static str]) -> TestUser {
        TestUser {
            name,
            password,
            senders: senders.to_vec(),
            disabled: false,
            extra: "",
        }
    }
}

/// What a test wants from the setup.
pub struct Setup {
    pub users: Vec<TestUser>,
    /// Extra top-level YAML appended to the config (limits, timeouts…).
    pub extra: String,
    /// Point the smarthost at a closed port.
    pub smarthost_down: bool,
    /// Also open a `tls: none` listener with `insecure_auth: true`.
    pub plain_listener: bool,
    /// Queue mode (spool in the temp dir, retries after 1s, 2s, 2s…) instead of
    /// passthrough.
    pub queue: bool,
    /// Replaces the `smarthost:` section (and may add `routes:`); `{SINK}` stands for
    /// the stand-in smarthost's port, `{RELAY}` for the standard credentials lines.
    pub smarthost_yaml: Option<String>,
    /// Extra files to write into the config folder first.
    pub files: Vec<(&'static str, String)>,
    /// Extra keys for the `delivery:` section, each line indented two spaces.
    pub delivery_extra: &'static str,
    /// Put the STARTTLS and implicit listeners behind a load balancer: they expect a
    /// PROXY header, from this `trusted_proxies` entry.
    pub proxy_from: Option<&'static str>,
    /// Fixed ports for the STARTTLS and implicit listeners instead of `0`.
    pub listen_ports: Option<(u16, u16)>,
    /// A command that runs postern (its path and arguments are appended).
    pub wrapper: Vec<String>,
    /// Extra environment for the postern process.
    pub env: Vec<(&'static str, String)>,
    /// Runs on the config folder just before postern starts.
    pub before_launch: Option<fn(&Path)>,
    /// The test CA to use (one a stand-in started before the harness already
    /// trusts); a new one when `None`.
    pub ca: Option<TestCa>,
    /// The stand-in smarthost also offers AUTH XOAUTH2, checked by this.
    pub sink_xoauth2: Option<TokenCheck>,
    /// `log.level` instead of `debug`.
    pub log_level: Option<&'static str>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            users: vec![
                TestUser::new(
                    "alice",
                    "alice-password",
                    &["@alice.example", "boss@corp.example"],
                ),
                TestUser {
                    disabled: true,
                    ..TestUser::new("mallory", "mallory-password", &["@mallory.example"])
                },
            ],
            extra: String::new(),
            smarthost_down: false,
            plain_listener: false,
            queue: false,
            smarthost_yaml: None,
            files: Vec::new(),
            delivery_extra: "",
            proxy_from: None,
            listen_ports: None,
            wrapper: Vec::new(),
            env: Vec::new(),
            before_launch: None,
            ca: None,
            sink_xoauth2: None,
            log_level: None,
        }
    }
}

/// A running Postern plus its smarthost.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub sink: Sink,
    sink_files: TlsFiles,
    sink_xoauth2: Option<TokenCheck>,
    pub smarthost_port: u16,
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
    pub starttls: SocketAddr,
    pub implicit: SocketAddr,
    pub plain: Option<SocketAddr>,
    want_plain: bool,
    pub config_path: PathBuf,
    wrapper: Vec<String>,
    env: Vec<(&'static str, String)>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn sink_config(files: &TlsFiles, xoauth2: Option<TokenCheck>) -> SinkConfig {
    SinkConfig {
        hostname: "sink.test".into(),
        tls: TlsMode::Starttls,
        server_tls: Some(load_server_config(files).unwrap()),
        credentials: Some((RELAY_USER.into(), RELAY_PASSWORD.into())),
        save_dir: None,
        verbose: false,
        discard: false,
        smtputf8: true,
        xoauth2,
    }
}

pub fn postern_bin() -> &'static str {
    env!("CARGO_BIN_EXE_postern")
}

/// Writes a file readable by its owner only, as an operator would keep keys and
/// secrets (Postern refuses world-readable ones).
pub fn write(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Writes certificates for "localhost" and "127.0.0.1" signed by `ca` into `dir`.
pub fn write_cert(ca: &TestCa, dir: &Path, prefix: &str) -> TlsFiles {
    let cert = ca.issue(&["localhost", "127.0.0.1"]).unwrap();
    let files = TlsFiles {
        certificate: dir.join(format!("{prefix}-cert.pem")),
        private_key: dir.join(format!("{prefix}-key.pem")),
    };
    write(&files.certificate, &cert.cert_pem);
    write(&files.private_key, &cert.key_pem);
    files
}

pub fn users_yaml(users: &[TestUser]) -> String {
    let mut y = String::from("users:\n");
    for u in users {
        // An empty password: a user known only by its networks (in `extra`).
        let password = if u.password.is_empty() {
            String::new()
        } else {
            let hash = postern::auth::hash_password(u.password).unwrap();
            format!("    password: \"{hash}\"\n")
        };
        let senders: Vec<String> = u.senders.iter().map(|s| format!("\"{s}\"")).collect();
        y.push_str(&format!(
            "  - name: {}\n{password}    senders: [{}]\n    disabled: {}\n{}",
            u.name,
            senders.join(", "),
            u.disabled,
            u.extra
        ));
    }
    y
}

impl Harness {
    pub async fn start(mut setup: Setup) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let ca = match setup.ca.take() {
            Some(ca) => ca,
            None => TestCa::new("Postern test CA").unwrap(),
        };
        write(&dir.path().join("ca.pem"), &ca.cert_pem);
        let server_files = write_cert(&ca, dir.path(), "server");
        let sink_files = write_cert(&ca, dir.path(), "sink");
        let sink_xoauth2 = setup.sink_xoauth2.take();
        let config = sink_config(&sink_files, sink_xoauth2.clone());
        let sink = Sink::start("127.0.0.1:0".parse().unwrap(), config)
            .await
            .unwrap();
        let smarthost_port = if setup.smarthost_down {
            // A port nothing listens on, until a test starts a smarthost there.
            free_port()
        } else {
            sink.addr.port()
        };
        write(
            &dir.path().join("smarthost.secret"),
            &format!("{RELAY_PASSWORD}\n"),
        );
        write(&dir.path().join("users.yaml"), &users_yaml(&setup.users));
        let proxy = if setup.proxy_from.is_some() {
            "    proxy_protocol: true\n"
        } else {
            ""
        };
        let (p587, p465) = setup.listen_ports.unwrap_or((0, 0));
        let mut config = format!(
            "hostname: postern.test\n\
             listeners:\n  - address: \"127.0.0.1:{p587}\"\n    tls: starttls\n{proxy}  - address: \"127.0.0.1:{p465}\"\n    tls: implicit\n{proxy}",
        );
        if let Some(cidr) = setup.proxy_from {
            config.insert_str(0, &format!("trusted_proxies: [\"{cidr}\"]\n"));
        }
        if setup.plain_listener {
            config
                .push_str("  - address: \"127.0.0.1:0\"\n    tls: none\n    insecure_auth: true\n");
        }
        config.push_str(&format!(
            "tls:\n  certificate: {}\n  private_key: {}\n\
             users:\n  file: users.yaml\n\
             {smarthost}\
             delivery:\n  mode: {mode}\n  spool_directory: spool\n  retry_schedule: [1s, 2s]\n{delivery_extra}\
             log:\n  level: {log_level}\n",
            server_files.certificate.display(),
            server_files.private_key.display(),
            mode = if setup.queue { "queue" } else { "passthrough" },
            delivery_extra = setup.delivery_extra,
            log_level = setup.log_level.unwrap_or("debug"),
            smarthost = match &setup.smarthost_yaml {
                Some(y) => y
                    .replace("{SINK}", &sink.addr.port().to_string())
                    .replace("{RELAY}", &format!("tls: starttls\n    ca_file: ca.pem\n    username: {RELAY_USER}\n    password_file: smarthost.secret")),
                None => format!("smarthost:\n  address: \"localhost:{smarthost_port}\"\n  tls: starttls\n  ca_file: ca.pem\n  username: {RELAY_USER}\n  password_file: smarthost.secret\n"),
            },
        ));
        for (name, content) in &setup.files {
            write(&dir.path().join(name), content);
        }
        config.push_str(&setup.extra);
        let config_path = dir.path().join("postern.yaml");
        write(&config_path, &config);
        if let Some(hook) = setup.before_launch {
            hook(dir.path());
        }
        let mut h = Harness {
            dir,
            ca,
            sink,
            sink_files,
            sink_xoauth2,
            smarthost_port,
            child: None,
            logs: Arc::new(Mutex::new(Vec::new())),
            starttls: "0.0.0.0:0".parse().unwrap(),
            implicit: "0.0.0.0:0".parse().unwrap(),
            plain: None,
            want_plain: setup.plain_listener,
            config_path,
            wrapper: setup.wrapper,
            env: setup.env,
        };
        h.launch().await;
        h
    }

    /// Starts the postern process (again) on the same files and waits until ready.
    pub async fn launch(&mut self) {
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(postern_bin());
                c
            }
            None => Command::new(postern_bin()),
        };
        let mut child = command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["serve", "-c"])
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        self.child = Some(child);
        self.logs = logs;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut ready = false;
        while Instant::now() < deadline && !ready {
            ready = self.logs().iter().any(|l| l.contains(" ready"));
            if self.child_mut().try_wait().unwrap().is_some() {
                // Give the log reader a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ready, "postern did not start:\n{}", self.logs().join("\n"));
        for line in self.logs() {
            if !line.contains(" listening ") {
                continue;
            }
            let addr: SocketAddr = field(&line, "address").parse().unwrap();
            match field(&line, "tls") {
                "starttls" => self.starttls = addr,
                "implicit" => self.implicit = addr,
                "none" if self.want_plain => self.plain = Some(addr),
                other => panic!("unexpected listener {other}"),
            }
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("postern is running")
    }

    /// The process id of the running postern.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("postern is running").id()
    }

    /// Kills postern with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts another stand-in smarthost on `port` with its own credentials.
    pub async fn sink_at(&self, port: u16, user: &str, password: &str) -> Sink {
        let mut config = sink_config(&self.sink_files, self.sink_xoauth2.clone());
        config.credentials = Some((user.into(), password.into()));
        Sink::start(SocketAddr::new("127.0.0.1".parse().unwrap(), port), config)
            .await
            .unwrap()
    }

    /// Starts a stand-in smarthost on `port` (standard credentials) that does not
    /// offer SMTPUTF8.
    pub async fn sink_without_smtputf8(&self, port: u16) -> Sink {
        let mut config = sink_config(&self.sink_files, self.sink_xoauth2.clone());
        config.smtputf8 = false;
        Sink::start(SocketAddr::new("127.0.0.1".parse().unwrap(), port), config)
            .await
            .unwrap()
    }

    /// Starts a stand-in smarthost on `port` (standard credentials) that demands a
    /// TLS client certificate issued by the CA in `client_ca`, as a Microsoft 365
    /// certificate connector does.
    pub async fn sink_requiring_client_cert(&self, port: u16, client_ca: &Path) -> Sink {
        let mut config = sink_config(&self.sink_files, None);
        let tls = postern::tls::server_config(&self.sink_files, Some(client_ca)).unwrap();
        config.server_tls = Some(tls);
        Sink::start(SocketAddr::new("127.0.0.1".parse().unwrap(), port), config)
            .await
            .unwrap()
    }

    /// Starts a stand-in smarthost on the configured smarthost port (for a test that
    /// began with the smarthost down).
    pub async fn start_smarthost(&self) -> Sink {
        Sink::start(
            SocketAddr::new("127.0.0.1".parse().unwrap(), self.smarthost_port),
            sink_config(&self.sink_files, self.sink_xoauth2.clone()),
        )
        .await
        .unwrap()
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits for a log line containing `needle`.
    pub async fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.logs().iter().any(|l| l.contains(needle)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem.clone()
    }

    /// A client connected to the STARTTLS port, upgraded, EHLO'd and logged in.
    pub async fn session(&self, user: &str, password: &str) -> client::Client {
        let mut c = client::Client::connect(self.starttls).await;
        c.expect("EHLO client.test", 250).await;
        let mut c = c.starttls(&self.ca_pem()).await;
        c.expect("EHLO client.test", 250).await;
        let r = c.auth_plain(user, password).await;
        assert_eq!(r.code, 235, "{r:?}");
        c
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child_mut().try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "postern did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A loopback port nothing listens on (bound, then released), for a server a test
/// starts later. It is taken below Linux's ephemeral range (32768-60999): a port
/// the kernel handed out for `bind(0)` is just as free for the next outgoing
/// connection of any test running in parallel, which then makes the later bind
/// fail with "address in use".
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + seed.wrapping_add(n.wrapping_mul(7_919)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {}", FIRST + SPAN);
}

/// The value of `key=value` in a text log line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line.find(&format!("{key}=")).unwrap() + key.len() + 1;
    let rest = &line[start..];
    rest.split_whitespace().next().unwrap().trim_matches('"')
}

/// A message body with CRLF line ends.
pub fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// Whether a tool is installed; in CI a missing tool fails the test instead of
/// skipping it, so that `.ci/run` can never silently stop exercising it.
pub fn have(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} must be installed in CI (.ci/run installs it)"
        );
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

/// Runs `postern ARGS -c CONFIG`: whether it succeeded, and its output.
pub fn cli(h: &Harness, args: &[&str]) -> (bool, String) {
    let out = Command::new(postern_bin())
        .args(args)
        .arg("-c")
        .arg(&h.config_path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Asserts that no log line holds the stand-ins' client secret or refresh token,
/// nor any of `tokens`, plain, as a bearer header or in the base64 XOAUTH2 form.
pub fn assert_no_secrets(logs: &[String], tokens: &[String]) {
    use oauth_standins::{CLIENT_SECRET, MAILBOX, REFRESH_TOKEN};
    use postern::proto::sasl::encode;
    let mut needles = vec![
        CLIENT_SECRET.to_string(),
        REFRESH_TOKEN.to_string(),
        encode(CLIENT_SECRET),
        encode(REFRESH_TOKEN),
        // A URL-encoded form body would show the secret this way.
        CLIENT_SECRET.replace('~', "%7E"),
    ];
    for t in tokens {
        needles.push(t.clone());
        needles.push(encode(&format!(
            "user={MAILBOX}\x01auth=Bearer {t}\x01\x01"
        )));
        // The token's base64 at each alignment, without the padding-dependent ends.
        for skip in 0..3 {
            let b = encode(&format!("{}{t}", &"xx"[..skip]));
            needles.push(b[4..b.len() - 4].to_string());
        }
    }
    for line in logs {
        for n in &needles {
            assert!(!line.contains(n.as_str()), "a secret in the log: {line}");
        }
    }
}
