//! Byte-for-byte relay between an authorized client and the upstream.
//!
//! One task polls both directions (like `tokio::io::copy_bidirectional`), and each direction
//! feeds a [`FrameTracker`] so the close code can be logged without terminating the
//! WebSocket. Half-closes are propagated: EOF from one side shuts down writing to the other,
//! and the other direction keeps flowing until it ends too.
//!
//! The relay knows bytes, frames and sockets only (it imports `net` and `ws`, nothing of
//! HTTP or tokens): `half` is one direction, `tunnel` both, `endings` what else may end
//! them, `zero_copy` the splice(2) path for large payloads, `worker_loop` the per-thread
//! loop that carries long-lived plain tunnels.

use std::future::{poll_fn, Future};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::net::Stream;
use crate::ws::{Close, FrameTracker};

mod endings;
mod half;
mod tunnel;
pub(crate) mod worker_loop;
mod zero_copy;

use endings::Watch;
use half::Half;
use tunnel::Tunnel;

/// Who sent something first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    /// gatewarden itself (a revocation).
    Proxy,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
            Side::Proxy => "gatewarden",
        }
    }
}

/// Lets the relay end a connection whose token stopped being valid.
pub struct Revocation {
    /// Fires on every credential swap and grace expiry.
    pub changed: watch::Receiver<u64>,
    /// Whether the connection's token is still current or within grace.
    pub still_valid: Box<dyn Fn() -> bool + Send + Sync>,
}

/// What a finished relay saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// client → upstream
    pub bytes_in: u64,
    /// upstream → client
    pub bytes_out: u64,
    /// The first close frame on the wire and who sent it.
    pub close: Option<(Side, Close)>,
    /// An I/O error that ended the relay (a reset, typically).
    pub error: Option<io::Error>,
    /// Why gatewarden itself ended the tunnel, when it did.
    pub ended_by: Option<EndedBy>,
    /// The tunnel moved to the worker's loop.
    pub in_loop: bool,
}

/// What, besides the two peers, may end a relay.
#[derive(Default)]
pub struct Controls {
    pub revocation: Option<Revocation>,
    /// Cancelled when the shutdown drain is over.
    pub shutdown: Option<CancellationToken>,
    /// No byte in either direction for this long ends the tunnel.
    pub idle_timeout: Option<Duration>,
    /// The tunnel is ended after this long, so clients re-authenticate periodically.
    pub max_lifetime: Option<Duration>,
    /// The credential it was admitted with expires after this long (a JWT's `exp`): then
    /// the tunnel is closed with 1008 `token expired`.
    pub expires: Option<Duration>,
    /// Large payloads go through a pipe with splice(2) (`splice.zero_copy`).
    pub zero_copy: bool,
    /// Two plain sockets are relayed by the worker thread's loop once the tunnel has
    /// carried this many frames (`splice.worker_loop_after`); `None`: never
    /// (`splice.worker_loop = false`).
    pub worker_loop: Option<u64>,
}

/// Relays until both directions have ended or one fails.
///
/// `from_client` / `from_upstream` are bytes already read from each side (hyper's read-ahead)
/// that must be delivered first. `down` carries the upstream→client frame state when that
/// direction already flowed before the relay (first-message authentication).
///
/// Not an `async fn`: that would keep its arguments in its future beside the tunnel they
/// are moved into, for the tunnel's whole life (1 KB more per connection).
pub fn relay(
    client: Stream,
    upstream: Stream,
    from_client: &[u8],
    from_upstream: &[u8],
    down: FrameTracker,
    controls: Controls,
) -> impl Future<Output = Outcome> + Send {
    let Controls {
        revocation,
        shutdown,
        idle_timeout,
        max_lifetime,
        expires,
        zero_copy,
        worker_loop,
    } = controls;
    let mut up = Half::new(from_client, FrameTracker::default());
    let mut down = Half::new(from_upstream, down);
    let plain = matches!((&client, &upstream), (Stream::Tcp(_), Stream::Tcp(_)));
    // A client's stream of hyper's is an HTTP/2 stream (HTTP/1.1 upgrades are unwrapped).
    let boundary_wait = match client {
        Stream::Upgraded(_) => endings::STREAM_BOUNDARY_WAIT,
        _ => endings::REVOKE_BOUNDARY_WAIT,
    };
    // Only between two plain sockets: a TLS stream's bytes must pass through rustls.
    let zero_copy = zero_copy && cfg!(target_os = "linux") && plain;
    up.zero_copy = zero_copy;
    down.zero_copy = zero_copy;
    let mut t = Tunnel {
        client,
        upstream,
        up,
        down,
        closing: false,
        first_close: None,
    };
    t.note_close();
    let mut watch = Watch::new(
        revocation,
        shutdown,
        idle_timeout,
        (max_lifetime, expires),
        boundary_wait,
    );
    watch.check_start(&mut t);
    let lp = worker_loop
        .filter(|_| plain && !zero_copy)
        .and_then(|after| worker_loop::current().map(|lp| (lp, after)));
    match lp {
        Some((lp, 0)) => Either::Left(relay_in_loop(lp, t, watch)),
        lp => Either::Right(relay_in_task(t, watch, lp)),
    }
}

