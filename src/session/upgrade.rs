//! A WebSocket upgrade, over HTTP/1.1 or an HTTP/2 stream: judged by the gate, handed to the
//! gateway (`handshake`), and answered. What is left to run after the answer (the tunnel,
//! or a refusal's close frame) is returned beside it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ::http::header::{HeaderValue, SEC_WEBSOCKET_KEY};
use ::http::{HeaderMap, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use tracing::warn;
use uuid::Uuid;

use crate::config::{Inject, TokenSource};
use crate::gate::admit::{Admitted, Door, Refusal};
use crate::gate::headers::{Forward, Identity};
use crate::gate::Proxy;
use crate::h2_streams::StreamHold;
use crate::http1::respond::{empty, text, Body};
use crate::limits::ConnSlot;
use crate::tls::ClientCert;
use crate::upstream::Answer;
use crate::ws;

use super::handoff::{Pending, Then};
use super::handshake::over_http2;
use super::start::Tunnel;

/// Which HTTP a client's WebSocket came over. The judgement and the gateway's HTTP/1.1
/// handshake are the same; the key and the answer's shape are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// A GET with `Upgrade: websocket`, answered 101 (RFC 6455).
    Http1,
    /// An extended CONNECT with `:protocol = websocket`, answered 200 (RFC 8441): no key
    /// from the client, so gatewarden makes the gateway's and checks its answer.
    Http2,
}

/// An upgrade's answer, and what runs over the client's socket once it has switched.
pub(crate) type Answered = (Response<Body>, Option<Pending>);

/// What the gate settled for an admitted upgrade, for the gateway's handshake.
struct Settled {
    conn: Uuid,
    started: Instant,
    remote: SocketAddr,
    admitted: Admitted,
    identity: Option<(String, Option<String>)>,
    stream: Option<StreamHold>,
}

