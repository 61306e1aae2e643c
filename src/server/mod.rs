//! The server: binds the listener, starts the workers, and runs the shutdown.
//!
//! A connection's path: `listener` (a worker takes it, `balance` evens the workers out, and
//! the connection gets its `conn` context) →
//! `first_bytes` (TLS, or plain HTTP on the TLS port) → `connection` (the fast path for an
//! upgrade, hyper for the rest, then the tunnel an upgrade left behind). `bootstrap` reads
//! what must be on disk before the first connection; `shutdown` names the phases of the
//! end.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin::Admin;
use crate::config::{Config, Inject};
use crate::credentials::watcher;
use crate::credentials::{CredentialError, CredentialStore, Reloader};
use crate::gate::Proxy;
use crate::metrics::Metrics;
use crate::net::sockopt::listen;
use crate::upstream::UpstreamClient;

use balance::{Adopt, Balance};
use bootstrap::{read_files, Files};
use conn::{Conn, ConnSettings, TlsSide};
use listener::{worker, Listener};
use shutdown::{AbortOnDrop, Shutdown};

pub(crate) mod balance;
mod bootstrap;
mod conn;
mod connection;
mod first_bytes;
mod h2_frames;
mod http2;
mod listener;
mod shutdown;
#[cfg(test)]
mod tests;
mod upstream_kind;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr} for clients: {source} (set `listen` or --listen)")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error(
        "cannot start the admin listener on {addr}: {source} (set `admin.listen` or --admin-listen to another address, or \"\" to turn it off)"
    )]
    AdminBind { addr: SocketAddr, source: io::Error },
}

pub struct Server {
    /// Accepted sockets come with `TCP_NODELAY` already set (one syscall less per client).
    nodelay_inherited: bool,
    limits: Arc<crate::limits::ConnLimits>,
    /// (max header lines, max head bytes)
    conn_settings: ConnSettings,
    admin: Option<(TcpListener, Arc<Admin>)>,
    tls: Option<TlsSide>,
    /// The listening socket, a descriptor of it per worker. With one worker it is served on
    /// the caller's runtime; with more, each gets a thread with a single-threaded runtime of
    /// its own (see [`Server::run`]).
    listeners: Vec<std::net::TcpListener>,
    /// With several workers: where connections are counted, and each worker's inbox.
    balance: Option<(Arc<Balance>, Vec<mpsc::UnboundedReceiver<Adopt>>)>,
    proxy: Arc<Proxy>,
    reloader: Arc<Reloader>,
    shutdown: Shutdown,
    drain: Duration,
    /// Where clients connect (the port the system chose, for port 0).
    addr: SocketAddr,
}

/// The admin listener (`/healthz`, `/readyz`, `/metrics`), bound before anything is served
/// so a port in use is a start-up error that names `admin.listen`.
async fn bind_admin(
    addr: SocketAddr,
    admin: Admin,
) -> Result<(TcpListener, Arc<Admin>), StartError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::AdminBind { addr, source })?;
    info!(addr = %l.local_addr().expect("bound"), "[admin] listening (/healthz, /readyz, /metrics)");
    Ok((l, Arc::new(admin)))
}

/// The proxy every worker copies, with the token sources and the Control UI's shell said.
fn proxy_for(
    config: &Config,
    reloader: &Reloader,
    upstream: Arc<UpstreamClient>,
    metrics: Arc<Metrics>,
    tls: bool,
    shutdown: &Shutdown,
) -> Arc<Proxy> {
    let sources = config.auth.effective_sources(reloader.sources());
    info!(
        sources = %sources.list.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","),
        why = %sources.why,
        "[auth] token sources"
    );
    let (ui_public, ui_why) = config.auth.control_ui_public(reloader.sources());
    info!(public = ui_public, why = %ui_why, "[auth] control ui shell");
    Arc::new(
        Proxy::new(
            config,
            sources.list,
            reloader.store(),
            upstream,
            metrics,
            tls,
            shutdown.cut.clone(),
        )
        .with_control_ui(ui_public),
    )
}

/// The credential files' watcher, and the certificate's when TLS is on, until the drain.
fn spawn_watchers(
    config: &Config,
    reloader: &Arc<Reloader>,
    prepared: watcher::Prepared,
    tls: Option<(Arc<crate::tls::ServerTls>, watcher::Prepared)>,
    shutdown: &Shutdown,
) {
    let poll = config.credentials.poll_interval.0;
    tokio::spawn(watcher::run(
        reloader.clone(),
        prepared,
        poll,
        shutdown.draining.clone(),
    ));
    if let Some((tls, prepared)) = tls {
        tokio::spawn(watcher::run(tls, prepared, poll, shutdown.draining.clone()));
    }
    let remote = reloader.store().load().remote().to_vec();
    if remote.is_empty() {
        return;
    }
    match crate::tls::upstream_client_config(None, false, config.credentials.max_file_bytes) {
        Ok(tls) => {
            let fetcher = crate::fetch::Fetcher::new(&tls);
            for set in remote {
                tokio::spawn(set.run(fetcher.clone(), shutdown.draining.clone()));
            }
        }
        Err(e) => warn!(error = %e, "[auth] key sets cannot be fetched: no TLS client"),
    }
}

