//! The top-level keys that hold one value each: `hostname`, `users`, `received` and
//! `run_as`.

use super::ctx::Ctx;
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
    file: PathBuf,
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

/// `users.file`, which must be given.
pub(super) fn users_file(cx: &mut Ctx) -> PathBuf {
    match cx.section::<RawUsers>("users") {
        Some(u) => cx.resolve(u.file),
        None => {
            if !cx.map.contains_key("users") {
                cx.add("users", "users.file is needed");
            }
            PathBuf::new()
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
