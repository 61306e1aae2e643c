//! A plain HTTP request past the gate (`gate::plain`), proxied to the upstream with a
//! deadline on its answer; the answer loses its hop-by-hop headers.

use std::net::SocketAddr;
use std::sync::Arc;

use ::http::header::HeaderValue;
use ::http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::{info, warn};

use crate::config::Inject;
use crate::gate::control_ui::{self, Shell};
use crate::gate::headers::{strip_hop_by_hop, Forward, Identity};
use crate::gate::log::logged_target;
use crate::gate::plain::Passed;
use crate::gate::Proxy;
use crate::http1::body::ClientBody;
use crate::http1::respond::{text, Body};
use crate::tls::ClientCert;

fn passthrough(resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.boxed())
}

impl Proxy {
    /// A plain request: judged, then forwarded.
    pub(crate) async fn plain(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
        cert: Option<&ClientCert>,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let Passed {
            shell,
            authenticated,
            identity,
        } = match self.judge_plain(&mut parts, remote, cert) {
            Ok(passed) => passed,
            Err(answer) => return answer,
        };
        let path = logged_target(&parts.uri, &self.creds.load());
        if shell == Some(Shell::Page) {
            parts.uri = control_ui::page_uri();
        }
        self.to_upstream(&mut parts, remote, &authenticated, identity.as_ref());
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

    /// The request's head as the upstream gets it: the header policy's headers (the
    /// gateway's token only for a request gatewarden authenticated), its target, HTTP/1.1.
    fn to_upstream(
        &self,
        parts: &mut ::http::request::Parts,
        remote: SocketAddr,
        authenticated: &Option<(
            Option<crate::auth::Found>,
            Option<crate::credentials::Secret>,
        )>,
        identity: Option<&(String, Option<String>)>,
    ) {
        // Only requests gatewarden authenticated get the gateway's token.
        let (found, inject) = match &authenticated {
            Some((found, secret)) if self.upstream_auth.inject == Inject::Header => {
                (found.as_ref(), secret.as_ref())
            }
            _ => (None, None),
        };
        let forward = Forward::new(self, &parts.headers, remote, false, found, inject)
            .with_identity(identity.map(|(name, scopes)| Identity {
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
    }
}
