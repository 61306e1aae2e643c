//! Accepting clients and serving HTTP/1.1 on each connection, plus the drain on shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::admin::Admin;
use crate::config::{Config, CredentialFormat};
use crate::credentials::{self, CredentialError, CredentialStore, Reloader};
use crate::gate::{Handoff, Proxy};
use crate::http1::fast_head::{self, First};
use crate::limits::ConnSlot;
use crate::metrics::Metrics;
use crate::net::sockopt::listen;
use crate::net::Prefixed;
use crate::net::Stream;
use crate::tls::{ClientCert, ServerTls};
use crate::upstream::UpstreamClient;

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

/// A bound, ready-to-run proxy. Binding and running are separate so callers (tests, the
/// binary) can learn the real address when listening on port 0.
/// How hyper serves each client connection.
#[derive(Debug, Clone, Copy)]
struct ConnSettings {
    header_read_timeout: Duration,
    max_headers: usize,
    max_header_bytes: usize,
}

/// The listener's TLS side.
#[derive(Clone)]
struct TlsSide {
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
    state: Arc<ServerTls>,
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
    watcher_stop: CancellationToken,
    drain: Duration,
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
        } = {
            let config = config.clone();
            match tokio::task::spawn_blocking(move || read_files(&config)).await {
                Ok(files) => files?,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        };
        let reloader = Arc::new(reloader);
        let creds = reloader.store();
        let addr = config.listen.0;
        let (listeners, nodelay_inherited) = listen(
            addr,
            resolve_workers(config.workers),
            config.tcp.delayed_ack,
        )
        .map_err(|source| StartError::Bind { addr, source })?;
        let balance = (listeners.len() > 1).then(|| Balance::new(listeners.len()));
        let metrics = Arc::new(Metrics::new());
        reloader.set_metrics(metrics.clone());
        let upstream = Arc::new(UpstreamClient::new(
            config.upstream.clone(),
            config.timeouts.upstream_connect.0,
            upstream_tls,
            config.tcp.delayed_ack,
        )?);
        let admin = match config.admin.addr() {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::AdminBind { addr, source })?;
                let admin = Arc::new(Admin::new(
                    metrics.clone(),
                    reloader.clone(),
                    upstream.clone(),
                    server_tls.clone(),
                    balance.as_ref().map(|(b, _)| b.clone()),
                ));
                info!(addr = %l.local_addr().expect("bound"), "[admin] listening (/healthz, /readyz, /metrics)");
                Some((l, admin))
            }
            None => None,
        };
        let sources = config.auth.effective_sources(reloader.sources());
        info!(
            sources = %sources.list.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","),
            why = %sources.why,
            "[auth] token sources"
        );
        let proxy = Arc::new(Proxy {
            sources: sources.list,
            throttle: Arc::new(crate::throttle::Throttle::new(
                config.auth.max_failures,
                config.auth.failure_window.0,
                config.auth.max_backoff.0,
            )),
            upstream_origin: config.upstream_origin,
            splice: config.splice.clone(),
            forwarded_headers: config.forwarded_headers,
            max_header_bytes: config.limits.max_header_bytes,
            max_request_line: config.limits.max_request_line,
            upstream_response: config.timeouts.upstream_response.0,
            metrics,
            upstream,
            auth: config.auth.clone(),
            upstream_auth: config.upstream_auth.clone(),
            inject_header: config.upstream_auth.header_name(),
            trusted_proxies: config.trusted_proxies.clone(),
            proxy_protocol: config.listen_proxy_protocol,
            creds,
            tls: server_tls.is_some(),
            tasks: TaskTracker::new(),
            hard_stop: CancellationToken::new(),
        });
        let watcher_stop = CancellationToken::new();
        tokio::spawn(crate::watcher::run(
            reloader.clone(),
            prepared,
            config.credentials.poll_interval.0,
            watcher_stop.clone(),
        ));
        if let (Some(tls), Some(prepared)) = (&server_tls, tls_prepared) {
            tokio::spawn(crate::watcher::run(
                tls.clone(),
                prepared,
                config.credentials.poll_interval.0,
                watcher_stop.clone(),
            ));
        }
        let server = Server {
            nodelay_inherited,
            conn_settings: ConnSettings {
                header_read_timeout: config.timeouts.header_read.0,
                max_headers: config.limits.max_headers,
                max_header_bytes: config.limits.max_header_bytes,
            },
            limits: crate::limits::ConnLimits::new(
                config.limits.max_connections,
                config.limits.max_connections_per_ip,
            ),
            admin,
            listeners,
            balance,
            proxy,
            reloader,
            watcher_stop,
            tls: server_tls.map(|t| TlsSide {
                acceptor: tokio_rustls::TlsAcceptor::from(t.config.clone()),
                handshake_timeout: config.tls.handshake_timeout.0,
                state: t,
            }),
            drain: config.shutdown.drain.0,
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
        self.listeners[0]
            .local_addr()
            .expect("a bound listener has an address")
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

    fn acceptor(&self) -> Acceptor {
        Acceptor {
            proxy: self.proxy.clone(),
            limits: self.limits.clone(),
            settings: self.conn_settings,
            tls: self.tls.clone(),
            nodelay_inherited: self.nodelay_inherited,
            graceful: CancellationToken::new(),
            balance: None,
        }
    }

    /// Serves until `shutdown` resolves, then drains: no new connections, open ones get up to
    /// `shutdown.drain` to finish, whatever is left is cut.
    ///
    /// With several workers each runs on a thread of its own with a single-threaded runtime,
    /// the way nginx runs worker processes: all accept from the one listening socket, a
    /// connection stays on the thread that accepted it, so there is no work stealing and no
    /// cross-thread wake-up on the hot path (one multi-threaded runtime cost 12 % more CPU
    /// per handshake here). The caller's runtime keeps the control plane: signals, the
    /// credential watcher, the admin listener.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send + 'static) {
        // The shutdown future (signal handlers) waits in a task of its own: in the accept
        // loop's select it would be polled again on every accepted connection.
        let stop = CancellationToken::new();
        let _stopper = AbortOnDrop({
            let stop = stop.clone();
            tokio::spawn(async move {
                shutdown.await;
                stop.cancel();
            })
        });
        let admin_stop = CancellationToken::new();
        let admin = self.admin.take().map(|(l, admin)| {
            tokio::spawn(crate::admin::serve(l, admin.clone(), admin_stop.clone()));
            admin
        });
        let acceptor = self.acceptor();
        let graceful = acceptor.graceful.clone();
        let tasks = self.proxy.tasks.clone();
        let addr = self.local_addr();
        let listeners = std::mem::take(&mut self.listeners);
        // Worker threads end when this is cancelled — also when `run` is dropped unfinished.
        let workers_end = CancellationToken::new();
        let _workers_end = workers_end.clone().drop_guard();
        // One worker: it is this runtime, whose thread then also runs the relay loop.
        let _relay_loop = (listeners.len() == 1)
            .then(crate::splice::worker_loop::install)
            .flatten();
        if listeners.len() == 1 {
            let listener = listeners.into_iter().next().expect("one listener");
            match TcpListener::from_std(listener) {
                Ok(l) => Arc::new(acceptor).serve(l, stop.clone()).await,
                Err(e) => warn!(cause = %e, "[listen] cannot register the listener"),
            }
        } else {
            let mut closed = Vec::new();
            let (balance, inboxes) = self.balance.take().expect("a balance with several workers");
            for ((i, listener), inbox) in listeners.into_iter().enumerate().zip(inboxes) {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let acceptor = acceptor.for_worker(balance.clone(), i);
                let (stop, end) = (stop.clone(), workers_end.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("gatewarden-worker-{i}"))
                    .spawn(move || worker(i, listener, inbox, acceptor, stop, end, tx));
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
                stop.cancelled().await;
            }
            // Each worker drops its listener when told to stop; only then is accepting over.
            for rx in closed {
                let _ = rx.await;
            }
        }
        self.watcher_stop.cancel();
        if let Some(a) = &admin {
            a.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        info!(
            addr = %addr,
            active = tasks.len(),
            drain_s = self.drain.as_secs_f64(),
            "[shutdown] stopped accepting; draining"
        );
        graceful.cancel();
        tasks.close();
        if tokio::time::timeout(self.drain, tasks.wait()).await.is_ok() {
            info!("[shutdown] drained");
        } else {
            warn!(
                remaining = tasks.len(),
                "[shutdown] drain time over; closing what is left"
            );
            self.proxy.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(7), tasks.wait()).await;
        }
        admin_stop.cancel();
    }
}

