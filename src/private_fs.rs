//! Files and folders that only Postern's user may read.
//!
//! Spooled mail and state files must not take the process umask (0022 outside
//! systemd gives 0644 files): every file Postern creates goes through here, so it
//! is created 0600 and every folder 0700 whatever the umask says.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the files Postern creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the folders Postern creates.
pub const DIR_MODE: u32 = 0o700;

/// Creates `dir` and any missing parents, each new one 0700 (existing ones are kept).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates `dir` (and parents) and makes `dir` itself 0700 even if it already
/// existed: for the folders that belong to Postern alone (the spool's own folders).
pub fn own_dir(dir: &Path) -> io::Result<()> {
    create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
}

/// Creates a new file, 0600; fails if it exists.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Creates or truncates a file; a new one is 0600. For temporary files that are
/// renamed into place, a leftover is first removed so that its mode cannot carry over.
pub fn create(path: &Path) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    create_new(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o777
    }

    /// The umask itself is covered by tests/queue.rs (the server run under umask 022).
    #[test]
    fn leftovers_do_not_pass_their_mode_on() {
        let dir = tempfile::tempdir().unwrap();
        let left = dir.path().join("left.tmp");
        std::fs::write(&left, "x").unwrap();
        std::fs::set_permissions(&left, std::fs::Permissions::from_mode(0o644)).unwrap();
        create(&left).unwrap();
        assert_eq!(mode(&left), 0o600);
        assert_eq!(std::fs::read(&left).unwrap(), b"");
        let open = dir.path().join("open");
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&open)
            .unwrap();
        own_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
        create_dir_all(&dir.path().join("a/b")).unwrap();
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
    }
}
