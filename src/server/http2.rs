//! A client connection that chose HTTP/2 (ALPN `h2` on a TLS listener): hyper's HTTP/2
//! server, with the extended CONNECT of RFC 8441 so WebSockets can ride on streams. Each
//! stream is served on a task of its own (hyper spawns it); a WebSocket stream's tunnel
//! gets its own task too (see `session::http2`), so one slow stream holds up no other, within
//! the flow-control windows `[http2]` sets.
//!
//! A connection holds a connection slot, so it is held to deadlines as an HTTP/1.1 one is:
//! it is closed with GOAWAY when no request or stream on it has passed the gate within
//! `timeouts.header_read` of accept, when a header block stays open that long, and when it
//! has had no open stream for `http2.idle_timeout`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::config::Http2Config;
use crate::h2_streams::{HeldBody, StreamExec, Streams};
use crate::limits::ConnSlot;
use crate::logging::FLOOD;
use crate::net::Stream;
use crate::tls::ClientCert;

use super::conn::Conn;
use super::h2_frames::{FrameWatch, Seen};

/// How long a connection closed for a deadline may take to finish after its GOAWAY (a
/// client that answers nothing, or sits in a header block, never lets hyper finish).
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// Why gatewarden closes an HTTP/2 connection (the log `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// Nothing passed the gate within `timeouts.header_read`.
    Unadmitted,
    /// A header block open for `timeouts.header_read`.
    HeaderBlock,
    /// No open stream for `http2.idle_timeout`.
    Idle,
}

impl Deadline {
    fn as_str(self) -> &'static str {
        match self {
            Deadline::Unadmitted => "header_timeout",
            Deadline::HeaderBlock => "header_block_timeout",
            Deadline::Idle => "idle_timeout",
        }
    }
}

/// Serves the connection until the client ends it, a deadline passes, or the drain asks it
/// to (GOAWAY: the streams already open go on, WebSocket tunnels until the drain's end cuts
/// them). `head_budget` is what is left of `timeouts.header_read` since accept.
pub(super) async fn serve(
    stream: Stream,
    remote: SocketAddr,
    slot: Arc<ConnSlot>,
    cert: Option<Arc<ClientCert>>,
    head_budget: Duration,
    limits: &Http2Config,
    conn: &Conn,
) {
    let started = Instant::now();
    let streams = Arc::new(Streams::default());
    let proxy = conn.proxy.clone();
    let counted = streams.clone();
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let hold = counted.hold();
        req.extensions_mut().insert(slot.clone());
        req.extensions_mut().insert(hold.clone());
        let answer = proxy.clone().handle_h2(req, remote, cert.clone());
        async move {
            answer
                .await
                .map(|resp| resp.map(|body| HeldBody::new(body, hold)))
        }
    });
    let (io, seen) = FrameWatch::new(stream);
    let served = builder(limits, conn).serve_connection(TokioIo::new(io), svc);
    tokio::pin!(served);
    let header_read = conn.settings.header_read_timeout;
    let idle = limits.idle_timeout.0;
    let mut idle_since = Some(started);
    let result = loop {
        let due = next_deadline(
            &streams,
            &seen,
            started + head_budget,
            header_read,
            idle,
            idle_since,
        );
        tokio::select! {
            r = served.as_mut() => break r,
            _ = conn.shutdown.draining.cancelled() => {
                served.as_mut().graceful_shutdown();
                break served.await;
            }
            _ = streams.changed() => {}
            _ = seen.changed.notified() => {}
            _ = sleep_until(due.map(|(at, _)| at)) => {
                let why = due.expect("a deadline fired").1;
                if passed(why, &streams, &seen) {
                    idle_since = idle_from(&streams, idle_since);
                    continue;
                }
                info!(target: FLOOD, remote = %remote, reason = %why.as_str(), open_streams = streams.open(), "[http] HTTP/2 connection closed");
                // GOAWAY, then what hyper makes of the streams still open, for a while.
                served.as_mut().graceful_shutdown();
                break tokio::time::timeout(GOAWAY_GRACE, served.as_mut())
                    .await
                    .unwrap_or(Ok(()));
            }
        }
        if seen.bad_preface.load(Ordering::Acquire) {
            info!(target: FLOOD, remote = %remote, reason = %"protocol_error", detail = %"the first frame was not SETTINGS (RFC 9113 §3.4)", "[http] HTTP/2 connection closed");
            break tokio::time::timeout(GOAWAY_GRACE, served.as_mut())
                .await
                .unwrap_or(Ok(()));
        }
        idle_since = idle_from(&streams, idle_since);
    };
    if let Err(e) = result {
        debug!(remote = %remote, cause = %e, "[http] HTTP/2 connection ended with an error");
    }
}

/// Whether what a deadline waited for has happened meanwhile (a stream opened, a request
/// admitted) without a wake-up yet: then it is looked at again.
fn passed(why: Deadline, streams: &Streams, seen: &Seen) -> bool {
    match why {
        Deadline::Unadmitted => streams.admitted(),
        Deadline::HeaderBlock => seen.open_block().is_none(),
        Deadline::Idle => streams.open() > 0,
    }
}

/// Since when the connection has had no stream open (`None`: it has some).
fn idle_from(streams: &Streams, since: Option<Instant>) -> Option<Instant> {
    match streams.open() {
        0 => since.or_else(|| Some(Instant::now())),
        _ => None,
    }
}

/// hyper's HTTP/2 server as `[http2]` and the limits set it up.
fn builder(limits: &Http2Config, conn: &Conn) -> http2::Builder<StreamExec> {
    let mut builder = http2::Builder::new(StreamExec);
    builder
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_stream_window_size(limits.stream_window_bytes)
        .initial_connection_window_size(limits.connection_window_bytes)
        // What a stream may have queued toward a client that reads it slowly: one window's
        // worth, then its gateway side waits (hyper's default is 400 KiB a stream).
        .max_send_buf_size(limits.stream_window_bytes as usize)
        // DATA frames up to 64 KiB from the client (the protocol's default is 16 KiB): a
        // quarter of the frames, and of hyper's per-frame work, for a bulk stream.
        .max_frame_size(64 * 1024)
        // HPACK-decoded, as `limits.max_header_bytes` counts an HTTP/1.1 head.
        .max_header_list_size(conn.settings.max_header_bytes.min(u32::MAX as usize) as u32);
    let ping = limits.keepalive_interval.0;
    if !ping.is_zero() {
        builder.keep_alive_interval(ping).keep_alive_timeout(ping);
    } else {
        builder.keep_alive_interval(None::<Duration>);
    }
    builder
}

/// The deadline that comes first, and which one it is.
fn next_deadline(
    streams: &Streams,
    seen: &Seen,
    admit_by: Instant,
    header_read: Duration,
    idle: Duration,
    idle_since: Option<Instant>,
) -> Option<(Instant, Deadline)> {
    let unadmitted = (!streams.admitted()).then_some((admit_by, Deadline::Unadmitted));
    let block = seen
        .open_block()
        .map(|since| (since + header_read, Deadline::HeaderBlock));
    let quiet = idle_since
        .filter(|_| !idle.is_zero())
        .map(|since| (since + idle, Deadline::Idle));
    [unadmitted, block, quiet]
        .into_iter()
        .flatten()
        .min_by_key(|(at, _)| *at)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
