//! The end of a server, in the order its phases happen: one token per phase, cancelled by
//! [`super::Server::run`] in this order and by nothing else.

use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
pub(crate) struct Shutdown {
    /// 1. Stop accepting: each worker drops its listener, so new connections are refused
    ///    by the kernel instead of queueing behind a server that will not take them.
    pub accepting: CancellationToken,
    /// 2. Drain: a keep-alive connection finishes the request in flight and closes, one
    ///    still waiting for its first request gives up, the credential and certificate
    ///    watchers stop; tunnels go on for up to `shutdown.drain`.
    pub draining: CancellationToken,
    /// 3. The drain time is over: the tunnels still open are closed (1001).
    pub cut: CancellationToken,
    /// 4. Last: the admin listener, which answered `/readyz` with 503 since phase 2.
    pub admin: CancellationToken,
}

impl Shutdown {
    /// A worker's own tokens for the phases its connections watch: children, cancelled
    /// with these, so the tokens a connection touches (a lock on the token's waiter list,
    /// twice per connection) stay in its own core's cache instead of moving between cores
    /// on every handshake.
    pub(super) fn for_worker(&self) -> Shutdown {
        Shutdown {
            accepting: self.accepting.clone(),
            draining: self.draining.child_token(),
            cut: self.cut.child_token(),
            admin: self.admin.clone(),
        }
    }
}

/// Ends a helper task with the function that started it.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
