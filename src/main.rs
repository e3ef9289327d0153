//! The `postern` command line.

use clap::{Parser, Subcommand};
use postern::config::{self, Config, LogFormat};
use postern::proto::printable::Printable;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "postern",
    version,
    about = "Authenticating SMTP submission proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy in the foreground, logging to stderr.
    Serve {
        /// Config file (default: $POSTERN_CONFIG, then /etc/postern/postern.yaml).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Validate the config and the users file it names; list every problem.
    CheckConfig {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Read one password and print its argon2id PHC string for the users file.
    HashPassword,
    /// Ask the running server to re-read the users file, the suspension list and the
    /// TLS certificate and key (like SIGHUP), and say whether it did.
    Reload {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Inspect and steer the queue.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Run a self-contained demo on loopback: self-signed TLS, a sample user and a
    /// stand-in smarthost.
    Demo {
        /// Folder for the demo's files (config, certificates, received messages).
        #[arg(long, default_value = "postern-demo")]
        dir: PathBuf,
        /// Submission (STARTTLS) listener.
        #[arg(long, default_value = "127.0.0.1:2587")]
        submission: std::net::SocketAddr,
        /// Implicit-TLS listener.
        #[arg(long, default_value = "127.0.0.1:2465")]
        smtps: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
enum QueueCmd {
    /// List spooled messages: id, age, sender, recipients, attempts, last error.
    List {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Ask the running server to retry every spooled message now.
    Flush {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Remove one spooled message.
    Delete {
        id: String,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user (password read like hash-password), then reload the running server.
    Add {
        name: String,
        /// An address or @domain the user may send as; repeat for more.
        #[arg(long = "sender")]
        senders: Vec<String>,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Set `disabled: true` for a user, then reload the running server.
    Disable {
        name: String,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// List users: name, state, senders.
    List {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Clear `disabled` and lift an automatic suspension, then reload the running server.
    Enable {
        name: String,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Cmd::Serve { config } => serve(config),
        Cmd::CheckConfig { config } => check_config(config),
        Cmd::HashPassword => hash_password(),
        Cmd::Reload { config } => reload(config),
        Cmd::User(UserCmd::Enable { name, config }) => user_enable(&name, config),
        Cmd::User(UserCmd::Add {
            name,
            senders,
            config,
        }) => user_add(&name, &senders, config),
        Cmd::User(UserCmd::Disable { name, config }) => user_disable(&name, config),
        Cmd::User(UserCmd::List { config }) => user_list(config),
        Cmd::Queue(QueueCmd::List { config }) => queue_list(config),
        Cmd::Queue(QueueCmd::Flush { config }) => queue_request(config, "flush".into()),
        Cmd::Queue(QueueCmd::Delete { id, config }) => queue_delete(&id, config),
        Cmd::Demo {
            dir,
            submission,
            smtps,
        } => {
            init_logging(LogFormat::Text, "info");
            let ports = postern::demo::DemoPorts { submission, smtps };
            match runtime().block_on(postern::demo::run(&dir, ports)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("postern demo: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn load(path: Option<PathBuf>) -> Result<(Config, config::Users), ExitCode> {
    let path = config::resolve_path(path);
    Config::load(&path).map_err(|problems| {
        eprintln!(
            "postern: {} problem(s) in the configuration:",
            problems.len()
        );
        eprint!("{problems}");
        ExitCode::from(1)
    })
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    let (config, users) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(config.log.format, &config.log.level);
    match runtime().block_on(postern::server::serve(config, users)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot run");
            ExitCode::from(2)
        }
    }
}

fn check_config(path: Option<PathBuf>) -> ExitCode {
    let (config, users) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!("{}: OK", config.path.display());
    for w in config.permission_warnings(None) {
        println!("  warning    {w}");
    }
    for l in &config.listeners {
        println!(
            "  listener   {} (tls: {}{})",
            l.address,
            l.tls,
            if l.insecure_auth {
                ", insecure_auth"
            } else {
                ""
            }
        );
    }
    println!(
        "  users      {} in {} ({} disabled)",
        users.len(),
        config.users_file.display(),
        users.disabled_count()
    );
    let describe = |s: &postern::config::Smarthost| {
        format!(
            "{}:{} (tls: {}, {})",
            s.host,
            s.port,
            s.tls,
            match &s.username {
                Some(u) => format!("AUTH as {u}"),
                None => "no AUTH".into(),
            }
        )
    };
    for s in &config.smarthosts {
        println!("  smarthost  {}", describe(s));
    }
    for r in &config.routes {
        for s in &r.smarthosts {
            println!("  route      {} -> {}", r.rule, describe(s));
        }
    }
    println!("  delivery   {:?}", config.delivery.mode);
    match postern::policy::brake::read_state(&config.abuse.state_file) {
        Ok(s) if s.is_empty() => {}
        Ok(s) => {
            for (name, sus) in &s {
                println!("  suspended  {name}: {}", sus.reason);
            }
        }
        Err(e) => println!("  suspended  cannot read: {e}"),
    }
    ExitCode::SUCCESS
}

fn queue_list(path: Option<PathBuf>) -> ExitCode {
    let (config, _) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let spool = postern::spool::store::Spool::at(&config.delivery.spool_directory);
    let envs = match spool.load_all(false) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            eprintln!(
                "postern: cannot read the spool {}: {e}",
                config.delivery.spool_directory.display()
            );
            return ExitCode::from(2);
        }
    };
    let now = postern::spool::store::unix_now();
    println!(
        "{:<22} {:>8} {:<32} {:>4} {:>8}  recipients / last error",
        "id", "age", "sender", "rcpt", "attempts"
    );
    // Senders, recipients and errors come from clients and smarthosts: escaped, so
    // that nothing in them can drive the operator's terminal.
    let show = |s: &str| Printable(s).to_string();
    for e in &envs {
        let pending: Vec<String> = e.pending().map(|r| show(&r.address)).collect();
        println!(
            "{:<22} {:>8} {:<32} {:>4} {:>8}  {}",
            e.id,
            postern::policy::rates::human(std::time::Duration::from_secs(
                now.saturating_sub(e.created)
            )),
            if e.from.is_empty() {
                "<>".into()
            } else {
                show(&e.from)
            },
            pending.len(),
            e.attempts,
            pending.join(", ")
        );
        if let Some(err) = &e.last_error {
            println!("{:<22} last error: {}", "", show(err));
        }
    }
    println!("{} message(s) queued", envs.len());
    ExitCode::SUCCESS
}

fn queue_request(path: Option<PathBuf>, line: String) -> ExitCode {
    let (config, _) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let socket = postern::control::socket_path(&config.delivery.spool_directory);
    match postern::control::request(&socket, &line) {
        Ok(answer) if answer.starts_with("ok") => {
            println!("{}", answer.trim_start_matches("ok "));
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            eprintln!("postern: {}", answer.trim_start_matches("err "));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!(
                "postern: cannot reach the running server at {}: {e}",
                socket.display()
            );
            ExitCode::from(2)
        }
    }
}

fn queue_delete(id: &str, path: Option<PathBuf>) -> ExitCode {
    if !postern::spool::store::valid_id(id) {
        eprintln!("postern: {id:?} is not a queue id");
        return ExitCode::from(1);
    }
    let (config, _) = match load(path.clone()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let socket = postern::control::socket_path(&config.delivery.spool_directory);
    if socket.exists() && postern::control::request(&socket, "status").is_ok() {
        // The server is running: let it delete, so an attempt in flight is not
        // written back.
        return queue_request(path, format!("delete {id}"));
    }
    match postern::spool::store::Spool::at(&config.delivery.spool_directory).remove(id) {
        Ok(true) => {
            println!("{id} deleted");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("postern: {id} is not queued");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("postern: {e}");
            ExitCode::from(2)
        }
    }
}

/// Tells a running server to reload and says what happened: exit 0 when it reloaded
/// or when no server runs (the change applies at its next start), 2 when a server
/// answered that the reload failed, or could not be asked.
fn tell_server_to_reload(config: &Config) -> ExitCode {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    let socket = postern::control::socket_path(&config.delivery.spool_directory);
    match postern::control::request(&socket, "reload") {
        Ok(a) if a.starts_with("ok") => {
            println!("the running server reloaded the users file");
            ExitCode::SUCCESS
        }
        Ok(a) => {
            eprintln!(
                "postern: the file was changed, but the running server's reload failed (it keeps the old version of what failed): {}",
                a.trim_start_matches("err ")
            );
            ExitCode::from(2)
        }
        Err(e) if matches!(e.kind(), NotFound | ConnectionRefused) => {
            println!("no running server answered; the change applies at the next start or SIGHUP");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "postern: the file was changed, but the running server at {} could not be asked to reload: {e}",
                socket.display()
            );
            ExitCode::from(2)
        }
    }
}

/// `postern reload`: exit 0 when the server reloaded, 2 when it did not (saying
/// why) or when no server answers.
fn reload(path: Option<PathBuf>) -> ExitCode {
    // Only the config file is read here: whether the users file is valid is the
    // server's answer to give (it keeps the old one if not).
    let path = config::resolve_path(path);
    let mut problems = config::Problems::default();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("postern: cannot read {}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    let base = path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let Some(config) = Config::from_yaml(&text, &path, &base, &mut problems) else {
        eprintln!(
            "postern: {} problem(s) in the configuration:\n{problems}",
            problems.len()
        );
        return ExitCode::from(1);
    };
    let socket = postern::control::socket_path(&config.delivery.spool_directory);
    match postern::control::request(&socket, "reload") {
        Ok(a) if a.starts_with("ok") => {
            println!("{}", a.trim_start_matches("ok "));
            ExitCode::SUCCESS
        }
        Ok(a) => {
            eprintln!(
                "postern: reload failed (the server keeps the old version of what failed): {}",
                a.trim_start_matches("err ")
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!(
                "postern: cannot reach the running server at {}: {e}",
                socket.display()
            );
            ExitCode::from(2)
        }
    }
}

/// Validates new users-file text, then writes it atomically.
fn replace_users_file(config: &Config, text: &str) -> Result<(), ExitCode> {
    let mut problems = config::Problems::default();
    if config::parse_users(text, &config.users_file, &config.rate_limits, &mut problems).is_none() {
        eprintln!("postern: the edited users file would be invalid, nothing written:\n{problems}");
        return Err(ExitCode::from(1));
    }
    config::edit::write_atomically(&config.users_file, text).map_err(|e| {
        eprintln!("postern: cannot write {}: {e}", config.users_file.display());
        ExitCode::from(2)
    })
}

fn rewrite_from_parsed(text: &str, change: impl FnOnce(&mut serde_yaml::Value)) -> Option<String> {
    let mut v: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    change(&mut v);
    eprintln!("postern: note: the users file had to be rewritten; its comments are lost");
    serde_yaml::to_string(&v).ok()
}

fn user_add(name: &str, senders: &[String], path: Option<PathBuf>) -> ExitCode {
    let (config, users) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if users.get(name).is_some() {
        eprintln!("postern: user {name} already exists");
        return ExitCode::from(1);
    }
    for s in senders {
        if let Err(e) = postern::policy::senders::SenderRule::parse(s) {
            eprintln!("postern: --sender {e}");
            return ExitCode::from(1);
        }
    }
    let password = match read_password() {
        Ok(p) => p,
        Err(code) => return code,
    };
    let hash = match postern::auth::hash_password(password.expose()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("postern: hashing failed: {e}");
            return ExitCode::from(2);
        }
    };
    let text = std::fs::read_to_string(&config.users_file).unwrap_or_default();
    let block = config::edit::user_block(name, &hash, senders);
    let new = config::edit::append_user(&text, &block).or_else(|| {
        rewrite_from_parsed(&text, |v| {
            let entry: serde_yaml::Value =
                serde_yaml::from_str(&block.replacen("  - ", "", 1).replace("\n    ", "\n"))
                    .unwrap_or_default();
            if !v["users"].is_sequence() {
                v["users"] = serde_yaml::Value::Sequence(vec![]);
            }
            if let Some(list) = v["users"].as_sequence_mut() {
                list.push(entry);
            }
        })
    });
    let Some(new) = new else {
        eprintln!("postern: cannot edit {}", config.users_file.display());
        return ExitCode::from(1);
    };
    if let Err(code) = replace_users_file(&config, &new) {
        return code;
    }
    println!("added {name} to {}", config.users_file.display());
    tell_server_to_reload(&config)
}

fn user_disable(name: &str, path: Option<PathBuf>) -> ExitCode {
    let (config, users) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if users.get(name).is_none() {
        eprintln!("postern: no user {name}");
        return ExitCode::from(1);
    }
    if let Err(code) = write_disabled(&config, name, true) {
        return code;
    }
    println!("disabled {name}");
    tell_server_to_reload(&config)
}

/// Sets (`disabled: true`) or clears a user's `disabled` in the users file: a text
/// edit that keeps comments, else a rewrite of the parsed file; validated, atomic.
fn write_disabled(config: &Config, name: &str, disabled: bool) -> Result<(), ExitCode> {
    let text = std::fs::read_to_string(&config.users_file).unwrap_or_default();
    let new = config::edit::set_disabled(&text, name, disabled).or_else(|| {
        rewrite_from_parsed(&text, |v| {
            if let Some(list) = v["users"].as_sequence_mut() {
                for u in list.iter_mut().filter(|u| u["name"].as_str() == Some(name)) {
                    if let Some(m) = u.as_mapping_mut() {
                        if disabled {
                            m.insert("disabled".into(), serde_yaml::Value::Bool(true));
                        } else {
                            m.remove("disabled");
                        }
                    }
                }
            }
        })
    });
    let Some(new) = new else {
        eprintln!("postern: cannot edit {}", config.users_file.display());
        return Err(ExitCode::from(1));
    };
    replace_users_file(config, &new)
}

fn user_list(path: Option<PathBuf>) -> ExitCode {
    let (config, users) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let suspended =
        postern::policy::brake::read_state(&config.abuse.state_file).unwrap_or_default();
    for u in users.iter() {
        let state = if u.disabled {
            "disabled"
        } else if suspended.contains_key(&u.name) {
            "suspended"
        } else {
            "active"
        };
        let senders: Vec<String> = u.senders.iter().map(|s| s.to_string()).collect();
        println!("{:<24} {:<10} {}", u.name, state, senders.join(", "));
    }
    ExitCode::SUCCESS
}

fn user_enable(name: &str, path: Option<PathBuf>) -> ExitCode {
    let (config, users) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(user) = users.get(name) else {
        eprintln!("postern: no user {name}");
        return ExitCode::from(1);
    };
    let mut changed = false;
    if user.disabled {
        if let Err(code) = write_disabled(&config, name, false) {
            return code;
        }
        println!("{name}: no longer disabled");
        changed = true;
    }
    match lift_keeping_owner(&config.abuse.state_file, name) {
        Ok(true) => {
            println!("{name}: suspension lifted");
            changed = true;
        }
        Ok(false) => {}
        Err(e) => {
            eprintln!("postern: {e}");
            return ExitCode::from(2);
        }
    }
    if !changed {
        eprintln!("postern: {name} is neither disabled nor suspended");
        return ExitCode::from(1);
    }
    tell_server_to_reload(&config)
}

/// Lifts a suspension in the state file, then gives the file back the owner, group
/// and mode it had: run as root, the rewrite would otherwise leave it `root:root`, and
/// the server (run_as) could neither re-read nor update it.
fn lift_keeping_owner(state_file: &std::path::Path, name: &str) -> Result<bool, String> {
    use std::os::unix::fs::MetadataExt;
    let before = std::fs::metadata(state_file).ok();
    let lifted = postern::policy::brake::lift(state_file, name)?;
    if let Some(m) = before {
        let after = std::fs::metadata(state_file).map_err(|e| e.to_string())?;
        let keep =
            |e: std::io::Error| format!("{}: cannot keep its owner: {e}", state_file.display());
        if (after.uid(), after.gid()) != (m.uid(), m.gid()) {
            std::os::unix::fs::chown(state_file, Some(m.uid()), Some(m.gid())).map_err(keep)?;
        }
        if after.mode() != m.mode() {
            std::fs::set_permissions(state_file, m.permissions()).map_err(keep)?;
        }
    }
    Ok(lifted)
}

/// Reads a password: a no-echo prompt (twice) on a terminal, else one stdin line.
fn read_password() -> Result<postern::secret::Secret, ExitCode> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ");
        let second = rpassword::prompt_password("Again: ");
        match (first, second) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                eprintln!("postern: the passwords differ");
                return Err(ExitCode::from(1));
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("postern: cannot read the password: {e}");
                return Err(ExitCode::from(2));
            }
        }
    } else {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
            eprintln!("postern: cannot read the password: {e}");
            return Err(ExitCode::from(2));
        }
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    let password = postern::secret::Secret::new(password);
    if password.expose().is_empty() {
        eprintln!("postern: the password is empty");
        return Err(ExitCode::from(1));
    }
    Ok(password)
}

fn hash_password() -> ExitCode {
    let password = match read_password() {
        Ok(p) => p,
        Err(code) => return code,
    };
    match postern::auth::hash_password(password.expose()) {
        Ok(h) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("postern: hashing failed: {e}");
            ExitCode::from(2)
        }
    }
}
