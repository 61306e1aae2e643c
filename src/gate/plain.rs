//! A plain HTTP request's judgement: answered here (CONNECT, `OPTIONS *`, a path that
//! cannot be normalized), judged when `auth.http = "require"`, passed when public or the
//! Control UI's shell. What passes is forwarded by `session::plain`.

use std::net::SocketAddr;

use ::http::header::{HeaderValue, LOCATION, SET_COOKIE};
use ::http::{Method, Response, StatusCode, Version};
use tracing::info;

use crate::auth;
use crate::config::{HttpAuthMode, TokenSource};
use crate::credentials::Secret;
use crate::http1::respond::{empty, text, Body};
use crate::tls::ClientCert;

use super::admit::Door;
use super::control_ui::{self, Shell};
use super::{Proxy, ALLOWED_METHODS};

/// RFC 6265 cookie-octet.
pub(crate) fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

/// A plain request past the gate, and what its forwarding needs of the judgement.
pub(crate) struct Passed {
    /// Which part of the Control UI's shell it is, when it is one.
    pub(crate) shell: Option<Shell>,
    /// When gatewarden authenticated it: the client's token, and the gateway's.
    pub(crate) authenticated: Option<(Option<auth::Found>, Option<Secret>)>,
    /// `upstream_auth.inject = "trusted_proxy"`: the client's name and scopes.
    pub(crate) identity: Option<(String, Option<String>)>,
}

impl Proxy {
    /// The judgement of a plain request: what passes, or the answer it gets instead. The
    /// path in `parts` is made the one the upstream will act on first.
    #[allow(clippy::result_large_err)] // the error is the answer itself, built once
    pub(crate) fn judge_plain(
        &self,
        parts: &mut ::http::request::Parts,
        remote: SocketAddr,
        cert: Option<&ClientCert>,
    ) -> Result<Passed, Response<Body>> {
        if let Some(answer) = self.own_answer(parts, remote) {
            return Err(answer);
        }
        let mut authenticated = None;
        let mut identity = None;
        let shell = self.control_ui_shell(parts);
        if self.auth.http == HttpAuthMode::Require
            && shell.is_none()
            && !self.is_public(parts.uri.path())
        {
            let door = Door::Plain {
                method: &parts.method,
            };
            let admitted = self
                .admit(parts, remote, cert, door)
                .map_err(|refusal| refusal.as_http())?;
            let source = admitted.by.as_ref().map(|a| a.source);
            if source == Some(TokenSource::Query) && parts.method == Method::GET {
                if let Some(resp) = self.token_redirect(parts, admitted.found.as_ref()) {
                    return Err(resp);
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
        Ok(Passed {
            shell,
            authenticated,
            identity,
        })
    }

    /// Requests gatewarden answers itself instead of judging and forwarding them, and the
    /// path made into the one the upstream will act on (see [`crate::path`]): what is
    /// judged below is what is forwarded.
    pub(crate) fn own_answer(
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
    pub(crate) fn is_public(&self, path: &str) -> bool {
        self.auth
            .public_paths
            .iter()
            .any(|p| crate::path::is_under(path, p))
    }

    /// `GET /x?token=T` → `303 /x` + auth cookie: a dashboard link works once and the token
    /// does not linger in the address bar or in upstream access logs.
    pub(crate) fn token_redirect(
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