/// One worker thread: its own runtime, its descriptor of the listening socket, and the
/// connections it accepted, until `end` (after the drain).
fn worker(
    i: usize,
    listener: std::net::TcpListener,
    inbox: mpsc::UnboundedReceiver<Adopt>,
    acceptor: Acceptor,
    stop: CancellationToken,
    end: CancellationToken,
    closed: tokio::sync::oneshot::Sender<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            if let Some((balance, _)) = &acceptor.balance {
                balance.gone(i);
            }
            warn!(worker = i, cause = %e, "[listen] cannot start a worker's runtime; its share of connections goes to the others");
            return;
        }
    };
    let acceptor = Arc::new(acceptor);
    runtime.block_on(async move {
        let _relay_loop = crate::splice::worker_loop::install();
        tokio::spawn(near_timer());
        tokio::spawn(acceptor.clone().adopt(inbox));
        match TcpListener::from_std(listener) {
            Ok(l) => {
                tokio::select! {
                    _ = acceptor.serve(l, stop) => {}
                    _ = end.cancelled() => {}
                }
            }
            Err(e) => warn!(worker = i, cause = %e, "[listen] cannot register the listener"),
        }
        drop(closed);
        end.cancelled().await;
    });
}

/// A timer that is never more than a second away, for a worker's runtime.
///
/// tokio wakes its own driver (an eventfd write, and one more `epoll_wait` round) whenever
/// a timer is set to fire before every other timer it holds. On a worker whose connections
/// are all in their tunnels (no timers) that was the first timer of nearly every new
/// connection (`strace`: 0.4 eventfd writes per handshake with 2 workers, none with 1, whose
/// runtime has other timers). With this one always nearer, connection timers (seconds) never
/// are. Costs one wake-up a second on an idle worker.
async fn near_timer() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
    }
}

