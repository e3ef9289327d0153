//! `postern user add|disable|enable|list`: changes through the users store (the same
//! store the admin API uses: the users file, validated, atomic, comments kept where a
//! text edit can; or PostgreSQL) and of the suspension list. After a change to the
//! file the running server is asked to reload, as it has no other way to hear of it;
//! servers on a database hear of it by NOTIFY.

use super::load;
use super::password::read_password;
use super::reload::tell_server_to_reload;
use postern::config::{self, Config};
use postern::users::{
    FileStore, NewUser, Password, PgStore, StoreError, UserChange, UsersStore, postgres,
};
use std::path::PathBuf;
use std::process::ExitCode;

/// The configured store, with no server in this process to put changes in force.
/// The store's warnings (a rewrite that loses comments, a bad row) go to stderr.
fn store(config: &Config) -> Box<dyn UsersStore> {
    static LOGGING: std::sync::Once = std::sync::Once::new();
    LOGGING.call_once(|| super::init_logging(config::LogFormat::Text, "warn"));
    let database = config.users_database.as_ref();
    match database.and_then(|db| postgres::Database::new(db).ok()) {
        Some(db) => Box::new(PgStore::new(
            db,
            config.rate_limits.clone(),
            std::sync::Arc::new(|_| {}),
        )),
        None => Box::new(FileStore::new(
            config.users_file.clone(),
            config.rate_limits.clone(),
            |_| {},
        )),
    }
}

/// Where the users are, for messages.
fn place(config: &Config) -> String {
    match &config.users_database {
        Some(_) => "the users database".into(),
        None => config.users_file.display().to_string(),
    }
}

/// After a change: a server on the users file is asked to reload; servers on a
/// database pick the change up themselves.
fn after_change(config: &Config) -> ExitCode {
    if config.users_database.is_some() {
        println!("running servers pick the change up within a few seconds");
        return ExitCode::SUCCESS;
    }
    tell_server_to_reload(config)
}

/// Runs one store operation to its end.
fn run<T>(op: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    super::runtime().block_on(op)
}

/// Says why a store operation failed; exit 1 for the caller's mistake, 2 for a
/// file that cannot be read or written.
fn failed(name: &str, e: StoreError) -> ExitCode {
    match e {
        StoreError::NotFound => eprintln!("postern: no user {name}"),
        StoreError::Exists => eprintln!("postern: user {name} already exists"),
        StoreError::Invalid(reasons) => {
            eprintln!("postern: the user would be invalid, nothing written:");
            for r in reasons {
                eprintln!("  {r}");
            }
        }
        StoreError::Unavailable(why) => {
            eprintln!("postern: {why}");
            return ExitCode::from(2);
        }
    }
    ExitCode::from(1)
}

/// Adds a user with a password read like `hash-password`, or, given networks, a
/// device user without one.
pub fn add(name: &str, senders: &[String], networks: &[String], path: Option<PathBuf>) -> ExitCode {
    let (config, users) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // What can be checked before the password prompt is.
    if users.get(name).is_some() {
        return failed(name, StoreError::Exists);
    }
    if let Err(e) = postern::users::check_name(name) {
        eprintln!("postern: {e}");
        return ExitCode::from(1);
    }
    for s in senders {
        if let Err(e) = config::SenderRule::parse(s) {
            eprintln!("postern: --sender {e}");
            return ExitCode::from(1);
        }
    }
    for n in networks {
        if let Err(e) = config::Cidr::parse(n) {
            eprintln!("postern: --network {e}");
            return ExitCode::from(1);
        }
    }
    let password = if networks.is_empty() {
        match read_password() {
            Ok(p) => Some(Password::Plain(p)),
            Err(code) => return code,
        }
    } else {
        None
    };
    let new = NewUser {
        name: name.to_string(),
        password,
        senders: senders.to_vec(),
        networks: networks.to_vec(),
        ..NewUser::default()
    };
    if let Err(e) = run(store(&config).create(new)) {
        return failed(name, e);
    }
    println!("added {name} to {}", place(&config));
    after_change(&config)
}

pub fn disable(name: &str, path: Option<PathBuf>) -> ExitCode {
    let (config, _) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = set_disabled(&config, name, true) {
        return failed(name, e);
    }
    println!("disabled {name}");
    after_change(&config)
}

fn set_disabled(config: &Config, name: &str, disabled: bool) -> Result<(), StoreError> {
    let change = UserChange {
        disabled: Some(disabled),
        ..UserChange::default()
    };
    run(store(config).update(name, change)).map(|_| ())
}

pub fn list(path: Option<PathBuf>) -> ExitCode {
    let (config, _) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let users = match run(store(&config).list()) {
        Ok(u) => u,
        Err(e) => return failed("", e),
    };
    let suspended =
        postern::policy::brake::read_state(&config.abuse.state_file).unwrap_or_default();
    for u in users {
        let state = if u.disabled {
            "disabled"
        } else if suspended.contains_key(&u.name) {
            "suspended"
        } else {
            "active"
        };
        let senders: Vec<String> = u.senders.iter().map(|s| s.to_string()).collect();
        let networks = if u.networks.is_empty() {
            String::new()
        } else {
            let nets: Vec<String> = u.networks.iter().map(|n| n.to_string()).collect();
            format!("  networks: {}", nets.join(", "))
        };
        println!(
            "{:<24} {:<10} {}{networks}",
            u.name.escape_default().to_string(),
            state,
            senders.join(", ")
        );
    }
    ExitCode::SUCCESS
}

pub fn enable(name: &str, path: Option<PathBuf>) -> ExitCode {
    let (config, _) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let user = match run(store(&config).get(name)) {
        Ok(u) => u,
        Err(e) => return failed(name, e),
    };
    let mut changed = false;
    let mut lifted = false;
    if user.disabled {
        if let Err(e) = set_disabled(&config, name, false) {
            return failed(name, e);
        }
        println!("{name}: no longer disabled");
        changed = true;
    }
    match lift_keeping_owner(&config.abuse.state_file, name) {
        Ok(true) => {
            println!("{name}: suspension lifted");
            changed = true;
            lifted = true;
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
    // The suspension list is a file beside the spool whatever the users store.
    if lifted || config.users_database.is_none() {
        return tell_server_to_reload(&config);
    }
    after_change(&config)
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
