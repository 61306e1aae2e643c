//! Every socket option gatewarden sets, in one place: the listener's, the accepted
//! connections' and the upstream connections'.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;

/// Binds the client listener: one socket, a descriptor of it per worker. Each worker waits on
/// it in its own epoll and whichever is free accepts; with `SO_REUSEPORT` (a socket per worker,
/// the kernel hashing connections onto them) a connection could wait for a busy worker while
/// another idled: 5-7 % fewer handshakes/s with 2 workers here, and any process of the same
/// user could join the group. The price: a new connection wakes every idle worker (one
/// accepts, the others find the queue empty), which only happens when there is CPU to
/// spare. On Linux an accepted socket inherits `TCP_NODELAY` from its
/// listener, so it is set once here instead of once per connection; the flag says whether
/// that worked (elsewhere each accepted socket gets it itself). Quick ACKs off
/// (`tcp.delayed_ack`) are inherited the same way, before the request arrives: set on the
/// accepted socket it would come too late for the request's ACK.
pub(crate) fn listen(
    addr: SocketAddr,
    workers: usize,
    delayed_ack: bool,
) -> io::Result<(Vec<std::net::TcpListener>, bool)> {
    let first = bind_one(addr)?;
    let inherited =
        cfg!(target_os = "linux") && rustix::net::sockopt::set_tcp_nodelay(&first, true).is_ok();
    #[cfg(target_os = "linux")]
    if delayed_ack {
        rustix::net::sockopt::set_tcp_quickack(&first, false)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = delayed_ack;
    let mut listeners = Vec::with_capacity(workers.max(1));
    for _ in 1..workers {
        listeners.push(first.try_clone()?);
    }
    listeners.insert(0, first);
    Ok((listeners, inherited))
}

/// Quick ACKs on again for a socket whose ACKs `tcp.delayed_ack` holds back: its peer is
/// sending more before we answer, and may be waiting for our ACK to send it (Nagle's
/// algorithm holds a small segment until the one before it is acknowledged: 40 ms each
/// time, measured, for a client writing its head in pieces or a gateway writing its 101
/// and its first frame apart). An ACK pending is sent at once.
pub(crate) fn quick_acks(tcp: &TcpStream) {
    #[cfg(target_os = "linux")]
    let _ = rustix::net::sockopt::set_tcp_quickack(tcp, true);
    #[cfg(not(target_os = "linux"))]
    let _ = tcp;
}

/// A non-blocking, close-on-exec TCP socket of `addr`'s family (for the listener, and for
/// upstream connections made by hand).
pub(crate) fn tcp_socket(addr: &SocketAddr) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    Ok(rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

/// A non-blocking listening socket, as `TcpListener::bind` makes it (`SO_REUSEADDR`, backlog
/// 1024).
fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use rustix::net::sockopt;
    let fd = tcp_socket(&addr)?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, 1024)?;
    Ok(std::net::TcpListener::from(fd))
}
