//! Logging under a flood, with the built binary: a stderr nobody reads never stalls serving
//! (lines are dropped and counted instead), and lines that come in floods are folded to one
//! a second with a count.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::binary::Proc;
use common::raw::response_head;
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn addr_in(line: &str) -> SocketAddr {
    line.split("addr=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Bad-token upgrades until `stop`, each refused (401) and logged as `[ws] unauthorized`;
/// `done` counts the answered ones.
async fn refusals(addr: SocketAddr, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    // Distinct tokens: a token refused before from the same address is a repeat, logged
    // at debug only; these are all new, each a warning line.
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            continue;
        };
        n += 1;
        let head = format!(
            "GET /ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer wrong-token-{n}-{:p}\r\n\r\n",
            &stop
        );
        if s.write_all(head.as_bytes()).await.is_ok() && response_head(&mut s).await.0 == Some(401)
        {
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_nobody_reads_never_stalls_serving() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let upstream_arg = upstream.addr.to_string();
    let mut p = Proc::spawn_stalling(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream_arg,
            "--token-file",
            tf.to_str().unwrap(),
        ],
        &[
            ("GATEWARDEN_ADMIN__LISTEN", "127.0.0.1:0"),
            // Every refusal is judged and logged (a throttled one is not logged).
            ("GATEWARDEN_AUTH__MAX_FAILURES", "100000000"),
            ("GATEWARDEN_AUTH__REJECT", "http"),
        ],
        "[listen] listening",
    );
    let admin = addr_in(&tokio::task::block_in_place(|| {
        p.wait_line("[admin] listening")
    }));
    let addr = p.listening_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let flood: Vec<_> = (0..4)
        .map(|_| tokio::spawn(refusals(addr, stop.clone(), done.clone())))
        .collect();
    // 10,000 refusal lines (~2.5 MB) are far more than the pipe (64 KiB) and the 1 MiB
    // gatewarden keeps for a stderr that does not drain: a server whose threads wait on the
    // log stalls on the way, long before.
    const LINES: u64 = 10_000;
    let waited = tokio::time::timeout(WAIT, async {
        while done.load(Ordering::Relaxed) < LINES {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the flood stalled after {} refusals: serving waits on the log",
        done.load(Ordering::Relaxed)
    );
    let (_, metrics) = admin_get(admin, "/metrics").await;
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("gatewarden_log_lines_dropped_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(dropped > 0.0, "no line counted as dropped:\n{metrics}");
    // While the flood goes on: a good client and /healthz are served at once.
    let mut ws_best = Duration::MAX;
    let mut health_best = Duration::MAX;
    for i in 0..5 {
        let t = Instant::now();
        let mut ws = ws_bearer(addr, &token).await;
        assert_echo(&mut ws, &format!("still served {i}")).await;
        ws_best = ws_best.min(t.elapsed());
        let t = Instant::now();
        let (status, _) = admin_get(admin, "/healthz").await;
        assert_eq!(status, 200);
        health_best = health_best.min(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        let _ = f.await;
    }
    assert!(
        ws_best < Duration::from_millis(100),
        "a good client took {ws_best:?} at best"
    );
    assert!(
        health_best < Duration::from_millis(100),
        "/healthz took {health_best:?} at best"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_folded_to_a_line_a_second_with_a_count() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let upstream_arg = upstream.addr.to_string();
    let mut p = Proc::gatewarden(&upstream_arg)
        .token_file(tf.to_str().unwrap())
        .envs(&[("GATEWARDEN_LIMITS__MAX_CONNECTIONS", "1")])
        .spawn();
    let addr = p.listening_addr();
    // The one connection allowed, held open.
    let mut held = ws_bearer(addr, &token).await;
    assert_echo(&mut held, "holding the only slot").await;
    const FLOOD: u64 = 300;
    let started = Instant::now();
    for _ in 0..FLOOD {
        // Accepted by the kernel, dropped by gatewarden at once.
        let _ = TcpStream::connect(addr).await;
    }
    // Every refusal is accounted for: written, or counted in a folded line.
    let (mut written, mut folded) = (0u64, 0u64);
    tokio::task::block_in_place(|| {
        while written + folded < FLOOD {
            let line = p.wait_line("[listen] connection refused");
            if line.contains("[log] repeated lines folded") {
                let n = line
                    .split("repeated=")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next();
                folded += n.unwrap().parse::<u64>().unwrap();
            } else {
                written += 1;
            }
        }
    });
    let seconds = started.elapsed().as_secs() + 1;
    assert!(folded > 0, "nothing folded");
    assert!(
        written <= seconds + 1,
        "{written} lines written in {seconds} s: not folded to one a second"
    );
    assert_eq!(written + folded, FLOOD);
}
