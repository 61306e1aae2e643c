//! The gateway's side of an upgrade: the HTTP/1.1 handshake toward it, its 101 checked, and
//! for an HTTP/2 client the 200 made from it.

use std::net::SocketAddr;
use std::time::Instant;

use ::http::header::{HeaderValue, SEC_WEBSOCKET_ACCEPT, UPGRADE};
use ::http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tracing::{info, warn};
use uuid::Uuid;

use crate::gate::headers::strip_hop_by_hop;
use crate::gate::Proxy;
use crate::http1::respond::{empty, text, Body};
use crate::upstream::Answer;
use crate::ws;

/// The 200 that opens an HTTP/2 WebSocket stream, with what the gateway's 101 agreed
/// (subprotocol, extensions, cookies) but none of HTTP/1.1's upgrade machinery. The
/// gateway's `Sec-WebSocket-Accept` is checked here, since the client cannot.
#[allow(clippy::result_large_err)] // the error is the answer itself, built once
pub(super) fn over_http2(
    mut headers: ::http::HeaderMap,
    key: &HeaderValue,
) -> Result<Response<Body>, Response<Body>> {
    let accept = headers.remove(SEC_WEBSOCKET_ACCEPT);
    if accept.is_none_or(|a| a.as_bytes() != ws::accept_key(key.as_bytes()).as_bytes()) {
        return Err(text(
            StatusCode::BAD_GATEWAY,
            "bad gateway: upstream answered the WebSocket handshake wrongly\n",
        ));
    }
    strip_hop_by_hop(&mut headers);
    let mut resp = Response::new(empty());
    *resp.headers_mut() = headers;
    Ok(resp)
}

impl Proxy {
    /// The upgrade toward the gateway: its 101, or what the client is answered instead
    /// (502 when it cannot be reached, its own answer when it refuses).
    pub(super) async fn dial(
        &self,
        head: &[u8],
        conn: Uuid,
        remote: SocketAddr,
    ) -> Result<Answer, Response<Body>> {
        let dialed = Instant::now();
        let answer = match self.upstream.upgrade(head).await {
            Ok(r) => {
                self.metrics
                    .upstream_connect_seconds
                    .observe(dialed.elapsed().as_secs_f64());
                r
            }
            Err(e) => {
                self.metrics.upstream_connect_errors.inc();
                warn!(conn = %conn, remote = %remote, reason = %e.reason(), cause = %e, "[ws] upstream unavailable");
                return Err(text(
                    StatusCode::BAD_GATEWAY,
                    "bad gateway: upstream unavailable\n",
                ));
            }
        };
        if answer.status != StatusCode::SWITCHING_PROTOCOLS {
            info!(
                conn = %conn,
                remote = %remote,
                status = answer.status.as_u16(),
                "[ws] upstream refused upgrade"
            );
            let mut resp = Response::new(
                Full::new(answer.body)
                    .map_err(|never| match never {})
                    .boxed(),
            );
            *resp.status_mut() = answer.status;
            *resp.headers_mut() = answer.headers;
            strip_hop_by_hop(resp.headers_mut());
            return Err(resp);
        }
        if !ws::header_has_token(&answer.headers, UPGRADE, "websocket") {
            warn!(conn = %conn, remote = %remote, "[ws] upstream answered 101 without Upgrade: websocket");
            return Err(text(
                StatusCode::BAD_GATEWAY,
                "bad gateway: upstream switched to another protocol\n",
            ));
        }
        Ok(answer)
    }
}
