//! Keeping the workers even: a connection accepted by a worker with more open than the
//! least loaded one is handed over.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::warn;

use crate::limits::ConnSlot;

/// Places each new connection on the worker with the fewest open ones.
///
/// All workers wait on the one listening socket and whichever is free accepts — taking every
/// queued connection in one go. A burst of 32 long-lived connections split 8/24 … 20/12
/// between 2 workers that way, and the busier worker then held back every connection on it
/// (rtt 48.9k vs 68.8k msg/s back to back). nginx keeps its workers even with
/// `EPOLLEXCLUSIVE`, which mio cannot ask for; pausing the busier worker's accepts halved
/// handshakes/s. So a worker that accepts a connection while it has more than one more open
/// than the least-loaded worker hands the socket over (as Envoy's "exact balance" does): a
/// channel send and a wake-up of that worker, only while the counts are uneven.
pub(crate) struct Balance {
    pub(super) open: Box<[Open]>,
    pub(super) inbox: Box<[mpsc::UnboundedSender<Adopt>]>,
}

/// A worker's open connections, on a cache line of its own: each worker writes its own
/// twice per connection and reads the others' once.
#[repr(align(128))]
pub(super) struct Open(AtomicUsize);

/// A connection on its way to another worker, its limit slot already taken.
pub(super) struct Adopt {
    pub(super) stream: std::net::TcpStream,
    pub(super) remote: SocketAddr,
    pub(super) slot: Arc<ConnSlot>,
}

impl Balance {
    pub(super) fn new(workers: usize) -> (Arc<Balance>, Vec<mpsc::UnboundedReceiver<Adopt>>) {
        let (inbox, rx): (Vec<_>, Vec<_>) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let open = (0..workers).map(|_| Open(AtomicUsize::new(0))).collect();
        let balance = Balance {
            open,
            inbox: inbox.into(),
        };
        (Arc::new(balance), rx)
    }

    /// Open connections per worker.
    fn counts(&self) -> impl Iterator<Item = usize> + '_ {
        self.open.iter().map(|o| o.0.load(Ordering::Relaxed))
    }

    /// Which worker serves a connection `me` accepted; it is counted as open there.
    pub(super) fn place(&self, me: usize) -> usize {
        let mine = self.open[me].0.load(Ordering::Relaxed);
        let (least, n) = self
            .counts()
            .enumerate()
            .min_by_key(|&(_, n)| n)
            .expect("at least one worker");
        let to = if mine > n + 1 { least } else { me };
        self.open[to].0.fetch_add(1, Ordering::Relaxed);
        to
    }

    /// A connection counted on worker `w` ended.
    pub(super) fn closed(&self, w: usize) {
        self.open[w].0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Worker `w` takes no connections (it did not start, or has ended).
    pub(super) fn gone(&self, w: usize) {
        self.open[w].0.store(usize::MAX / 2, Ordering::Relaxed);
    }

    /// Sends a connection `me` accepted to worker `to` (already counted there). If `to` has
    /// ended, the connection comes back, counted on `me`, for `me` to serve.
    pub(super) fn hand_over(
        &self,
        me: usize,
        to: usize,
        stream: TcpStream,
        remote: SocketAddr,
        slot: Arc<ConnSlot>,
    ) -> Result<(), Adopt> {
        // Out of this worker's epoll; the other registers it in its own.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                self.closed(to);
                warn!(remote = %remote, cause = %e, "[listen] cannot hand a connection to another worker");
                return Ok(());
            }
        };
        let adopt = Adopt {
            stream,
            remote,
            slot,
        };
        self.inbox[to].send(adopt).map_err(|back| {
            self.gone(to);
            self.open[me].0.fetch_add(1, Ordering::Relaxed);
            back.0
        })
    }
}

impl crate::admin::WorkerLoad for Balance {
    fn open(&self) -> Vec<usize> {
        self.counts().collect()
    }
}
