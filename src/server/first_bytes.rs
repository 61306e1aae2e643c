//! What a connection's first bytes say before HTTP starts: a TLS handshake (with its
//! deadline), plain HTTP sent to the TLS port, or an HTTP/2 preface to refuse politely.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::http::header::{HeaderValue, CONNECTION};
use ::http::StatusCode;
use tokio::net::TcpStream;
use tracing::info;

use crate::http1::respond::{text, write_response};
use crate::logging::FLOOD;
use crate::net::Stream;
use crate::tls::ClientCert;

use super::conn::TlsSide;

/// Answers an HTTP/2 prior-knowledge client (hyper saw the preface and gave up) in a way
/// it understands: an empty SETTINGS frame, then GOAWAY(last stream 0, HTTP_1_1_REQUIRED)
/// with a hint. Best effort: the socket is fresh, the 50 bytes fit its send buffer.
pub(super) fn refuse_http2(fd: std::os::fd::BorrowedFd<'_>) {
    const HINT: &[u8] = b"gatewarden speaks HTTP/1.1 only";
    let len = 8 + HINT.len();
    let mut out = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    out.extend_from_slice(&[0, (len >> 8) as u8, len as u8, 0x7, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x0d]);
    out.extend_from_slice(HINT);
    let _ = rustix::net::send(fd, &out, rustix::net::SendFlags::NOSIGNAL);
    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Write);
}

/// What a TLS handshake settled: the stream, the client's certificate (mTLS), and whether
/// the client chose HTTP/2 (ALPN `h2`).
pub(super) struct Secured {
    pub(super) stream: Stream,
    pub(super) cert: Option<Arc<ClientCert>>,
    pub(super) h2: bool,
}

/// Starts TLS on an accepted connection within the handshake timeout. A client that speaks
/// plain HTTP to the TLS port gets a readable 400 instead of a handshake error.
pub(super) async fn accept_tls(
    stream: TcpStream,
    remote: SocketAddr,
    tls: &TlsSide,
) -> Option<Secured> {
    let deadline = tokio::time::Instant::now() + tls.handshake_timeout;
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        Ok(_) => return None,
        Err(_) => {
            info!(target: FLOOD, remote = %remote, "[tls] handshake timeout (client sent nothing)");
            return None;
        }
    }
    // 0x16 starts a TLS handshake record; an ASCII letter starts an HTTP method.
    if first[0] != 0x16 {
        if first[0].is_ascii_alphabetic() {
            info!(target: FLOOD, remote = %remote, "[tls] plain HTTP on the TLS port; answered 400");
            plain_http_on_tls_port(stream).await;
        } else {
            info!(target: FLOOD, remote = %remote, first_byte = first[0], "[tls] not a TLS handshake; closed");
        }
        return None;
    }
    match tokio::time::timeout_at(deadline, tls.acceptor.accept(stream)).await {
        Ok(Ok(s)) => {
            let session = s.get_ref().1;
            let cert = session
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(ClientCert::from_der)
                .map(Arc::new);
            let h2 = session.alpn_protocol() == Some(b"h2");
            Some(Secured {
                stream: Stream::ServerTls(Box::new(s)),
                cert,
                h2,
            })
        }
        Ok(Err(e)) => {
            info!(target: FLOOD, remote = %remote, cause = %e, "[tls] handshake failed");
            None
        }
        Err(_) => {
            info!(target: FLOOD, remote = %remote, "[tls] handshake timeout");
            None
        }
    }
}

/// Reads the plain request head (bounded) so closing does not reset the connection before
/// the client reads our answer, then says what to do.
pub(super) async fn plain_http_on_tls_port(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let mut resp = text(
        StatusCode::BAD_REQUEST,
        "this port speaks TLS; use https:// or wss://\n",
    );
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    let _ = write_response(&mut stream, resp).await;
    let _ = stream.shutdown().await;
}
