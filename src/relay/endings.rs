//! What, besides the two peers, may end a relay: the token's revocation, the shutdown's
//! cut, the idle and lifetime timers; and gatewarden's own close once one of them fired.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, ReusableBoxFuture};

use crate::ws::close_frame;

use super::tunnel::Tunnel;
use super::{EndedBy, Revocation};

/// How long a connection gatewarden closes (revocation, end of drain) may take to reach a
/// frame boundary before it is cut.
pub(super) const REVOKE_BOUNDARY_WAIT: Duration = Duration::from_secs(5);

/// The same for an HTTP/2 stream: a stream whose flow-control window is closed holds its
/// close frame behind everything queued, for as long as the client wants. It is reset
/// instead, at once (its queued data dropped), and other streams carry on.
pub(super) const STREAM_BOUNDARY_WAIT: Duration = Duration::from_millis(250);

/// What, besides the two peers, may end a relay, in motion: timers, the revocation and
/// shutdown signals, and gatewarden's own close once one of them fired.
pub(super) struct Watch {
    /// Why gatewarden itself is closing the tunnel.
    pub(super) closing: Option<EndedBy>,
    pub(super) lifetime: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Until the credential's expiry.
    pub(super) expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(super) idle: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
    /// Bytes moved each way when the idle timer last fired.
    pub(super) moved: (u64, u64),
    pub(super) stopping: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
    pub(super) revoke_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// How long a close may wait for a frame boundary ([`REVOKE_BOUNDARY_WAIT`] or
    /// [`STREAM_BOUNDARY_WAIT`]).
    pub(super) boundary_wait: Duration,
    pub(super) changes: Option<ReusableBoxFuture<'static, Option<watch::Receiver<u64>>>>,
    pub(super) still_valid: Option<Box<dyn Fn() -> bool + Send + Sync>>,
}

impl Watch {
    pub(super) fn new(
        revocation: Option<Revocation>,
        shutdown: Option<CancellationToken>,
        idle_timeout: Option<Duration>,
        (max_lifetime, expires): (Option<Duration>, Option<Duration>),
        boundary_wait: Duration,
    ) -> Watch {
        let (changes, still_valid) = match revocation {
            Some(r) => (
                Some(ReusableBoxFuture::new(wait_change(r.changed))),
                Some(r.still_valid),
            ),
            None => (None, None),
        };
        Watch {
            closing: None,
            lifetime: max_lifetime.map(|d| Box::pin(tokio::time::sleep(d))),
            expiry: expires.map(|d| Box::pin(tokio::time::sleep(d))),
            idle: idle_timeout.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            moved: (0, 0),
            stopping: shutdown.map(|t| Box::pin(t.cancelled_owned())),
            revoke_deadline: None,
            boundary_wait,
            changes,
            still_valid,
        }
    }

    pub(super) fn begin_close(&mut self, why: EndedBy, t: &mut Tunnel) {
        let (code, reason) = why.close();
        self.closing = Some(why);
        t.closing = true;
        t.down.inject = Some(close_frame(code, reason));
        self.revoke_deadline = Some(Box::pin(tokio::time::sleep(self.boundary_wait)));
    }

    /// A reload between the handshake and the relay would otherwise go unnoticed.
    pub(super) fn check_start(&mut self, t: &mut Tunnel) {
        if self.still_valid.as_ref().is_some_and(|ok| !ok()) {
            self.begin_close(EndedBy::TokenRevoked, t);
        }
    }

    /// Polls what fired (`fired`: anything may have) and begins gatewarden's close when one
    /// says so. Ready when that close has waited long enough for a frame boundary.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>, fired: bool, t: &mut Tunnel) -> Poll<()> {
        if self.closing.is_none() && fired {
            while let Some(fut) = self.changes.as_mut() {
                match fut.poll(cx) {
                    Poll::Ready(Some(rx)) => {
                        fut.set(wait_change(rx));
                        if self.still_valid.as_ref().is_some_and(|ok| !ok()) {
                            self.begin_close(EndedBy::TokenRevoked, t);
                            break;
                        }
                    }
                    // The store is gone (shutting down): stop watching.
                    Poll::Ready(None) => self.changes = None,
                    Poll::Pending => break,
                }
            }
        }
        if self.closing.is_none() && fired {
            if let Some(stop) = self.stopping.as_mut() {
                if stop.as_mut().poll(cx).is_ready() {
                    self.stopping = None;
                    self.begin_close(EndedBy::Shutdown, t);
                }
            }
        }
        if self.closing.is_none() && fired {
            if let Some(l) = self.lifetime.as_mut() {
                if l.as_mut().poll(cx).is_ready() {
                    self.begin_close(EndedBy::MaxLifetime, t);
                }
            }
        }
        if self.closing.is_none() && fired {
            if let Some(e) = self.expiry.as_mut() {
                if e.as_mut().poll(cx).is_ready() {
                    self.begin_close(EndedBy::TokenExpired, t);
                }
            }
        }
        if self.closing.is_none() && fired {
            let mut expired = false;
            if let Some((d, timer)) = self.idle.as_mut() {
                // Looked at only when the timer fires, not per chunk relayed: traffic since
                // the last firing re-arms it, silence ends the tunnel (after 1–2 × the timeout).
                if timer.as_mut().poll(cx).is_ready() {
                    if (t.up.amt, t.down.amt) != self.moved {
                        self.moved = (t.up.amt, t.down.amt);
                        timer.as_mut().reset(tokio::time::Instant::now() + *d);
                        let _ = timer.as_mut().poll(cx);
                    } else {
                        expired = true;
                    }
                }
            }
            if expired {
                self.idle = None;
                self.begin_close(EndedBy::IdleTimeout, t);
            }
        }
        match self.revoke_deadline.as_mut() {
            Some(d) if self.closing.is_some() => d.as_mut().poll(cx),
            _ => Poll::Pending,
        }
    }
}

/// Resolves with the receiver on the next change, or `None` once the sender is gone.
pub(super) async fn wait_change(mut rx: watch::Receiver<u64>) -> Option<watch::Receiver<u64>> {
    rx.changed().await.ok().map(|_| rx)
}
