//! A client connection that chose HTTP/2 (ALPN `h2` on a TLS listener): hyper's HTTP/2
//! server, with the extended CONNECT of RFC 8441 so WebSockets can ride on streams. Each
//! stream is served on a task of its own (hyper spawns it); a WebSocket stream's tunnel
//! gets its own task too (see `gate::http2`), so one slow stream holds up no other, within
//! the flow-control windows `[http2]` sets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::debug;

use crate::config::Http2Config;
use crate::limits::ConnSlot;
use crate::net::Stream;
use crate::tls::ClientCert;

use super::accept::Acceptor;

/// Serves the connection until the client ends it, or the drain asks it to (GOAWAY: the
/// streams already open go on, WebSocket tunnels until the drain's end cuts them).
pub(super) async fn serve(
    stream: Stream,
    remote: SocketAddr,
    slot: Arc<ConnSlot>,
    cert: Option<Arc<ClientCert>>,
    limits: &Http2Config,
    conn: &Acceptor,
) {
    let proxy = conn.proxy.clone();
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(slot.clone());
        proxy.clone().handle_h2(req, remote, cert.clone())
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_stream_window_size(limits.stream_window_bytes)
        .initial_connection_window_size(limits.connection_window_bytes)
        // What a stream may have queued toward a client that reads it slowly: one window's
        // worth, then its gateway side waits (hyper's default is 400 KiB a stream).
        .max_send_buf_size(limits.stream_window_bytes as usize)
        // HPACK-decoded, as `limits.max_header_bytes` counts an HTTP/1.1 head.
        // DATA frames up to 64 KiB from the client (the protocol's default is 16 KiB): a
        // quarter of the frames, and of hyper's per-frame work, for a bulk stream. wss bulk
        // over HTTP/2 went from 0.78x to 0.96-1.06x wss over HTTP/1.1 (bench/RESULTS.md).
        .max_frame_size(64 * 1024)
        .max_header_list_size(conn.settings.max_header_bytes.min(u32::MAX as usize) as u32);
    let ping = limits.keepalive_interval.0;
    if !ping.is_zero() {
        builder.keep_alive_interval(ping).keep_alive_timeout(ping);
    } else {
        builder.keep_alive_interval(None::<Duration>);
    }
    let served = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(served);
    let result = tokio::select! {
        r = served.as_mut() => r,
        _ = conn.shutdown.draining.cancelled() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = result {
        debug!(remote = %remote, cause = %e, "[http] HTTP/2 connection ended with an error");
    }
}
