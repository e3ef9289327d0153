//! The server: [`Server::bind`] binds the listeners and drops root;
//! [`Server::run`] accepts connections under the connection caps, runs a session per
//! connection, serves the admin API beside them ([`crate::admin`]), reloads on
//! SIGHUP ([`crate::reload`]) and drains when its shutdown future completes
//! ([`serve`]: SIGTERM/SIGINT).

mod accept;
mod limits;

pub use limits::{Admission, ConnectionLimits, Refusal};

use crate::auth::Authenticator;
use crate::config::{Config, Listener, TlsMode, Users};
use crate::context::Context;
use crate::tls::{ServerTls, load_server_config};
use crate::upstream::Relays;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;
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

/// Runs the server until SIGTERM or SIGINT, then drains: [`Server::bind`], then
/// [`Server::run`] with the signals as its shutdown.
pub async fn serve(config: Config, users: Users) -> Result<(), ServeError> {
    let server = Server::bind(config, users).await?;
    let signal_error = |e: std::io::Error| ServeError::Setup(e.to_string());
    let mut term = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_error)?;
    server
        .run(async move {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received, draining"),
                _ = int.recv() => info!("SIGINT received, draining"),
            }
        })
        .await
}

/// A server whose sockets are bound and whose privileges are dropped, ready to run.
pub struct Server {
    ctx: Arc<Context>,
    listeners: Vec<(TcpListener, Listener)>,
    metrics: Option<(TcpListener, crate::metrics::Handle)>,
    admin: Option<TcpListener>,
    limits: Arc<ConnectionLimits>,
    shutdown_tx: watch::Sender<bool>,
}

impl Server {
    /// Does everything that needs root (ports, the private key and secrets, read
    /// with the config before this) and then becomes `run_as`; nothing is served yet.
    /// With `users.database`, `users` is ignored: the users are read from the
    /// database, and a database that cannot be reached stops the start here.
    pub async fn bind(config: Config, users: Users) -> Result<Server, ServeError> {
        let users = match &config.users_database {
            Some(db) => crate::users::postgres::load_at_start(db, &config.rate_limits)
                .await
                .map_err(ServeError::Setup)?,
            None => users,
        };
        let server_tls = server_tls(&config)?;
        let relays = Arc::new(Relays::new(&config).map_err(|e| ServeError::Setup(e.to_string()))?);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let auth = Authenticator::new(users, cores, 64);
        let listeners = bind_listeners(&config.listeners).await?;
        let metrics = bind_metrics(&config).await?;
        let admin = bind_admin(&config).await?;
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
        let ctx = Context::new(config, auth, server_tls, relays, shutdown_rx)
            .map_err(ServeError::Setup)?;
        Ok(Server {
            ctx: Arc::new(ctx),
            listeners,
            metrics,
            admin,
            limits,
            shutdown_tx,
        })
    }

    /// The SMTP listeners' addresses (the port the OS chose for `:0`).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(socket, _)| socket.local_addr().ok())
            .collect()
    }

    /// Serves (reloading on SIGHUP) until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let Server {
            ctx,
            listeners,
            metrics,
            admin,
            limits,
            shutdown_tx,
        } = self;
        let mut hup = signal(SignalKind::hangup()).map_err(|e| ServeError::Setup(e.to_string()))?;
        let mut tasks = Vec::new();
        for (socket, listener) in listeners {
            let (ctx, limits, rx) = (ctx.clone(), limits.clone(), shutdown_tx.subscribe());
            tasks.push(tokio::spawn(accept::accept_loop(
                ctx, socket, listener, limits, rx,
            )));
        }
        if let Some((socket, handle)) = metrics {
            tasks.push(tokio::spawn(crate::metrics::serve(socket, handle)));
        }
        tasks.push(spawn_pruner(ctx.clone()));
        if let Some(sync) = users_sync(&ctx) {
            tasks.push(tokio::spawn(sync));
        }
        for tokens in ctx.relay.token_sources() {
            let refresher = tokens.clone().keep_fresh(shutdown_tx.subscribe());
            tasks.push(tokio::spawn(refresher));
        }
        let queue_task = ctx
            .queue()
            .map(|q| tokio::spawn(crate::spool::queue::run(q.clone(), ctx.shutdown.clone())));
        let control_task = spawn_control(&ctx);
        if let Some(cluster) = &ctx.cluster {
            tasks.extend(cluster.start(ctx.brake.clone()).await);
        }
        let admin_task = admin.map(|socket| tokio::spawn(crate::admin::serve(ctx.clone(), socket)));
        info!("ready");
        crate::daemon::notify_ready();
        crate::daemon::notify_status("accepting mail");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP received, reloading the users file, suspensions and TLS certificate");
                    // The outcome is logged by reload itself.
                    let _ = crate::reload::reload(&ctx);
                }
                () = &mut shutdown => break,
            }
        }
        crate::daemon::notify_stopping();
        let _ = shutdown_tx.send(true);
        drain(&ctx, &limits).await;
        if let Some(cluster) = &ctx.cluster {
            cluster.stop().await;
        }
        if let Some(t) = admin_task {
            // It drains on the same signal: requests in flight are answered.
            let _ = tokio::time::timeout(ctx.config.timeouts.shutdown_grace, t).await;
        }
        // The last transactions reach the delivery log before the process ends.
        ctx.events.settle(Duration::from_secs(2)).await;
        if let Some(t) = queue_task {
            t.abort();
        }
        if let Some(t) = control_task {
            t.abort();
            let _ = std::fs::remove_file(crate::control::socket_path(
                &ctx.config.delivery.spool_directory,
            ));
        }
        for t in tasks {
            t.abort();
        }
        ctx.relay.close_all().await;
        info!("stopped");
        Ok(())
    }
}

