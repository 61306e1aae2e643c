//! A request that came as an HTTP/2 stream. Plain requests go the way HTTP/1.1 ones do; an
//! extended CONNECT with `:protocol = websocket` (RFC 8441) is a WebSocket upgrade, judged
//! and handed to the gateway exactly like an HTTP/1.1 one, except that its tunnel runs in a
//! task of its own: the connection's task is busy with the connection's other streams.

use std::net::SocketAddr;
use std::sync::Arc;

use ::http::header::{HeaderValue, HOST};
use ::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tracing::info;

use crate::h2_streams::StreamEnd;
use crate::http1::respond::{text, Body};
use crate::limits::ConnSlot;
use crate::tls::ClientCert;
use crate::ws;

use crate::gate::refuse::bad_upgrade;
use crate::gate::Proxy;

use super::upgrade::Over;

impl Proxy {
    /// hyper's HTTP/2 service: one call per stream. A malformed request (RFC 9113 §8.1.1) is
    /// an error, which hyper answers with RST_STREAM(PROTOCOL_ERROR).
    pub(crate) async fn handle_h2(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        remote: SocketAddr,
        cert: Option<Arc<ClientCert>>,
    ) -> Result<Response<Body>, h2::Error> {
        if let Err(why) = authority_as_host(&mut req) {
            self.metrics.refused("malformed_h2");
            info!(remote = %remote, reason = %"malformed_h2", detail = %why, "[http] request refused");
            return Err(h2::Error::from(h2::Reason::PROTOCOL_ERROR));
        }
        if let Some(refused) = self.check_head(&req, remote) {
            return Ok(refused);
        }
        // hyper counts an HTTP/1.1 head's lines (`limits.max_headers`); an HTTP/2 one's
        // size is bounded by the HPACK limit, its count here.
        if req.headers().len() > self.max_headers {
            info!(remote = %remote, reason = %"header_too_large", headers = req.headers().len(), "[http] request refused");
            return Ok(text(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request header fields too large\n",
            ));
        }
        let Some(protocol) = req.extensions().get::<hyper::ext::Protocol>() else {
            return Ok(self.plain(req, remote, cert.as_deref()).await);
        };
        let bad = if !protocol.as_str().eq_ignore_ascii_case("websocket") {
            Err(ws::BadUpgrade::Protocol)
        } else {
            ws::check_extended_connect(&req)
        };
        if let Err(bad) = bad {
            info!(remote = %remote, reason = %"bad_upgrade", detail = %bad, "[ws] request refused");
            return Ok(bad_upgrade(bad));
        }
        // The stream's own slot: its tunnel holds a gateway connection of its own.
        if let Some(conn_slot) = req.extensions().get::<Arc<ConnSlot>>() {
            match conn_slot.another() {
                Ok(slot) => {
                    req.extensions_mut().insert(slot);
                }
                Err(hit) => {
                    info!(remote = %remote, reason = %hit.as_str(), "[ws] request refused");
                    self.metrics.closed(hit.as_str());
                    return Ok(text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "service unavailable: too many connections\n",
                    ));
                }
            }
        }
        let on_client = hyper::upgrade::on(&mut req);
        let (parts, _body) = req.into_parts();
        // This stream's end, to reset it when its tunnel is over (see `h2_streams`).
        let end = StreamEnd::current();
        let (resp, pending) = self
            .clone()
            .upgrade(parts, Some(on_client), remote, cert.as_deref(), Over::Http2)
            .await;
        // The connection's task serves its other streams: the tunnel gets a task of its own.
        if let Some(mut pending) = pending {
            self.tasks.spawn(async move {
                if let Some(client) = pending.upgraded().await {
                    pending.run(client).await;
                }
                if let Some(end) = end {
                    end.finish().await;
                }
            });
        }
        Ok(resp)
    }
}

/// An HTTP/2 request names its server in `:authority`, never in `Host`: the gateway, which
/// speaks HTTP/1.1, gets it as `Host`, as it would from an HTTP/1.1 client (user info, which
/// RFC 9113 §8.3.1 forbids there, is dropped). A `Host` the client sent as well must name the
/// same (§8.3.1: malformed otherwise); a CONNECT must have an `:authority` (§8.5).
fn authority_as_host<B>(req: &mut Request<B>) -> Result<(), &'static str> {
    let Some(authority) = req.uri().authority() else {
        if req.method() == ::http::Method::CONNECT {
            return Err("CONNECT without :authority");
        }
        return Ok(());
    };
    let host = match authority.port() {
        Some(port) => format!("{}:{}", authority.host(), port),
        None => authority.host().to_string(),
    };
    if let Some(sent) = req.headers().get(HOST) {
        if !sent.as_bytes().eq_ignore_ascii_case(host.as_bytes()) {
            return Err("Host differs from :authority");
        }
        return Ok(());
    }
    if let Ok(v) = HeaderValue::from_str(&host) {
        req.headers_mut().insert(HOST, v);
    }
    Ok(())
}
