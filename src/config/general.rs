//! The top-level keys that hold one value each: `hostname`, `users`, `received` and
//! `run_as`.

use super::ctx::Ctx;
use super::database::{UsersDatabase, database};
use serde::Deserialize;
use std::path::PathBuf;

/// `run_as`: the user and group Postern drops to when started as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunAs {
    user: String,
    group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsers {
    file: Option<PathBuf>,
    /// `postgres://...`: the users live in PostgreSQL instead of a file.
    database: Option<String>,
    password_file: Option<PathBuf>,
    /// Extra trust roots for the database's certificate (`sslmode=require`).
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReceived {
    include_client_ip: Option<bool>,
}

/// `hostname`, by default the machine's.
pub(super) fn hostname(cx: &mut Ctx) -> String {
    let hostname = match cx.section::<String>("hostname") {
        Some(h) => h,
        None => system_hostname(),
    };
    if hostname.is_empty() || hostname.contains(|c: char| c.is_whitespace() || c.is_control()) {
        cx.add("hostname", "must be a host name without spaces");
    }
    hostname
}

/// `users.file` or `users.database`: exactly one must be given. With a database the
/// file path is empty.
pub(super) fn users_store(cx: &mut Ctx) -> (PathBuf, Option<UsersDatabase>) {
    let Some(u) = cx.section::<RawUsers>("users") else {
        if !cx.map.contains_key("users") {
            cx.add("users", "users.file is needed (or users.database)");
        }
        return (PathBuf::new(), None);
    };
    if u.password_file.is_some() && u.database.is_none() {
        cx.add(
            "users.password_file",
            "is the password of users.database, which is not given",
        );
    }
    if u.ca_file.is_some() && u.database.is_none() {
        cx.add("users.ca_file", "is for users.database, which is not given");
    }
    match (u.file, u.database) {
        (Some(f), None) => (cx.resolve(f), None),
        (None, Some(url)) => (
            PathBuf::new(),
            database(cx, url, u.password_file, u.ca_file),
        ),
        (Some(_), Some(_)) => {
            cx.add("users", "give users.file or users.database, not both");
            (PathBuf::new(), None)
        }
        (None, None) => {
            cx.add("users", "users.file is needed (or users.database)");
            (PathBuf::new(), None)
        }
    }
}

/// `received.include_client_ip`: whether the `Received:` header names the client's
/// address (by default it does).
pub(super) fn received_include_client_ip(cx: &mut Ctx) -> bool {
    let r: RawReceived = cx.section("received").unwrap_or_default();
    r.include_client_ip.unwrap_or(true)
}

/// `run_as`, if given.
pub(super) fn run_as(cx: &mut Ctx) -> Option<RunAs> {
    cx.section::<RawRunAs>("run_as").map(|r| RunAs {
        user: r.user,
        group: r.group,
    })
}

/// The machine's host name, for the banner when `hostname` is not set.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
