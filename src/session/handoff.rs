//! What an answered upgrade leaves to run once the client's side has switched protocols: the
//! tunnel, or the close frame of a refusal. [`crate::session::upgrade`] returns it as a
//! value; only hyper's HTTP/1.1 service, which must return a bare response, leaves it in a
//! [`Handoff`] for the connection's task.

use std::sync::Arc;

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use tokio_util::either::Either;
use tracing::warn;

use crate::auth::Reason;
use crate::gate::Proxy;
use crate::net::Stream;
use crate::ws;

use super::start::Tunnel;

/// Where [`Proxy::handle`] leaves what an upgrade still has to do once the client's side
/// has switched protocols, for the connection's own task to run: one task per connection
/// instead of a second one per tunnel (a spawn is an aligned allocation and a few copies of
/// the whole future, on every handshake).
#[derive(Default)]
pub(crate) struct Handoff(std::sync::Mutex<Option<Pending>>);

impl Handoff {
    pub(super) fn put(&self, pending: Pending) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(pending);
    }

    /// The upgrade's remaining work, when the request was answered with a 101.
    pub(crate) fn take(&self) -> Option<Pending> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// An answered upgrade's second half.
pub(crate) struct Pending {
    pub(super) proxy: Arc<Proxy>,
    /// hyper's side of the client connection; `None` when the listener read the request
    /// itself and holds the socket (or once [`Pending::upgraded`] took it).
    pub(super) on_client: Option<OnUpgrade>,
    pub(super) then: Then,
}

#[allow(clippy::large_enum_variant)] // one per handshake, never moved around: no box
pub(super) enum Then {
    /// Relay to the upstream, after the first-message phase where configured.
    Tunnel {
        upstream: Stream,
        from_upstream: Bytes,
        tunnel: Tunnel,
    },
    /// `auth.reject = "close"`: a close frame with the refusal's code and reason.
    Close(Reason),
}

impl Pending {
    /// hyper's upgraded client connection, once hyper has let go of it; `None` (logged) when
    /// the upgrade failed on the client's side after the 101.
    pub(crate) async fn upgraded(&mut self) -> Option<(Stream, Bytes)> {
        match self.on_client.take()?.await {
            Ok(up) => Some(Stream::from_upgraded(up)),
            Err(e) => {
                if let Then::Tunnel { tunnel, .. } = &self.then {
                    warn!(conn = %tunnel.conn, cause = %e, "[ws] upgrade failed after 101");
                }
                None
            }
        }
    }

    /// The tunnel, or the close frame, over the client's socket (and the bytes the client
    /// sent behind its request head). A plain fn: an async one would keep this `Pending`
    /// beside the tunnel future it moves into, for the tunnel's whole life.
    // Always inlined: with two callers (a connection's task, an HTTP/2 stream's) LLVM stopped
    // inlining it, and the tunnel future it returns was then built and copied once more per
    // handshake.
    #[inline(always)]
    pub(crate) fn run(
        self,
        (mut client, from_client): (Stream, Bytes),
    ) -> impl std::future::Future<Output = ()> {
        match self.then {
            Then::Tunnel {
                upstream,
                from_upstream,
                tunnel,
            } => Either::Left(self.proxy.tunnel(
                (client, from_client),
                (upstream, from_upstream),
                tunnel,
            )),
            Then::Close(reason) => Either::Right(async move {
                let frame = ws::close_frame(reason.close_code(), reason.close_text());
                ws::close_gracefully(&mut client, &frame).await;
            }),
        }
    }
}
