//! Configuration: the YAML config file and the users file it names, parsed once into
//! typed structs and validated as a whole, so that every problem is reported at once.

mod abuse;
mod cidr;
pub mod edit;
pub mod perms;
mod phc;
mod senders;
mod units;
pub mod users;

pub use abuse::{AuthFailurePolicy, BrakePolicy};
pub use cidr::Cidr;
pub use phc::{MAX_M_COST, check_phc};
pub use senders::{SenderRule, normalize_domain};
pub use units::{HumanDuration, Size, parse_duration, parse_size};
pub use users::{User, Users, load_users, parse_users};

use crate::secret::Secret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the config is looked for when `-c` is not given and `$POSTERN_CONFIG` is unset.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/postern/postern.yaml";

/// One problem in a config or users file: which file, which key, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub key: String,
    pub why: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.why)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.why)
        }
    }
}

/// Every problem found while loading.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn add(&mut self, file: &Path, key: &str, why: impl Into<String>) {
        self.0.push(Problem {
            file: file.to_path_buf(),
            key: key.to_string(),
            why: why.into(),
        });
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// TLS on a listener or towards the smarthost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain TCP, upgraded by STARTTLS (port 587).
    Starttls,
    /// TLS from the first byte (port 465, RFC 8314).
    Implicit,
    /// No TLS at all: loopback tests, or a TLS-terminating proxy in front.
    None,
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Starttls => "starttls",
            TlsMode::Implicit => "implicit",
            TlsMode::None => "none",
        })
    }
}

/// How accepted mail leaves Postern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// Spool to disk, answer 250, deliver in the background.
    Queue,
    /// Relay each transaction to the smarthost while the client waits.
    Passthrough,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

// ---- raw sections, as written in YAML ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    address: String,
    tls: TlsMode,
    #[serde(default)]
    insecure_auth: bool,
    #[serde(default)]
    proxy_protocol: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunAs {
    user: String,
    group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificate: PathBuf,
    private_key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsers {
    file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmarthost {
    address: String,
    #[serde(default = "default_smarthost_tls")]
    tls: TlsMode,
    ca_file: Option<PathBuf>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default)]
    insecure_auth: bool,
    pool_size: Option<usize>,
    idle_timeout: Option<HumanDuration>,
    max_messages_per_connection: Option<u32>,
}

fn default_smarthost_tls() -> TlsMode {
    TlsMode::Starttls
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    r#match: String,
    smarthost: serde_yaml::Value,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    mode: Option<DeliveryMode>,
    spool_directory: Option<PathBuf>,
    concurrency: Option<usize>,
    retry_schedule: Option<Vec<HumanDuration>>,
    max_queue_lifetime: Option<HumanDuration>,
    delay_warning: Option<HumanDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_size: Option<Size>,
    max_recipients: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_errors: Option<u32>,
    ipv6_prefix: Option<u8>,
    max_junk_commands: Option<u32>,
    max_messages_per_session: Option<u32>,
}

/// Rate limits as written: every key optional so that a user's entry overrides only
/// what it names.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    messages_per_hour: Option<u32>,
    recipients_per_hour: Option<u32>,
    recipients_per_day: Option<u32>,
}

