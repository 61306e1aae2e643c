//! How a refusal looks to the client: one renderer for both doors. An HTTP status (401,
//! 403, 429 with `Retry-After`), or with `auth.reject = "close"` a completed handshake and a
//! close frame, which a browser's WebSocket API can read.

use ::http::header::{
    HeaderValue, CONNECTION, RETRY_AFTER, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
    WWW_AUTHENTICATE,
};
use ::http::{HeaderMap, Response, StatusCode};

use crate::auth::{self, Reason};
use crate::config::RejectMode;
use crate::http1::respond::{empty, text, Body};
use crate::ws;

use super::admit::Refusal;
use super::Proxy;

impl Refusal {
    /// The HTTP answer: 429 when throttled (with when to come back), 403 for a foreign
    /// Origin, else 401.
    pub(crate) fn as_http(&self) -> Response<Body> {
        let mut resp = unauthorized(self.reason);
        self.retry_after(&mut resp);
        resp
    }

    fn retry_after(&self, resp: &mut Response<Body>) {
        if let Some(left) = self.retry_after {
            let secs = left.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                resp.headers_mut().insert(RETRY_AFTER, v);
            }
        }
    }
}

/// A malformed WebSocket handshake gets a plain answer; nothing reaches the upstream.
pub(crate) fn bad_upgrade(bad: ws::BadUpgrade) -> Response<Body> {
    let mut resp = text(bad.status(), format!("bad websocket handshake: {bad}\n"));
    if bad == ws::BadUpgrade::Version {
        // RFC 6455 §4.4: say which version we speak.
        resp.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
    }
    resp
}

/// The HTTP answer for a refusal: 429 when throttled, 403 for a foreign Origin, else 401.
pub(crate) fn unauthorized(reason: Reason) -> Response<Body> {
    let status = reason.http_status();
    let mut resp = text(status, format!("unauthorized: {reason}\n"));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

impl Proxy {
    /// Refuses an upgrade the way `auth.reject` says: an HTTP status, or our own 101 and
    /// the reason for the close frame the session sends once the client's side has
    /// switched.
    pub(crate) fn refuse(
        &self,
        refusal: Refusal,
        key: Option<&HeaderValue>,
        headers: &HeaderMap,
    ) -> (Response<Body>, Option<Reason>) {
        match self.auth.reject {
            RejectMode::Http => (refusal.as_http(), None),
            RejectMode::Close => {
                let mut resp = self.reject_with_close(key, headers);
                refusal.retry_after(&mut resp);
                (resp, Some(refusal.reason))
            }
        }
    }

    /// Completes the handshake ourselves and closes with 1008 and the gateway's own reason
    /// text: a browser's WebSocket API exposes close codes and reasons, never HTTP statuses.
    /// With the client's `key` a 101 (HTTP/1.1); without, an HTTP/2 stream's 200.
    pub(crate) fn reject_with_close(
        &self,
        key: Option<&HeaderValue>,
        headers: &HeaderMap,
    ) -> Response<Body> {
        let mut resp = Response::new(empty());
        let h = resp.headers_mut();
        if let Some(key) = key {
            h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(v) = HeaderValue::from_str(&ws::accept_key(key.as_bytes())) {
                h.insert(SEC_WEBSOCKET_ACCEPT, v);
            }
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        }
        let h = resp.headers_mut();
        // Strict clients fail a handshake that offered subprotocols and got none back; pick the
        // first one that does not carry a token (never echo a token).
        let prefix = self.auth.subprotocol_prefix.as_bytes();
        if let Some(p) = auth::subprotocols(headers).find(|p| !p.starts_with(prefix)) {
            if let Ok(v) = HeaderValue::from_bytes(p) {
                h.insert(SEC_WEBSOCKET_PROTOCOL, v);
            }
        }
        resp
    }
}
