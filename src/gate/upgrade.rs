//! A WebSocket upgrade admitted by the gate: the handshake with the gateway, and the 101
//! (or the gateway's own refusal) for the client. What happens after the 101 is left in a
//! [`Handoff`] for the connection's task (see `session`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ::http::header::{HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use ::http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::upgrade::OnUpgrade;
use tracing::{info, warn};
use uuid::Uuid;

use crate::config::{Inject, TokenSource};
use crate::h2_streams::StreamHold;
use crate::http1::respond::{empty, text, Body};
use crate::tls::ClientCert;
use crate::ws;

use super::admit::{Admitted, Door};
use super::headers::strip_hop_by_hop;
use super::headers::{Forward, Identity};
use super::session::{Handoff, Pending, Then, Tunnel};
use super::Proxy;
use crate::upstream::Answer;

/// Which HTTP a client's WebSocket came over. The judgement and the gateway's HTTP/1.1
/// handshake are the same; the key and the answer's shape are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Over {
    /// A GET with `Upgrade: websocket`, answered 101 (RFC 6455).
    Http1,
    /// An extended CONNECT with `:protocol = websocket`, answered 200 (RFC 8441): no key
    /// from the client, so gatewarden makes the gateway's and checks its answer.
    Http2,
}

impl Proxy {
    /// `on_client` is hyper's side of the client connection (`None`: the listener's).
    pub(super) async fn websocket(
        self: Arc<Self>,
        mut parts: ::http::request::Parts,
        on_client: Option<OnUpgrade>,
        remote: SocketAddr,
        cert: Option<&ClientCert>,
        handoff: &Handoff,
        over: Over,
    ) -> Response<Body> {
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
        let slot = parts
            .extensions
            .get::<Arc<crate::limits::ConnSlot>>()
            .cloned();
        let Admitted {
            ip,
            found,
            creds,
            in_band,
            by,
        } = match self.admit(&parts, remote, cert, Door::Upgrade { conn }) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                return self.refuse(refusal, on_client, handoff, key.as_ref(), &parts.headers);
            }
        };
        // An in-band client passes the gate with its first frame (see `session`). Only an
        // HTTP/2 stream carries a hold (no extension lookups on the HTTP/1.1 path).
        let stream = (over == Over::Http2)
            .then(|| parts.extensions.get::<StreamHold>().cloned())
            .flatten();
        if let (Some(stream), false) = (&stream, in_band) {
            stream.admitted();
        }
        let identity = match self.identity(found.as_ref(), by.as_ref(), in_band) {
            Ok(identity) => identity,
            Err(detail) => {
                let refusal = self.unnamed(conn, remote, ip, detail);
                return self.refuse(refusal, on_client, handoff, key.as_ref(), &parts.headers);
            }
        };
        // A client certificate is not a reloadable credential: nothing to revoke.
        let authenticated = by
            .filter(|a| a.source != TokenSource::ClientCert)
            .map(|a| (a.presented, a.credential));
        let gateway = self.gateway_token(&creds);
        if self.upstream_auth.inject.needs_credential() && gateway.is_none() {
            warn!(conn = %conn, "[ws] upstream_auth credential has no token loaded");
            return text(
                StatusCode::BAD_GATEWAY,
                "bad gateway: no gateway credential\n",
            );
        }
        let inject_header = (self.upstream_auth.inject == Inject::Header)
            .then_some(gateway.as_ref())
            .flatten();
        // Admitted: only now does the gateway's handshake get a key of gatewarden's making.
        let made_key = (over == Over::Http2).then(|| {
            let key = ws::new_key();
            parts.headers.insert(SEC_WEBSOCKET_KEY, key.clone());
            key
        });
        let upstream_head = Forward::new(
            &self,
            &parts.headers,
            remote,
            true,
            found.as_ref(),
            inject_header,
        )
        .with_identity(identity.as_ref().map(|(name, scopes)| Identity {
            name,
            scopes: scopes.clone(),
        }))
        .upgrade_head(&parts.uri);
        let answer = match self.dial(&upstream_head, conn, remote).await {
            Ok(answer) => answer,
            Err(resp) => return resp,
        };
        let deflate = ws::Deflate::negotiated(&answer.headers);
        let client_resp = match made_key {
            None => {
                let mut resp = Response::new(empty());
                *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                *resp.headers_mut() = answer.headers;
                resp
            }
            Some(key) => match over_http2(answer.headers, &key) {
                Ok(resp) => resp,
                Err(resp) => {
                    warn!(conn = %conn, remote = %remote, "[ws] upstream answered 101 with a wrong Sec-WebSocket-Accept");
                    return resp;
                }
            },
        };
        let tunnel = Tunnel {
            conn,
            started,
            remote,
            ip,
            slot,
            stream,
            in_band,
            deflate,
            inject: gateway.filter(|_| self.upstream_auth.inject.rewrites_first_frame()),
            authenticated,
        };
        self.metrics
            .handshake_seconds
            .observe(started.elapsed().as_secs_f64());
        handoff.put(Pending {
            proxy: self,
            on_client,
            then: Then::Tunnel {
                upstream: answer.stream,
                from_upstream: answer.rest,
                tunnel,
            },
        });
        client_resp
    }
}

