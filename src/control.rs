//! The local control socket: how `postern queue flush`, `queue delete` and the
//! `user` commands (to reload) reach the running server. A Unix socket in the spool
//! directory, mode 0600, so only the server's own user (and root) can use it; one
//! line in, one line out.

use crate::context::Context;
use crate::spool::store::valid_id;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tracing::{info, warn};

/// Where the socket lives.
pub fn socket_path(spool_directory: &Path) -> PathBuf {
    spool_directory.join("control.sock")
}

/// Answers one request line.
pub fn handle(ctx: &Context, line: &str) -> String {
    if line == "reload" {
        info!("reload requested over the control socket");
        return match crate::reload::reload(ctx) {
            Ok(r) => format!(
                "ok reloaded ({} users, {} suspended, {} DKIM keys)",
                r.users, r.suspended, r.dkim_keys
            ),
            Err(e) => format!("err {e}"),
        };
    }
    let Some(queue) = ctx.queue() else {
        return "err not in queue mode".into();
    };
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("flush"), None, _) => {
            let n = queue.flush();
            info!(messages = n, "queue flush requested");
            format!("ok {n} messages scheduled now")
        }
        (Some("delete"), Some(id), None) if valid_id(id) => match queue.delete(id) {
            Ok(true) => {
                info!(queue_id = %id, "message deleted by the operator");
                format!("ok {id} deleted")
            }
            Ok(false) => format!("err {id} is not queued"),
            Err(e) => format!("err {e}"),
        },
        (Some("status"), None, _) => format!("ok {} queued", queue.len()),
        _ => "err unknown request".into(),
    }
}

/// Serves the socket until the task is dropped.
pub async fn serve(ctx: Arc<Context>, path: PathBuf) -> std::io::Result<()> {
    let listener = bind_private(&path)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let read = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(r, 256))
                    .read_line(&mut line),
            )
            .await;
            if !matches!(read, Ok(Ok(_))) {
                warn!("control socket: no request");
                return;
            }
            // Every request touches files (a queue delete, a reload): off the runtime.
            let answer = tokio::task::spawn_blocking(move || handle(&ctx, line.trim()))
                .await
                .unwrap_or_else(|e| format!("err {e}"));
            let _ = w.write_all(format!("{answer}\n").as_bytes()).await;
        });
    }
}

/// Binds a listening socket at `path` that is never reachable by anyone but this
/// user, not even for an instant: it is bound (with whatever mode the umask gives)
/// inside a fresh `0700` folder, made `0600` there, and only then renamed into place,
/// replacing a stale socket from an earlier run. Binding at `path` and chmodding
/// afterwards would leave it open to every local user in between.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = path.parent().unwrap_or(Path::new("."));
    // Short: a socket path is limited to about 100 bytes.
    let private = parent.join(format!(".c{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let inner = private.join("s");
    let bound = UnixListener::bind(&inner).and_then(|listener| {
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inner, path)?;
        Ok(listener)
    });
    let _ = std::fs::remove_dir_all(&private);
    bound
}

/// Sends one request to a running server (for the CLI).
pub fn request(path: &Path, line: &str) -> std::io::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer)?;
    Ok(answer.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn the_socket_is_bound_0600_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        std::fs::write(&path, "stale").unwrap();
        let listener = bind_private(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
        // Nothing else is left in the folder, and the socket answers.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("control.sock")]);
        let client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let (server_side, _) = listener.accept().await.unwrap();
        drop((client, server_side));
    }
}