/// What an accept loop needs; each worker has a copy.
#[derive(Clone)]
struct Acceptor {
    proxy: Arc<Proxy>,
    limits: Arc<crate::limits::ConnLimits>,
    settings: ConnSettings,
    tls: Option<TlsSide>,
    nodelay_inherited: bool,
    /// Cancelled when the drain starts: idle keep-alive connections close.
    graceful: CancellationToken,
    /// With several workers: the open-connection counts that place new connections, and
    /// this worker's index in them.
    balance: Option<(Arc<Balance>, usize)>,
}

impl Acceptor {
    /// A worker thread's copy: its own `Proxy` and child cancellation tokens (cancelled with
    /// their parents). Every connection takes a reference to the proxy and waits on both
    /// tokens (a lock on the token's waiter list, twice); shared by all workers, those
    /// cache lines moved between cores on every handshake.
    fn for_worker(&self, balance: Arc<Balance>, me: usize) -> Acceptor {
        let proxy = Proxy {
            hard_stop: self.proxy.hard_stop.child_token(),
            ..Proxy::clone(&self.proxy)
        };
        Acceptor {
            proxy: Arc::new(proxy),
            graceful: self.graceful.child_token(),
            balance: Some((balance, me)),
            ..self.clone()
        }
    }

    /// Accepts until `stop`, then drops the listener (no new connections).
    async fn serve(self: &Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        let mut backoff = Duration::ZERO;
        let shutdown = stop.cancelled();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, remote)) => {
                    backoff = Duration::ZERO;
                    self.proxy.metrics.connections_accepted.inc();
                    let slot = match self.limits.acquire(remote.ip().to_canonical()) {
                        Ok(slot) => slot,
                        Err(hit) => {
                            // Dropping the socket is the cheapest answer to a flood.
                            info!(remote = %remote, reason = %hit.as_str(), open = self.limits.open(), "[listen] connection refused");
                            self.proxy.metrics.closed(hit.as_str());
                            continue;
                        }
                    };
                    if let Some((balance, me)) = &self.balance {
                        let to = balance.place(*me);
                        if to != *me {
                            self.proxy.metrics.connections_rebalanced.inc();
                            if let Err(back) = balance.hand_over(*me, to, stream, remote, slot) {
                                self.take_over(back);
                            }
                            continue;
                        }
                    }
                    self.start(stream, remote, slot);
                }
                Err(e) if is_per_connection(&e) => debug!(cause = %e, "[listen] accept"),
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning on a full fd table.
                    backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                    warn!(cause = %e, retry_in_ms = backoff.as_millis() as u64, "[listen] accept failed");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }

    fn start(self: &Arc<Self>, stream: TcpStream, remote: SocketAddr, slot: Arc<ConnSlot>) {
        // Boxed: the connection's future (a tunnel's state, 2.5 KB) would otherwise be
        // copied several times between spawning and finishing.
        self.proxy.tasks.spawn(Box::pin(serve_connection(
            stream,
            remote,
            slot,
            self.clone(),
        )));
    }

    /// Serves the connections other workers hand over (see [`Balance`]).
    async fn adopt(self: Arc<Self>, mut inbox: mpsc::UnboundedReceiver<Adopt>) {
        while let Some(adopt) = inbox.recv().await {
            self.take_over(adopt);
        }
    }

    /// Serves a connection accepted as a `std` socket (counted here already).
    fn take_over(
        self: &Arc<Self>,
        Adopt {
            stream,
            remote,
            slot,
        }: Adopt,
    ) {
        match TcpStream::from_std(stream) {
            Ok(stream) => self.start(stream, remote, slot),
            Err(e) => {
                if let Some((balance, me)) = &self.balance {
                    balance.closed(*me);
                }
                warn!(remote = %remote, cause = %e, "[listen] cannot take over a connection from another worker");
            }
        }
    }
}

