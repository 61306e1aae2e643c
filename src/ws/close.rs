//! The close handshake of a server (RFC 6455 §7.1.1): our close frame, the peer's answer
//! waited for a bounded time, then the TCP side closed.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::tracker::FrameTracker;

/// How long a peer gets to answer our close frame before the socket is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Sends `frames` (ending in a close frame), waits a bounded time for the peer's answering
/// close or EOF, then closes the TCP side, as RFC 6455 §7.1.1 asks of a server.
pub async fn close_gracefully<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, frames: &[u8]) {
    if stream.write_all(frames).await.is_err() {
        return;
    }
    let _ = stream.flush().await;
    let mut tracker = FrameTracker::default();
    let mut buf = [0u8; 512];
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while tracker.close().is_none() {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => tracker.observe(&buf[..n]),
            }
        }
    })
    .await;
    let _ = stream.shutdown().await;
}
