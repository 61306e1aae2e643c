//! Abrupt TCP resets on either side of a tunnel: the other side sees its peer go away within
//! a bounded time, and after 1,000 such connections nothing is left behind (open file
//! descriptors and tokio tasks back to where they were).
//!
//! Its own test binary: the fd and task counts are the whole process's.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use gatewarden::testing::ws;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

const CONNECTIONS: usize = 1000;
const AT_ONCE: usize = 8;
/// The bound on noticing a reset peer (generous for a loaded machine; typically < 1 ms).
const NOTICE: Duration = Duration::from_secs(10);

/// A WebSocket upstream that echoes one frame, then (for odd connection numbers, announced
/// in the path) resets the connection; for even ones it waits for the client's reset and
/// reports how long after its echo it noticed.
async fn upstream(noticed: mpsc::UnboundedSender<Duration>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let noticed = noticed.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let reset_here = head.starts_with("GET /odd");
                let key = head
                    .lines()
                    .find_map(|l| l.strip_prefix("sec-websocket-key: "))
                    .unwrap()
                    .trim()
                    .to_string();
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
                    ws::accept_key(key.as_bytes())
                );
                s.write_all(answer.as_bytes()).await.unwrap();
                // One 7-byte masked frame ("ping me"), echoed unmasked.
                let mut frame = [0u8; 13];
                if s.read_exact(&mut frame).await.is_err() {
                    return;
                }
                let mut payload = frame[6..].to_vec();
                ws::apply_mask(&mut payload, frame[2..6].try_into().unwrap(), 0);
                let echo = ws::encode_frame(ws::OP_TEXT, &payload, None);
                if s.write_all(&echo).await.is_err() {
                    return;
                }
                if reset_here {
                    s.set_zero_linger().unwrap();
                    drop(s);
                    return;
                }
                let started = Instant::now();
                let _ = tokio::time::timeout(NOTICE * 2, s.read(&mut chunk)).await;
                let _ = noticed.send(started.elapsed());
            });
        }
    });
    addr
}

/// One connection through gatewarden; returns how long the client took to notice an
/// upstream reset (odd `i`), or `None` when the client reset (even `i`).
async fn one(addr: SocketAddr, token: &str, i: usize) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let path = if i % 2 == 1 { "/odd" } else { "/even" };
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let want = |got: &[u8]| {
        got.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .is_some_and(|p| got.len() >= p + 4 + 9)
    };
    let mut sent = false;
    while !want(&got) {
        let n = timeout(s.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "connection {i} closed early: {got:?}");
        got.extend_from_slice(&chunk[..n]);
        if !sent && got.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(got.starts_with(b"HTTP/1.1 101"), "{got:?}");
            s.write_all(&ws::encode_frame(
                ws::OP_TEXT,
                b"ping me",
                Some([9, 8, 7, 6]),
            ))
            .await
            .unwrap();
            sent = true;
        }
    }
    assert!(got.ends_with(b"ping me"), "connection {i}: no echo");
    if i % 2 == 0 {
        s.set_zero_linger().unwrap();
        drop(s);
        return None;
    }
    let started = Instant::now();
    let r = tokio::time::timeout(NOTICE * 2, s.read(&mut chunk)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "connection {i}: the client was not told the upstream went away"
    );
    Some(started.elapsed())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_on_either_side_are_noticed_and_leak_nothing() {
    let (tx, mut noticed) = mpsc::unbounded_channel();
    let up = upstream(tx).await;
    // One worker: the server then runs on this test's runtime, so its tasks are counted
    // too, and the baseline cannot be taken before a second worker thread has built its
    // runtime (under load that happened after the warm-up: 4 descriptors, an epoll, an
    // eventfd and the listener's copy, counted as a leak at the end).
    let h = start_with(|c| {
        c.upstream = up.to_string().parse().unwrap();
        c.workers = 1;
    })
    .await;
    // Warm up (pools, lazily created state), then take the baseline.
    one(h.addr, &h.token, 1).await;
    wait_log(&["[ws] closed"]).await;
    let settled = |fds: usize, tasks: usize| async move {
        timeout(async {
            loop {
                let (f, t) = (open_fds(), alive_tasks());
                if f <= fds && t <= tasks {
                    return (f, t);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    };
    let (fds, tasks) = settled(usize::MAX, usize::MAX).await;
    let baseline = settled(fds, tasks).await;

    let mut client_noticed = Vec::new();
    for batch in (0..CONNECTIONS).collect::<Vec<_>>().chunks(AT_ONCE) {
        let runs = batch.iter().map(|&i| {
            let (addr, token) = (h.addr, h.token.clone());
            tokio::spawn(async move { one(addr, &token, i).await })
        });
        for r in futures_util::future::join_all(runs).await {
            client_noticed.extend(r.unwrap());
        }
    }
    let mut upstream_noticed = Vec::new();
    while upstream_noticed.len() < CONNECTIONS / 2 {
        upstream_noticed.push(timeout(noticed.recv()).await.unwrap());
    }
    let worst_client = client_noticed.iter().max().unwrap();
    let worst_upstream = upstream_noticed.iter().max().unwrap();
    eprintln!(
        "upstream resets noticed by the client within {worst_client:?}; client resets noticed by the upstream within {worst_upstream:?}"
    );
    assert!(*worst_client < NOTICE && *worst_upstream < NOTICE);

    // Every socket and task of the 1,000 connections is gone again.
    let (fds_after, tasks_after) = settled(baseline.0, baseline.1).await;
    eprintln!(
        "fds {} -> {fds_after}, tasks {} -> {tasks_after}",
        baseline.0, baseline.1
    );
}