/// The relay driven by its own task: woken per socket event. With a worker loop and
/// `after` frames carried, the tunnel moves there at its next quiet moment: most tunnels
/// are short (a handshake, a few messages), and for those the move (three allocations and
/// a hand-over between tasks) costs more than it saves.
async fn relay_in_task(
    mut t: Tunnel,
    mut watch: Watch,
    mut lp: Option<(Arc<worker_loop::Loop>, u64)>,
) -> Outcome {
    // Each party that can wake the relay (the controls: revocation, shutdown, lifetime and
    // idle timers; each direction's pair of sockets) gets a waker of its own that notes it
    // fired: only those are polled on a wake-up, not everything (the idle direction too)
    // per message.
    let wakeups = Arc::new(Wakeups::default());
    let wakers = [CONTROLS, UP, DOWN].map(|which| {
        Waker::from(Arc::new(Flag {
            shared: wakeups.clone(),
            which,
        }))
    });
    let result = poll_fn(|cx| {
        wakeups.register(cx.waker());
        let [fired, up_fired, down_fired] = [CONTROLS, UP, DOWN].map(|w| wakeups.fired(w));
        let mut ccx = Context::from_waker(&wakers[CONTROLS]);
        if watch.poll(&mut ccx, fired, &mut t).is_ready() {
            return Poll::Ready(Some(Ok(())));
        }
        let mut ucx = Context::from_waker(&wakers[UP]);
        let mut dcx = Context::from_waker(&wakers[DOWN]);
        match t.step(&mut ucx, &mut dcx, up_fired, down_fired) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending if lp.as_ref().is_some_and(|(_, after)| t.may_move(*after)) => {
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    match result {
        Some(result) => outcome(&mut t, &watch, result),
        None => {
            let (lp, _) = lp.take().expect("moves only with a loop");
            drop((wakers, wakeups));
            Box::pin(relay_in_loop(lp, t, watch)).await
        }
    }
}

/// The relay's task while the worker loop moves the bytes: woken only by the controls and
/// by the loop when the tunnel is over.
async fn relay_in_loop(lp: Arc<worker_loop::Loop>, t: Tunnel, mut watch: Watch) -> Outcome {
    let reg = match worker_loop::Registration::new(&lp, t) {
        Ok(reg) => reg,
        Err(e) => {
            return Outcome {
                error: Some(e),
                ..Outcome::default()
            }
        }
    };
    let result = poll_fn(|cx| {
        let mut cell = reg.lock();
        let cell = &mut *cell;
        if cell.finished.is_none() {
            if watch.poll(cx, true, &mut cell.tunnel).is_ready() {
                return Poll::Ready(Ok(()));
            }
            // Bytes from before the relay, a close frame just begun: what needs no socket
            // event moves now.
            cell.step(true, true);
        }
        if let Some(r) = cell.finished.take() {
            return Poll::Ready(r);
        }
        if !cell.owner.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            cell.owner = Some(cx.waker().clone());
        }
        Poll::Pending
    })
    .await;
    let mut cell = reg.lock();
    Outcome {
        in_loop: true,
        ..outcome(&mut cell.tunnel, &watch, result)
    }
}

fn outcome(t: &mut Tunnel, watch: &Watch, result: io::Result<()>) -> Outcome {
    let close = if let Some(why) = watch.closing {
        let (code, reason) = why.close();
        Some((
            Side::Proxy,
            Close {
                code: Some(code),
                reason: reason.into(),
            },
        ))
    } else {
        t.note_close();
        t.first_close.and_then(|side| {
            let tr = match side {
                Side::Client => &t.up.tracker,
                _ => &t.down.tracker,
            };
            tr.close().cloned().map(|c| (side, c))
        })
    };
    Outcome {
        bytes_in: t.up.amt,
        bytes_out: t.down.amt,
        close,
        error: result.err(),
        ended_by: watch.closing,
        in_loop: false,
    }
}

const CONTROLS: usize = 0;
const UP: usize = 1;
const DOWN: usize = 2;

/// What woke the relay since its last poll; all set at first, so everything is polled once.
struct Wakeups {
    task: Mutex<Option<Waker>>,
    fired: [AtomicBool; 3],
}

impl Default for Wakeups {
    fn default() -> Self {
        Wakeups {
            task: Mutex::new(None),
            fired: [const { AtomicBool::new(true) }; 3],
        }
    }
}

impl Wakeups {
    fn register(&self, waker: &Waker) {
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if !task.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *task = Some(waker.clone());
        }
    }

    fn fired(&self, which: usize) -> bool {
        self.fired[which].swap(false, Ordering::AcqRel)
    }
}

/// One party's waker: notes that it fired, then wakes the relay's task.
struct Flag {
    shared: Arc<Wakeups>,
    which: usize,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.fired[self.which].store(true, Ordering::Release);
        let task = self.shared.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = task.as_ref() {
            w.wake_by_ref();
        }
    }
}

/// Why gatewarden itself ends a tunnel (the peers end it otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// The token it authenticated with stopped being valid (`auth.on_revoke = "close"`).
    TokenRevoked,
    /// The drain at shutdown.
    Shutdown,
    /// Nothing moved for `splice.idle_timeout`.
    IdleTimeout,
    /// `splice.max_lifetime` reached.
    MaxLifetime,
    /// The credential it was admitted with expired (a JWT's `exp`).
    TokenExpired,
}

impl EndedBy {
    /// The name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::TokenRevoked => "token_revoked",
            EndedBy::Shutdown => "shutdown",
            EndedBy::IdleTimeout => "idle_timeout",
            EndedBy::MaxLifetime => "max_lifetime",
            EndedBy::TokenExpired => "token_expired",
        }
    }

    /// The close frame gatewarden sends: code and reason.
    fn close(self) -> (u16, &'static str) {
        match self {
            EndedBy::TokenRevoked => (1008, "token revoked"),
            EndedBy::Shutdown => (1001, "going away"),
            EndedBy::IdleTimeout => (1001, "idle timeout"),
            EndedBy::MaxLifetime => (1001, "connection lifetime reached; reconnect"),
            EndedBy::TokenExpired => (1008, "token expired"),
        }
    }
}

impl std::fmt::Display for EndedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