impl RawRateLimits {
    /// These limits, falling back to `defaults` for keys not given.
    pub fn over(&self, defaults: &RateLimits) -> RateLimits {
        RateLimits {
            messages_per_hour: self.messages_per_hour.or(defaults.messages_per_hour),
            recipients_per_hour: self.recipients_per_hour.or(defaults.recipients_per_hour),
            recipients_per_day: self.recipients_per_day.or(defaults.recipients_per_day),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    command: Option<HumanDuration>,
    data_block: Option<HumanDuration>,
    data_total: Option<HumanDuration>,
    tls_handshake: Option<HumanDuration>,
    upstream_connect: Option<HumanDuration>,
    upstream_command: Option<HumanDuration>,
    upstream_data_done: Option<HumanDuration>,
    shutdown_grace: Option<HumanDuration>,
    write: Option<HumanDuration>,
    unauthenticated: Option<HumanDuration>,
    session: Option<HumanDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAbuse {
    auth_failure_window: Option<HumanDuration>,
    auth_tarpit_after: Option<u32>,
    auth_failures_per_session: Option<u32>,
    auth_block_ip_after: Option<u32>,
    auth_block_user_after: Option<u32>,
    auth_block_time: Option<HumanDuration>,
    auth_block_max: Option<HumanDuration>,
    max_ips_per_user_per_hour: Option<u32>,
    suspend_after_limited_hours: Option<u32>,
    state_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    address: Option<String>,
    per_user: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReceived {
    include_client_ip: Option<bool>,
}

// ---- validated config ----

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file itself.
    pub path: PathBuf,
    pub hostname: String,
    pub listeners: Vec<Listener>,
    pub tls: Option<TlsFiles>,
    pub users_file: PathBuf,
    /// The smarthosts tried in order (failover) for senders no route matches.
    pub smarthosts: Vec<Smarthost>,
    /// Per-sender routes, first match wins.
    pub routes: Vec<Route>,
    pub delivery: Delivery,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    pub log: Log,
    pub timeouts: Timeouts,
    /// Whether the `Received:` header names the client's address.
    pub received_include_client_ip: bool,
    pub abuse: Abuse,
    pub metrics: Metrics,
    /// Load balancers allowed to send a PROXY header (listeners with `proxy_protocol`).
    pub trusted_proxies: Vec<Cidr>,
    /// The account to switch to after binding, when started as root.
    pub run_as: Option<RunAs>,
}

/// `run_as`: the user and group Postern drops to when started as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub group: Option<String>,
}

/// The optional Prometheus endpoint.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Where `/metrics` and `/healthz` are served; `None`: no listener.
    pub address: Option<SocketAddr>,
    /// Also count messages per user (one time series per user).
    pub per_user: bool,
}

/// Abuse protection: login failure penalties and the suspension brake.
#[derive(Debug, Clone)]
pub struct Abuse {
    pub auth_failures: AuthFailurePolicy,
    pub brake: BrakePolicy,
    /// Where suspensions are kept across restarts.
    pub state_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub address: SocketAddr,
    pub tls: TlsMode,
    /// Offer AUTH without TLS (only meaningful with `tls: none`).
    pub insecure_auth: bool,
    /// Expect a PROXY v1/v2 header first, from `trusted_proxies` only.
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Smarthost {
    /// Host name as written: used for TLS verification (SNI and certificate name).
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Where the password was read from.
    pub password_file: Option<PathBuf>,
    /// Send credentials even without TLS (loopback smarthosts only).
    pub insecure_auth: bool,
    /// Idle connections kept open for reuse.
    pub pool_size: usize,
    pub idle_timeout: Duration,
    pub max_messages_per_connection: u32,
}

/// Mail from senders matching `rule` goes to its own smarthosts.
#[derive(Debug, Clone)]
pub struct Route {
    pub rule: SenderRule,
    pub smarthosts: Vec<Smarthost>,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub mode: DeliveryMode,
    pub spool_directory: PathBuf,
    /// Deliveries to the smarthost at once (queue mode).
    pub concurrency: usize,
    /// Waits between attempts; the last one repeats.
    pub retry_schedule: Vec<Duration>,
    /// After this, a message still not delivered is bounced.
    pub max_queue_lifetime: Duration,
    /// Tell the sender once when a message is still undelivered after this long.
    pub delay_warning: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Protocol errors in one session before it is closed with 421.
    pub max_errors: u32,
    /// IPv6 clients are counted per prefix of this length by every per-address
    /// limit, gate and block (1 to 128; IPv4 is always one address).
    pub ipv6_prefix: u8,
    /// NOOP, VRFY, HELP, RSET and ETRN since the last accepted message before the
    /// session is closed with 421 (Postfix's `smtpd_junk_command_limit`).
    pub max_junk_commands: u32,
    /// Messages one session may send; the next MAIL gets 421 and the session closes.
    pub max_messages_per_session: u32,
}

/// Per-user sending limits; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub messages_per_hour: Option<u32>,
    pub recipients_per_hour: Option<u32>,
    pub recipients_per_day: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
}

/// Network timeouts; defaults follow RFC 5321 section 4.5.3.2.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Waiting for the next command line from a client.
    pub command: Duration,
    /// Waiting for the next chunk of DATA from a client.
    pub data_block: Duration,
    /// The whole DATA phase of one message, however the client trickles it.
    pub data_total: Duration,
    pub tls_handshake: Duration,
    pub upstream_connect: Duration,
    /// Waiting for the smarthost's reply to a command (greeting, EHLO, MAIL, RCPT, DATA).
    pub upstream_command: Duration,
    /// Waiting for the smarthost's reply after the end of data.
    pub upstream_data_done: Duration,
    /// How long SIGTERM waits for transactions in progress.
    pub shutdown_grace: Duration,
    /// Sending replies to a client that does not read them.
    pub write: Duration,
    /// From connection to a successful AUTH.
    pub unauthenticated: Duration,
    /// The whole life of a session, from connection to close.
    pub session: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            command: Duration::from_secs(300),
            data_block: Duration::from_secs(180),
            data_total: Duration::from_secs(1800),
            tls_handshake: Duration::from_secs(30),
            upstream_connect: Duration::from_secs(30),
            upstream_command: Duration::from_secs(300),
            upstream_data_done: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
            write: Duration::from_secs(30),
            unauthenticated: Duration::from_secs(300),
            session: Duration::from_secs(3600),
        }
    }
}

