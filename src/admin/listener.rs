//! The admin listener's accept loop: at most [`MAX_CONNECTIONS`] connections at
//! once and [`MAX_PER_ADDRESS`] from one client address, TLS (the `tls.*` certificate) when `admin.tls` is set, a request head read
//! within [`HEADER_TIMEOUT`], and a drain on shutdown: no new connections, requests
//! in flight answered, idle connections closed.
//!
//! hyper serves each connection (HTTP/1.1 only: a panel's client needs nothing
//! more), with axum's router as the service; our own loop rather than
//! `axum::serve` because that has no connection cap, header timeout or TLS.

use super::{AdminState, Peer, router};
use crate::context::Context;
use crate::policy::client_key::client_key;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower_service::Service;
use tracing::{info, warn};

/// Most admin connections served at once; more are closed unanswered. A panel
/// needs a few; the cap keeps a flood from taking the SMTP listeners' descriptors.
pub const MAX_CONNECTIONS: usize = 64;

/// Most of those from one client address (an IPv6 /64), so that one host opening
/// connections and sending nothing cannot lock the panel and the dashboard out.
pub const MAX_PER_ADDRESS: usize = 16;

/// How long a client has to send a request head (also between keep-alive requests).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long requests in flight get to finish once the server drains.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin API on an already bound listener until `ctx.shutdown` turns
/// `true`, then drains; returns when every connection is closed.
pub async fn serve(ctx: Arc<Context>, listener: TcpListener) {
    let tls = match ctx.config.admin.as_ref().map(|a| a.tls) {
        Some(true) => ctx.tls.as_ref().map(|t| t.acceptor()),
        _ => None,
    };
    let mut shutdown = ctx.shutdown.clone();
    let Some(state) = AdminState::new(ctx) else {
        return;
    };
    let app = router(Arc::new(state));
    if let Ok(a) = listener.local_addr() {
        info!(address = %a, tls = tls.is_some(), "serving the admin API");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address = Arc::new(PerAddress::default());
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stopping(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Some(own) = per_address.enter(peer.ip()) else {
            warn!(peer = %peer, limit = MAX_PER_ADDRESS, "admin connection closed: too many open from this address");
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(peer = %peer, limit = MAX_CONNECTIONS, "admin connection closed: too many open");
            continue;
        };
        let (app, tls, shutdown) = (app.clone(), tls.clone(), shutdown.clone());
        connections.spawn(async move {
            connection(stream, peer, tls, app, shutdown).await;
            drop((slot, own));
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One connection: the TLS handshake if any, then HTTP until it closes or the
/// server drains.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    shutdown: watch::Receiver<bool>,
) {
    match tls {
        None => http(TokioIo::new(stream), peer, app, shutdown).await,
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => http(TokioIo::new(tls), peer, app, shutdown).await,
                Ok(Err(e)) => warn!(peer = %peer, error = %e, "admin TLS handshake failed"),
                Err(_) => warn!(peer = %peer, "admin TLS handshake timed out"),
            }
        }
    }
}

async fn http<I>(io: I, peer: SocketAddr, app: Router, mut shutdown: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        let mut app = app.clone();
        async move { app.call(req).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stopping(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
        }
    }
}

/// Open connections by client address (an IPv6 /64).
#[derive(Default)]
struct PerAddress(std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>);

impl PerAddress {
    /// A place for one more connection from `ip`, or `None` when it has its share.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = client_key(ip, 64);
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_default();
        if *n >= MAX_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(AddressSlot(self.clone(), key))
    }
}

/// One connection's place in [`PerAddress`], given back when dropped.
struct AddressSlot(Arc<PerAddress>, IpAddr);

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Completes when the server starts draining (or is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}
