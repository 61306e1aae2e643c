//! A worker thread's own epoll loop for tunnels between two plain sockets.
//!
//! Through tokio every relayed message costs a reactor dispatch (the socket's readiness set,
//! its waker called), a task schedule and a task poll: about as many instructions as the
//! whole relay of a message by nginx (callgrind, bench/RESULTS.md, seventh round). Here a
//! tunnel's two sockets leave tokio's reactor and join one epoll set per worker thread,
//! registered in tokio as a single descriptor: one task wake-up then serves every socket
//! event of the batch, and each is relayed inline, with no per-tunnel task wake-up. The
//! tunnel's own task only watches the controls (timers, revocation, shutdown) and is woken
//! once more, when the tunnel is over.
//!
//! Everything here runs on the worker's thread (a current-thread runtime: the loop is only
//! installed there), so the mutexes below are never contended; they make the sharing
//! between the loop and a tunnel's task safe, not concurrent.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::runtime::{Handle, RuntimeFlavor};

use super::{Stream, Tunnel};

/// Events taken per `epoll_wait`; a full batch goes round again without waiting.
const BATCH: usize = 256;

/// A plain socket out of tokio's reactor. Readiness is remembered here: set by the loop on
/// an epoll event, cleared when a transfer comes back short or with EAGAIN. The set is
/// edge-triggered, and the kernel reports every arrival (and every freed send-buffer
/// space) after that, so a short read means "drained" as on tokio's path, at no syscall.
/// Except once the peer's FIN (or an error) was reported: that is reported once, so from
/// then on the socket stays readable (writable) until a read (write) says so itself —
/// tokio keeps its "closed" readiness for the same reason.
pub struct RawTcp {
    sock: std::net::TcpStream,
    readable: bool,
    writable: bool,
    read_closed: bool,
    write_closed: bool,
}

impl RawTcp {
    fn new(sock: std::net::TcpStream) -> RawTcp {
        // Both assumed until a syscall says otherwise: the tunnel's first step tries.
        RawTcp {
            sock,
            readable: true,
            writable: true,
            read_closed: false,
            write_closed: false,
        }
    }

    pub(super) fn poll_recv(&mut self, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        // SAFETY: an initialized buffer is a valid uninitialized one; recv(2) only writes.
        let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
        self.poll_recv_uninit(uninit)
    }

    fn poll_recv_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> Poll<io::Result<usize>> {
        let len = buf.len();
        transfer(&mut self.readable, self.read_closed, len, || {
            Ok(
                rustix::net::recv(&self.sock, &mut *buf, RecvFlags::empty())?
                    .0
                     .0
                    .len(),
            )
        })
    }

    fn poll_send(&mut self, buf: &[u8]) -> Poll<io::Result<usize>> {
        transfer(&mut self.writable, self.write_closed, buf.len(), || {
            rustix::net::send(&self.sock, buf, SendFlags::NOSIGNAL)
        })
    }
}

/// Runs `op`, a recv or send of up to `len` bytes, if the socket is `ready` for it. A
/// short transfer leaves it ready only once `closed`; EAGAIN makes it not ready.
fn transfer(
    ready: &mut bool,
    closed: bool,
    len: usize,
    mut op: impl FnMut() -> Result<usize, Errno>,
) -> Poll<io::Result<usize>> {
    while *ready {
        match op() {
            Ok(n) => {
                if n > 0 && n < len {
                    *ready = closed;
                }
                return Poll::Ready(Ok(n));
            }
            Err(Errno::AGAIN) => *ready = false,
            Err(Errno::INTR) => {}
            Err(e) => return Poll::Ready(Err(e.into())),
        }
    }
    Poll::Pending
}

/// A `Pending` registers no waker: the loop steps the tunnel again on the socket's next
/// epoll event.
impl AsyncRead for RawTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // SAFETY: recv(2) only writes bytes; exactly the `n` it reports are marked initialized.
        let n = std::task::ready!(this.poll_recv_uninit(unsafe { buf.unfilled_mut() }))?;
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for RawTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_send(buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.sock.shutdown(Shutdown::Write))
    }
}

