//! Every socket option gatewarden sets, in one place: the listener's, the accepted
//! connections' and the upstream connections'.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

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
    keepalive: Option<Duration>,
) -> io::Result<(Vec<std::net::TcpListener>, bool)> {
    let first = bind_one(addr)?;
    if let Some(idle) = keepalive {
        self::keepalive(&first, idle)?;
    }
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

/// TCP keepalive (`tcp.keepalive`): after `idle` without a segment, probes every quarter of
/// it, four times; a peer that answers none is gone (a laptop closed, a NAT that forgot the
/// flow, a VM suspended), and the tunnel ends with its socket instead of holding a
/// connection slot and a gateway connection until `splice.idle_timeout`, if ever. An
/// application heartbeat would keep a healthy tunnel busy anyway; this costs nothing while
/// segments flow. Set on the listener (Linux copies the options to every accepted socket)
/// and on each upstream socket that is not on loopback (there the kernel itself ends a
/// connection whose peer died).
pub(crate) fn keepalive(fd: impl AsFd, idle: Duration) -> io::Result<()> {
    use rustix::net::sockopt;
    sockopt::set_socket_keepalive(&fd, true)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let idle = idle.max(Duration::from_secs(1));
        sockopt::set_tcp_keepidle(&fd, idle)?;
        sockopt::set_tcp_keepintvl(&fd, (idle / 4).max(Duration::from_secs(1)))?;
        sockopt::set_tcp_keepcnt(&fd, 4)?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = idle;
    Ok(())
}

/// An upstream socket's options: Nagle off (a WebSocket message must not wait for the
/// previous one's ACK), keepalive where the gateway is not on loopback.
pub(crate) fn upstream(fd: impl AsFd, peer: &SocketAddr, keepalive_idle: Option<Duration>) {
    let _ = rustix::net::sockopt::set_tcp_nodelay(&fd, true);
    if let Some(idle) = keepalive_idle.filter(|_| !peer.ip().is_loopback()) {
        let _ = keepalive(&fd, idle);
    }
}

/// An accepted client socket's Nagle off, where the listener could not hand it down.
pub(crate) fn client_nodelay(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
}

/// The pool connector for plain requests, with the options [`upstream`] sets on sockets
/// gatewarden connects itself (hyper-util sets them on the sockets it makes).
pub(crate) fn connector(
    http: &mut hyper_util::client::legacy::connect::HttpConnector,
    keepalive_idle: Option<Duration>,
) {
    http.set_nodelay(true);
    http.set_keepalive(keepalive_idle);
}

/// Quick ACKs off (`tcp.delayed_ack`) on a socket before it connects.
pub(crate) fn quick_acks_off(fd: impl AsFd) {
    #[cfg(target_os = "linux")]
    let _ = rustix::net::sockopt::set_tcp_quickack(&fd, false);
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream socket probes a silent gateway only off loopback (no packet is sent:
    /// the options are read back from an unconnected socket).
    #[cfg(target_os = "linux")]
    #[test]
    fn upstream_sockets_keep_alive_off_loopback_only() {
        use rustix::net::sockopt;
        let idle = Some(Duration::from_secs(40));
        let remote: SocketAddr = "192.0.2.1:18789".parse().unwrap();
        let fd = tcp_socket(&remote).unwrap();
        upstream(&fd, &remote, idle);
        assert!(sockopt::socket_keepalive(&fd).unwrap());
        assert_eq!(sockopt::tcp_keepidle(&fd).unwrap(), Duration::from_secs(40));
        assert_eq!(
            sockopt::tcp_keepintvl(&fd).unwrap(),
            Duration::from_secs(10)
        );
        assert!(sockopt::tcp_nodelay(&fd).unwrap());
        let local: SocketAddr = "127.0.0.1:18789".parse().unwrap();
        let fd = tcp_socket(&local).unwrap();
        upstream(&fd, &local, idle);
        assert!(!sockopt::socket_keepalive(&fd).unwrap());
        assert!(sockopt::tcp_nodelay(&fd).unwrap());
    }
}
