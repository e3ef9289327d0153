//! `postern user add|disable|enable|list` when the users are in PostgreSQL: the
//! same commands, written to the database through the users store, which validates
//! them like the admin API does. Running servers learn of a change by NOTIFY, so no
//! reload is asked for (except to lift a suspension, which stays in the state file).

use super::password::read_password;
use super::reload::tell_server_to_reload;
use super::runtime;
use postern::config::{Config, UsersDatabase};
use postern::users::{NewUser, Password, PgStore, StoreError, UserChange, UsersStore, postgres};
use std::process::ExitCode;
use std::sync::Arc;

/// A store with no server in this process to put changes in force.
fn store(config: &Config, db: &UsersDatabase) -> Result<PgStore, ExitCode> {
    let db = postgres::Database::new(db).map_err(|e| {
        eprintln!("postern: {e}");
        ExitCode::from(1)
    })?;
    Ok(PgStore::new(
        db,
        config.rate_limits.clone(),
        Arc::new(|_| {}),
    ))
}

/// The message and exit code for a store error about user `name`.
fn failed(name: &str, e: StoreError) -> ExitCode {
    match e {
        StoreError::NotFound => eprintln!("postern: no user {name}"),
        StoreError::Exists => eprintln!("postern: user {name} already exists"),
        StoreError::Invalid(why) => {
            eprintln!("postern: user {name} would be invalid, nothing written:");
            for w in why {
                eprintln!("  {w}");
            }
        }
        StoreError::Unavailable(why) => {
            eprintln!("postern: {why}");
            return ExitCode::from(2);
        }
    }
    ExitCode::from(1)
}

const NOTE: &str = "running servers pick the change up within a few seconds";

pub fn add(
    config: &Config,
    db: &UsersDatabase,
    name: &str,
    senders: &[String],
    networks: &[String],
) -> ExitCode {
    let store = match store(config, db) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let password = if networks.is_empty() {
        match read_password() {
            Ok(p) => Some(Password::Plain(p)),
            Err(code) => return code,
        }
    } else {
        None
    };
    let user = NewUser {
        name: name.to_string(),
        password,
        senders: senders.to_vec(),
        networks: networks.to_vec(),
        ..NewUser::default()
    };
    match runtime().block_on(store.create(user)) {
        Ok(_) => {
            println!("added {name} to the users database; {NOTE}");
            ExitCode::SUCCESS
        }
        Err(e) => failed(name, e),
    }
}

/// Sets or clears `disabled`; `Ok(true)` when it changed.
fn set_disabled(store: &PgStore, name: &str, disabled: bool) -> Result<bool, ExitCode> {
    let rt = runtime();
    let user = rt.block_on(store.get(name)).map_err(|e| failed(name, e))?;
    if user.disabled == disabled {
        return Ok(false);
    }
    let change = UserChange {
        disabled: Some(disabled),
        ..UserChange::default()
    };
    rt.block_on(store.update(name, change))
        .map_err(|e| failed(name, e))?;
    Ok(true)
}

pub fn disable(config: &Config, db: &UsersDatabase, name: &str) -> ExitCode {
    let store = match store(config, db) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match set_disabled(&store, name, true) {
        Ok(_) => {
            println!("disabled {name}; {NOTE}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

pub fn enable(config: &Config, db: &UsersDatabase, name: &str) -> ExitCode {
    let store = match store(config, db) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let enabled = match set_disabled(&store, name, false) {
        Ok(changed) => changed,
        Err(code) => return code,
    };
    if enabled {
        println!("{name}: no longer disabled; {NOTE}");
    }
    match super::user::lift_keeping_owner(&config.abuse.state_file, name) {
        Ok(true) => {
            println!("{name}: suspension lifted");
            tell_server_to_reload(config)
        }
        Ok(false) if enabled => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("postern: {name} is neither disabled nor suspended");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("postern: {e}");
            ExitCode::from(2)
        }
    }
}

pub fn list(config: &Config, db: &UsersDatabase) -> ExitCode {
    let store = match store(config, db) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match runtime().block_on(store.list()) {
        Ok(users) => {
            super::user::print_users(config, users.iter().map(|u| u.as_ref()));
            ExitCode::SUCCESS
        }
        Err(e) => failed("", e),
    }
}