/// A tunnel as the loop and the tunnel's task share it.
pub(crate) struct Cell {
    pub(super) tunnel: Tunnel,
    /// Set once the relay is over (both directions ended, or one failed).
    pub(super) finished: Option<io::Result<()>>,
    /// The tunnel's task, woken when `finished` is set.
    pub(super) owner: Option<Waker>,
}

impl Cell {
    /// Moves what can move; notes the end and wakes the task when the relay is over.
    pub(super) fn step(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        let cx2 = &mut Context::from_waker(Waker::noop());
        if let Poll::Ready(r) = self.tunnel.step(&mut cx, cx2, true, true) {
            self.finished = Some(r);
            if let Some(w) = self.owner.take() {
                w.wake();
            }
        }
    }
}

/// One worker's loop: its epoll set and the tunnels registered in it.
pub struct Loop {
    epoll: OwnedFd,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    entries: Vec<Slot>,
    free: Vec<u32>,
}

struct Slot {
    /// Bumped when the slot is freed: an event still queued for the old tunnel then
    /// matches nothing.
    generation: u32,
    cell: Option<Arc<Mutex<Cell>>>,
}

/// The epoll key of one socket: generation, slot, and which side.
fn key(generation: u32, index: u32, upstream: bool) -> u64 {
    (u64::from(generation) << 32) | (u64::from(index) << 1) | u64::from(upstream)
}

impl Loop {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Relays what one event allows.
    fn on_event(&self, ev: &epoll::Event) {
        let k = ev.data.u64();
        let (generation, index, upstream) = ((k >> 32) as u32, (k as u32) >> 1, k & 1 == 1);
        let slots = self.lock();
        let Some(cell) = slots
            .entries
            .get(index as usize)
            .filter(|s| s.generation == generation)
            .and_then(|s| s.cell.as_ref())
        else {
            return;
        };
        let mut cell = cell.lock().unwrap_or_else(|e| e.into_inner());
        if cell.finished.is_some() {
            return;
        }
        let t = &mut cell.tunnel;
        let flags = ev.flags;
        let side = if upstream {
            &mut t.upstream
        } else {
            &mut t.client
        };
        if let Stream::Raw(s) = side {
            use epoll::EventFlags as F;
            // Errors and hang-ups are left for the next syscall to report.
            if flags.intersects(F::ERR | F::HUP | F::RDHUP) {
                s.read_closed = true;
            }
            if flags.intersects(F::ERR | F::HUP) {
                s.write_closed = true;
            }
            s.readable |= s.read_closed || flags.contains(F::IN);
            s.writable |= s.write_closed || flags.contains(F::OUT);
        }
        cell.step();
    }
}

/// A tunnel's place in its worker's loop. Dropping it takes the tunnel out; its sockets
/// close with the last reference, which also takes them out of the epoll set.
pub(crate) struct Registration {
    lp: Arc<Loop>,
    index: u32,
    cell: Arc<Mutex<Cell>>,
}

