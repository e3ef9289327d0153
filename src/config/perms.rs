//! Who else can read or change the files Postern trusts.
//!
//! A secret (the TLS private key, a smarthost password) readable or writable by every
//! user on the machine stops the server from starting; so does a users file or config
//! that anyone can write (anyone could add a user). Readable by a group is the
//! documented way to give the service account access (`0640 root:postern`), so it is
//! only reported when the group is not the service's own.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What a file holds, which decides how much exposure is too much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A private key or a password.
    Secret,
    /// The users file: grants access, and its password hashes invite offline guessing.
    Users,
    /// The config file: grants access (it names the users file).
    Config,
}

/// One finding about a file's permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The server must not start with it.
    pub fatal: bool,
    pub message: String,
}

/// Audits `path`'s mode bits. `service_gid` is the group the server runs as; `None`
/// (not known, as in `check-config`) skips the group-readable report.
pub fn audit(path: &Path, kind: Kind, service_gid: Option<u32>) -> Vec<Finding> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new(); // reading it fails elsewhere, with a better message
    };
    audit_mode(
        &path.display().to_string(),
        meta.mode() & 0o777,
        meta.gid(),
        kind,
        service_gid,
    )
}

/// The rules, on plain numbers (so they can be tested without chmod and root).
pub fn audit_mode(
    path: &str,
    mode: u32,
    file_gid: u32,
    kind: Kind,
    service_gid: Option<u32>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut say = |fatal: bool, what: &str, fix: &str| {
        out.push(Finding {
            fatal,
            message: format!("{path} is {what} (mode {mode:04o}); run: chmod {fix} {path}"),
        })
    };
    let world_read = mode & 0o004 != 0;
    let world_write = mode & 0o002 != 0;
    let group_read = mode & 0o040 != 0;
    let group_write = mode & 0o020 != 0;
    match kind {
        Kind::Secret => {
            if world_read || world_write {
                say(
                    true,
                    "readable or writable by every user on this machine",
                    "o-rwx",
                );
            } else if group_write {
                say(false, "writable by its group", "g-w");
            } else if group_read && service_gid.is_some_and(|g| g != file_gid) {
                say(
                    false,
                    &format!("readable by group {file_gid}, which is not Postern's group"),
                    "g-r",
                );
            }
        }
        Kind::Users | Kind::Config => {
            if world_write {
                say(true, "writable by every user on this machine", "o-w");
            } else if group_write && service_gid.is_none_or(|g| g != file_gid) {
                say(false, "writable by its group", "g-w");
            }
            if world_read && kind == Kind::Users {
                say(
                    false,
                    "readable by every user on this machine (password hashes invite offline guessing)",
                    "o-r",
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(mode: u32, kind: Kind, gid: Option<u32>) -> Vec<bool> {
        audit_mode("/f", mode, 100, kind, gid)
            .into_iter()
            .map(|f| f.fatal)
            .collect()
    }

    #[test]
    fn secrets() {
        assert_eq!(verdicts(0o600, Kind::Secret, Some(100)), Vec::<bool>::new());
        assert_eq!(verdicts(0o640, Kind::Secret, Some(100)), Vec::<bool>::new());
        assert_eq!(verdicts(0o640, Kind::Secret, None), Vec::<bool>::new());
        assert_eq!(verdicts(0o640, Kind::Secret, Some(5)), vec![false]);
        assert_eq!(verdicts(0o660, Kind::Secret, Some(100)), vec![false]);
        assert_eq!(verdicts(0o644, Kind::Secret, Some(100)), vec![true]);
        assert_eq!(verdicts(0o602, Kind::Secret, None), vec![true]);
        let f = &audit_mode("/etc/postern/key.pem", 0o644, 0, Kind::Secret, None)[0];
        assert_eq!(
            f.message,
            "/etc/postern/key.pem is readable or writable by every user on this machine \
             (mode 0644); run: chmod o-rwx /etc/postern/key.pem"
        );
    }

    #[test]
    fn files_that_grant_access() {
        assert_eq!(verdicts(0o640, Kind::Users, Some(100)), Vec::<bool>::new());
        assert_eq!(verdicts(0o644, Kind::Users, Some(100)), vec![false]);
        assert_eq!(verdicts(0o660, Kind::Users, Some(5)), vec![false]);
        assert_eq!(verdicts(0o660, Kind::Users, Some(100)), Vec::<bool>::new());
        assert_eq!(verdicts(0o666, Kind::Users, Some(100)), vec![true, false]);
        assert_eq!(verdicts(0o644, Kind::Config, Some(100)), Vec::<bool>::new());
        assert_eq!(verdicts(0o666, Kind::Config, Some(100)), vec![true]);
    }
}
