//! A connection's first request head, read by the listener before hyper sees the
//! connection: when it is a complete WebSocket upgrade request — what nearly every client of
//! a WebSocket gateway sends, once per connection — the handshake is answered here, and
//! hyper (kept for everything else: plain HTTP, keep-alive, malformed or partial heads) is
//! never started. hyper's connection machinery (dispatcher, response encoder, the upgrade
//! hand-over with its channel and boxed IO, its timers and buffers) was the largest share of
//! a proxied handshake's cost after logging (bench/RESULTS.md).
//!
//! Anything unusual falls through to hyper with the bytes already read in front of the
//! socket ([`Prefixed`]), so hyper's answers to bad input (400, 408, 431, HTTP/2 preface)
//! stay exactly what they were.
//!
//! Invariants: the fast path answers only what hyper would answer the same way (a complete
//! bodyless `GET` upgrade within `limits.max_headers`); its answer goes through the same
//! gate (`Proxy::handle_upgrade` and `Proxy::handle` share the checks, the admission and the
//! refusal renderer); `respond::write_response` writes what hyper's encoder would (status
//! line, headers in order, `content-length`, `date`). The differential tests send each
//! upgrade twice, once padded past the first read so that hyper takes it (tests/websocket.rs,
//! tests/security.rs), and expect the same answer; the `request_head` fuzz target runs this
//! parser.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::net::{Prefixed, Stream};
use crate::ws;

/// The first read's buffer: hyper's initial read size, enough for any browser's or SDK's
/// upgrade request. A head that does not fit goes to hyper, which enforces the real limit.
const FIRST_READ: usize = 8 * 1024;

/// Headers the fast path takes on the stack; a request with more goes to hyper.
const MAX_FAST_HEADERS: usize = 64;

/// What the first read found. (Returned once per connection and moved once: not worth a
/// box for the size difference.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum First {
    /// A complete WebSocket upgrade request.
    Upgrade {
        req: Request<()>,
        stream: Stream,
        /// Bytes the client sent behind the head (a pipelined frame, say).
        rest: Bytes,
        /// The request asked for the connection to close after a non-101 answer.
        close: bool,
    },
    /// Anything else, for hyper; `spent` is the part of the header timeout already used.
    Hyper { io: Prefixed, spent: Duration },
    /// Nothing left to do: the client left, sent nothing in time, or we are shutting down.
    Done,
}

/// Reads what the client sent first, within the header timeout.
pub(crate) async fn read_first(
    mut stream: Stream,
    remote: SocketAddr,
    header_timeout: Duration,
    max_headers: usize,
    graceful: &CancellationToken,
) -> First {
    let started = tokio::time::Instant::now();
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    let read = tokio::select! {
        r = tokio::time::timeout(header_timeout, stream.read_buf(&mut buf)) => r,
        // As hyper does with a connection that has no request in flight: close it.
        _ = graceful.cancelled() => return First::Done,
    };
    match read {
        Ok(Ok(0)) => return First::Done,
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            debug!(remote = %remote, cause = %e, "[http] connection ended with an error");
            return First::Done;
        }
        Err(_) => {
            // The line hyper's own header timeout leads to (listener::serve_connection).
            info!(target: crate::logging::FLOOD, remote = %remote, reason = %"header_timeout", cause = %"read header from client timeout", "[http] request refused");
            return First::Done;
        }
    }
    let buf = buf.freeze();
    match parse_upgrade(&buf, max_headers) {
        Some((req, len, close)) => First::Upgrade {
            req,
            stream,
            // Copied out: a slice would keep the whole read buffer alive with the tunnel.
            rest: Bytes::copy_from_slice(&buf[len..]),
            close,
        },
        None => {
            // A head in pieces: the rest may wait for our ACK (`tcp.delayed_ack`).
            if !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                if let Some(tcp) = stream.tcp() {
                    crate::net::sockopt::quick_acks(tcp);
                }
            }
            First::Hyper {
                io: Prefixed::new(stream, buf),
                spent: started.elapsed(),
            }
        }
    }
}

