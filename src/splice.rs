//! Byte-for-byte relay between an authorized client and the upstream.
//!
//! One task polls both directions (like `tokio::io::copy_bidirectional`), and each direction
//! feeds a [`FrameTracker`] so the close code can be logged without terminating the
//! WebSocket. Half-closes are propagated: EOF from one side shuts down writing to the other,
//! and the other direction keeps flowing until it ends too.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use rustix::net::{RecvFlags, SendFlags};
use tokio::io::{AsyncWrite, Interest};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::either::Either;
use tokio_util::sync::{CancellationToken, ReusableBoxFuture};

use crate::net::stream::poll_read_some;
use crate::net::sys::poll_syscall;
use crate::net::Stream;
use crate::ws::{close_frame, Close, FrameTracker};

pub mod worker_loop;

/// Per-direction buffer: large, so bulk transfers need few syscalls (256 KiB moved 15% more
/// than 64 KiB in bench/run.sh bulk); borrowed from a
/// per-thread pool only while bytes are moving, so an idle tunnel holds none.
const BUF_SIZE: usize = 256 * 1024;

/// Buffers kept per thread for the next busy tunnel.
const POOL_MAX: usize = 8;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn take_buf() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

fn give_buf(buf: Box<[u8]>) {
    if buf.len() != BUF_SIZE {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(buf);
        }
    });
}

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

/// How long a connection gatewarden closes (revocation, end of drain) may take to reach a
/// frame boundary before it is cut.
const REVOKE_BOUNDARY_WAIT: Duration = Duration::from_secs(5);

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
    /// Large payloads go through a pipe with splice(2) (`splice.zero_copy`).
    pub zero_copy: bool,
    /// Two plain sockets are relayed by the worker thread's loop once the tunnel has
    /// carried this many frames (`splice.worker_loop_after`); `None`: never
    /// (`splice.worker_loop = false`).
    pub worker_loop: Option<u64>,
}

/// One direction of the relay.
struct Half {
    /// Holds bytes read but not yet written; `None` while the direction is idle.
    buf: Option<Box<[u8]>>,
    pos: usize,
    cap: usize,
    read_done: bool,
    done: bool,
    need_flush: bool,
    amt: u64,
    tracker: FrameTracker,
    /// A frame of our own to send at the next frame boundary, after which this direction ends.
    inject: Option<Vec<u8>>,
    zero_copy: bool,
    /// The other direction has carried a close frame. With one seen here too, the closing
    /// handshake is complete: at EOF the sockets are about to be closed, and half-closing
    /// the other side first would be a wasted syscall.
    peer_closed: bool,
    /// The EOF was found right behind the answering close frame ([`Half::look_for_eof`]):
    /// the relay ends, and the sockets close, as soon as the bytes held are out.
    fin_next: bool,
    /// Payload bytes in flight through a pipe (zero-copy), borrowed like the buffer.
    pipe: Option<pipe::Pipe>,
}

impl Half {
    fn new(prefix: &[u8], mut tracker: FrameTracker) -> Half {
        let buf = (!prefix.is_empty()).then(|| {
            let mut buf = take_buf();
            if buf.len() < prefix.len() {
                buf = vec![0u8; prefix.len()].into_boxed_slice();
            }
            buf[..prefix.len()].copy_from_slice(prefix);
            buf
        });
        tracker.observe(prefix);
        Half {
            buf,
            pos: 0,
            cap: prefix.len(),
            read_done: false,
            done: false,
            need_flush: false,
            amt: 0,
            tracker,
            inject: None,
            zero_copy: false,
            peer_closed: false,
            fin_next: false,
            pipe: None,
        }
    }

