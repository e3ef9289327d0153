//! The server: binds the listeners, accepts connections under the connection caps,
//! runs a session per connection, reloads on SIGHUP and drains on SIGTERM/SIGINT.

use crate::auth::Authenticator;
use crate::config::{Config, Listener, TlsMode, Users};
use crate::context::Context;
use crate::session::serve_connection;
use crate::tls::{ServerTls, load_server_config};
use crate::upstream::Relays;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{error, info, warn};

/// Why the server could not run; `main` turns these into exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

/// Caps on concurrent connections, globally and per client address.
pub struct ConnectionLimits {
    global: Arc<Semaphore>,
    max_global: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
}

/// One admitted connection; releases its slots when dropped.
pub struct Admission {
    _global: OwnedSemaphorePermit,
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut map = self.limits.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Global,
    PerIp,
}

impl ConnectionLimits {
    pub fn new(max_global: usize, max_per_ip: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            global: Arc::new(Semaphore::new(max_global)),
            max_global,
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip,
        })
    }

    /// Admits a connection from `ip`, or says which cap it hit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Refusal> {
        let global = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Global)?;
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *n += 1;
        Ok(Admission {
            _global: global,
            limits: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max_global - self.global.available_permits()
    }

    /// Waits until every connection has ended, or `limit` passes.
    async fn drained(&self, limit: Duration) -> bool {
        let all = u32::try_from(self.max_global).unwrap_or(u32::MAX);
        tokio::time::timeout(limit, self.global.acquire_many(all))
            .await
            .is_ok()
    }
}

/// Runs the server until SIGTERM or SIGINT, then drains.
pub async fn serve(config: Config, users: Users) -> Result<(), ServeError> {
    let server_tls = match &config.tls {
        Some(files) => Some(ServerTls::new(
            load_server_config(files).map_err(|e| ServeError::Setup(e.to_string()))?,
        )),
        None => None,
    };
    if server_tls.is_none() && config.listeners.iter().any(|l| l.tls != TlsMode::None) {
        return Err(ServeError::Setup(
            "a listener uses TLS but no certificate is configured".into(),
        ));
    }
    let relays = Relays::new(&config).map_err(|e| ServeError::Setup(e.to_string()))?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let auth = Authenticator::new(users, cores, 64);

    let mut inherited = crate::daemon::inherited_listeners();
    let mut listeners = Vec::new();
    for l in &config.listeners {
        let from_systemd = inherited.iter().position(|(a, _)| *a == l.address);
        let socket = match from_systemd {
            Some(i) => {
                let (_, std_listener) = inherited.swap_remove(i);
                std_listener
                    .set_nonblocking(true)
                    .and_then(|()| TcpListener::from_std(std_listener))
            }
            None => TcpListener::bind(l.address).await,
        }
        .map_err(|source| ServeError::Bind {
            address: l.address,
            source,
        })?;
        let local = socket.local_addr().unwrap_or(l.address);
        info!(address = %local, tls = %l.tls, proxy_protocol = l.proxy_protocol, from_systemd = from_systemd.is_some(), "listening");
        listeners.push((socket, l.clone()));
    }
    for (addr, _) in &inherited {
        warn!(address = %addr, "socket from systemd matches no configured listener; not used");
    }

    let metrics_task = match config.metrics.address {
        Some(address) => {
            let socket = crate::metrics::bind(address)
                .await
                .map_err(|source| ServeError::Bind { address, source })?;
            let handle = crate::metrics::install().map_err(ServeError::Setup)?;
            Some(tokio::spawn(crate::metrics::serve(socket, handle)))
        }
        None => None,
    };
    // Everything privileged (ports, the private key) is done: become run_as.
    crate::daemon::drop_privileges(config.run_as.as_ref()).map_err(ServeError::Setup)?;
    let gid = nix::unistd::getegid().as_raw();
    for w in config.permission_warnings(Some(gid)) {
        warn!("{w}");
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let limits = ConnectionLimits::new(
        config.limits.max_connections,
        config.limits.max_connections_per_ip,
    );
    let grace = config.timeouts.shutdown_grace;
    let ctx = Arc::new(
        Context::new(config, auth, server_tls, relays, shutdown_rx.clone())
            .map_err(ServeError::Setup)?,
    );

    for (socket, listener) in listeners {
        tokio::spawn(accept_loop(
            ctx.clone(),
            socket,
            listener,
            limits.clone(),
            shutdown_rx.clone(),
        ));
    }
    let pruner = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let every = (ctx.relay.idle_timeout() / 2)
                .clamp(Duration::from_secs(1), Duration::from_secs(60));
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                ctx.prune();
            }
        })
    };

    let queue_task = ctx
        .queue
        .as_ref()
        .map(|_| tokio::spawn(crate::spool::queue::run(ctx.clone())));
    let control_task = crate::private_fs::create_dir_all(&ctx.config.delivery.spool_directory)
        .inspect_err(|e| warn!(error = %e, "cannot create the spool directory; no control socket"))
        .ok()
        .map(|_| {
        let path = crate::control::socket_path(&ctx.config.delivery.spool_directory);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::control::serve(ctx, path.clone()).await {
                error!(path = %path.display(), error = %e, "control socket failed; `postern queue flush` will not reach this server");
            }
        })
    });
    let mut hup = signal(SignalKind::hangup()).map_err(|e| ServeError::Setup(e.to_string()))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| ServeError::Setup(e.to_string()))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| ServeError::Setup(e.to_string()))?;
    info!("ready");
    crate::daemon::notify_ready();
    crate::daemon::notify_status("accepting mail");
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&ctx),
            _ = term.recv() => { info!("SIGTERM received, draining"); break; }
            _ = int.recv() => { info!("SIGINT received, draining"); break; }
        }
    }
    crate::daemon::notify_stopping();
    let _ = shutdown_tx.send(true);
    if limits.drained(grace).await {
        info!("all sessions ended");
    } else {
        warn!(
            open = limits.open(),
            "shutdown grace period over, closing remaining sessions"
        );
    }
    if let Some(queue) = &ctx.queue {
        // Deliveries in flight finish (bounded); everything else stays spooled.
        if tokio::time::timeout(grace, queue.idle()).await.is_err() {
            warn!(
                "deliveries still in flight at the end of the grace period; they will be retried after restart"
            );
        }
    }
    if let Some(t) = queue_task {
        t.abort();
    }
    if let Some(t) = control_task {
        t.abort();
        let _ = std::fs::remove_file(crate::control::socket_path(
            &ctx.config.delivery.spool_directory,
        ));
    }
    pruner.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    ctx.relay.close_all().await;
    info!("stopped");
    Ok(())
}