/// A complete `GET` HTTP/1.1 request head with `Upgrade: websocket` and no body, as a
/// request plus the head's length. Everything else (partial, malformed, with a body, more
/// than `max_headers` headers) is `None`, for hyper to deal with.
pub fn parse_upgrade(buf: &Bytes, max_headers: usize) -> Option<(Request<()>, usize, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_FAST_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers[..max_headers.min(MAX_FAST_HEADERS)]);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return None,
    };
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let bodyless = match name {
            CONTENT_LENGTH => h.value.trim_ascii() == b"0",
            TRANSFER_ENCODING | EXPECT => false,
            _ => true,
        };
        if !bodyless {
            return None;
        }
        // Values share the read buffer, as in hyper; httparse has checked their bytes.
        let value = HeaderValue::from_maybe_shared(buf.slice_ref(h.value)).ok()?;
        map.append(name, value);
    }
    if !ws::header_has_token(&map, UPGRADE, "websocket") {
        return None;
    }
    let close = ws::header_has_token(&map, CONNECTION, "close");
    let uri = Uri::from_maybe_shared(buf.slice_ref(parsed.path?.as_bytes())).ok()?;
    let mut req = Request::new(());
    *req.method_mut() = Method::GET;
    *req.version_mut() = Version::HTTP_11;
    *req.uri_mut() = uri;
    *req.headers_mut() = map;
    Some((req, len, close))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn head(extra: &str) -> Bytes {
        Bytes::from(format!(
            "GET /ws?x=1 HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\nFRAME"
        ))
    }

    #[test]
    fn an_upgrade_request_is_parsed_whole() {
        let buf = head("X-Custom: a\r\nX-Custom: b\r\n");
        let (req, len, close) = parse_upgrade(&buf, 100).expect("fast path");
        assert_eq!(&buf[len..], b"FRAME");
        assert!(!close);
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/ws");
        assert_eq!(req.uri().query(), Some("x=1"));
        assert_eq!(req.headers()["host"], "gw");
        let custom: Vec<_> = req.headers().get_all("x-custom").iter().collect();
        assert_eq!(custom, ["a", "b"]);
    }

    #[test]
    fn anything_unusual_is_left_to_hyper() {
        let cases = [
            // partial
            Bytes::from_static(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n"),
            // not an upgrade
            Bytes::from_static(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            // other method, other version
            Bytes::from_static(b"POST / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
            Bytes::from_static(b"GET / HTTP/1.0\r\nUpgrade: websocket\r\n\r\n"),
            // a body, or the promise of one
            head("Content-Length: 5\r\n"),
            head("Transfer-Encoding: chunked\r\n"),
            head("Expect: 100-continue\r\n"),
            // malformed header line, HTTP/2 preface
            Bytes::from_static(b"GET / HTTP/1.1\r\nUpgrade : websocket\r\n\r\n"),
            Bytes::from_static(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ];
        for buf in cases {
            assert!(parse_upgrade(&buf, 100).is_none(), "{buf:?}");
        }
        // More headers than allowed: hyper answers 431.
        assert!(parse_upgrade(&head("A: 1\r\nB: 2\r\n"), 6).is_none());
        assert!(parse_upgrade(&head("A: 1\r\nB: 2\r\n"), 8).is_some());
        assert!(parse_upgrade(&head("Content-Length: 0\r\n"), 100).is_some());
        let (_, _, close) = parse_upgrade(
            &Bytes::from_static(
                b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n\r\n",
            ),
            100,
        )
        .unwrap();
        assert!(close);
    }

    /// With `tcp.delayed_ack` a head that came in pieces turns quick ACKs back on (the rest
    /// may be waiting for our ACK); a whole upgrade head, answered at once, leaves them off.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_head_in_pieces_gets_quick_acks_back() {
        use rustix::net::sockopt::{set_tcp_quickack, tcp_quickack};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        set_tcp_quickack(&listener, false).unwrap();
        let whole = head("");
        for (sent, pieces) in [(&whole[..], false), (&whole[..30], true)] {
            let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            client.write_all(sent).await.unwrap();
            let (accepted, remote) = listener.accept().await.unwrap();
            assert!(
                !tcp_quickack(&accepted).unwrap(),
                "inherited from the listener"
            );
            let first = read_first(
                Stream::Tcp(accepted),
                remote,
                Duration::from_secs(20),
                100,
                &CancellationToken::new(),
            )
            .await;
            let stream = match first {
                First::Upgrade { stream, .. } if !pieces => stream,
                First::Hyper { io, .. } if pieces => io.into_parts().0,
                _ => panic!("unexpected outcome for pieces = {pieces}"),
            };
            assert_eq!(tcp_quickack(stream.tcp().unwrap()).unwrap(), pieces);
        }
    }
}
