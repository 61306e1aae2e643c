//! Reload latency: time from a credential file's write/rename returning to the first
//! WebSocket handshake through gatewarden that is accepted with the new token.
//!
//! `cargo bench --bench reload_latency` (release build, loopback only, ~10 s).
//! Each rotation writes a fresh token, then performs back-to-back real handshakes with it
//! (reject mode `http`, so a not-yet-valid token costs one quick 401) until one gets a 101.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gatewarden::config::{Config, CredentialSource, ListenAddr, RejectMode, TokenSource};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ROTATIONS: usize = 200;

async fn echo_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                if let Ok(mut ws) = tokio_tungstenite::accept_async(s).await {
                    while let Some(Ok(m)) = ws.next().await {
                        if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// One handshake; true when gatewarden accepted the token (101 from the upstream).
async fn handshake(addr: SocketAddr, token: &str) -> bool {
    let mut req = format!("ws://{addr}/").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    match tokio_tungstenite::client_async(req, s).await {
        Ok((mut ws, _)) => {
            let _ = ws.close(None).await;
            true
        }
        Err(_) => false,
    }
}

fn write_in_place(file: &Path, token: &str) {
    std::fs::write(file, token).unwrap();
}

fn write_rename(file: &Path, token: &str) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, token).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn measure(addr: SocketAddr, file: &Path, write: fn(&Path, &str)) -> Vec<Duration> {
    let mut out = Vec::with_capacity(ROTATIONS);
    for _ in 0..ROTATIONS {
        let token = gatewarden::generate_token();
        write(file, &token);
        let t0 = Instant::now();
        let mut attempts = 0;
        while !handshake(addr, &token).await {
            attempts += 1;
            assert!(attempts < 100_000, "new token never accepted");
        }
        out.push(t0.elapsed());
    }
    out.sort();
    out
}

fn report(name: &str, d: &[Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = d.iter().sum::<Duration>() / d.len() as u32;
    println!(
        "{name:<22} n={} p50={:.1}ms p99={:.1}ms max={:.1}ms mean={:.1}ms",
        d.len(),
        ms(pct(d, 0.50)),
        ms(pct(d, 0.99)),
        ms(*d.last().unwrap()),
        ms(mean)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let upstream = echo_upstream().await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, gatewarden::generate_token()).unwrap();
        let mut config = Config {
            listen: ListenAddr("127.0.0.1:0".parse().unwrap()),
            upstream: upstream.to_string().parse().unwrap(),
            ..Config::default()
        };
        config.credentials.sources = vec![CredentialSource::plain(&file)];
        config.auth.sources = Some(vec![TokenSource::Header]);
        config.auth.reject = RejectMode::Http;
        config.log.level = "warn".into();
        config.admin.listen = String::new();
        let server = gatewarden::Server::bind(config).await.unwrap();
        let addr = server.local_addr();
        tokio::spawn(server.run(std::future::pending()));
        println!("reload latency: write returns → first accepted handshake with the new token");
        report(
            "inotify, in-place",
            &measure(addr, &file, write_in_place).await,
        );
        report("inotify, rename", &measure(addr, &file, write_rename).await);
    });
}
