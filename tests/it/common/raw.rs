//! Raw sockets, for what a WebSocket or HTTP client library would never send or would hide:
//! heads written by hand, answers read byte by byte.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::timeout;

/// Reads a head (request or response) through its blank line: the head, and whatever came
/// behind it. `None` when the peer closed (or failed) first.
pub async fn read_head(s: &mut TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = timeout(async {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Some(i + 4);
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await?;
    let rest = buf.split_off(end);
    Some((buf, rest))
}

/// A response's status code, from its status line.
pub fn status(head: &[u8]) -> Option<u16> {
    String::from_utf8_lossy(head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
}

/// A response head's status (`None`: closed before one) and the bytes behind the head.
pub async fn response_head(s: &mut TcpStream) -> (Option<u16>, Vec<u8>) {
    match read_head(s).await {
        Some((head, rest)) => (status(&head), rest),
        None => (None, Vec::new()),
    }
}

/// One raw HTTP/1.1 exchange, the client closing after it: the status (0 without one) and
/// the whole answer.
pub async fn raw_http(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything we send.
    let _ = s.write_all(head.as_bytes()).await;
    let mut out = Vec::new();
    let _ = timeout(s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    (status(&out).unwrap_or(0), text)
}

/// The first line of the answer to a raw request ("" when the connection closed without
/// one).
pub async fn raw_status(addr: SocketAddr, head: String) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything we send.
    let _ = s.write_all(head.as_bytes()).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    // Up to the status line's end: the connection may stay open behind it.
    timeout(async {
        while !buf.windows(2).any(|w| w == b"\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}
