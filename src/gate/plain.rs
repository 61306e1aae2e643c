//! A plain HTTP request: answered here (CONNECT, `OPTIONS *`, a path that cannot be
//! normalized), judged when `auth.http = "require"`, and proxied to the upstream with a
//! deadline on its answer.

use std::net::SocketAddr;
use std::sync::Arc;

use ::http::header::{HeaderValue, LOCATION, SET_COOKIE};
use ::http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::{info, warn};

use crate::auth;
use crate::config::{HttpAuthMode, Inject, TokenSource};
use crate::http1::body::ClientBody;
use crate::http1::respond::{empty, text, Body};
use crate::tls::ClientCert;

use super::admit::Door;
use super::control_ui::{self, Shell};
use super::headers::strip_hop_by_hop;
use super::headers::{Forward, Identity};
use super::log::logged_target;
use super::{Proxy, ALLOWED_METHODS};

/// RFC 6265 cookie-octet.
pub(super) fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

pub(super) fn passthrough(resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.boxed())
}

impl Proxy {
    pub(super) async fn plain(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
        cert: Option<&ClientCert>,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        if let Some(answer) = self.own_answer(&mut parts, remote) {
            return answer;
        }
        let mut authenticated = None;
        let mut identity = None;
        let shell = self.control_ui_shell(&parts);
        if self.auth.http == HttpAuthMode::Require
            && shell.is_none()
            && !self.is_public(parts.uri.path())
        {
            let door = Door::Plain {
                method: &parts.method,
            };
            let admitted = match self.admit(&parts, remote, cert, door) {
                Ok(admitted) => admitted,
                Err(refusal) => return refusal.as_http(),
            };
            let source = admitted.by.as_ref().map(|a| a.source);
            if source == Some(TokenSource::Query) && parts.method == Method::GET {
                if let Some(resp) = self.token_redirect(&parts, admitted.found.as_ref()) {
                    return resp;
                }
            }
            identity = self
                .identity(admitted.found.as_ref(), admitted.by.as_ref(), false)
                .ok()
                .flatten();
            authenticated = Some((admitted.found, self.gateway_token(&admitted.creds)));
        }
        // Past the gate (a token accepted, a public path, or `auth.http = "pass"`).
        if parts.version == Version::HTTP_2 {
            crate::h2_streams::mark_admitted(&parts.extensions);
        }
        let path = logged_target(&parts.uri, &self.creds.load());
        if shell == Some(Shell::Page) {
            parts.uri = control_ui::page_uri();
        }
        // Only requests gatewarden authenticated get the gateway's token.
        let (found, inject) = match &authenticated {
            Some((found, secret)) if self.upstream_auth.inject == Inject::Header => {
                (found.as_ref(), secret.as_ref())
            }
            _ => (None, None),
        };
        let forward = Forward::new(&self, &parts.headers, remote, false, found, inject)
            .with_identity(identity.as_ref().map(|(name, scopes)| Identity {
                name,
                scopes: scopes.clone(),
            }));
        let (headers, target) = forward.plain(&parts.uri);
        parts.headers = headers;
        if let Some(uri) = target {
            parts.uri = uri;
        }
        if parts.version != Version::HTTP_11 && parts.version != Version::HTTP_10 {
            parts.version = Version::HTTP_11;
        }
        let (body, watch) = ClientBody::new(body);
        let sent = self.upstream.request(Request::from_parts(parts, body));
        let Ok(answer) = tokio::time::timeout(self.upstream_response, sent).await else {
            self.metrics.upstream_timeouts.inc();
            warn!(
                remote = %remote,
                path = %path,
                reason = %"upstream_timeout",
                timeout_s = self.upstream_response.as_secs_f64(),
                "[http] upstream did not answer in time"
            );
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway timeout: upstream did not answer\n",
            );
        };
        match answer {
            Ok(resp) => passthrough(resp),
            // The client's own body broke the request: its error, not the upstream's.
            Err(e) if watch.broken() => {
                self.metrics.refused("bad_request");
                info!(remote = %remote, path = %path, reason = %"bad_request", cause = %e, "[http] request refused");
                let mut resp = text(
                    StatusCode::BAD_REQUEST,
                    "bad request: malformed request body\n",
                );
                resp.headers_mut().insert(
                    ::http::header::CONNECTION,
                    HeaderValue::from_static("close"),
                );
                resp
            }
            Err(e) => {
                self.metrics.upstream_connect_errors.inc();
                warn!(remote = %remote, path = %path, reason = %e.reason(), cause = %e, "[http] upstream unavailable");
                text(
                    StatusCode::BAD_GATEWAY,
                    "bad gateway: upstream unavailable\n",
                )
            }
        }
    }

    /// Requests gatewarden answers itself instead of judging and forwarding them, and the
    /// path made into the one the upstream will act on (see [`crate::path`]): what is
    /// judged below is what is forwarded.
    pub(super) fn own_answer(
        &self,
        parts: &mut ::http::request::Parts,
        remote: SocketAddr,
    ) -> Option<Response<Body>> {
        let refuse = |status, reason: &'static str, msg: String| {
            self.metrics.refused(reason);
            info!(remote = %remote, method = %parts.method, reason = %reason, "[http] request refused");
            Some(text(status, msg))
        };
        // A tunnel to wherever the client names is not what a gateway's proxy is for.
        if parts.method == Method::CONNECT {
            let mut resp = refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed: CONNECT\n".into(),
            )?;
            resp.headers_mut().insert(
                ::http::header::ALLOW,
                HeaderValue::from_static(ALLOWED_METHODS),
            );
            return Some(resp);
        }
        // Asterisk-form (RFC 9112 §3.2.4) asks about the server, not a resource: OPTIONS
        // is answered here, anything else with it is malformed.
        if parts.uri.path() == "*" && parts.uri.authority().is_none() {
            if parts.method != Method::OPTIONS {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "bad request: '*' is a target only for OPTIONS\n".into(),
                );
            }
            let mut resp = Response::new(empty());
            resp.headers_mut().insert(
                ::http::header::ALLOW,
                HeaderValue::from_static(ALLOWED_METHODS),
            );
            return Some(resp);
        }
        let normalized = match crate::path::normalize(parts.uri.path()) {
            Ok(std::borrow::Cow::Borrowed(_)) => return None,
            Ok(std::borrow::Cow::Owned(p)) => p,
            Err(why) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "bad_path",
                    format!("bad request: {why}\n"),
                )
            }
        };
        let pq = match parts.uri.query() {
            Some(q) => format!("{normalized}?{q}"),
            None => normalized,
        };
        let mut uri = ::http::uri::Parts::from(std::mem::take(&mut parts.uri));
        match pq.parse() {
            Ok(pq) => uri.path_and_query = Some(pq),
            Err(_) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "bad_path",
                    "bad request: the path cannot be normalized\n".into(),
                )
            }
        }
        match ::http::Uri::from_parts(uri) {
            Ok(u) => {
                parts.uri = u;
                None
            }
            Err(_) => refuse(
                StatusCode::BAD_REQUEST,
                "bad_path",
                "bad request: the path cannot be normalized\n".into(),
            ),
        }
    }

    /// What of the Control UI's shell this request is, when it carries no credential.
    fn control_ui_shell(&self, parts: &::http::request::Parts) -> Option<Shell> {
        let ui = self.control_ui.as_ref()?;
        let carries =
            control_ui::carries_credential(parts, &self.auth.cookie, &self.auth.query_param);
        ui.classify(parts, parts.uri.path(), carries)
    }

    /// Under `auth.public_paths`, matched on whole segments of the normalized path.
    pub(super) fn is_public(&self, path: &str) -> bool {
        self.auth
            .public_paths
            .iter()
            .any(|p| crate::path::is_under(path, p))
    }

    /// `GET /x?token=T` → `303 /x` + auth cookie: a dashboard link works once and the token
    /// does not linger in the address bar or in upstream access logs.
    pub(super) fn token_redirect(
        &self,
        parts: &::http::request::Parts,
        found: Option<&auth::Found>,
    ) -> Option<Response<Body>> {
        let token = &found?.token;
        if !token.iter().all(|&b| is_cookie_octet(b)) {
            return None;
        }
        let query = auth::query_without(parts.uri.query().unwrap_or(""), &self.auth.query_param);
        let location = if query.is_empty() {
            parts.uri.path().to_string()
        } else {
            format!("{}?{}", parts.uri.path(), query)
        };
        let mut cookie = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            self.auth.cookie,
            std::str::from_utf8(token).ok()?
        );
        if self.tls {
            cookie.push_str("; Secure");
        }
        let mut resp = text(StatusCode::SEE_OTHER, "see other\n");
        resp.headers_mut()
            .insert(LOCATION, HeaderValue::from_str(&location).ok()?);
        resp.headers_mut()
            .insert(SET_COOKIE, HeaderValue::from_str(&cookie).ok()?);
        Some(resp)
    }
}