impl Proxy {
    /// With `upstream_auth.inject = "trusted_proxy"`: the client's name (a named credential,
    /// else the client certificate's subject) and its credential's scopes, or why it has
    /// none. `Ok(None)` in every other mode.
    pub(super) fn identity(
        &self,
        found: Option<&crate::auth::Found>,
        by: Option<&super::admit::Accepted>,
        in_band: bool,
    ) -> Result<Option<(String, Option<String>)>, &'static str> {
        if self.upstream_auth.inject != Inject::TrustedProxy {
            return Ok(None);
        }
        if in_band {
            return Err("upstream_auth.inject = \"trusted_proxy\" names the client on the upgrade, and this client's token comes only in its first frame, after it");
        }
        let scopes = by
            .and_then(|a| a.credential.allowed.as_deref())
            .and_then(|a| a.scopes_header());
        if let Some(name) = by.map(|a| a.credential.who()).filter(|n| *n != "-") {
            return Ok(Some((name.to_string(), scopes)));
        }
        match found.and_then(|f| f.cert.as_ref()) {
            Some(cert) => Ok(Some((cert.name.to_string(), scopes))),
            None => Err("the credential that accepted the client has no name (give its [[credentials]] entry a name, or use a lines file)"),
        }
    }

    /// The refusal of a client the gateway cannot be told the name of: logged and counted,
    /// not held against its IP (it is a client set up for another mode, not a guess).
    fn unnamed(
        &self,
        conn: Uuid,
        remote: SocketAddr,
        ip: std::net::IpAddr,
        detail: &'static str,
    ) -> super::admit::Refusal {
        let reason = crate::auth::Reason::IdentityRequired;
        warn!(conn = %conn, remote = %remote, client_ip = %ip, reason = %reason, detail = %detail, "[ws] unauthorized");
        self.metrics.auth_failure(reason.as_str(), "none");
        super::admit::Refusal {
            reason,
            retry_after: None,
        }
    }
}

/// The 200 that opens an HTTP/2 WebSocket stream, with what the gateway's 101 agreed
/// (subprotocol, extensions, cookies) but none of HTTP/1.1's upgrade machinery. The
/// gateway's `Sec-WebSocket-Accept` is checked here, since the client cannot.
#[allow(clippy::result_large_err)] // the error is the answer itself, built once
fn over_http2(
    mut headers: ::http::HeaderMap,
    key: &HeaderValue,
) -> Result<Response<Body>, Response<Body>> {
    let accept = headers.remove(SEC_WEBSOCKET_ACCEPT);
    if accept.is_none_or(|a| a.as_bytes() != ws::accept_key(key.as_bytes()).as_bytes()) {
        return Err(text(
            StatusCode::BAD_GATEWAY,
            "bad gateway: upstream answered the WebSocket handshake wrongly\n",
        ));
    }
    strip_hop_by_hop(&mut headers);
    let mut resp = Response::new(empty());
    *resp.headers_mut() = headers;
    Ok(resp)
}

impl Proxy {
    /// The upgrade toward the gateway: its 101, or what the client is answered instead
    /// (502 when it cannot be reached, its own answer when it refuses).
    async fn dial(
        &self,
        head: &[u8],
        conn: Uuid,
        remote: SocketAddr,
    ) -> Result<Answer, Response<Body>> {
        let dialed = Instant::now();
        let answer = match self.upstream.upgrade(head).await {
            Ok(r) => {
                self.metrics
                    .upstream_connect_seconds
                    .observe(dialed.elapsed().as_secs_f64());
                r
            }
            Err(e) => {
                self.metrics.upstream_connect_errors.inc();
                warn!(conn = %conn, remote = %remote, reason = %e.reason(), cause = %e, "[ws] upstream unavailable");
                return Err(text(
                    StatusCode::BAD_GATEWAY,
                    "bad gateway: upstream unavailable\n",
                ));
            }
        };
        if answer.status != StatusCode::SWITCHING_PROTOCOLS {
            info!(
                conn = %conn,
                remote = %remote,
                status = answer.status.as_u16(),
                "[ws] upstream refused upgrade"
            );
            let mut resp = Response::new(
                Full::new(answer.body)
                    .map_err(|never| match never {})
                    .boxed(),
            );
            *resp.status_mut() = answer.status;
            *resp.headers_mut() = answer.headers;
            strip_hop_by_hop(resp.headers_mut());
            return Err(resp);
        }
        if !ws::header_has_token(&answer.headers, UPGRADE, "websocket") {
            warn!(conn = %conn, remote = %remote, "[ws] upstream answered 101 without Upgrade: websocket");
            return Err(text(
                StatusCode::BAD_GATEWAY,
                "bad gateway: upstream switched to another protocol\n",
            ));
        }
        Ok(answer)
    }
}
