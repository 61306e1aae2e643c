//! A request's session past the gate's judgement (`crate::gate`): the WebSocket upgrade and
//! the gateway's handshake, the tunnel's life, a plain request proxied.
//!
//! Three doors, one upgrade path ([`Proxy::upgrade`]): [`Proxy::handle`] is hyper's
//! HTTP/1.1 service (any request), [`Proxy::handle_upgrade`] the fast path's (a first request
//! that is a WebSocket upgrade, read by `http1::fast_head`), `Proxy::handle_h2` hyper's
//! HTTP/2 service (a stream: WebSocket by extended CONNECT, or plain). In the order a byte
//! meets them:
//! - `upgrade`: judged, then `handshake` with the gateway, answered; what runs after the
//!   answer is returned as a [`Pending`] (`handoff`);
//! - `tunnel`: the tunnel's life, from `start`'s state: the first-message phase
//!   (`first_frame`, with `pairing` for devices), then the relay;
//! - `plain`: a plain request, forwarded; `http2`: a stream's door.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use ::http::header::UPGRADE;
use ::http::{Request, Response};
use hyper::body::Incoming;
use tracing::info;

use crate::gate::refuse::bad_upgrade;
use crate::gate::Proxy;
use crate::http1::respond::Body;
use crate::tls::ClientCert;
use crate::ws;

mod first_frame;
mod handoff;
mod handshake;
mod http2;
mod pairing;
mod plain;
mod start;
mod tunnel;
mod upgrade;

pub(crate) use handoff::{Handoff, Pending};
pub(crate) use upgrade::Answered;
use upgrade::Over;

impl Proxy {
    /// hyper's HTTP/1.1 service. `cert` is the client's verified certificate when the
    /// connection is mTLS. hyper's service must return the response alone, so what an
    /// answered upgrade still has to run is left in `handoff` for the connection's task:
    /// the one side channel of the upgrade path.
    pub(crate) async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        remote: SocketAddr,
        cert: Option<Arc<ClientCert>>,
        handoff: Arc<Handoff>,
    ) -> Result<Response<Body>, Infallible> {
        if let Some(refused) = self.check_head(&req, remote) {
            return Ok(refused);
        }
        if !ws::header_has_token(req.headers(), UPGRADE, "websocket") {
            return Ok(self.plain(req, remote, cert.as_deref()).await);
        }
        if let Err(bad) = ws::check_upgrade_request(&req) {
            info!(remote = %remote, reason = %"bad_upgrade", detail = %bad, "[ws] request refused");
            return Ok(bad_upgrade(bad));
        }
        let on_client = hyper::upgrade::on(&mut req);
        let (parts, _body) = req.into_parts();
        let (resp, pending) = self
            .upgrade(parts, Some(on_client), remote, cert.as_deref(), Over::Http1)
            .await;
        if let Some(pending) = pending {
            handoff.put(pending);
        }
        Ok(resp)
    }

    /// A WebSocket upgrade request the listener read itself (see `http1::fast_head`): the
    /// same checks and answer as through [`Proxy::handle`]; the caller writes the answer
    /// and, after a 101, runs what is returned beside it over the socket it holds.
    pub(crate) async fn handle_upgrade(
        self: Arc<Self>,
        req: Request<()>,
        remote: SocketAddr,
        cert: Option<&ClientCert>,
    ) -> Answered {
        if let Some(refused) = self.check_head(&req, remote) {
            return (refused, None);
        }
        if let Err(bad) = ws::check_upgrade_request(&req) {
            info!(remote = %remote, reason = %"bad_upgrade", detail = %bad, "[ws] request refused");
            return (bad_upgrade(bad), None);
        }
        let (parts, ()) = req.into_parts();
        self.upgrade(parts, None, remote, cert, Over::Http1).await
    }
}