/// Places each new connection on the worker with the fewest open ones.
///
/// All workers wait on the one listening socket and whichever is free accepts — taking every
/// queued connection in one go. A burst of 32 long-lived connections split 8/24 … 20/12
/// between 2 workers that way, and the busier worker then held back every connection on it
/// (rtt 48.9k vs 68.8k msg/s back to back). nginx keeps its workers even with
/// `EPOLLEXCLUSIVE`, which mio cannot ask for; pausing the busier worker's accepts halved
/// handshakes/s. So a worker that accepts a connection while it has more than one more open
/// than the least-loaded worker hands the socket over (as Envoy's "exact balance" does): a
/// channel send and a wake-up of that worker, only while the counts are uneven.
pub struct Balance {
    open: Box<[Open]>,
    inbox: Box<[mpsc::UnboundedSender<Adopt>]>,
}

/// A worker's open connections, on a cache line of its own: each worker writes its own
/// twice per connection and reads the others' once.
#[repr(align(128))]
struct Open(AtomicUsize);

/// A connection on its way to another worker, its limit slot already taken.
struct Adopt {
    stream: std::net::TcpStream,
    remote: SocketAddr,
    slot: Arc<ConnSlot>,
}

impl Balance {
    fn new(workers: usize) -> (Arc<Balance>, Vec<mpsc::UnboundedReceiver<Adopt>>) {
        let (inbox, rx): (Vec<_>, Vec<_>) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let open = (0..workers).map(|_| Open(AtomicUsize::new(0))).collect();
        let balance = Balance {
            open,
            inbox: inbox.into(),
        };
        (Arc::new(balance), rx)
    }

    /// Open connections per worker.
    pub fn open(&self) -> impl Iterator<Item = usize> + '_ {
        self.open.iter().map(|o| o.0.load(Ordering::Relaxed))
    }

    /// Which worker serves a connection `me` accepted; it is counted as open there.
    fn place(&self, me: usize) -> usize {
        let mine = self.open[me].0.load(Ordering::Relaxed);
        let (least, n) = self
            .open()
            .enumerate()
            .min_by_key(|&(_, n)| n)
            .expect("at least one worker");
        let to = if mine > n + 1 { least } else { me };
        self.open[to].0.fetch_add(1, Ordering::Relaxed);
        to
    }

    /// A connection counted on worker `w` ended.
    fn closed(&self, w: usize) {
        self.open[w].0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Worker `w` takes no connections (it did not start, or has ended).
    fn gone(&self, w: usize) {
        self.open[w].0.store(usize::MAX / 2, Ordering::Relaxed);
    }

    /// Sends a connection `me` accepted to worker `to` (already counted there). If `to` has
    /// ended, the connection comes back, counted on `me`, for `me` to serve.
    fn hand_over(
        &self,
        me: usize,
        to: usize,
        stream: TcpStream,
        remote: SocketAddr,
        slot: Arc<ConnSlot>,
    ) -> Result<(), Adopt> {
        // Out of this worker's epoll; the other registers it in its own.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                self.closed(to);
                warn!(remote = %remote, cause = %e, "[listen] cannot hand a connection to another worker");
                return Ok(());
            }
        };
        let adopt = Adopt {
            stream,
            remote,
            slot,
        };
        self.inbox[to].send(adopt).map_err(|back| {
            self.gone(to);
            self.open[me].0.fetch_add(1, Ordering::Relaxed);
            back.0
        })
    }
}

/// `workers = 0`: one per CPU.
fn resolve_workers(workers: usize) -> usize {
    match workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Errors that concern one incoming connection, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// What the server reads from disk before it starts.
struct Files {
    reloader: Reloader,
    prepared: crate::watcher::Prepared,
    server_tls: Option<Arc<ServerTls>>,
    tls_prepared: Option<crate::watcher::Prepared>,
    upstream_tls: Option<Arc<rustls::ClientConfig>>,
}

/// Credentials, the serving certificate and the upstream's CA, each watched from before
/// its first read. Blocking: runs on a blocking thread.
fn read_files(config: &Config) -> Result<Files, StartError> {
    let (reloader, prepared) = load_credentials(config)?;
    let max = config.credentials.max_file_bytes;
    let server_tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Some(Arc::new(ServerTls::new(
            cert,
            key,
            config.tls.client_ca.as_deref(),
            max,
        )?)),
        _ => None,
    };
    let tls_prepared = server_tls.as_ref().map(|tls| {
        let prepared = crate::watcher::prepare(
            &crate::watcher::Reloadable::paths(&**tls),
            config.credentials.watch,
            config.credentials.poll_interval.0,
        );
        // Changes between loading and watching are caught by this first re-read.
        tls.reload();
        prepared
    });
    let upstream_tls = if config.upstream.tls {
        if config.upstream_tls.insecure {
            warn!(
                upstream = %config.upstream,
                "[tls] upstream_tls.insecure = true: the upstream's certificate is NOT verified; anyone on the path can impersonate it"
            );
        }
        Some(crate::tls::upstream_client_config(
            config.upstream_tls.ca.as_deref(),
            config.upstream_tls.insecure,
            max,
        )?)
    } else {
        None
    };
    Ok(Files {
        reloader,
        prepared,
        server_tls,
        tls_prepared,
        upstream_tls,
    })
}