impl Registration {
    /// Takes the tunnel's sockets out of tokio's reactor into the loop's epoll set. Two
    /// plain sockets only (the caller checks). On failure the sockets are closed: the
    /// relay ends with the error.
    pub(crate) fn new(lp: &Arc<Loop>, tunnel: Tunnel) -> io::Result<Registration> {
        let Tunnel {
            client: Stream::Tcp(client),
            upstream: Stream::Tcp(upstream),
            up,
            down,
            closing,
            first_close,
        } = tunnel
        else {
            return Err(io::Error::other(
                "only two plain sockets go to the worker loop",
            ));
        };
        // Out of tokio's reactor: an event there per message is what this loop saves.
        let raw = |tcp: tokio::net::TcpStream| tcp.into_std().map(|s| Stream::Raw(RawTcp::new(s)));
        let tunnel = match (raw(client), raw(upstream)) {
            (Ok(client), Ok(upstream)) => Tunnel {
                client,
                upstream,
                up,
                down,
                closing,
                first_close,
            },
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let fds = [&tunnel.client, &tunnel.upstream].map(|s| match s {
            Stream::Raw(r) => r.sock.as_raw_fd(),
            _ => unreachable!("converted above"),
        });
        let cell = Arc::new(Mutex::new(Cell {
            tunnel,
            finished: None,
            owner: None,
        }));
        let (index, generation) = {
            let mut slots = lp.lock();
            let index = match slots.free.pop() {
                Some(i) => i,
                None => {
                    slots.entries.push(Slot {
                        generation: 0,
                        cell: None,
                    });
                    (slots.entries.len() - 1) as u32
                }
            };
            let slot = &mut slots.entries[index as usize];
            slot.cell = Some(cell.clone());
            (index, slot.generation)
        };
        let reg = Registration {
            lp: lp.clone(),
            index,
            cell,
        };
        for (fd, upstream) in fds.into_iter().zip([false, true]) {
            // SAFETY: the descriptor belongs to the tunnel in `reg`, alive for this call.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let flags = epoll::EventFlags::IN
                | epoll::EventFlags::OUT
                | epoll::EventFlags::RDHUP
                | epoll::EventFlags::ET;
            let data = epoll::EventData::new_u64(key(generation, index, upstream));
            if let Err(e) = epoll::add(&lp.epoll, fd, data, flags) {
                // Dropping `reg` closes both sockets.
                return Err(e.into());
            }
        }
        Ok(reg)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Cell> {
        self.cell.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut slots = self.lp.lock();
        let slots = &mut *slots;
        if let Some(slot) = slots.entries.get_mut(self.index as usize) {
            slot.cell = None;
            slot.generation = slot.generation.wrapping_add(1);
            slots.free.push(self.index);
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Loop>>> = const { RefCell::new(None) };
}

/// The loop of the current thread, if one is installed.
pub(crate) fn current() -> Option<Arc<Loop>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Keeps a thread's loop installed; dropping it uninstalls the loop (tunnels already in
/// it keep running while the runtime does).
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

/// Starts the current thread's loop, as a task of its runtime. Only on a current-thread
/// runtime: there a tunnel's task and the loop always run on this thread. `None` (tunnels
/// are relayed by their own tasks) elsewhere, or if epoll cannot be set up.
pub fn install() -> Option<Installed> {
    let handle = Handle::try_current().ok()?;
    if handle.runtime_flavor() != RuntimeFlavor::CurrentThread {
        return None;
    }
    let started = epoll::create(epoll::CreateFlags::CLOEXEC)
        .map_err(io::Error::from)
        .and_then(|epoll| {
            let lp = Arc::new(Loop {
                epoll,
                slots: Mutex::new(Slots::default()),
            });
            // SAFETY: `LoopFd` holds the loop, which owns the epoll descriptor, for as long
            // as the `AsyncFd` lives, and always returns that descriptor.
            let afd =
                unsafe { AsyncFd::register_with_interest(LoopFd(lp.clone()), Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)?;
            Ok((lp, afd))
        });
    match started {
        Ok((lp, afd)) => {
            handle.spawn(run(afd));
            CURRENT.with(|c| *c.borrow_mut() = Some(lp));
            Some(Installed(()))
        }
        Err(e) => {
            tracing::warn!(cause = %e, "[splice] no worker loop; tunnels are relayed by their own tasks");
            None
        }
    }
}

struct LoopFd(Arc<Loop>);

impl AsRawFd for LoopFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.epoll.as_raw_fd()
    }
}

/// Waits for the epoll set to have events (tokio sees the set as one readable
/// descriptor), then relays each.
async fn run(afd: AsyncFd<LoopFd>) {
    let lp = afd.get_ref().0.clone();
    loop {
        let mut guard = match afd.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(cause = %e, "[splice] worker loop stopped");
                return;
            }
        };
        match lp.drain() {
            // A full batch may have left events: look again before waiting. Otherwise the
            // set is drained; an event arriving since is queued on tokio's epoll, not lost.
            Ok(n) if n == BATCH => {}
            Ok(_) => guard.clear_ready(),
            Err(Errno::INTR) => {}
            Err(e) => {
                tracing::warn!(cause = %e, "[splice] worker loop stopped");
                return;
            }
        }
    }
}

impl Loop {
    /// Takes what events there are (without waiting) and relays each; returns how many.
    fn drain(&self) -> Result<usize, Errno> {
        let mut buf = [const { MaybeUninit::<epoll::Event>::uninit() }; BATCH];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let (events, _) = epoll::wait(self.epoll.as_fd(), &mut buf[..], Some(&zero))?;
        for ev in events.iter() {
            self.on_event(ev);
        }
        Ok(events.len())
    }
}
