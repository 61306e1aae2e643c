//! Start-up and shutdown: the drain keeps open tunnels alive and refuses new clients.

use crate::common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use gatewarden::config::Secs;
use tokio_tungstenite::tungstenite::Message;

// Each shutdown test runs with one worker (accept loop on the caller's runtime) and with two
// (worker threads with runtimes and listeners of their own): the default depends on the CPUs.

#[tokio::test]
async fn drain_keeps_open_tunnels_and_refuses_new_connections_one_worker() {
    drain_keeps_open_tunnels_and_refuses_new_connections(1).await
}

#[tokio::test]
async fn drain_keeps_open_tunnels_and_refuses_new_connections_two_workers() {
    drain_keeps_open_tunnels_and_refuses_new_connections(2).await
}

async fn drain_keeps_open_tunnels_and_refuses_new_connections(workers: usize) {
    let mut h = start_with(|c| c.workers = workers).await;
    let auth = format!("Bearer {}", h.token);
    let (mut ws, _) = ws_connect(h.addr, "/ws", &[("authorization", &auth)])
        .await
        .unwrap();
    assert_echo(&mut ws, "before").await;

    h.shutdown();
    // This server's line: tests run side by side and share the log.
    wait_log(&[
        "[shutdown] stopped accepting",
        &format!("addr={} active=", h.addr),
    ])
    .await;
    // The listener is gone: new clients are refused at the TCP level.
    assert!(tokio::net::TcpStream::connect(h.addr).await.is_err());
    // The tunnel opened before the signal keeps working during the drain.
    assert_echo(&mut ws, "during drain").await;
    ws.close(None).await.unwrap();
    while next_msg(&mut ws).await.is_some() {}
    // With the last tunnel closed the server finishes well before the 20 s drain.
    h.finished().await;
    wait_log(&["[shutdown] drained"]).await;
}

#[tokio::test]
async fn drain_time_over_cuts_remaining_tunnels_one_worker() {
    drain_time_over_cuts_remaining_tunnels(1).await
}

#[tokio::test]
async fn drain_time_over_cuts_remaining_tunnels_two_workers() {
    drain_time_over_cuts_remaining_tunnels(2).await
}

async fn drain_time_over_cuts_remaining_tunnels(workers: usize) {
    let mut h = start_with(|c| {
        c.shutdown.drain = Secs(Duration::from_millis(300));
        c.workers = workers;
    })
    .await;
    let auth = format!("Bearer {}", h.token);
    let (mut ws, _) = ws_connect(h.addr, "/ws", &[("authorization", &auth)])
        .await
        .unwrap();
    assert_echo(&mut ws, "x").await;
    h.shutdown();
    // When the drain time is over the tunnel gets a real close frame at a frame boundary.
    match next_msg(&mut ws).await {
        Some(Message::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), 1001);
            assert_eq!(f.reason, "going away");
        }
        other => panic!("expected close 1001, got {other:?}"),
    }
    assert!(next_msg(&mut ws).await.is_none());
    h.finished().await;
    wait_log(&["[shutdown] drain time over"]).await;
    wait_log(&["[ws] closed", "code=1001", "by=gatewarden"]).await;
}

#[tokio::test]
async fn slow_request_head_is_cut_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = start_with(|c| c.timeouts.header_read = Secs(Duration::from_millis(500))).await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Never finish the head: gatewarden must drop the connection (an event, waited for
    // with the suite's generous timeout, not a timed assertion).
    let mut buf = Vec::new();
    let n = timeout(s.read_to_end(&mut buf)).await.unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert_eq!(h.upstream.count(), 0);
    // Others are still served.
    let auth = format!("Bearer {}", h.token);
    let (mut ws, _) = ws_connect(h.addr, "/ws", &[("authorization", &auth)])
        .await
        .unwrap();
    ws.send(Message::text("still serving")).await.unwrap();
    assert_eq!(
        next_msg(&mut ws).await,
        Some(Message::text("still serving"))
    );
}

/// A server whose `run` is dropped unfinished (a test's runtime ending, a caller's abort)
/// must not leave worker threads serving its port.
#[tokio::test]
async fn dropping_the_server_ends_its_worker_threads() {
    let mut h = start_with(|c| c.workers = 3).await;
    let auth = format!("Bearer {}", h.token);
    for _ in 0..8 {
        let (mut ws, _) = ws_connect(h.addr, "/ws", &[("authorization", &auth)])
            .await
            .unwrap();
        assert_echo(&mut ws, "hi").await;
    }
    h.done.take().unwrap().abort();
    tokio::time::timeout(WAIT, async {
        while tokio::net::TcpStream::connect(h.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the port closes once the server is dropped");
}