/// Resolves the credential sources, starts watching them, loads them once, and returns the
/// reloader that keeps them current with the prepared watches.
fn load_credentials(
    config: &Config,
) -> Result<(Reloader, crate::watcher::Prepared), CredentialError> {
    let (sources, origin) = credentials::resolve_sources(&config.credentials.sources)?;
    match &origin {
        credentials::Origin::Configured => {}
        credentials::Origin::OpenClaw(path) => info!(
            path = %path.display(),
            pointer = %crate::config::OPENCLAW_TOKEN_POINTER,
            "[auth] no credential configured; using the OpenClaw gateway's config"
        ),
        credentials::Origin::Generated {
            path,
            created: true,
        } => info!(
            path = %path.display(),
            "[auth] no credential configured and no OpenClaw config found; generated a token file"
        ),
        credentials::Origin::Generated {
            path,
            created: false,
        } => info!(
            path = %path.display(),
            "[auth] no credential configured and no OpenClaw config found; using the generated token file"
        ),
    }
    let paths: Vec<_> = sources.iter().map(|s| s.path.clone()).collect();
    let prepared = crate::watcher::prepare(
        &paths,
        config.credentials.watch,
        config.credentials.poll_interval.0,
    );
    let reloader = Reloader::new(
        sources,
        config.upstream_auth.credential.clone(),
        config.auth.grace.0,
    )
    .with_max_file_bytes(config.credentials.max_file_bytes);
    let ok = reloader.load_initial();
    let creds = reloader.store().load();
    for c in creds.entries() {
        let src = reloader
            .sources()
            .iter()
            .find(|s| *s.path == *c.source)
            .expect("every entry comes from a source");
        let pointer = match src.format {
            CredentialFormat::Json5 => src.json_pointer(),
            CredentialFormat::Dotenv => src.env_key(),
            _ => "-",
        };
        info!(
            path = %c.source.display(),
            format = %src.format.as_str(),
            pointer = %pointer,
            name = %c.name.as_deref().unwrap_or("-"),
            client = %c.client.as_deref().unwrap_or("-"),
            fingerprint = %c.fingerprint,
            "[auth] credential loaded"
        );
    }
    if ok == 0 {
        warn!(
            why = %creds.unloaded().unwrap_or("-"),
            "[auth] no valid credential yet: every client is refused until a credential file becomes valid (it is watched)"
        );
    }
    reloader.check_upstream()?;
    Ok((reloader, prepared))
}

/// Answers an HTTP/2 prior-knowledge client (hyper saw the preface and gave up) in a way
/// it understands: an empty SETTINGS frame, then GOAWAY(last stream 0, HTTP_1_1_REQUIRED)
/// with a hint. Best effort: the socket is fresh, the 50 bytes fit its send buffer.
fn refuse_http2(fd: std::os::fd::BorrowedFd<'_>) {
    const HINT: &[u8] = b"gatewarden speaks HTTP/1.1 only";
    let len = 8 + HINT.len();
    let mut out = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    out.extend_from_slice(&[0, (len >> 8) as u8, len as u8, 0x7, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x0d]);
    out.extend_from_slice(HINT);
    let _ = rustix::net::send(fd, &out, rustix::net::SendFlags::NOSIGNAL);
    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Write);
}

