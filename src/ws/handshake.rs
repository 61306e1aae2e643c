//! The opening handshake's pieces (RFC 6455 §4, RFC 8441): the checks on a client's request,
//! the accept key, a fresh key for the gateway's handshake.

use base64::Engine;
use http::HeaderMap;
use sha1::{Digest, Sha1};

const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a given `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Why a request that says `Upgrade: websocket` is not a valid opening handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadUpgrade {
    #[error("WebSocket needs HTTP/1.1")]
    HttpVersion,
    #[error("WebSocket handshake must be a GET")]
    Method,
    #[error("Upgrade: websocket without Connection: upgrade")]
    NoConnectionUpgrade,
    #[error("missing Sec-WebSocket-Key")]
    NoKey,
    #[error("Sec-WebSocket-Key is not 16 bytes in base64")]
    InvalidKey,
    #[error("unsupported Sec-WebSocket-Version (13 is supported)")]
    Version,
    #[error("extended CONNECT for a protocol other than websocket")]
    Protocol,
}

impl BadUpgrade {
    pub fn status(self) -> http::StatusCode {
        match self {
            BadUpgrade::Version => http::StatusCode::UPGRADE_REQUIRED,
            BadUpgrade::Protocol => http::StatusCode::NOT_IMPLEMENTED,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// Checks an opening handshake (RFC 6455 §4.2.1) before anything is spent on it: the
/// upstream would refuse it anyway, less clearly, after an upstream connection.
pub fn check_upgrade_request<B>(req: &http::Request<B>) -> Result<(), BadUpgrade> {
    let h = req.headers();
    if req.version() != http::Version::HTTP_11 {
        return Err(BadUpgrade::HttpVersion);
    }
    if req.method() != http::Method::GET {
        return Err(BadUpgrade::Method);
    }
    if !header_has_token(h, http::header::CONNECTION, "upgrade") {
        return Err(BadUpgrade::NoConnectionUpgrade);
    }
    let mut keys = h.get_all(http::header::SEC_WEBSOCKET_KEY).iter();
    let key = keys.next().ok_or(BadUpgrade::NoKey)?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.as_bytes().trim_ascii());
    if keys.next().is_some() || !decoded.is_ok_and(|k| k.len() == 16) {
        return Err(BadUpgrade::InvalidKey);
    }
    version_13(h)
}

/// Exactly one `Sec-WebSocket-Version`, and it is 13: both HTTP versions' handshakes need it.
fn version_13(h: &HeaderMap) -> Result<(), BadUpgrade> {
    let mut versions = h.get_all(http::header::SEC_WEBSOCKET_VERSION).iter();
    if versions
        .next()
        .is_none_or(|v| v.as_bytes().trim_ascii() != b"13")
        || versions.next().is_some()
    {
        return Err(BadUpgrade::Version);
    }
    Ok(())
}

/// An HTTP/2 extended CONNECT (RFC 8441 §4-5) that opens a WebSocket: `:protocol` is
/// `websocket` (checked by the caller, which routes on it) and the version is 13. It has no
/// key, `Upgrade` or `Connection`: the stream itself is the tunnel.
pub fn check_extended_connect<B>(req: &http::Request<B>) -> Result<(), BadUpgrade> {
    if req.version() != http::Version::HTTP_2 {
        return Err(BadUpgrade::HttpVersion);
    }
    if req.method() != http::Method::CONNECT {
        return Err(BadUpgrade::Method);
    }
    version_13(req.headers())
}

/// A fresh `Sec-WebSocket-Key` (16 random bytes, base64): for the gateway's handshake when
/// the client's came over HTTP/2, which has none.
pub fn new_key() -> http::HeaderValue {
    let key: [u8; 16] = rand::random();
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    http::HeaderValue::from_str(&b64).expect("base64 is a valid header value")
}

/// Whether a comma-separated header contains `token` (case-insensitive).
pub fn header_has_token(h: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}