/// With `users.database`: the task that keeps the users in memory equal to the
/// database's.
fn users_sync(ctx: &Arc<Context>) -> Option<impl Future<Output = ()> + use<>> {
    let db = ctx.config.users_database.as_ref()?;
    let db = crate::users::postgres::Database::new(db).ok()?;
    let auth = ctx.auth.clone();
    Some(crate::users::postgres::keep_in_sync(
        db,
        ctx.config.rate_limits.clone(),
        Arc::new(move |users| auth.replace_users(users)),
    ))
}

/// The TLS config for the listeners, if there is a certificate; an error if a
/// listener needs TLS and there is none.
fn server_tls(config: &Config) -> Result<Option<ServerTls>, ServeError> {
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
    Ok(server_tls)
}

/// Binds every listener, or takes it over from systemd (socket activation) when a
/// socket for its address was handed over.
async fn bind_listeners(config: &[Listener]) -> Result<Vec<(TcpListener, Listener)>, ServeError> {
    let mut inherited = crate::daemon::inherited_listeners();
    let mut listeners = Vec::new();
    for l in config {
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
    Ok(listeners)
}

/// Binds the metrics listener and installs the recorder, if `metrics.address` is set.
async fn bind_metrics(
    config: &Config,
) -> Result<Option<(TcpListener, crate::metrics::Handle)>, ServeError> {
    let Some(address) = config.metrics.address else {
        return Ok(None);
    };
    let socket = crate::metrics::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })?;
    let handle = crate::metrics::install().map_err(ServeError::Setup)?;
    Ok(Some((socket, handle)))
}

/// Binds the admin API's listener, if `admin` is configured.
async fn bind_admin(config: &Config) -> Result<Option<TcpListener>, ServeError> {
    let Some(admin) = &config.admin else {
        return Ok(None);
    };
    let address = admin.address;
    TcpListener::bind(address)
        .await
        .map(Some)
        .map_err(|source| ServeError::Bind { address, source })
}

/// Forgets expired limiter state, about twice per pooled-connection idle timeout.
fn spawn_pruner(ctx: Arc<Context>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every =
            (ctx.relay.idle_timeout() / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            ctx.prune();
        }
    })
}

/// Serves the control socket in the spool directory (created `0700` if needed); `None`
/// when that directory cannot be made.
fn spawn_control(ctx: &Arc<Context>) -> Option<JoinHandle<()>> {
    let spool = &ctx.config.delivery.spool_directory;
    // Private, like everything in the spool (a umask of 022 would make it 0755).
    let made = crate::private_fs::create_dir_all(spool);
    if let Err(e) = made {
        warn!(error = %e, "cannot create the spool directory; no control socket");
        return None;
    }
    let path = crate::control::socket_path(spool);
    let ctx = ctx.clone();
    Some(tokio::spawn(async move {
        if let Err(e) = crate::control::serve(ctx, path.clone()).await {
            error!(path = %path.display(), error = %e, "control socket failed; `postern queue flush` will not reach this server");
        }
    }))
}

/// Lets sessions end and deliveries in flight finish, each within the grace period.
async fn drain(ctx: &Context, limits: &ConnectionLimits) {
    let grace = ctx.config.timeouts.shutdown_grace;
    if limits.drained(grace).await {
        info!("all sessions ended");
    } else {
        warn!(
            open = limits.open(),
            "shutdown grace period over, closing remaining sessions"
        );
    }
    if let Some(queue) = ctx.queue() {
        // Deliveries in flight finish (bounded); everything else stays spooled.
        if tokio::time::timeout(grace, queue.idle()).await.is_err() {
            warn!(
                "deliveries still in flight at the end of the grace period; they will be retried after restart"
            );
        }
    }
}