/// Files are read on a blocking thread: the caller's serves signals (and, with one worker,
/// connections), and a file on a hung network mount must not stall it.
async fn read_files_off_thread(config: &Config) -> Result<Files, StartError> {
    let config = config.clone();
    match tokio::task::spawn_blocking(move || read_files(&config)).await {
        Ok(files) => files,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The admin listener, when `admin.listen` is set.
async fn start_admin(
    config: &Config,
    admin: Admin,
) -> Result<Option<(TcpListener, Arc<Admin>)>, StartError> {
    match config.admin.addr() {
        Some(addr) => Ok(Some(bind_admin(addr, admin).await?)),
        None => Ok(None),
    }
}

/// The listening socket, a descriptor of it per worker; whether accepted sockets inherit
/// `TCP_NODELAY`; the address it is bound to (port 0 resolved).
fn bind_listeners(
    config: &Config,
) -> Result<(Vec<std::net::TcpListener>, bool, SocketAddr), StartError> {
    let addr = config.listen.0;
    let bind = |source| StartError::Bind { addr, source };
    let (listeners, nodelay_inherited) = listen(
        addr,
        resolve_workers(config.workers),
        config.tcp.delayed_ack,
        config.tcp.keepalive_idle(),
    )
    .map_err(bind)?;
    let bound = listeners[0].local_addr().map_err(bind)?;
    Ok((listeners, nodelay_inherited, bound))
}

/// `workers = 0`: one per CPU.
fn resolve_workers(workers: usize) -> usize {
    match workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

impl Server {
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        // Files are read on a blocking thread: this one serves signals (and, with one
        // worker, connections), and a file on a hung network mount must not stall it.
        let Files {
            reloader,
            prepared,
            server_tls,
            tls_prepared,
            upstream_tls,
            generated,
        } = read_files_off_thread(&config).await?;
        let reloader = Arc::new(reloader);
        let (listeners, nodelay_inherited, addr) = bind_listeners(&config)?;
        let balance = (listeners.len() > 1).then(|| Balance::new(listeners.len()));
        let metrics = Arc::new(Metrics::new());
        reloader.set_metrics(metrics.clone());
        let upstream = Arc::new(UpstreamClient::new(
            config.upstream.clone(),
            config.timeouts.upstream_connect.0,
            upstream_tls,
            config.tcp.delayed_ack,
            config.tcp.keepalive_idle(),
        )?);
        let workers = balance
            .as_ref()
            .map(|(b, _)| b.clone() as Arc<dyn crate::admin::WorkerLoad>);
        let admin = start_admin(
            &config,
            Admin::new(
                metrics.clone(),
                reloader.clone(),
                upstream.clone(),
                server_tls.clone(),
                workers,
            ),
        )
        .await?;
        let shutdown = Shutdown::default();
        if let Some(path) = generated.filter(|_| config.upstream_auth.inject == Inject::None) {
            let stop = shutdown.draining.clone();
            tokio::spawn(upstream_kind::watch(upstream.clone(), path, stop));
        }
        let proxy = proxy_for(
            &config,
            &reloader,
            upstream,
            metrics,
            server_tls.is_some(),
            &shutdown,
        );
        let tls_files = server_tls.clone().zip(tls_prepared);
        spawn_watchers(&config, &reloader, prepared, tls_files, &shutdown);
        if let Some((_, admin)) = &admin {
            let _ = admin.listen.set(addr);
        }
        let server = Server {
            nodelay_inherited,
            conn_settings: ConnSettings::from_config(&config),
            limits: crate::limits::ConnLimits::new(
                config.limits.max_connections,
                config.limits.max_connections_per_ip,
            ),
            admin,
            listeners,
            balance,
            proxy,
            reloader,
            shutdown,
            tls: server_tls.map(|t| TlsSide::new(t, &config)),
            drain: config.shutdown.drain.0,
            addr,
        };
        info!(
            addr = %server.local_addr(),
            upstream = %config.upstream,
            workers = server.listeners.len(),
            "[listen] listening"
        );
        Ok(server)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn credentials(&self) -> Arc<CredentialStore> {
        self.proxy.creds.clone()
    }

    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Where the admin listener is bound, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The serving certificate's details (expiry, subject), when TLS is on.
    pub fn certificate(&self) -> Option<crate::tls::CertInfo> {
        self.tls
            .as_ref()
            .map(|t| t.state.resolver.current().info.clone())
    }

    fn listener(&self) -> Listener {
        Listener {
            conn: Arc::new(Conn {
                proxy: self.proxy.clone(),
                settings: self.conn_settings,
                tls: self.tls.clone(),
                nodelay_inherited: self.nodelay_inherited,
                shutdown: self.shutdown.clone(),
                balance: None,
            }),
            limits: self.limits.clone(),
        }
    }

    /// Serves until `shutdown` resolves, then drains: no new connections, open ones get up to
    /// `shutdown.drain` to finish, whatever is left is cut.
    ///
    /// With several workers each runs on a thread of its own with a single-threaded runtime,
    /// the way nginx runs worker processes: all accept from the one listening socket, a
    /// connection stays on the thread that accepted it, so there is no work stealing and no
    /// cross-thread wake-up on the hot path (measured: bench/RESULTS.md). The caller's runtime keeps the control plane: signals, the
    /// credential watcher, the admin listener.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send + 'static) {
        // The shutdown future (signal handlers) waits in a task of its own: in the accept
        // loop's select it would be polled again on every accepted connection.
        let _stopper = AbortOnDrop({
            let accepting = self.shutdown.accepting.clone();
            tokio::spawn(async move {
                shutdown.await;
                accepting.cancel();
            })
        });
        let admin = self.admin.take().map(|(l, admin)| {
            let stop = self.shutdown.admin.clone();
            tokio::spawn(crate::admin::serve(l, admin.clone(), stop));
            admin
        });
        let listener = self.listener();
        let listeners = std::mem::take(&mut self.listeners);
        // Worker threads end when this is cancelled — also when `run` is dropped unfinished.
        let workers_end = CancellationToken::new();
        let _workers_end = workers_end.clone().drop_guard();
        // One worker: it is this runtime, whose thread then also runs the relay loop.
        let _relay_loop = (listeners.len() == 1)
            .then(crate::relay::worker_loop::install)
            .flatten();
        if listeners.len() == 1 {
            let socket = listeners.into_iter().next().expect("one listener");
            match TcpListener::from_std(socket) {
                Ok(l) => {
                    let accepting = self.shutdown.accepting.clone();
                    Arc::new(listener).serve(l, accepting).await
                }
                Err(e) => warn!(cause = %e, "[listen] cannot register the listener"),
            }
        } else {
            self.serve_on_threads(listeners, listener, workers_end)
                .await;
        }
        if let Some(a) = &admin {
            a.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.drain().await;
        self.shutdown.admin.cancel();
    }

    /// Several workers: a thread each, until they have all stopped accepting.
    async fn serve_on_threads(
        &mut self,
        listeners: Vec<std::net::TcpListener>,
        listener: Listener,
        workers_end: CancellationToken,
    ) {
        let accepting = &self.shutdown.accepting;
        let mut closed = Vec::new();
        let (balance, inboxes) = self.balance.take().expect("a balance with several workers");
        for ((i, socket), inbox) in listeners.into_iter().enumerate().zip(inboxes) {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let state = listener.for_worker(balance.clone(), i);
            let (stop, end) = (accepting.clone(), workers_end.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("gatewarden-worker-{i}"))
                .spawn(move || worker(i, socket, inbox, state, stop, end, tx));
            match spawned {
                Ok(_) => closed.push(rx),
                Err(e) => {
                    balance.gone(i);
                    warn!(worker = i, cause = %e, "[listen] cannot start a worker thread; its share of connections goes to the others")
                }
            }
        }
        if closed.is_empty() {
            tracing::error!("[listen] no worker thread started; stopping");
        } else {
            accepting.cancelled().await;
        }
        // Each worker drops its listener when told to stop; only then is accepting over.
        for rx in closed {
            let _ = rx.await;
        }
    }

    /// Phases 2 and 3 of [`Shutdown`]: the drain, and the cut when its time is over.
    async fn drain(&self) {
        let tasks = &self.proxy.tasks;
        info!(
            addr = %self.local_addr(),
            active = tasks.len(),
            drain_s = self.drain.as_secs_f64(),
            "[shutdown] stopped accepting; draining"
        );
        self.shutdown.draining.cancel();
        tasks.close();
        if tokio::time::timeout(self.drain, tasks.wait()).await.is_ok() {
            info!("[shutdown] drained");
        } else {
            warn!(
                remaining = tasks.len(),
                "[shutdown] drain time over; closing what is left"
            );
            self.shutdown.cut.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(7), tasks.wait()).await;
        }
    }
}