impl Proxy {
    /// The one upgrade path: the gate's judgement, the gateway's handshake, the client's
    /// answer. `on_client` is hyper's side of the client connection (`None`: the listener
    /// holds the socket).
    pub(crate) async fn upgrade(
        self: Arc<Self>,
        parts: ::http::request::Parts,
        on_client: Option<OnUpgrade>,
        remote: SocketAddr,
        cert: Option<&ClientCert>,
        over: Over,
    ) -> Answered {
        let started = Instant::now();
        let conn = Uuid::new_v4();
        let key = match over {
            Over::Http1 => Some(
                parts
                    .headers
                    .get(SEC_WEBSOCKET_KEY)
                    .cloned()
                    .expect("checked by ws::check_upgrade_request"),
            ),
            Over::Http2 => None,
        };
        let admitted = match self.admit(&parts, remote, cert, Door::Upgrade { conn }) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                return self.refused_upgrade(refusal, on_client, key.as_ref(), &parts.headers);
            }
        };
        // An in-band client passes the gate with its first frame (see `first_frame`). Only
        // an HTTP/2 stream carries a hold (no extension lookups on the HTTP/1.1 path).
        let stream = (over == Over::Http2)
            .then(|| parts.extensions.get::<StreamHold>().cloned())
            .flatten();
        if let (Some(stream), false) = (&stream, admitted.in_band) {
            stream.admitted();
        }
        let identity = match self.identity(
            admitted.found.as_ref(),
            admitted.by.as_ref(),
            admitted.in_band,
        ) {
            Ok(identity) => identity,
            Err(detail) => {
                let refusal = self.unnamed(conn, remote, admitted.ip, detail);
                return self.refused_upgrade(refusal, on_client, key.as_ref(), &parts.headers);
            }
        };
        let settled = Settled {
            conn,
            started,
            remote,
            admitted,
            identity,
            stream,
        };
        self.to_gateway(parts, on_client, settled, over).await
    }

    /// A refusal as `auth.reject` renders it, with the close frame to send after a 101.
    fn refused_upgrade(
        self: &Arc<Self>,
        refusal: Refusal,
        on_client: Option<OnUpgrade>,
        key: Option<&HeaderValue>,
        headers: &HeaderMap,
    ) -> Answered {
        let (resp, close) = self.refuse(refusal, key, headers);
        let pending = close.map(|reason| Pending {
            proxy: self.clone(),
            on_client,
            then: Then::Close(reason),
        });
        (resp, pending)
    }

    /// An admitted upgrade toward the gateway: its head as the gate says, the handshake,
    /// and the client's answer with the tunnel it opens (or the answer that replaces it).
    async fn to_gateway(
        self: Arc<Self>,
        mut parts: ::http::request::Parts,
        on_client: Option<OnUpgrade>,
        s: Settled,
        over: Over,
    ) -> Answered {
        let Admitted {
            ip,
            found,
            creds,
            in_band,
            by,
        } = s.admitted;
        // A client certificate is not a reloadable credential: nothing to revoke.
        let authenticated = by
            .filter(|a| a.source != TokenSource::ClientCert)
            .map(|a| (a.presented, a.credential));
        let gateway = match self.gateway_secret(&creds, s.conn) {
            Ok(gateway) => gateway,
            Err(resp) => return (resp, None),
        };
        let inject_header = (self.upstream_auth.inject == Inject::Header)
            .then_some(gateway.as_ref())
            .flatten();
        // Admitted: only now does the gateway's handshake get a key of gatewarden's making.
        let made_key = (over == Over::Http2).then(|| own_key(&mut parts.headers));
        let upstream_head = self.gateway_head(
            &parts,
            s.remote,
            s.identity.as_ref(),
            found.as_ref(),
            inject_header,
        );
        let answer = match self.dial(&upstream_head, s.conn, s.remote).await {
            Ok(answer) => answer,
            Err(resp) => return (resp, None),
        };
        let deflate = ws::Deflate::negotiated(&answer.headers);
        let Answer {
            headers,
            stream: upstream,
            rest: from_upstream,
            ..
        } = answer;
        let client_resp = match client_answer(headers, made_key.as_ref()) {
            Ok(resp) => resp,
            Err(resp) => {
                warn!(conn = %s.conn, remote = %s.remote, "[ws] upstream answered 101 with a wrong Sec-WebSocket-Accept");
                return (resp, None);
            }
        };
        let tunnel = Tunnel {
            conn: s.conn,
            started: s.started,
            remote: s.remote,
            ip,
            slot: parts.extensions.get::<Arc<ConnSlot>>().cloned(),
            stream: s.stream,
            in_band,
            deflate,
            inject: gateway.filter(|_| self.upstream_auth.inject.rewrites_first_frame()),
            authenticated,
        };
        self.metrics
            .handshake_seconds
            .observe(s.started.elapsed().as_secs_f64());
        let then = Then::Tunnel {
            upstream,
            from_upstream,
            tunnel,
        };
        let pending = Pending {
            proxy: self,
            on_client,
            then,
        };
        (client_resp, Some(pending))
    }

    /// The gateway's secret, when gatewarden presents it; a 502 when it must and has none.
    #[allow(clippy::result_large_err)] // the error is the answer itself, built once
    fn gateway_secret(
        &self,
        creds: &crate::credentials::Credentials,
        conn: Uuid,
    ) -> Result<Option<crate::credentials::Secret>, Response<Body>> {
        let gateway = self.gateway_token(creds);
        if self.upstream_auth.inject.needs_credential() && gateway.is_none() {
            warn!(conn = %conn, "[ws] upstream_auth credential has no token loaded");
            return Err(text(
                StatusCode::BAD_GATEWAY,
                "bad gateway: no gateway credential\n",
            ));
        }
        Ok(gateway)
    }

    /// The upgrade's head as the gateway gets it (see [`Forward`]).
    fn gateway_head(
        &self,
        parts: &::http::request::Parts,
        remote: SocketAddr,
        identity: Option<&(String, Option<String>)>,
        found: Option<&crate::auth::Found>,
        inject_header: Option<&crate::credentials::Secret>,
    ) -> Vec<u8> {
        Forward::new(self, &parts.headers, remote, true, found, inject_header)
            .with_identity(identity.map(|(name, scopes)| Identity {
                name,
                scopes: scopes.clone(),
            }))
            .upgrade_head(&parts.uri)
    }
}

/// An HTTP/2 client sends no key (RFC 8441): the gateway's HTTP/1.1 handshake gets one of
/// gatewarden's making.
fn own_key(headers: &mut HeaderMap) -> HeaderValue {
    let key = ws::new_key();
    headers.insert(SEC_WEBSOCKET_KEY, key.clone());
    key
}

/// The client's 101: the gateway's own over HTTP/1.1; over HTTP/2 a 200 once the gateway's
/// `Sec-WebSocket-Accept` matches the key gatewarden made (`Err`: the 502 that replaces it).
#[allow(clippy::result_large_err)] // the error is the answer itself, built once
fn client_answer(
    headers: HeaderMap,
    made_key: Option<&HeaderValue>,
) -> Result<Response<Body>, Response<Body>> {
    match made_key {
        None => {
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            *resp.headers_mut() = headers;
            Ok(resp)
        }
        Some(key) => over_http2(headers, key),
    }
}
