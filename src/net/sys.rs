//! recv(2) and send(2) issued directly on a plain socket, with tokio's readiness: the two
//! system calls on every relayed message's path.

use std::io;
use std::task::{ready, Context, Poll};

use rustix::net::SendFlags;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Reads a plain socket with `recv` (a closure over the buffer, which may be uninitialized)
/// once it is readable. recv(2), not read(2): read(2) goes through the VFS layer first, and
/// that shows per round trip (bench/RESULTS.md; nginx reads with recv too). A short read clears readiness: see [`super::stream::poll_read_some`].
pub(crate) fn poll_recv(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    len: usize,
    recv: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    poll_syscall(tcp, cx, Interest::READABLE, len, recv)
}

/// Writes a plain socket with send(2) issued directly (rustix), as the reads are: libc's
/// `send`, which tokio's `TcpStream` reaches through mio, is a thread-cancellation point and
/// brackets every call with two more calls (bench/RESULTS.md).
/// `MSG_NOSIGNAL` as mio's. A short write clears the write readiness, as tokio does: the
/// send buffer is full, so the next write waits for the next epoll event rather than
/// costing a `send` that only says EAGAIN.
pub(crate) fn poll_send(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    buf: &[u8],
) -> Poll<io::Result<usize>> {
    poll_syscall(tcp, cx, Interest::WRITABLE, buf.len(), || {
        Ok(rustix::net::send(tcp, buf, SendFlags::NOSIGNAL)?)
    })
}

/// Runs `op` (a recv or send of up to `len` bytes) once the socket is ready for `interest`.
/// A partial transfer clears that readiness (the socket is drained, or its send buffer
/// full) but still returns what moved. Safe against lost wake-ups: tokio clears readiness
/// only if no event arrived since its snapshot, taken before the call.
pub(crate) fn poll_syscall(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    interest: Interest,
    len: usize,
    mut op: impl FnMut() -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        if interest.is_readable() {
            ready!(tcp.poll_read_ready(cx))?;
        } else {
            ready!(tcp.poll_write_ready(cx))?;
        }
        let mut moved = 0;
        let res = tcp.try_io(interest, || {
            moved = op()?;
            if moved > 0 && moved < len {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(moved)
            }
        });
        // `moved` first: asking an io::Error its kind is not free, and this is every
        // message's path.
        if moved > 0 {
            return Poll::Ready(Ok(moved));
        }
        match res {
            Ok(n) => return Poll::Ready(Ok(n)),
            // Really not ready (readiness is now cleared), or a signal: look again.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}
