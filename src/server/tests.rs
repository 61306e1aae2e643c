//! The server's own tests: socket options on accepted connections, the connection task's
//! size, and the balance between workers.

use super::balance::*;
use super::connection::*;
use super::*;
use tokio::net::TcpStream;

/// Every client socket must have Nagle off (a WebSocket message would otherwise wait for
/// the previous one's ACK); with `listen` that comes from the listener.
#[tokio::test]
async fn accepted_sockets_have_nodelay() {
    let (mut listeners, inherited) =
        listen("127.0.0.1:0".parse().unwrap(), 1, false, None).unwrap();
    let listener = TcpListener::from_std(listeners.remove(0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = TcpStream::connect(addr).await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    assert!(
        inherited || cfg!(not(target_os = "linux")),
        "setting TCP_NODELAY on the listener failed"
    );
    if inherited {
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY not inherited");
    }
    #[cfg(target_os = "linux")]
    assert!(
        rustix::net::sockopt::tcp_quickack(&accepted).unwrap(),
        "tcp.delayed_ack off must leave the kernel's quick ACKs on"
    );
}

/// `tcp.keepalive`: every accepted socket of every worker's listener probes a silent peer,
/// with the idle time configured, without a setsockopt of its own.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn accepted_sockets_inherit_keepalive() {
    let idle = std::time::Duration::from_secs(45);
    let (listeners, _) = listen("127.0.0.1:0".parse().unwrap(), 2, false, Some(idle)).unwrap();
    for std_listener in listeners {
        let listener = TcpListener::from_std(std_listener).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        use rustix::net::sockopt;
        assert!(
            sockopt::socket_keepalive(&accepted).unwrap(),
            "SO_KEEPALIVE"
        );
        assert_eq!(sockopt::tcp_keepidle(&accepted).unwrap(), idle);
        assert_eq!(sockopt::tcp_keepcnt(&accepted).unwrap(), 4);
    }
    // Off: the kernel's default (no keepalive).
    let (mut listeners, _) = listen("127.0.0.1:0".parse().unwrap(), 1, false, None).unwrap();
    let listener = TcpListener::from_std(listeners.remove(0)).unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    assert!(!rustix::net::sockopt::socket_keepalive(&accepted).unwrap());
}

/// `tcp.delayed_ack`: every worker's copy of the listener hands out sockets with quick
/// ACKs off from the start, before the request (whose ACK is the one saved) arrives.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn accepted_sockets_delay_their_first_ack() {
    let (listeners, _) = listen("127.0.0.1:0".parse().unwrap(), 2, true, None).unwrap();
    for std_listener in listeners {
        let listener = TcpListener::from_std(std_listener).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(
            !rustix::net::sockopt::tcp_quickack(&accepted).unwrap(),
            "TCP_QUICKACK off not inherited from the listener"
        );
    }
}

/// An idle tunnel costs its connection task's future, so that future must hold the
/// tunnel's state and little else: no room for the handshake's state (boxed and freed
/// before the tunnel) and no second copy of what moved into the tunnel (sizes: bench/RESULTS.md).
#[tokio::test]
async fn a_connection_task_holds_little_more_than_its_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "a-token-for-the-size-test\n").unwrap();
    let mut config = Config {
        listen: crate::config::ListenAddr("127.0.0.1:0".parse().unwrap()),
        upstream: "127.0.0.1:9".parse().unwrap(),
        workers: 1,
        ..Config::default()
    };
    config.credentials.sources = vec![crate::config::CredentialSource::plain(&token)];
    config.admin.listen = String::new();
    let server = Server::bind(config).await.unwrap();
    let client = std::net::TcpStream::connect(server.local_addr()).unwrap();
    let (accepted, remote) = server.listeners[0].accept().unwrap();
    accepted.set_nonblocking(true).unwrap();
    let stream = TcpStream::from_std(accepted).unwrap();
    let slot = server.limits.acquire(remote.ip()).unwrap();
    let task = serve_connection(stream, remote, slot, server.listener().conn);
    let size = std::mem::size_of_val(&task);
    assert!(
        size <= 3 * 1024,
        "a connection task's future is {size} bytes"
    );
    drop((task, client));
}

/// Workers share one listening socket: one queue, served by whichever worker asks.
#[test]
fn workers_accept_from_one_queue() {
    let (listeners, _) = listen("127.0.0.1:0".parse().unwrap(), 3, true, None).unwrap();
    assert_eq!(listeners.len(), 3);
    let addr = listeners[0].local_addr().unwrap();
    // Connected is queued: the handshake completes in the kernel before any accept.
    let clients: Vec<_> = (0..3)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    for l in listeners.iter().rev() {
        let (accepted, _) = l.accept().expect("a queued connection");
        assert!(clients
            .iter()
            .any(|c| c.local_addr().unwrap() == accepted.peer_addr().unwrap()));
    }
    assert!(listeners.iter().all(|l| l.accept().is_err()), "queue empty");
}

#[test]
fn a_connection_goes_to_the_least_loaded_worker_once_counts_differ_by_two() {
    let (b, _inboxes) = Balance::new(3);
    let counts = |b: &Balance| crate::admin::WorkerLoad::open(b);
    // Worker 0 accepts everything: it keeps connections while within one of the least.
    assert_eq!(b.place(0), 0);
    assert_eq!(b.place(0), 0);
    assert_eq!(counts(&b), [2, 0, 0]);
    assert_eq!(b.place(0), 1, "2 > 0 + 1: to the first least-loaded");
    assert_eq!(b.place(0), 2);
    assert_eq!(counts(&b), [2, 1, 1]);
    assert_eq!(b.place(0), 0, "2 is not > 1 + 1");
    b.closed(1);
    assert_eq!(b.place(0), 1);
    // A worker that is gone is never chosen.
    b.gone(2);
    for _ in 0..10 {
        assert_ne!(b.place(0), 2);
    }
    let c = counts(&b);
    assert!(c[0].abs_diff(c[1]) <= 2, "{c:?}");
}

#[tokio::test]
async fn a_handed_over_connection_comes_back_when_its_worker_is_gone() {
    let (b, inboxes) = Balance::new(2);
    drop(inboxes);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (s, remote) = l.accept().await.unwrap();
    let limits = crate::limits::ConnLimits::new(0, 0);
    let slot = limits.acquire(remote.ip()).unwrap();
    assert_eq!(b.place(0), 0);
    assert_eq!(b.place(0), 0);
    let to = b.place(0);
    assert_eq!(to, 1);
    let back = b
        .hand_over(0, to, s, remote, slot)
        .expect_err("worker 1 has no inbox");
    assert_eq!(back.remote, remote);
    assert_eq!(
        crate::admin::WorkerLoad::open(&*b).first().copied(),
        Some(3),
        "counted on the worker that keeps it"
    );
    assert_ne!(b.place(0), 1, "and the gone worker takes no more");
}
