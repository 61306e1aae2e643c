//! Responses: the body type every answer uses, the usual small answers, and the fast
//! path's writer, which puts a response on the wire the way hyper would.

use ::http::header::{HeaderValue, CONTENT_TYPE};
use ::http::{Response, StatusCode};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

use http::header::CONTENT_LENGTH;
use std::io;
use std::time::SystemTime;
use tokio::io::{AsyncWrite, AsyncWriteExt};

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub(crate) fn text(status: StatusCode, msg: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(msg.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Writes an answer the way hyper would: status line with the canonical reason, the
/// headers in order, `content-length` where the status allows a body, `date` last. Every
/// HTTP/1.1 answer gatewarden writes without hyper goes through here.
pub(crate) async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    resp: Response<Body>,
) -> io::Result<()> {
    let (parts, body) = resp.into_parts();
    let status = parts.status;
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(io::Error::other(e)),
    };
    let mut out = Vec::with_capacity(192 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let has_body = !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    if has_body {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    http_date(&mut out);
    out.extend_from_slice(b"\r\n\r\n");
    if has_body {
        out.extend_from_slice(&body);
    }
    stream.write_all(&out).await?;
    stream.flush().await
}

/// The `date` header's value, formatted once per second per thread (as hyper does).
fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, [u8; 29])> = const { std::cell::RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                c.1.copy_from_slice(text.as_bytes());
                c.0 = secs;
            } else {
                out.extend_from_slice(text.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&c.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_an_http_date() {
        let mut out = Vec::new();
        http_date(&mut out);
        http_date(&mut out);
        assert_eq!(out.len(), 58);
        let text = std::str::from_utf8(&out[..29]).unwrap();
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }
}
