//! A tunnel's two sockets and both directions between them: everything that moves bytes,
//! stepped by the tunnel's own task or by the worker's loop.

use std::io;
use std::task::{Context, Poll};

use crate::net::Stream;

use super::half::Half;
use super::Side;

/// The two sockets of a tunnel and both directions between them: everything that moves
/// bytes. Stepped by the tunnel's own task (TLS, zero-copy, no worker loop) or, for two
/// plain sockets, by the worker's loop ([`super::worker_loop`]).
pub(crate) struct Tunnel {
    pub(super) client: Stream,
    pub(super) upstream: Stream,
    pub(super) up: Half,
    pub(super) down: Half,
    /// gatewarden is closing the tunnel: only its close frame still goes to the client.
    pub(super) closing: bool,
    pub(super) first_close: Option<Side>,
}

impl Tunnel {
    /// Whether the tunnel has carried `after` frames and is between transfers: no bytes
    /// held, nothing ended, gatewarden not closing it.
    pub(super) fn may_move(&self, after: u64) -> bool {
        let quiet = |h: &Half| h.pos == h.cap && !h.read_done && !h.done && h.inject.is_none();
        !self.closing
            && quiet(&self.up)
            && quiet(&self.down)
            && self.up.tracker.frames() + self.down.tracker.frames() >= after
    }

    pub(super) fn note_close(&mut self) {
        if self.first_close.is_none() {
            if self.down.tracker.close().is_some() {
                self.first_close = Some(Side::Upstream);
            } else if self.up.tracker.close().is_some() {
                self.first_close = Some(Side::Client);
            }
        }
    }

    /// Moves what can move now; ready once the relay is over. `ucx`/`dcx` are the
    /// directions' contexts and `up_fired`/`down_fired` whether each may have work.
    pub(super) fn step(
        &mut self,
        ucx: &mut Context<'_>,
        dcx: &mut Context<'_>,
        up_fired: bool,
        down_fired: bool,
    ) -> Poll<io::Result<()>> {
        if self.closing {
            // Nothing more goes upstream.
            return self
                .down
                .poll_copy(dcx, &mut self.upstream, &mut self.client);
        }
        self.up.peer_closed = self.down.tracker.close().is_some();
        self.down.peer_closed = self.up.tracker.close().is_some();
        if !self.up.done && up_fired {
            if let Poll::Ready(r) = self.up.poll_copy(ucx, &mut self.client, &mut self.upstream) {
                r?;
                self.up.done = true;
            }
        }
        if !self.down.done && down_fired {
            if let Poll::Ready(r) = self
                .down
                .poll_copy(dcx, &mut self.upstream, &mut self.client)
            {
                r?;
                self.down.done = true;
            }
        }
        self.note_close();
        // Once the close handshake is complete (a close frame each way) nothing more may be
        // sent, so one side's EOF ends the relay: a client that keeps its socket open after
        // the handshake must not pin the tunnel.
        let (up, down) = (&self.up, &self.down);
        let handshake_done = up.tracker.close().is_some() && down.tracker.close().is_some();
        if (up.done && down.done) || (handshake_done && (up.done || down.done)) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}