    /// Just read the close frame that completes the closing handshake: its sender closes the
    /// connection next, and on loopback its FIN is usually here already. One `recv` to see
    /// it lets the close frame and our own FIN leave together (see `poll_copy`); it replaces
    /// the read that would otherwise find the EOF after another wait.
    fn look_for_eof(&mut self, r: &Stream) {
        let (Stream::Tcp(tcp), Some(buf)) = (r, self.buf.as_deref_mut()) else {
            return;
        };
        if self.cap == buf.len() {
            return;
        }
        match rustix::net::recv(tcp, &mut buf[self.cap..], RecvFlags::DONTWAIT) {
            Ok((0, _)) => {
                self.read_done = true;
                self.fin_next = true;
            }
            Ok((m, _)) => {
                self.tracker.observe(&buf[self.cap..self.cap + m]);
                self.cap += m;
            }
            // Not here yet (or an error the next read reports): the usual path.
            Err(_) => {}
        }
    }

    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut Stream,
        w: &mut Stream,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.zero_copy {
                if let (Stream::Tcp(rt), Stream::Tcp(wt)) = (&*r, &*w) {
                    match ready!(self.poll_zero_copy(cx, rt, wt))? {
                        ZeroCopy::Moved => continue,
                        ZeroCopy::Eof => self.read_done = true,
                        ZeroCopy::NotNow => {}
                    }
                }
            }
            if self.pos == self.cap && self.tracker.at_boundary() {
                if let Some(frame) = self.inject.take() {
                    let buf = self.buf.get_or_insert_with(take_buf);
                    buf[..frame.len()].copy_from_slice(&frame);
                    self.pos = 0;
                    self.cap = frame.len();
                    self.read_done = true;
                }
            }
            if self.pos == self.cap && !self.read_done {
                let buf = self.buf.get_or_insert_with(take_buf);
                // Zero-copy reads frame headers with a short read and splices the payload
                // behind them; a full-size read would copy the payload too.
                let limit = if self.zero_copy { ZC_READ } else { buf.len() };
                match poll_read_some(r, cx, &mut buf[..limit]) {
                    Poll::Ready(Ok(n)) => {
                        if n == 0 {
                            self.read_done = true;
                        } else {
                            self.tracker.observe(&buf[..n]);
                            self.pos = 0;
                            self.cap = n;
                            if self.peer_closed && self.tracker.close().is_some() {
                                self.look_for_eof(r);
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing buffered: the buffer goes back until bytes arrive.
                        if let Some(buf) = self.buf.take() {
                            give_buf(buf);
                        }
                        if self.need_flush {
                            ready!(Pin::new(&mut *w).poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            let last = self.fin_next;
            while self.pos < self.cap {
                let buf = self.buf.as_deref().expect("bytes pending means a buffer");
                let n = match &*w {
                    // The relay ends once these bytes are out, and the socket is closed:
                    // held back (MSG_MORE) for that moment, they leave with its FIN in one
                    // segment instead of two.
                    Stream::Tcp(tcp) if last => ready!(poll_syscall(
                        tcp,
                        cx,
                        Interest::WRITABLE,
                        self.cap - self.pos,
                        || Ok(rustix::net::send(
                            tcp,
                            &buf[self.pos..self.cap],
                            SendFlags::NOSIGNAL | SendFlags::MORE
                        )?)
                    ))?,
                    _ => ready!(Pin::new(&mut *w).poll_write(cx, &buf[self.pos..self.cap]))?,
                };
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.amt += n as u64;
                // A socket has nothing to flush; a TLS stream may hold a record back.
                self.need_flush = !matches!(w, Stream::Tcp(_));
            }
            if self.read_done {
                if let Some(buf) = self.buf.take() {
                    give_buf(buf);
                }
                if !(self.peer_closed && self.tracker.close().is_some()) {
                    ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                }
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// What one zero-copy step did.
enum ZeroCopy {
    /// Bytes moved (into or out of the pipe): look again.
    Moved,
    /// The source reached EOF.
    Eof,
    /// Nothing to splice here (pipe empty, not inside a large payload): copy as usual.
    NotNow,
}

/// Copy-path read size with zero-copy on, and the least payload worth a splice.
const ZC_READ: usize = 16 * 1024;
const ZC_MIN: u64 = 16 * 1024;

impl Half {
    /// Empties the pipe into `w`, then, inside a large data payload, splices the next part
    /// of it from `r` into the pipe. Frame headers and small frames take the copy path.
    fn poll_zero_copy(
        &mut self,
        cx: &mut Context<'_>,
        r: &TcpStream,
        w: &TcpStream,
    ) -> Poll<io::Result<ZeroCopy>> {
        use tokio::io::Interest;
        if let Some(p) = self.pipe.as_mut().filter(|p| p.len > 0) {
            ready!(w.poll_write_ready(cx))?;
            return match w.try_io(Interest::WRITABLE, || p.drain_into(w)) {
                Ok(0) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.amt += n as u64;
                    if p.len == 0 {
                        pipe::give(self.pipe.take().expect("checked"));
                    }
                    Poll::Ready(Ok(ZeroCopy::Moved))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Ready(Ok(ZeroCopy::Moved)),
                Err(e) => Poll::Ready(Err(e)),
            };
        }
        let skip = self.tracker.skippable();
        if self.pos != self.cap || self.read_done || self.inject.is_some() || skip < ZC_MIN {
            return Poll::Ready(Ok(ZeroCopy::NotNow));
        }
        ready!(r.poll_read_ready(cx))?;
        let p = match self.pipe.as_mut() {
            Some(p) => p,
            None => self.pipe.insert(pipe::take()?),
        };
        match r.try_io(Interest::READABLE, || p.fill_from(r, skip)) {
            Ok(0) => Poll::Ready(Ok(ZeroCopy::Eof)),
            Ok(n) => {
                self.tracker.skip(n as u64);
                Poll::Ready(Ok(ZeroCopy::Moved))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Ready(Ok(ZeroCopy::Moved)),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// Pipes for splice(2), pooled per thread like the copy buffers: a tunnel holds one only
/// while payload bytes are inside it.
mod pipe {
    use std::io;
    use std::os::fd::{AsFd, OwnedFd};

    use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};

    /// Default Linux pipe capacity.
    const CAPACITY: usize = 64 * 1024;
    const POOL_MAX: usize = 32;

    pub struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        /// Bytes inside.
        pub len: usize,
    }

    impl Pipe {
        /// Splices up to `max` bytes from `from` into the pipe.
        pub fn fill_from(&mut self, from: impl AsFd, max: u64) -> io::Result<usize> {
            let want = (CAPACITY - self.len).min(max.min(usize::MAX as u64) as usize);
            let n = splice(
                from,
                None,
                &self.write,
                None,
                want,
                SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
            )?;
            self.len += n;
            Ok(n)
        }

        /// Splices what the pipe holds into `to`.
        pub fn drain_into(&mut self, to: impl AsFd) -> io::Result<usize> {
            let n = splice(
                &self.read,
                None,
                to,
                None,
                self.len,
                SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
            )?;
            self.len -= n;
            Ok(n)
        }
    }

    thread_local! {
        static POOL: std::cell::RefCell<Vec<Pipe>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    pub fn take() -> io::Result<Pipe> {
        if let Some(p) = POOL.with(|p| p.borrow_mut().pop()) {
            return Ok(p);
        }
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        Ok(Pipe {
            read,
            write,
            len: 0,
        })
    }

    /// Back to the pool if empty (a pipe with bytes inside is closed instead).
    pub fn give(p: Pipe) {
        if p.len != 0 {
            return;
        }
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOL_MAX {
                pool.push(p);
            }
        });
    }
}

/// The two sockets of a tunnel and both directions between them: everything that moves
/// bytes. Stepped by the tunnel's own task (TLS, zero-copy, no worker loop) or, for two
/// plain sockets, by the worker's loop ([`worker_loop`]).
pub(crate) struct Tunnel {
    client: Stream,
    upstream: Stream,
    up: Half,
    down: Half,
    /// gatewarden is closing the tunnel: only its close frame still goes to the client.
    closing: bool,
    first_close: Option<Side>,
}

impl Tunnel {
    /// Whether the tunnel has carried `after` frames and is between transfers: no bytes
    /// held, nothing ended, gatewarden not closing it.
    fn may_move(&self, after: u64) -> bool {
        let quiet = |h: &Half| h.pos == h.cap && !h.read_done && !h.done && h.inject.is_none();
        !self.closing
            && quiet(&self.up)
            && quiet(&self.down)
            && self.up.tracker.frames() + self.down.tracker.frames() >= after
    }

    fn note_close(&mut self) {
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
    fn step(
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

/// What, besides the two peers, may end a relay, in motion: timers, the revocation and
/// shutdown signals, and gatewarden's own close once one of them fired.
struct Watch {
    /// Why gatewarden itself is closing the tunnel.
    closing: Option<EndedBy>,
    lifetime: Option<Pin<Box<tokio::time::Sleep>>>,
    idle: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
    /// Bytes moved each way when the idle timer last fired.
    moved: (u64, u64),
    stopping: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
    revoke_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    changes: Option<ReusableBoxFuture<'static, Option<watch::Receiver<u64>>>>,
    still_valid: Option<Box<dyn Fn() -> bool + Send + Sync>>,
}

impl Watch {
    fn new(
        revocation: Option<Revocation>,
        shutdown: Option<CancellationToken>,
        idle_timeout: Option<Duration>,
        max_lifetime: Option<Duration>,
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
            idle: idle_timeout.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            moved: (0, 0),
            stopping: shutdown.map(|t| Box::pin(t.cancelled_owned())),
            revoke_deadline: None,
            changes,
            still_valid,
        }
    }

    fn begin_close(&mut self, why: EndedBy, t: &mut Tunnel) {
        let (code, reason) = why.close();
        self.closing = Some(why);
        t.closing = true;
        t.down.inject = Some(close_frame(code, reason));
        self.revoke_deadline = Some(Box::pin(tokio::time::sleep(REVOKE_BOUNDARY_WAIT)));
    }

    /// A reload between the handshake and the relay would otherwise go unnoticed.
    fn check_start(&mut self, t: &mut Tunnel) {
        if self.still_valid.as_ref().is_some_and(|ok| !ok()) {
            self.begin_close(EndedBy::TokenRevoked, t);
        }
    }

    /// Polls what fired (`fired`: anything may have) and begins gatewarden's close when one
    /// says so. Ready when that close has waited long enough for a frame boundary.
    fn poll(&mut self, cx: &mut Context<'_>, fired: bool, t: &mut Tunnel) -> Poll<()> {
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
        zero_copy,
        worker_loop,
    } = controls;
    let mut up = Half::new(from_client, FrameTracker::default());
    let mut down = Half::new(from_upstream, down);
    let plain = matches!((&client, &upstream), (Stream::Tcp(_), Stream::Tcp(_)));
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
    let mut watch = Watch::new(revocation, shutdown, idle_timeout, max_lifetime);
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
    // fired: only those are polled on a wake-up. Polling everything per message, the idle
    // direction included, was a quarter of a relayed message's instructions.
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
}

impl EndedBy {
    /// The name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::TokenRevoked => "token_revoked",
            EndedBy::Shutdown => "shutdown",
            EndedBy::IdleTimeout => "idle_timeout",
            EndedBy::MaxLifetime => "max_lifetime",
        }
    }

    /// The close frame gatewarden sends: code and reason.
    fn close(self) -> (u16, &'static str) {
        match self {
            EndedBy::TokenRevoked => (1008, "token revoked"),
            EndedBy::Shutdown => (1001, "going away"),
            EndedBy::IdleTimeout => (1001, "idle timeout"),
            EndedBy::MaxLifetime => (1001, "connection lifetime reached; reconnect"),
        }
    }
}

impl std::fmt::Display for EndedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resolves with the receiver on the next change, or `None` once the sender is gone.
async fn wait_change(mut rx: watch::Receiver<u64>) -> Option<watch::Receiver<u64>> {
    rx.changed().await.ok().map(|_| rx)
}