/// Picks the config path: `-c`, then `$POSTERN_CONFIG`, then the default.
pub fn resolve_path(cli: Option<PathBuf>) -> PathBuf {
    cli.or_else(|| std::env::var_os("POSTERN_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// Deserializes one top-level section, recording its error under its key.
fn section<T: DeserializeOwned>(
    map: &serde_yaml::Mapping,
    key: &str,
    file: &Path,
    problems: &mut Problems,
) -> Option<T> {
    let value = map.get(key)?;
    match serde_yaml::from_value(value.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.add(file, key, e.to_string());
            None
        }
    }
}

const KNOWN_KEYS: &[&str] = &[
    "hostname",
    "listeners",
    "tls",
    "users",
    "smarthost",
    "delivery",
    "limits",
    "rate_limits",
    "log",
    "timeouts",
    "received",
    "abuse",
    "routes",
    "metrics",
    "trusted_proxies",
    "run_as",
];

impl Config {
    /// Loads and validates the config at `path` and the users file it names.
    pub fn load(path: &Path) -> Result<(Config, Users), Problems> {
        let mut problems = Problems::default();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                problems.add(path, "", format!("cannot read the config file: {e}"));
                return Err(problems);
            }
        };
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let config = Config::from_yaml(&text, path, &base, &mut problems);
        if let Some(c) = &config {
            for (key, file, kind) in c.trusted_files() {
                for f in perms::audit(&file, kind, None) {
                    if f.fatal {
                        problems.add(path, &key, f.message);
                    }
                }
            }
        }
        let users = config
            .as_ref()
            .and_then(|c| load_users(&c.users_file, &c.rate_limits, &mut problems));
        match (config, users) {
            (Some(c), Some(u)) if problems.is_empty() => Ok((c, u)),
            _ => Err(problems),
        }
    }

    /// Every file whose exposure matters: (config key, path, kind).
    pub fn trusted_files(&self) -> Vec<(String, PathBuf, perms::Kind)> {
        let mut out = vec![
            (String::new(), self.path.clone(), perms::Kind::Config),
            (
                "users.file".into(),
                self.users_file.clone(),
                perms::Kind::Users,
            ),
        ];
        if let Some(t) = &self.tls {
            out.push((
                "tls.private_key".into(),
                t.private_key.clone(),
                perms::Kind::Secret,
            ));
        }
        let routed = self.routes.iter().flat_map(|r| r.smarthosts.iter());
        for s in self.smarthosts.iter().chain(routed) {
            if let Some(p) = &s.password_file
                && !out.iter().any(|(_, q, _)| q == p)
            {
                out.push((
                    "smarthost.password_file".into(),
                    p.clone(),
                    perms::Kind::Secret,
                ));
            }
        }
        out
    }

    /// Permission problems that do not stop the server, as log-ready sentences.
    /// `service_gid`: the group the server runs as, if known.
    pub fn permission_warnings(&self, service_gid: Option<u32>) -> Vec<String> {
        self.trusted_files()
            .into_iter()
            .flat_map(|(_, file, kind)| perms::audit(&file, kind, service_gid))
            .filter(|f| !f.fatal)
            .map(|f| f.message)
            .collect()
    }

    /// Parses and validates config text; relative paths are resolved against `base`.
    pub fn from_yaml(
        text: &str,
        file: &Path,
        base: &Path,
        problems: &mut Problems,
    ) -> Option<Config> {
        let before = problems.len();
        let root: serde_yaml::Value = match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                problems.add(file, "", e.to_string());
                return None;
            }
        };
        let Some(map) = root.as_mapping() else {
            problems.add(file, "", "the config must be a mapping of keys to values");
            return None;
        };
        for key in map.keys() {
            let name = key.as_str().unwrap_or("?");
            if !KNOWN_KEYS.contains(&name) {
                problems.add(
                    file,
                    name,
                    format!("unknown key (known: {})", KNOWN_KEYS.join(", ")),
                );
            }
        }
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

        let hostname = match section::<String>(map, "hostname", file, problems) {
            Some(h) => h,
            None => system_hostname(),
        };
        if hostname.is_empty() || hostname.contains(|c: char| c.is_whitespace() || c.is_control()) {
            problems.add(file, "hostname", "must be a host name without spaces");
        }

        let raw_listeners: Vec<RawListener> =
            section(map, "listeners", file, problems).unwrap_or_default();
        if raw_listeners.is_empty() && !problems.0.iter().any(|p| p.key == "listeners") {
            problems.add(file, "listeners", "at least one listener is needed");
        }
        let mut listeners = Vec::new();
        for (i, l) in raw_listeners.into_iter().enumerate() {
            let key = format!("listeners[{i}]");
            match l.address.parse::<SocketAddr>() {
                Ok(address) => {
                    if address.port() != 0
                        && listeners.iter().any(|x: &Listener| x.address == address)
                    {
                        problems.add(file, &format!("{key}.address"), "listed twice");
                    }
                    listeners.push(Listener {
                        address,
                        tls: l.tls,
                        insecure_auth: l.insecure_auth,
                        proxy_protocol: l.proxy_protocol,
                    })
                }
                Err(_) => problems.add(
                    file,
                    &format!("{key}.address"),
                    format!(
                        "{:?} is not an IP:port such as \"[::]:587\" or \"0.0.0.0:465\"",
                        l.address
                    ),
                ),
            }
            if l.insecure_auth && l.tls != TlsMode::None {
                problems.add(
                    file,
                    &format!("{key}.insecure_auth"),
                    "only applies to a listener with tls: none",
                );
            }
        }

        let tls = section::<RawTls>(map, "tls", file, problems).map(|t| TlsFiles {
            certificate: resolve(t.certificate),
            private_key: resolve(t.private_key),
        });
        let needs_tls = listeners.iter().any(|l| l.tls != TlsMode::None);
        match &tls {
            None if needs_tls && !problems.0.iter().any(|p| p.key == "tls") => problems.add(
                file,
                "tls",
                "a listener uses TLS, so tls.certificate and tls.private_key are needed",
            ),
            Some(t) => {
                if let Err(e) = crate::tls::load_server_config(t) {
                    problems.add(file, "tls", e.to_string());
                }
            }
            None => {}
        }

        let users_file = match section::<RawUsers>(map, "users", file, problems) {
            Some(u) => resolve(u.file),
            None => {
                if !map.contains_key("users") {
                    problems.add(file, "users", "users.file is needed");
                }
                PathBuf::new()
            }
        };

        let smarthost = match map.get("smarthost") {
            Some(v) => smarthost_list(v, "smarthost", file, &resolve, problems),
            None => {
                problems.add(file, "smarthost", "smarthost.address is needed");
                None
            }
        };
        let mut routes = Vec::new();
        for (i, r) in section::<Vec<RawRoute>>(map, "routes", file, problems)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let key = format!("routes[{i}]");
            let rule = SenderRule::parse(&r.r#match)
                .map_err(|e| problems.add(file, &format!("{key}.match"), e))
                .ok();
            let hosts = smarthost_list(
                &r.smarthost,
                &format!("{key}.smarthost"),
                file,
                &resolve,
                problems,
            );
            if let (Some(rule), Some(smarthosts)) = (rule, hosts) {
                routes.push(Route { rule, smarthosts });
            }
        }

        let d: RawDelivery = section(map, "delivery", file, problems).unwrap_or_default();
        let delivery = Delivery {
            mode: d.mode.unwrap_or(DeliveryMode::Queue),
            spool_directory: resolve(
                d.spool_directory
                    .unwrap_or_else(|| PathBuf::from("/var/spool/postern")),
            ),
            concurrency: d.concurrency.unwrap_or(8),
            retry_schedule: d
                .retry_schedule
                .map(|v| v.into_iter().map(|h| h.0).collect())
                .unwrap_or_else(|| {
                    [60, 300, 900, 3600, 7200, 14400]
                        .map(Duration::from_secs)
                        .to_vec()
                }),
            max_queue_lifetime: d
                .max_queue_lifetime
                .map(|h| h.0)
                .unwrap_or(Duration::from_secs(5 * 86_400)),
            delay_warning: d.delay_warning.map(|h| h.0).filter(|d| !d.is_zero()),
        };
        if delivery.concurrency == 0 {
            problems.add(file, "delivery.concurrency", "must be greater than 0");
        }
        if delivery.retry_schedule.is_empty() || delivery.retry_schedule.iter().any(|d| d.is_zero())
        {
            problems.add(
                file,
                "delivery.retry_schedule",
                "needs at least one duration, none of them 0",
            );
        }

        let l: RawLimits = section(map, "limits", file, problems).unwrap_or_default();
        let limits = Limits {
            max_message_size: l.max_message_size.map(|s| s.0).unwrap_or(25 << 20),
            max_recipients: l.max_recipients.unwrap_or(100),
            max_connections: l.max_connections.unwrap_or(1000),
            max_connections_per_ip: l.max_connections_per_ip.unwrap_or(50),
            max_errors: l.max_errors.unwrap_or(10),
            ipv6_prefix: l.ipv6_prefix.unwrap_or(64),
            max_junk_commands: l.max_junk_commands.unwrap_or(100),
            max_messages_per_session: l.max_messages_per_session.unwrap_or(100),
        };
        if !(1..=128).contains(&limits.ipv6_prefix) {
            problems.add(file, "limits.ipv6_prefix", "must be between 1 and 128");
        }
        for (k, v) in [
            ("max_message_size", limits.max_message_size),
            ("max_recipients", limits.max_recipients as u64),
            ("max_connections", limits.max_connections as u64),
            (
                "max_connections_per_ip",
                limits.max_connections_per_ip as u64,
            ),
            ("max_errors", limits.max_errors as u64),
            ("max_junk_commands", limits.max_junk_commands as u64),
            (
                "max_messages_per_session",
                limits.max_messages_per_session as u64,
            ),
        ] {
            if v == 0 {
                problems.add(file, &format!("limits.{k}"), "must be greater than 0");
            }
        }

        let rate_limits = section::<RawRateLimits>(map, "rate_limits", file, problems)
            .unwrap_or_default()
            .over(&RateLimits::default());

        let lg: RawLog = section(map, "log", file, problems).unwrap_or_default();
        let log = Log {
            format: lg.format.unwrap_or(LogFormat::Text),
            level: lg.level.unwrap_or_else(|| "info".into()),
        };
        if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
            problems.add(
                file,
                "log.level",
                format!(
                    "{:?} is not a level (error, warn, info, debug, trace)",
                    log.level
                ),
            );
        }

        let t: RawTimeouts = section(map, "timeouts", file, problems).unwrap_or_default();
        let d = Timeouts::default();
        let pick = |v: Option<HumanDuration>, default: Duration| v.map(|h| h.0).unwrap_or(default);
        let timeouts = Timeouts {
            command: pick(t.command, d.command),
            data_block: pick(t.data_block, d.data_block),
            data_total: pick(t.data_total, d.data_total),
            tls_handshake: pick(t.tls_handshake, d.tls_handshake),
            upstream_connect: pick(t.upstream_connect, d.upstream_connect),
            upstream_command: pick(t.upstream_command, d.upstream_command),
            upstream_data_done: pick(t.upstream_data_done, d.upstream_data_done),
            shutdown_grace: pick(t.shutdown_grace, d.shutdown_grace),
            write: pick(t.write, d.write),
            unauthenticated: pick(t.unauthenticated, d.unauthenticated),
            session: pick(t.session, d.session),
        };
        for (k, v) in [
            ("command", timeouts.command),
            ("data_block", timeouts.data_block),
            ("data_total", timeouts.data_total),
            ("tls_handshake", timeouts.tls_handshake),
            ("upstream_connect", timeouts.upstream_connect),
            ("upstream_command", timeouts.upstream_command),
            ("upstream_data_done", timeouts.upstream_data_done),
            ("write", timeouts.write),
            ("unauthenticated", timeouts.unauthenticated),
            ("session", timeouts.session),
        ] {
            if v.is_zero() {
                problems.add(file, &format!("timeouts.{k}"), "must be greater than 0");
            }
        }

        let r: RawReceived = section(map, "received", file, problems).unwrap_or_default();
        let m: RawMetrics = section(map, "metrics", file, problems).unwrap_or_default();
        let metrics = Metrics {
            address: m
                .address
                .as_ref()
                .and_then(|a| match a.parse::<SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        problems.add(
                            file,
                            "metrics.address",
                            format!("{a:?} is not an IP:port such as \"127.0.0.1:9587\""),
                        );
                        None
                    }
                }),
            per_user: m.per_user.unwrap_or(false),
        };

        let trusted_proxies = trusted_proxies(map, file, problems);
        if listeners.iter().any(|l| l.proxy_protocol) && trusted_proxies.is_empty() {
            problems.add(
                file,
                "trusted_proxies",
                "a listener has proxy_protocol: true, so list the load balancers' addresses \
                 (CIDR) allowed to send a PROXY header",
            );
        }
        let run_as = section::<RawRunAs>(map, "run_as", file, problems).map(|r| RunAs {
            user: r.user,
            group: r.group,
        });

        let a: RawAbuse = section(map, "abuse", file, problems).unwrap_or_default();
        let d = AuthFailurePolicy::default();
        let auth_failures = AuthFailurePolicy {
            window: pick(a.auth_failure_window, d.window),
            tarpit_after: a.auth_tarpit_after.unwrap_or(d.tarpit_after),
            per_session: a.auth_failures_per_session.unwrap_or(d.per_session),
            block_ip_after: a.auth_block_ip_after.unwrap_or(d.block_ip_after),
            block_user_after: a.auth_block_user_after.unwrap_or(d.block_user_after),
            block_time: pick(a.auth_block_time, d.block_time),
            block_max: pick(a.auth_block_max, d.block_max),
            ..d
        };
        for (k, v) in [
            ("auth_failures_per_session", auth_failures.per_session),
            ("auth_block_ip_after", auth_failures.block_ip_after),
            ("auth_block_user_after", auth_failures.block_user_after),
        ] {
            if v == 0 {
                problems.add(file, &format!("abuse.{k}"), "must be greater than 0");
            }
        }
        let abuse = Abuse {
            auth_failures,
            brake: BrakePolicy {
                max_ips_per_user_per_hour: a.max_ips_per_user_per_hour.filter(|&n| n > 0),
                suspend_after_limited_hours: a
                    .suspend_after_limited_hours
                    .or(Some(3))
                    .filter(|&n| n > 0),
            },
            state_file: resolve(
                a.state_file
                    .unwrap_or_else(|| delivery.spool_directory.join("suspended.yaml")),
            ),
        };
        if let Err(e) = crate::policy::brake::read_state(&abuse.state_file) {
            problems.add(file, "abuse.state_file", e);
        }

        if problems.len() != before {
            return None;
        }
        Some(Config {
            path: file.to_path_buf(),
            hostname,
            listeners,
            tls,
            users_file,
            smarthosts: smarthost?,
            routes,
            delivery,
            limits,
            rate_limits,
            log,
            timeouts,
            received_include_client_ip: r.include_client_ip.unwrap_or(true),
            abuse,
            metrics,
            trusted_proxies,
            run_as,
        })
    }
}

