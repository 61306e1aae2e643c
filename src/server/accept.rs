//! Accepting: each worker's accept loop, its connection limits, and the hand-over of a
//! connection to a less loaded worker.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::gate::Proxy;
use crate::limits::ConnSlot;
use crate::logging::FLOOD;
use crate::tls::ServerTls;

use super::balance::{Adopt, Balance};
use super::connection::serve_connection;
use super::shutdown::Shutdown;

/// A bound, ready-to-run proxy. Binding and running are separate so callers (tests, the
/// binary) can learn the real address when listening on port 0.
/// How hyper serves each client connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnSettings {
    pub(super) header_read_timeout: Duration,
    pub(super) max_headers: usize,
    pub(super) max_header_bytes: usize,
}

/// The listener's TLS side.
#[derive(Clone)]
pub(super) struct TlsSide {
    pub(super) acceptor: tokio_rustls::TlsAcceptor,
    pub(super) handshake_timeout: Duration,
    pub(super) state: Arc<ServerTls>,
    /// How connections that chose `h2` are served.
    pub(super) http2: crate::config::Http2Config,
}

/// One worker thread: its own runtime, its descriptor of the listening socket, and the
/// connections it accepted, until `end` (after the drain).
pub(super) fn worker(
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
        let _relay_loop = crate::relay::worker_loop::install();
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
pub(super) async fn near_timer() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
    }
}

/// What an accept loop needs; each worker has a copy.
#[derive(Clone)]
pub(super) struct Acceptor {
    pub(super) proxy: Arc<Proxy>,
    pub(super) limits: Arc<crate::limits::ConnLimits>,
    pub(super) settings: ConnSettings,
    pub(super) tls: Option<TlsSide>,
    pub(super) nodelay_inherited: bool,
    /// The phases a connection watches (the drain; the cut, through its `Proxy`).
    pub(super) shutdown: Shutdown,
    /// With several workers: the open-connection counts that place new connections, and
    /// this worker's index in them.
    pub(super) balance: Option<(Arc<Balance>, usize)>,
}

/// Errors that concern one incoming connection, not the listener.
pub(super) fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

impl Acceptor {
    /// A worker thread's copy: its own `Proxy` and shutdown tokens (see
    /// [`Shutdown::for_worker`]). Every connection takes a reference to the proxy: shared by
    /// all workers, its count's cache line moved between cores on every handshake.
    pub(super) fn for_worker(&self, balance: Arc<Balance>, me: usize) -> Acceptor {
        let shutdown = self.shutdown.for_worker();
        let proxy = Proxy {
            cut: shutdown.cut.clone(),
            ..Proxy::clone(&self.proxy)
        };
        Acceptor {
            proxy: Arc::new(proxy),
            shutdown,
            balance: Some((balance, me)),
            ..self.clone()
        }
    }

    /// Accepts until `stop`, then drops the listener (no new connections).
    pub(super) async fn serve(self: &Arc<Self>, listener: TcpListener, stop: CancellationToken) {
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
                            info!(target: FLOOD, remote = %remote, reason = %hit.as_str(), open = self.limits.open(), "[listen] connection refused");
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
                    warn!(target: FLOOD, cause = %e, retry_in_ms = backoff.as_millis() as u64, "[listen] accept failed");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    }

    pub(super) fn start(
        self: &Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        slot: Arc<ConnSlot>,
    ) {
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
    pub(super) async fn adopt(self: Arc<Self>, mut inbox: mpsc::UnboundedReceiver<Adopt>) {
        while let Some(adopt) = inbox.recv().await {
            self.take_over(adopt);
        }
    }

    /// Serves a connection accepted as a `std` socket (counted here already).
    pub(super) fn take_over(
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