async fn accept_loop(
    ctx: Arc<Context>,
    socket: TcpListener,
    listener: Listener,
    limits: Arc<ConnectionLimits>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            Ok(_) = shutdown.wait_for(|s| *s) => return,
            a = socket.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        if listener.proxy_protocol {
            if !ctx
                .config
                .trusted_proxies
                .iter()
                .any(|c| c.contains(peer.ip()))
            {
                warn!(peer = %peer, "connection closed: PROXY listener and the peer is not in trusted_proxies");
                metrics::counter!("postern_connections_refused_total", "limit" => "untrusted_proxy")
                    .increment(1);
                continue;
            }
            let (ctx, listener, limits) = (ctx.clone(), listener.clone(), limits.clone());
            tokio::spawn(async move {
                let mut tcp = tcp;
                match crate::proxy::read_header(&mut tcp, PROXY_HEADER_TIMEOUT).await {
                    Ok(client) => {
                        admit_and_serve(ctx, listener, &limits, tcp, client.unwrap_or(peer))
                    }
                    Err(e) => {
                        warn!(peer = %peer, error = %e, "connection closed: no valid PROXY header");
                        metrics::counter!("postern_connections_refused_total", "limit" => "bad_proxy_header")
                            .increment(1);
                    }
                }
            });
        } else {
            admit_and_serve(ctx.clone(), listener.clone(), &limits, tcp, peer);
        }
    }
}

/// How long a load balancer has to send its PROXY header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Applies the connection caps to `peer` (the real client behind a proxy) and runs a
/// session, or refuses.
fn admit_and_serve(
    ctx: Arc<Context>,
    listener: Listener,
    limits: &Arc<ConnectionLimits>,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    // A dual-stack `[::]` listener sees IPv4 clients as `::ffff:a.b.c.d`: one client,
    // one address in limits, logs and Received.
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    match limits.admit(peer.ip()) {
        Ok(admission) => {
            metrics::counter!("postern_connections_total", "tls" => listener.tls.to_string())
                .increment(1);
            tokio::spawn(async move {
                serve_connection(ctx, listener, tcp, peer).await;
                drop(admission);
            });
        }
        Err(why) => refuse_connection(tcp, peer, &listener, why),
    }
}

/// Answers `421` from the accept loop itself, without spawning a session: a full
/// server must not spend more on a refused client than one write.
fn refuse_connection(tcp: TcpStream, peer: SocketAddr, listener: &Listener, why: Refusal) {
    let what = match why {
        Refusal::Global => "max_connections",
        Refusal::PerIp => "max_connections_per_ip",
    };
    warn!(peer = %peer, limit = what, "connection refused: limit reached");
    metrics::counter!("postern_connections_refused_total", "limit" => what).increment(1);
    // On an implicit-TLS port the client expects a handshake, not text: just close.
    if listener.tls != TlsMode::Implicit {
        let _ = tcp.try_write(b"421 4.7.0 Too many connections, try again later\r\n");
    }
}

/// Re-reads the config's users file and TLS certificate; keeps the old ones if the
/// new files are not valid.
pub fn reload(ctx: &Context) {
    info!("SIGHUP received, reloading the users file and TLS certificate");
    match Config::load(&ctx.config.path) {
        Ok((config, users)) => {
            ctx.auth.replace_users(users);
            match ctx.brake.reload() {
                Ok(n) => info!(suspended = n, "suspensions re-read"),
                Err(e) => {
                    error!(error = %e, "cannot re-read the suspension file; keeping the old list")
                }
            }
            if let (Some(tls), Some(files)) = (&ctx.tls, &config.tls) {
                match load_server_config(files) {
                    Ok(c) => tls.replace(c),
                    Err(e) => error!(error = %e, "TLS reload failed; keeping the old certificate"),
                }
            }
            info!(users = ctx.auth.users().len(), "reload complete");
        }
        Err(problems) => {
            for p in &problems.0 {
                error!(problem = %p, "reload rejected; keeping the configuration in force");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_caps() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).err(), Some(Refusal::PerIp));
        let b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).err(), Some(Refusal::Global));
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert!(limits.admit(a).is_ok());
        drop((a2, b1));
        assert_eq!(limits.open(), 0);
        assert!(limits.per_ip.lock().unwrap().is_empty());
    }
}