/// Starts TLS on an accepted connection within the handshake timeout. A client that speaks
/// plain HTTP to the TLS port gets a readable 400 instead of a handshake error.
async fn accept_tls(
    stream: TcpStream,
    remote: SocketAddr,
    tls: &TlsSide,
) -> Option<(Stream, Option<Arc<ClientCert>>)> {
    let deadline = tokio::time::Instant::now() + tls.handshake_timeout;
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        Ok(_) => return None,
        Err(_) => {
            info!(remote = %remote, "[tls] handshake timeout (client sent nothing)");
            return None;
        }
    }
    // 0x16 starts a TLS handshake record; an ASCII letter starts an HTTP method.
    if first[0] != 0x16 {
        if first[0].is_ascii_alphabetic() {
            info!(remote = %remote, "[tls] plain HTTP on the TLS port; answered 400");
            plain_http_on_tls_port(stream).await;
        } else {
            info!(remote = %remote, first_byte = first[0], "[tls] not a TLS handshake; closed");
        }
        return None;
    }
    match tokio::time::timeout_at(deadline, tls.acceptor.accept(stream)).await {
        Ok(Ok(s)) => {
            let cert = s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(ClientCert::from_der)
                .map(Arc::new);
            Some((Stream::ServerTls(Box::new(s)), cert))
        }
        Ok(Err(e)) => {
            info!(remote = %remote, cause = %e, "[tls] handshake failed");
            None
        }
        Err(_) => {
            info!(remote = %remote, "[tls] handshake timeout");
            None
        }
    }
}

/// Reads the plain request head (bounded) so closing does not reset the connection before
/// the client reads our answer, then says what to do.
async fn plain_http_on_tls_port(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let body = "this port speaks TLS; use https:// or wss://\n";
    let resp = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Ends a helper task with the function that started it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A client connection: its request(s), then the WebSocket tunnel or close frame an upgrade
/// left behind.
async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    slot: Arc<ConnSlot>,
    conn: Arc<Acceptor>,
) {
    // Boxed and gone before the tunnel starts: a tunnel can stay open for hours, and its
    // task should hold the tunnel's state only, not room for the handshake's (the task was
    // 6.6 KB, 3.3 KB of it the handshake's, before).
    let _open = conn.balance.is_some().then(|| Counted(conn.clone()));
    let requests = Box::pin(serve_requests(stream, remote, slot, conn));
    upgraded(requests.await).await
}

/// Counts a connection as open on its worker (see [`Balance`]) while it lives.
struct Counted(Arc<Acceptor>);

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some((balance, me)) = &self.0.balance {
            balance.closed(*me);
        }
    }
}

/// What an upgrade left to run. A plain fn, so the connection's future does not keep the
/// `Pending` beside the tunnel it became.
fn upgraded(
    next: Option<(crate::gate::Pending, (Stream, bytes::Bytes))>,
) -> impl Future<Output = ()> {
    match next {
        Some((pending, client)) => tokio_util::either::Either::Left(pending.run(client)),
        None => tokio_util::either::Either::Right(std::future::ready(())),
    }
}