/// `trusted_proxies`: a list of addresses or CIDR networks.
fn trusted_proxies(map: &serde_yaml::Mapping, file: &Path, problems: &mut Problems) -> Vec<Cidr> {
    let raw: Vec<String> = section(map, "trusted_proxies", file, problems).unwrap_or_default();
    raw.iter()
        .enumerate()
        .filter_map(|(i, s)| {
            Cidr::parse(s)
                .map_err(|e| problems.add(file, &format!("trusted_proxies[{i}]"), e))
                .ok()
        })
        .collect()
}

fn validate_smarthost(
    s: RawSmarthost,
    key: &str,
    file: &Path,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    problems: &mut Problems,
) -> Option<Smarthost> {
    let before = problems.len();
    let (host, port) = match split_host_port(&s.address) {
        Some(hp) => hp,
        None => {
            problems.add(
                file,
                &format!("{key}.address"),
                format!("{:?} is not host:port", s.address),
            );
            (String::new(), 0)
        }
    };
    let ca_file = s.ca_file.map(resolve);
    if let Some(ca) = &ca_file
        && let Err(e) = crate::tls::load_ca_file(ca)
    {
        problems.add(file, &format!("{key}.ca_file"), e.to_string());
    }
    let password_file = s.password_file.clone().map(resolve);
    let password = match (&s.username, s.password_file.map(resolve)) {
        (Some(_), Some(pf)) => match std::fs::read_to_string(&pf).map(zeroize::Zeroizing::new) {
            Ok(text) => {
                let p = text.trim_end_matches(['\r', '\n']).to_string();
                if p.is_empty() {
                    problems.add(
                        file,
                        &format!("{key}.password_file"),
                        format!("{} is empty", pf.display()),
                    );
                }
                Some(Secret::new(p))
            }
            Err(e) => {
                problems.add(
                    file,
                    &format!("{key}.password_file"),
                    format!("cannot read {}: {e}", pf.display()),
                );
                None
            }
        },
        (Some(_), None) => {
            problems.add(
                file,
                &format!("{key}.password_file"),
                format!("needed with {key}.username"),
            );
            None
        }
        (None, Some(_)) => {
            problems.add(
                file,
                &format!("{key}.username"),
                format!("needed with {key}.password_file"),
            );
            None
        }
        (None, None) => None,
    };
    if s.username.is_some() && s.tls == TlsMode::None && !s.insecure_auth {
        problems.add(
            file,
            &format!("{key}.tls"),
            "credentials would be sent in clear text; use starttls or implicit (or insecure_auth: true for a loopback smarthost)",
        );
    }
    let pool_size = s.pool_size.unwrap_or(8);
    let max_messages_per_connection = s.max_messages_per_connection.unwrap_or(100);
    if max_messages_per_connection == 0 {
        problems.add(
            file,
            &format!("{key}.max_messages_per_connection"),
            "must be greater than 0",
        );
    }
    (problems.len() == before).then(|| Smarthost {
        host,
        port,
        tls: s.tls,
        ca_file,
        username: s.username,
        password,
        password_file,
        insecure_auth: s.insecure_auth,
        pool_size,
        idle_timeout: s
            .idle_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30)),
        max_messages_per_connection,
    })
}

/// A smarthost entry: one mapping, or a list of them tried in order.
fn smarthost_list(
    value: &serde_yaml::Value,
    key: &str,
    file: &Path,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    problems: &mut Problems,
) -> Option<Vec<Smarthost>> {
    let before = problems.len();
    let items: Vec<(String, &serde_yaml::Value)> = match value.as_sequence() {
        Some(seq) => seq
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{key}[{i}]"), v))
            .collect(),
        None => vec![(key.to_string(), value)],
    };
    if items.is_empty() {
        problems.add(file, key, "needs at least one smarthost");
    }
    let mut out = Vec::new();
    for (k, v) in items {
        match serde_yaml::from_value::<RawSmarthost>(v.clone()) {
            Ok(raw) => out.extend(validate_smarthost(raw, &k, file, resolve, problems)),
            Err(e) => problems.add(file, &k, e.to_string()),
        }
    }
    (problems.len() == before).then_some(out)
}

/// Splits `host:port` or `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        s.rsplit_once(':')?
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace()) {
        return None;
    }
    Some((host.to_string(), port.parse().ok().filter(|&p| p != 0)?))
}

/// The machine's host name, for the banner when `hostname` is not set.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests;
