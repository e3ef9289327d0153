//! Living under a service manager: systemd readiness notifications, sockets handed
//! over by socket activation, and dropping root after the ports are bound.

use crate::config::RunAs;
use nix::unistd::{Gid, Group, Uid, User, setgid, setgroups, setuid};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use tracing::{info, warn};

/// Tells systemd (`Type=notify`) that the listeners are open. Without
/// `$NOTIFY_SOCKET` (not under systemd) this does nothing.
pub fn notify_ready() {
    notify(&[sd_notify::NotifyState::Ready]);
}

/// Tells systemd the server is draining.
pub fn notify_stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

/// A free-form status line for `systemctl status`.
pub fn notify_status(status: &str) {
    notify(&[sd_notify::NotifyState::Status(status)]);
}

fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!(error = %e, "cannot notify systemd");
    }
}

/// Listening sockets passed by systemd socket activation (`postern.socket`), with
/// the address each is bound to. Empty when not socket-activated.
pub fn inherited_listeners() -> Vec<(SocketAddr, std::net::TcpListener)> {
    let fds = match sd_notify::listen_fds() {
        Ok(fds) => fds,
        Err(e) => {
            warn!(error = %e, "ignoring malformed socket activation variables");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for fd in fds {
        // SAFETY: systemd hands these descriptors to this process (LISTEN_PID is
        // checked by `listen_fds`) and nothing else in Postern owns them.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let listener = std::net::TcpListener::from(owned);
        match listener.local_addr() {
            Ok(addr) => out.push((addr, listener)),
            Err(e) => warn!(fd, error = %e, "inherited descriptor is not a TCP socket; ignored"),
        }
    }
    out
}

/// The account `run_as` names, and its group (`run_as.group`, else the user's own).
pub fn run_as_account(run_as: &RunAs) -> Result<(User, Gid), String> {
    let user = User::from_name(&run_as.user)
        .map_err(|e| format!("cannot look up run_as.user {:?}: {e}", run_as.user))?
        .ok_or_else(|| format!("run_as.user {:?} does not exist", run_as.user))?;
    let gid = match &run_as.group {
        Some(name) => {
            Group::from_name(name)
                .map_err(|e| format!("cannot look up run_as.group {name:?}: {e}"))?
                .ok_or_else(|| format!("run_as.group {name:?} does not exist"))?
                .gid
        }
        None => user.gid,
    };
    Ok((user, gid))
}

/// Switches to `run_as` when running as root; the ports are bound by then. Returns
/// an error (the server must not start) if the account cannot be taken on.
pub fn drop_privileges(run_as: Option<&RunAs>) -> Result<(), String> {
    let root = Uid::effective().is_root();
    let Some(run_as) = run_as else {
        if root {
            warn!(
                "running as root: set run_as (user, group) in the config, or start Postern as an unprivileged user"
            );
        }
        return Ok(());
    };
    let (user, gid) = run_as_account(run_as)?;
    if !root {
        if Uid::effective() != user.uid {
            warn!(
                run_as = %run_as.user,
                "not started as root, so run_as is ignored; running as the invoking user"
            );
        }
        return Ok(());
    }
    if user.uid.is_root() {
        return Err("run_as.user is root; name an unprivileged account".into());
    }
    setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
    setgid(gid).map_err(|e| format!("setgid({gid}): {e}"))?;
    setuid(user.uid).map_err(|e| format!("setuid({}): {e}", user.uid))?;
    // setuid(0) must now fail; if it does not, the drop did not happen.
    if setuid(Uid::from_raw(0)).is_ok() || Gid::effective() != gid {
        return Err("privileges could not be dropped".into());
    }
    info!(user = %run_as.user, uid = %user.uid, gid = %gid, "dropped root privileges");
    Ok(())
}
