//! Worker threads: connections are spread over them, and every one works.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// `gatewarden_worker_connections{worker="i"}` for each worker.
fn per_worker(text: &str, workers: usize) -> Vec<u64> {
    (0..workers)
        .map(|i| {
            let key = format!("gatewarden_worker_connections{{worker=\"{i}\"}} ");
            let line = text
                .lines()
                .find(|l| l.starts_with(&key))
                .unwrap_or_else(|| panic!("no {key:?} in:\n{text}"));
            line[key.len()..].trim().parse().unwrap()
        })
        .collect()
}

/// Polls the per-worker gauges until they add up to `total` (connections that ended on the
/// client side may still be finishing on the server's).
async fn counts_adding_up_to(admin: SocketAddr, workers: usize, total: u64) -> Vec<u64> {
    tokio::time::timeout(WAIT, async {
        loop {
            let counts = per_worker(&admin_get(admin, "/metrics").await.1, workers);
            if counts.iter().sum::<u64>() == total {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("worker connection counts never added up to {total}"))
}

/// Whichever worker wakes first used to take a whole burst of new connections (32 long-lived
/// ones split up to 8/24 between 2 workers), and the busier worker then held back all of its
/// connections. Each burst here must end within 2 of even, and handed-over connections
/// must carry traffic like the others.
#[tokio::test]
async fn bursts_of_long_lived_connections_are_spread_evenly_over_workers() {
    let p = start_with(|c| c.workers = 2).await;
    let token = p.token.clone();
    let admin = p.admin.expect("admin listener on");
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str())];
    let mut open = Vec::new();
    for burst in 1..=3u64 {
        let connects = (0..32).map(|_| ws_connect(p.addr, "/ws", &headers));
        let mut conns: Vec<_> = futures_util::future::join_all(connects)
            .await
            .into_iter()
            .map(|r| r.expect("upgrade").0)
            .collect();
        for (i, ws) in conns.iter_mut().enumerate() {
            let m = Message::text(format!("burst {burst} conn {i}"));
            ws.send(m.clone()).await.unwrap();
            assert_eq!(next_msg(ws).await, Some(m));
        }
        open.extend(conns);
        let counts = counts_adding_up_to(admin, 2, 32 * burst).await;
        assert!(
            counts[0].abs_diff(counts[1]) <= 2,
            "burst {burst}: connections per worker {counts:?}"
        );
    }
    let (_, text) = admin_get(admin, "/metrics").await;
    assert!(
        text.contains("gatewarden_connections_accepted_total 96"),
        "{text}"
    );
    // Closing every connection brings both counts back to zero.
    for mut ws in open {
        ws.close(None).await.unwrap();
        while next_msg(&mut ws).await.is_some() {}
    }
    assert_eq!(counts_adding_up_to(admin, 2, 0).await, [0, 0]);
}

#[tokio::test]
async fn one_worker_has_no_per_worker_counts() {
    let p = start_with(|c| c.workers = 1).await;
    let (_, text) = admin_get(p.admin.unwrap(), "/metrics").await;
    assert!(!text.contains("gatewarden_worker_connections{"), "{text}");
    assert!(
        text.contains("gatewarden_connections_rebalanced_total 0"),
        "{text}"
    );
}
