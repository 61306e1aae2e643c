//! Accepting: each worker's accept loop, its connection limits, and the hand-over of a
//! connection to a less loaded worker. Each accepted connection gets the [`Conn`] context and
//! nothing else of the listener's (after mini-redis's `Listener` and `Handler`).

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

use super::balance::{Adopt, Balance};
use super::conn::Conn;
use super::connection::serve_connection;

/// One worker thread: its own runtime, its descriptor of the listening socket, and the
/// connections it accepted, until `end` (after the drain).
pub(super) fn worker(
    i: usize,
    listener: std::net::TcpListener,
    inbox: mpsc::UnboundedReceiver<Adopt>,
    listener_state: Listener,
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
            if let Some((balance, _)) = &listener_state.conn.balance {
                balance.gone(i);
            }
            warn!(worker = i, cause = %e, "[listen] cannot start a worker's runtime; its share of connections goes to the others");
            return;
        }
    };
    let state = Arc::new(listener_state);
    runtime.block_on(async move {
        let _relay_loop = crate::relay::worker_loop::install();
        tokio::spawn(near_timer());
        tokio::spawn(state.clone().adopt(inbox));
        match TcpListener::from_std(listener) {
            Ok(l) => {
                tokio::select! {
                    _ = state.serve(l, stop) => {}
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

/// The accept loop's state: the connection context it hands each connection, and the
/// limits it takes a slot from. Each worker has its own.
pub(super) struct Listener {
    pub(super) conn: Arc<Conn>,
    pub(super) limits: Arc<crate::limits::ConnLimits>,
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

impl Listener {
    /// A worker thread's copy: its own `Proxy` and shutdown tokens (see
    /// [`super::shutdown::Shutdown::for_worker`]). Every connection takes a reference to the proxy: shared by
    /// all workers, its count's cache line moved between cores on every handshake.
    pub(super) fn for_worker(&self, balance: Arc<Balance>, me: usize) -> Listener {
        let shutdown = self.conn.shutdown.for_worker();
        let proxy = Proxy {
            cut: shutdown.cut.clone(),
            ..Proxy::clone(&self.conn.proxy)
        };
        Listener {
            conn: Arc::new(Conn {
                proxy: Arc::new(proxy),
                shutdown,
                balance: Some((balance, me)),
                ..Conn::clone(&self.conn)
            }),
            limits: self.limits.clone(),
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
                    self.conn.proxy.metrics.connections_accepted.inc();
                    let slot = match self.limits.acquire(remote.ip().to_canonical()) {
                        Ok(slot) => slot,
                        Err(hit) => {
                            // Dropping the socket is the cheapest answer to a flood.
                            info!(target: FLOOD, remote = %remote, reason = %hit.as_str(), open = self.limits.open(), "[listen] connection refused");
                            self.conn.proxy.metrics.closed(hit.as_str());
                            continue;
                        }
                    };
                    if let Some((balance, me)) = &self.conn.balance {
                        let to = balance.place(*me);
                        if to != *me {
                            self.conn.proxy.metrics.connections_rebalanced.inc();
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
        self.conn.proxy.tasks.spawn(Box::pin(serve_connection(
            stream,
            remote,
            slot,
            self.conn.clone(),
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
                if let Some((balance, me)) = &self.conn.balance {
                    balance.closed(*me);
                }
                warn!(remote = %remote, cause = %e, "[listen] cannot take over a connection from another worker");
            }
        }
    }
}
