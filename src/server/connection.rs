//! One client connection from its first request to the end of the tunnel an upgrade left
//! behind: the fast path for a first request that is an upgrade, hyper for the rest.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::http1::fast_head::{self, First};
use crate::limits::ConnSlot;
use crate::logging::FLOOD;
use crate::net::Prefixed;
use crate::net::Stream;
use crate::session::{Handoff, Pending};
use crate::tls::ClientCert;

use super::conn::{Conn, Counted};
use super::first_bytes::{accept_tls, refuse_http2};

/// A client connection: its request(s), then the WebSocket tunnel or close frame an upgrade
/// left behind.
pub(super) async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    slot: Arc<ConnSlot>,
    conn: Arc<Conn>,
) {
    // Boxed and gone before the tunnel starts: a tunnel can stay open for hours, and its
    // task should hold the tunnel's state only, not room for the handshake's (the task was
    // 6.6 KB, 3.3 KB of it the handshake's, before).
    let _open = conn.balance.is_some().then(|| Counted(conn.clone()));
    let requests = Box::pin(serve_requests(stream, remote, slot, conn));
    upgraded(requests.await).await
}

/// What an upgrade left to run. A plain fn, so the connection's future does not keep the
/// `Pending` beside the tunnel it became.
pub(super) fn upgraded(next: Upgraded) -> impl Future<Output = ()> {
    match next {
        Some((pending, client)) => tokio_util::either::Either::Left(pending.run(client)),
        None => tokio_util::either::Either::Right(std::future::ready(())),
    }
}

/// What an upgrade left to run, with the client socket and the bytes behind its head.
type Upgraded = Option<(Pending, (Stream, bytes::Bytes))>;

/// The connection until an upgrade: the fast path for a first request that is a WebSocket
/// upgrade, hyper for everything else. Returns what an upgrade left to run, with the client
/// socket and the bytes read behind the request head.
pub(super) async fn serve_requests(
    mut stream: TcpStream,
    remote: SocketAddr,
    slot: Arc<ConnSlot>,
    conn: Arc<Conn>,
) -> Upgraded {
    if !conn.nodelay_inherited {
        crate::net::sockopt::client_nodelay(&stream);
    }
    let (remote, spent) = client_behind_balancer(&mut stream, remote, &conn).await?;
    // One deadline from accept: a PROXY header's time is the request head's too (the TLS
    // handshake has a deadline of its own).
    let head_budget = conn
        .settings
        .header_read_timeout
        .saturating_sub(spent)
        .max(Duration::from_millis(1));
    let (stream, cert) = match &conn.tls {
        None => (Stream::Tcp(stream), None),
        Some(tls) => {
            let secured = accept_tls(stream, remote, tls).await?;
            if secured.h2 {
                let (stream, cert) = (secured.stream, secured.cert);
                // Boxed: an HTTP/2 connection's state is large, and every other connection's
                // future would otherwise be sized for it.
                Box::pin(super::http2::serve(
                    stream,
                    remote,
                    slot,
                    cert,
                    head_budget,
                    &tls.http2,
                    &conn,
                ))
                .await;
                return None;
            }
            (secured.stream, secured.cert)
        }
    };
    let handoff = Arc::new(Handoff::default());
    let peer = Peer {
        remote,
        slot,
        cert,
        handoff,
        head_budget,
    };
    match fast_path(stream, &peer, &conn).await {
        FastPath::Done(upgraded) => upgraded,
        FastPath::Hyper(io, spent) => with_hyper(io, spent, peer, &conn).await,
    }
}

/// What every request of a connection is served with.
struct Peer {
    remote: SocketAddr,
    /// The connection-limit slot; it travels with each request so an upgraded tunnel keeps
    /// holding it after the connection's HTTP part is over.
    slot: Arc<ConnSlot>,
    cert: Option<Arc<ClientCert>>,
    handoff: Arc<Handoff>,
    /// What is left of `timeouts.header_read` for the first request head.
    head_budget: Duration,
}

/// A trusted load balancer names the real client first: from here on it is `remote` (logs,
/// throttling, X-Forwarded-For). Bounded by the header-read deadline; `None` closes. With
/// the time reading it took (zero when no header is expected: no clock read).
async fn client_behind_balancer(
    stream: &mut TcpStream,
    remote: SocketAddr,
    conn: &Conn,
) -> Option<(SocketAddr, Duration)> {
    if !conn.proxy.expects_proxy_header(remote.ip()) {
        return Some((remote, Duration::ZERO));
    }
    let started = tokio::time::Instant::now();
    let read = crate::proxy_protocol::read_header(stream);
    match tokio::time::timeout(conn.settings.header_read_timeout, read).await {
        Ok(Ok(Some(client))) => Some((client, started.elapsed())),
        Ok(Ok(None)) => Some((remote, started.elapsed())),
        Ok(Err(e)) => {
            info!(target: FLOOD, remote = %remote, reason = %"bad_proxy_header", cause = %e, "[listen] connection refused");
            None
        }
        Err(_) => {
            info!(target: FLOOD, remote = %remote, reason = %"bad_proxy_header", cause = %"no PROXY protocol header in time", "[listen] connection refused");
            None
        }
    }
}

