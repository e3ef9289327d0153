//! `postern user add|disable|enable|list`: edits of the users file (validated, atomic,
//! comments kept where a text edit can) and of the suspension list, each followed by
//! a reload of the running server.

use super::load;
use super::password::read_password;
use super::reload::tell_server_to_reload;
use postern::config::{self, Config};
use std::path::PathBuf;
use std::process::ExitCode;

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

/// Adds a user with a password read like `hash-password`, or, given networks, a
/// device user without one.
pub fn add(name: &str, senders: &[String], networks: &[String], path: Option<PathBuf>) -> ExitCode {
    let (config, users) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(db) = &config.users_database {
        return super::user_db::add(&config, db, name, senders, networks);
    }
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
    for n in networks {
        if let Err(e) = config::Cidr::parse(n) {
            eprintln!("postern: --network {e}");
            return ExitCode::from(1);
        }
    }
    let hash = if networks.is_empty() {
        match new_password_hash() {
            Ok(h) => Some(h),
            Err(code) => return code,
        }
    } else {
        None
    };
    let text = std::fs::read_to_string(&config.users_file).unwrap_or_default();
    let block = config::edit::user_block(name, hash.as_deref(), senders, networks);
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

/// Reads a password and hashes it.
fn new_password_hash() -> Result<String, ExitCode> {
    let password = read_password()?;
    postern::auth::hash_password(password.expose()).map_err(|e| {
        eprintln!("postern: hashing failed: {e}");
        ExitCode::from(2)
    })
}

pub fn disable(name: &str, path: Option<PathBuf>) -> ExitCode {
    let (config, users) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(db) = &config.users_database {
        return super::user_db::disable(&config, db, name);
    }
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

pub fn list(path: Option<PathBuf>) -> ExitCode {
    let (config, users) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(db) = &config.users_database {
        return super::user_db::list(&config, db);
    }
    print_users(&config, users.iter().map(|u| u.as_ref()));
    ExitCode::SUCCESS
}

/// One line per user: name, state (disabled, suspended or active), senders, networks.
pub(super) fn print_users<'a>(config: &Config, users: impl Iterator<Item = &'a config::User>) {
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
}

pub fn enable(name: &str, path: Option<PathBuf>) -> ExitCode {
    let (config, users) = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(db) = &config.users_database {
        return super::user_db::enable(&config, db, name);
    }
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
pub(super) fn lift_keeping_owner(state_file: &std::path::Path, name: &str) -> Result<bool, String> {
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
