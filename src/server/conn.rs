//! What one client connection is served with, from its first byte to the end of its tunnel:
//! the proxy, hyper's settings, the TLS side, the shutdown phases, and its worker's count.
//! The listener builds it once per worker; a connection holds it and nothing else of the
//! listener's.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::gate::Proxy;
use crate::tls::ServerTls;

use super::balance::Balance;
use super::shutdown::Shutdown;

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

impl ConnSettings {
    pub(super) fn from_config(config: &Config) -> ConnSettings {
        ConnSettings {
            header_read_timeout: config.timeouts.header_read.0,
            max_headers: config.limits.max_headers,
            max_header_bytes: config.limits.max_header_bytes,
        }
    }
}

impl TlsSide {
    pub(super) fn new(state: Arc<ServerTls>, config: &Config) -> TlsSide {
        TlsSide {
            acceptor: tokio_rustls::TlsAcceptor::from(state.config.clone()),
            handshake_timeout: config.tls.handshake_timeout.0,
            state,
            http2: config.http2.clone(),
        }
    }
}

/// A connection's context; each worker has its own (see `Listener::for_worker`).
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) proxy: Arc<Proxy>,
    pub(super) settings: ConnSettings,
    pub(super) tls: Option<TlsSide>,
    /// Accepted sockets come with `TCP_NODELAY` already set (see `net::sockopt::listen`).
    pub(super) nodelay_inherited: bool,
    /// The phases a connection watches (the drain; the cut, through its `Proxy`).
    pub(super) shutdown: Shutdown,
    /// With several workers: the open-connection counts (a connection counts itself closed
    /// on its worker when it ends), and this worker's index in them.
    pub(super) balance: Option<(Arc<Balance>, usize)>,
}

/// Counts a connection as open on its worker (see [`Balance`]) while it lives.
pub(super) struct Counted(pub(super) Arc<Conn>);

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some((balance, me)) = &self.0.balance {
            balance.closed(*me);
        }
    }
}
