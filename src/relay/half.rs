//! One direction of a relay: read what is there, note the frames it crosses, write it on.
//! Its buffer is borrowed from a per-thread pool only while bytes are moving.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustix::net::{RecvFlags, SendFlags};
use tokio::io::{AsyncWrite, Interest};

use crate::net::stream::poll_read_some;
use crate::net::sys::poll_syscall;
use crate::net::Stream;
use crate::ws::FrameTracker;

use super::zero_copy::{pipe, ZeroCopy, ZC_MIN, ZC_READ};

/// Per-direction buffer: large, so bulk transfers need few syscalls (bench/RESULTS.md);
/// borrowed from a
/// per-thread pool only while bytes are moving, so an idle tunnel holds none.
pub(super) const BUF_SIZE: usize = 256 * 1024;

/// Buffers kept per thread for the next busy tunnel.
pub(super) const POOL_MAX: usize = 8;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub(super) fn take_buf() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

pub(super) fn give_buf(buf: Box<[u8]>) {
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

/// One direction of the relay.
pub(super) struct Half {
    /// Holds bytes read but not yet written; `None` while the direction is idle.
    pub(super) buf: Option<Box<[u8]>>,
    pub(super) pos: usize,
    pub(super) cap: usize,
    pub(super) read_done: bool,
    pub(super) done: bool,
    pub(super) need_flush: bool,
    pub(super) amt: u64,
    pub(super) tracker: FrameTracker,
    /// A frame of our own to send at the next frame boundary, after which this direction ends.
    pub(super) inject: Option<Vec<u8>>,
    pub(super) zero_copy: bool,
    /// The other direction has carried a close frame. With one seen here too, the closing
    /// handshake is complete: at EOF the sockets are about to be closed, and half-closing
    /// the other side first would be a wasted syscall.
    pub(super) peer_closed: bool,
    /// The EOF was found right behind the answering close frame ([`Half::look_for_eof`]):
    /// the relay ends, and the sockets close, as soon as the bytes held are out.
    pub(super) fin_next: bool,
    /// Payload bytes in flight through a pipe (zero-copy), borrowed like the buffer.
    pub(super) pipe: Option<pipe::Pipe>,
}

impl Half {
    pub(super) fn new(prefix: &[u8], mut tracker: FrameTracker) -> Half {
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
    pub(super) fn look_for_eof(&mut self, r: &Stream) {
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

    pub(super) fn poll_copy(
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

impl Half {
    /// Empties the pipe into `w`, then, inside a large data payload, splices the next part
    /// of it from `r` into the pipe. Frame headers and small frames take the copy path.
    pub(super) fn poll_zero_copy(
        &mut self,
        cx: &mut Context<'_>,
        r: &tokio::net::TcpStream,
        w: &tokio::net::TcpStream,
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
