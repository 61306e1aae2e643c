//! The gateway's answer to an upgrade: its head, and a refusal's body read within bounds.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderMap, StatusCode};
use hyper::body::Bytes;
use tokio::io::AsyncReadExt;

use crate::net::Stream;

/// The gateway's answer to an upgrade request.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The answer's body (not a 101's), read whole: refusals are small.
    pub body: Bytes,
    /// On a 101: bytes the gateway sent right behind its head.
    pub rest: Bytes,
    /// On a 101: the connection, now speaking WebSocket.
    pub stream: Stream,
}

pub(super) const MAX_RESPONSE_HEADERS: usize = 100;
/// How long the gateway gets to answer an upgrade request (head, and a refusal's body).
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
pub(super) const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// A refusal's body is passed back to the client whole; a gateway sending more is broken.
pub(super) const MAX_REFUSAL_BODY: usize = 1024 * 1024;

pub(super) enum BodyError {
    Io(io::Error),
    Bad(&'static str),
}

/// Reads a non-101 answer's body: `Content-Length`, chunked, or up to the close.
pub(super) async fn read_body(
    stream: &mut Stream,
    headers: &HeaderMap,
    mut buf: BytesMut,
) -> Result<Bytes, BodyError> {
    async fn more(stream: &mut Stream, buf: &mut BytesMut) -> Result<bool, BodyError> {
        if buf.len() > MAX_REFUSAL_BODY + 64 * 1024 {
            return Err(BodyError::Bad("refusal body too large"));
        }
        Ok(stream.read_buf(buf).await.map_err(BodyError::Io)? > 0)
    }
    let chunked = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    if chunked {
        let mut body = BytesMut::new();
        loop {
            let line_end = loop {
                if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                if !more(stream, &mut buf).await? {
                    return Err(BodyError::Bad("chunked body cut short"));
                }
            };
            let line = std::str::from_utf8(&buf[..line_end]).unwrap_or("");
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| BodyError::Bad("invalid chunk size"))?;
            if size > MAX_REFUSAL_BODY || body.len() + size > MAX_REFUSAL_BODY {
                return Err(BodyError::Bad("refusal body too large"));
            }
            let _ = buf.split_to(line_end + 2);
            if size == 0 {
                return Ok(body.freeze());
            }
            while buf.len() < size + 2 {
                if !more(stream, &mut buf).await? {
                    return Err(BodyError::Bad("chunked body cut short"));
                }
            }
            body.extend_from_slice(&buf[..size]);
            let _ = buf.split_to(size + 2);
        }
    }
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(n) if n > MAX_REFUSAL_BODY => Err(BodyError::Bad("refusal body too large")),
        Some(n) => {
            while buf.len() < n {
                if !more(stream, &mut buf).await? {
                    return Err(BodyError::Bad("body shorter than its Content-Length"));
                }
            }
            buf.truncate(n);
            Ok(buf.freeze())
        }
        None => {
            while more(stream, &mut buf).await? {}
            Ok(buf.freeze())
        }
    }
}