/// The connection until an upgrade: the fast path for a first request that is a WebSocket
/// upgrade, hyper for everything else. Returns what an upgrade left to run, with the client
/// socket and the bytes read behind the request head.
async fn serve_requests(
    stream: TcpStream,
    remote: SocketAddr,
    slot: Arc<ConnSlot>,
    conn: Arc<Acceptor>,
) -> Option<(crate::gate::Pending, (Stream, bytes::Bytes))> {
    if !conn.nodelay_inherited {
        let _ = stream.set_nodelay(true);
    }
    let mut stream = stream;
    // A trusted load balancer names the real client first: from here on it is `remote`
    // (logs, throttling, X-Forwarded-For). Bounded by the header-read deadline.
    let remote = if conn.proxy.expects_proxy_header(remote.ip()) {
        let read = crate::proxy_protocol::read_header(&mut stream);
        match tokio::time::timeout(conn.settings.header_read_timeout, read).await {
            Ok(Ok(Some(client))) => client,
            Ok(Ok(None)) => remote,
            Ok(Err(e)) => {
                info!(remote = %remote, reason = %"bad_proxy_header", cause = %e, "[listen] connection refused");
                return None;
            }
            Err(_) => {
                info!(remote = %remote, reason = %"bad_proxy_header", cause = %"no PROXY protocol header in time", "[listen] connection refused");
                return None;
            }
        }
    } else {
        remote
    };
    let (stream, cert) = match &conn.tls {
        None => (Stream::Tcp(stream), None),
        Some(tls) => accept_tls(stream, remote, tls).await?,
    };
    let Acceptor {
        proxy,
        settings:
            ConnSettings {
                header_read_timeout,
                max_headers,
                max_header_bytes,
            },
        graceful,
        ..
    } = &*conn;
    let (header_read_timeout, max_headers, max_header_bytes) =
        (*header_read_timeout, *max_headers, *max_header_bytes);
    // For answering HTTP/2 prior knowledge after hyper has taken the stream (no peek per
    // connection: that would cost every client a syscall for a rare mistake).
    let raw_fd = match &stream {
        Stream::Tcp(t) => Some(std::os::fd::AsRawFd::as_raw_fd(t)),
        _ => None,
    };
    let handoff = Arc::new(Handoff::default());
    let mut stream = stream;
    let (io, spent) = loop {
        match fast_head::read_first(stream, remote, header_read_timeout, max_headers, graceful)
            .await
        {
            First::Done => return None,
            First::Hyper { io, spent } => break (io, spent),
            First::Upgrade {
                mut req,
                stream: mut s,
                rest,
                close,
            } => {
                req.extensions_mut().insert(slot.clone());
                let resp = proxy
                    .clone()
                    .handle_upgrade(req, remote, cert.as_deref(), &handoff)
                    .await;
                let switched = resp.status() == hyper::StatusCode::SWITCHING_PROTOCOLS;
                // An answer that says `Connection: close` ends the connection.
                let close = close
                    || resp
                        .headers()
                        .get(hyper::header::CONNECTION)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                let written = crate::http1::respond::write_response(&mut s, resp).await;
                let pending = handoff.take();
                if let Err(e) = written {
                    debug!(remote = %remote, cause = %e, "[http] connection ended with an error");
                    return None;
                }
                if switched {
                    return pending.map(|p| (p, (s, rest)));
                }
                if close {
                    use tokio::io::AsyncWriteExt;
                    let _ = s.shutdown().await;
                    return None;
                }
                // Refused without closing. A client that retries on the same connection is
                // read the same way; one that leaves (what a refused WebSocket client does)
                // costs a read that finds the end, not a hyper connection set up to see it
                // (a sixth of a refusal's user-space instructions, callgrind). Bytes already
                // behind the head (a pipelined request) go to hyper with them.
                if !rest.is_empty() {
                    break (Prefixed::new(s, rest), Duration::ZERO);
                }
                stream = s;
            }
        }
    };
    // The slot travels with each request so an upgraded tunnel keeps holding it after hyper
    // has let go of the connection.
    let svc = {
        let handoff = handoff.clone();
        let proxy = proxy.clone();
        service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(slot.clone());
            proxy
                .clone()
                .handle(req, remote, cert.clone(), handoff.clone())
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // What the listener's first read left of the header timeout (hyper wants more than
        // nothing).
        .header_read_timeout(
            header_read_timeout
                .saturating_sub(spent)
                .max(Duration::from_millis(1)),
        )
        .max_buf_size(max_header_bytes);
    // hyper keeps up to 100 headers on the stack; a different limit costs a heap allocation
    // per request, so it is only set when configured.
    if max_headers != 100 {
        builder.max_headers(max_headers);
    }
    // In a block: hyper's connection state is gone before a tunnel starts.
    let result = {
        let conn = builder
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = graceful.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let (Err(e), Some(fd)) = (&result, raw_fd) {
            if e.is_parse_version_h2() {
                // SAFETY: `conn` owns the socket and is still alive here (it is dropped at
                // the end of this block), so the descriptor is open and still ours.
                refuse_http2(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) });
            }
        }
        result
    };
    // An upgraded connection goes on in the same task. Also after an error: the tunnel then
    // learns that the client's side of the upgrade failed, and says so.
    if let Some(mut pending) = handoff.take() {
        if let Err(e) = &result {
            debug!(remote = %remote, cause = %e, "[http] connection ended with an error");
        }
        let client = pending.upgraded().await?;
        return Some((pending, client));
    }
    if let Err(e) = result {
        if e.is_parse_version_h2() {
            info!(remote = %remote, reason = %"http2_not_supported", "[http] request refused");
            return None;
        }
        // hyper has already answered 431 / 400 / 414 where an answer is possible.
        let reason = if e.is_parse_too_large() {
            Some("header_too_large")
        } else if e.is_parse() {
            Some("bad_request")
        } else if e.is_timeout() {
            Some("header_timeout")
        } else {
            None
        };
        match reason {
            Some(reason) => {
                info!(remote = %remote, reason = %reason, cause = %e, "[http] request refused")
            }
            None => debug!(remote = %remote, cause = %e, "[http] connection ended with an error"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every client socket must have Nagle off (a WebSocket message would otherwise wait for
    /// the previous one's ACK); with `listen` that comes from the listener.
    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let (mut listeners, inherited) = listen("127.0.0.1:0".parse().unwrap(), 1, false).unwrap();
        let listener = TcpListener::from_std(listeners.remove(0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(
            inherited || cfg!(not(target_os = "linux")),
            "setting TCP_NODELAY on the listener failed"
        );
        if inherited {
            assert!(accepted.nodelay().unwrap(), "TCP_NODELAY not inherited");
        }
        #[cfg(target_os = "linux")]
        assert!(
            rustix::net::sockopt::tcp_quickack(&accepted).unwrap(),
            "tcp.delayed_ack off must leave the kernel's quick ACKs on"
        );
    }

    /// `tcp.delayed_ack`: every worker's copy of the listener hands out sockets with quick
    /// ACKs off from the start, before the request (whose ACK is the one saved) arrives.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_delay_their_first_ack() {
        let (listeners, _) = listen("127.0.0.1:0".parse().unwrap(), 2, true).unwrap();
        for std_listener in listeners {
            let listener = TcpListener::from_std(std_listener).unwrap();
            let _client = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            assert!(
                !rustix::net::sockopt::tcp_quickack(&accepted).unwrap(),
                "TCP_QUICKACK off not inherited from the listener"
            );
        }
    }

    /// An idle tunnel costs its connection task's future, so that future must hold the
    /// tunnel's state and little else: no room for the handshake's state (boxed and freed
    /// before the tunnel) and no second copy of what moved into the tunnel. It was 6.6 KB
    /// before that was fixed, 2.6 KB after (rustc 1.95.0).
    #[tokio::test]
    async fn a_connection_task_holds_little_more_than_its_tunnel() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "a-token-for-the-size-test\n").unwrap();
        let mut config = Config {
            listen: crate::config::ListenAddr("127.0.0.1:0".parse().unwrap()),
            upstream: "127.0.0.1:9".parse().unwrap(),
            workers: 1,
            ..Config::default()
        };
        config.credentials.sources = vec![crate::config::CredentialSource::plain(&token)];
        config.admin.listen = String::new();
        let server = Server::bind(config).await.unwrap();
        let client = std::net::TcpStream::connect(server.local_addr()).unwrap();
        let (accepted, remote) = server.listeners[0].accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let stream = TcpStream::from_std(accepted).unwrap();
        let slot = server.limits.acquire(remote.ip()).unwrap();
        let task = serve_connection(stream, remote, slot, Arc::new(server.acceptor()));
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= 3 * 1024,
            "a connection task's future is {size} bytes"
        );
        drop((task, client));
    }

    /// Workers share one listening socket: one queue, served by whichever worker asks.
    #[test]
    fn workers_accept_from_one_queue() {
        let (listeners, _) = listen("127.0.0.1:0".parse().unwrap(), 3, true).unwrap();
        assert_eq!(listeners.len(), 3);
        let addr = listeners[0].local_addr().unwrap();
        // Connected is queued: the handshake completes in the kernel before any accept.
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        for l in listeners.iter().rev() {
            let (accepted, _) = l.accept().expect("a queued connection");
            assert!(clients
                .iter()
                .any(|c| c.local_addr().unwrap() == accepted.peer_addr().unwrap()));
        }
        assert!(listeners.iter().all(|l| l.accept().is_err()), "queue empty");
    }

    #[test]
    fn a_connection_goes_to_the_least_loaded_worker_once_counts_differ_by_two() {
        let (b, _inboxes) = Balance::new(3);
        let counts = |b: &Balance| b.open().collect::<Vec<_>>();
        // Worker 0 accepts everything: it keeps connections while within one of the least.
        assert_eq!(b.place(0), 0);
        assert_eq!(b.place(0), 0);
        assert_eq!(counts(&b), [2, 0, 0]);
        assert_eq!(b.place(0), 1, "2 > 0 + 1: to the first least-loaded");
        assert_eq!(b.place(0), 2);
        assert_eq!(counts(&b), [2, 1, 1]);
        assert_eq!(b.place(0), 0, "2 is not > 1 + 1");
        b.closed(1);
        assert_eq!(b.place(0), 1);
        // A worker that is gone is never chosen.
        b.gone(2);
        for _ in 0..10 {
            assert_ne!(b.place(0), 2);
        }
        let c = counts(&b);
        assert!(c[0].abs_diff(c[1]) <= 2, "{c:?}");
    }

    #[tokio::test]
    async fn a_handed_over_connection_comes_back_when_its_worker_is_gone() {
        let (b, inboxes) = Balance::new(2);
        drop(inboxes);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, remote) = l.accept().await.unwrap();
        let limits = crate::limits::ConnLimits::new(0, 0);
        let slot = limits.acquire(remote.ip()).unwrap();
        assert_eq!(b.place(0), 0);
        assert_eq!(b.place(0), 0);
        let to = b.place(0);
        assert_eq!(to, 1);
        let back = b
            .hand_over(0, to, s, remote, slot)
            .expect_err("worker 1 has no inbox");
        assert_eq!(back.remote, remote);
        assert_eq!(
            b.open().next(),
            Some(3),
            "counted on the worker that keeps it"
        );
        assert_ne!(b.place(0), 1, "and the gone worker takes no more");
    }
}
