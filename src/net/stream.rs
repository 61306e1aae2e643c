//! The byte streams every stage works on: a client or upstream connection, plain or TLS,
//! and the same with bytes already read put back in front (for hyper).
#![allow(unsafe_code)] // reads into tokio's uninitialized buffer; SAFETY notes at each block

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rustix::net::RecvFlags;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::sys::{poll_recv, poll_send};

/// A connection to a client or to the upstream, plain or TLS. hyper serves and dials over
/// it, and an upgraded connection is unwrapped back to it so the relay works on the socket
/// itself, not through hyper's dynamic IO layer.
pub enum Stream {
    Tcp(TcpStream),
    /// A client's TLS connection to us.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Our TLS connection to an `https://` upstream.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Upgraded(TokioIo<Upgraded>),
}

impl Stream {
    /// The TCP socket under the stream (`None` for hyper's upgraded IO).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::ServerTls(s) => Some(s.get_ref().0),
            Stream::ClientTls(s) => Some(s.get_ref().0),
            Stream::Upgraded(_) => None,
        }
    }

    /// Returns the stream and any bytes hyper had already read past the HTTP head (for
    /// example a WebSocket frame the peer sent right behind its handshake).
    pub fn from_upgraded(up: Upgraded) -> (Stream, Bytes) {
        match up.downcast::<TokioIo<Prefixed>>() {
            // A slice of hyper's read buffer would keep all of it alive for the tunnel's
            // lifetime; the few bytes are copied out instead.
            Ok(parts) => {
                let (io, unread) = parts.io.into_inner().into_parts();
                let mut rest = parts.read_buf.to_vec();
                rest.extend_from_slice(&unread);
                (io, Bytes::from(rest))
            }
            Err(up) => (Stream::Upgraded(TokioIo::new(up)), Bytes::new()),
        }
    }
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            Stream::ServerTls($s) => $e,
            Stream::ClientTls($s) => $e,
            Stream::Upgraded($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(tcp) => {
                // SAFETY: recv(2) only writes bytes into the buffer; exactly the `n` it
                // reports are then marked initialized.
                let unfilled = unsafe { buf.unfilled_mut() };
                let len = unfilled.len();
                let n = ready!(poll_recv(tcp, cx, len, || {
                    let ((filled, _), _) =
                        rustix::net::recv(&*tcp, &mut *unfilled, RecvFlags::empty())?;
                    Ok(filled.len())
                }))?;
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Stream::ServerTls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Upgraded(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(tcp) => poll_send(tcp, cx, buf),
            Stream::ServerTls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ClientTls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Upgraded(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// Reads what is there. On a plain socket a short read is taken to mean "drained", as nginx
/// does: the socket's readiness is cleared right away, so the next read waits for the next
/// epoll event instead of costing an extra `read` that only says EAGAIN (one syscall per
/// message and direction). Safe against lost wake-ups: tokio clears readiness only if no
/// event arrived since its snapshot, taken before the read, and the kernel signals every
/// arrival after it.
pub(crate) fn poll_read_some(
    r: &mut Stream,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let Stream::Tcp(tcp) = r else {
        let mut rb = ReadBuf::new(buf);
        ready!(Pin::new(r).poll_read(cx, &mut rb))?;
        return Poll::Ready(Ok(rb.filled().len()));
    };
    let len = buf.len();
    poll_recv(tcp, cx, len, || {
        Ok(rustix::net::recv(&*tcp, &mut *buf, RecvFlags::empty())?.0)
    })
}

/// A client connection with the bytes already read from it in front, for hyper.
pub(crate) struct Prefixed {
    pre: Bytes,
    io: Stream,
}

impl Prefixed {
    /// The socket and whatever of the prefix hyper has not read.
    pub(crate) fn into_parts(self) -> (Stream, Bytes) {
        (self.io, self.pre)
    }

    /// A connection whose next bytes are `pre`, then the socket's.
    pub(crate) fn new(io: Stream, pre: Bytes) -> Prefixed {
        Prefixed { pre, io }
    }

    /// The socket's descriptor when the connection is plain TCP (not TLS): bytes written
    /// to it by hand reach the peer as they are.
    pub(crate) fn plain_fd(&self) -> Option<std::os::fd::RawFd> {
        match &self.io {
            Stream::Tcp(t) => Some(std::os::fd::AsRawFd::as_raw_fd(t)),
            _ => None,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