/// Where the fast path leaves a connection.
#[allow(clippy::large_enum_variant)] // returned once per connection and taken apart at once: no box
enum FastPath {
    /// Over: closed, or upgraded (what the upgrade left to run).
    Done(Upgraded),
    /// For hyper: the socket with what was read put back in front, and the time the header
    /// deadline has already spent.
    Hyper(Prefixed, Duration),
}

/// Reads first requests that are complete WebSocket upgrades and answers them without
/// hyper (see `http1::fast_head`), as long as the client sends such requests.
async fn fast_path(mut stream: Stream, peer: &Peer, conn: &Conn) -> FastPath {
    let settings = conn.settings;
    let draining = &conn.shutdown.draining;
    let mut budget = peer.head_budget;
    loop {
        let first =
            fast_head::read_first(stream, peer.remote, budget, settings.max_headers, draining)
                .await;
        let (mut req, mut s, rest, close) = match first {
            First::Done => return FastPath::Done(None),
            First::Hyper { io, spent } => {
                let before = settings.header_read_timeout.saturating_sub(budget);
                return FastPath::Hyper(io, spent + before);
            }
            First::Upgrade {
                req,
                stream,
                rest,
                close,
            } => (req, stream, rest, close),
        };
        req.extensions_mut().insert(peer.slot.clone());
        let (resp, pending) = conn
            .proxy
            .clone()
            .handle_upgrade(req, peer.remote, peer.cert.as_deref())
            .await;
        let switched = resp.status() == hyper::StatusCode::SWITCHING_PROTOCOLS;
        // An answer that says `Connection: close` ends the connection.
        let close = close
            || resp
                .headers()
                .get(hyper::header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let written = crate::http1::respond::write_response(&mut s, resp).await;
        if let Err(e) = written {
            debug!(remote = %peer.remote, cause = %e, "[http] connection ended with an error");
            return FastPath::Done(None);
        }
        if switched {
            return FastPath::Done(pending.map(|p| (p, (s, rest))));
        }
        if close {
            use tokio::io::AsyncWriteExt;
            let _ = s.shutdown().await;
            return FastPath::Done(None);
        }
        // Refused without closing. A client that retries on the same connection is read the
        // same way; one that leaves (what a refused WebSocket client does) costs a read that
        // finds the end, not a hyper connection set up to see it. Bytes already behind the head (a pipelined
        // request) go to hyper with them.
        if !rest.is_empty() {
            return FastPath::Hyper(Prefixed::new(s, rest), Duration::ZERO);
        }
        stream = s;
        budget = settings.header_read_timeout;
    }
}

/// hyper's HTTP/1.1 server for the rest of the connection, until it closes or upgrades.
async fn with_hyper(io: Prefixed, spent: Duration, peer: Peer, conn: &Conn) -> Upgraded {
    let settings = conn.settings;
    // For answering HTTP/2 prior knowledge after hyper has taken the stream (no peek per
    // connection: that would cost every client a syscall for a rare mistake).
    let raw_fd = io.plain_fd();
    let Peer {
        remote,
        slot,
        cert,
        handoff,
        ..
    } = peer;
    let svc = {
        let handoff = handoff.clone();
        let proxy = conn.proxy.clone();
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
            settings
                .header_read_timeout
                .saturating_sub(spent)
                .max(Duration::from_millis(1)),
        )
        .max_buf_size(settings.max_header_bytes);
    // hyper keeps up to 100 headers on the stack; a different limit costs a heap allocation
    // per request, so it is only set when configured.
    if settings.max_headers != 100 {
        builder.max_headers(settings.max_headers);
    }
    // In a block: hyper's connection state is gone before a tunnel starts.
    let result = {
        let served = builder
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        tokio::pin!(served);
        let result = tokio::select! {
            r = served.as_mut() => r,
            _ = conn.shutdown.draining.cancelled() => {
                served.as_mut().graceful_shutdown();
                served.await
            }
        };
        if let (Err(e), Some(fd)) = (&result, raw_fd) {
            if e.is_parse_version_h2() {
                // SAFETY: `served` owns the socket and is still alive here (it is dropped at
                // the end of this block), so the descriptor is open and still ours.
                #[allow(unsafe_code)]
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                refuse_http2(fd);
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
        log_hyper_end(remote, &e);
    }
    None
}

/// Why hyper ended a connection, when it was the client's doing (hyper has already answered
/// 431 / 400 / 414 where an answer is possible).
fn log_hyper_end(remote: SocketAddr, e: &hyper::Error) {
    let reason = if e.is_parse_version_h2() {
        Some("http2_not_supported")
    } else if e.is_parse_too_large() {
        Some("header_too_large")
    } else if e.is_parse() {
        Some("bad_request")
    } else if e.is_timeout() {
        Some("header_timeout")
    } else {
        None
    };
    match reason {
        Some(reason @ "http2_not_supported") => {
            info!(target: FLOOD, remote = %remote, reason = %reason, "[http] request refused")
        }
        Some(reason) => {
            info!(target: FLOOD, remote = %remote, reason = %reason, cause = %e, "[http] request refused")
        }
        None => debug!(remote = %remote, cause = %e, "[http] connection ended with an error"),
    }
}
