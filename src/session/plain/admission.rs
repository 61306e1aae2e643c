//! The outermost layer of the plain-HTTP stack: the gate's judgement (`gate::plain`). What
//! it refuses, or answers itself, never reaches the layers below; what passes goes on in
//! the shape the upstream gets (the header policy's headers, the normalized target,
//! HTTP/1.1), with a [`Target`] for the lines of whatever happens next.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::http::{Request, Response, Version};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::config::Inject;
use crate::gate::control_ui::{self, Shell};
use crate::gate::headers::{Forward, Identity};
use crate::gate::log::logged_target;
use crate::gate::plain::Passed;
use crate::gate::Proxy;
use crate::http1::body::ClientBody;
use crate::http1::respond::Body;
use crate::tls::ClientCert;

use super::answer::Target;

/// The gate in front of the stack, for one request from `remote`.
pub(crate) struct AdmissionLayer<'a> {
    proxy: &'a Proxy,
    remote: SocketAddr,
    cert: Option<&'a ClientCert>,
}

impl<'a> AdmissionLayer<'a> {
    pub(crate) fn new(
        proxy: &'a Proxy,
        remote: SocketAddr,
        cert: Option<&'a ClientCert>,
    ) -> AdmissionLayer<'a> {
        AdmissionLayer {
            proxy,
            remote,
            cert,
        }
    }
}

impl<'a, S> Layer<S> for AdmissionLayer<'a> {
    type Service = Admission<'a, S>;

    fn layer(&self, inner: S) -> Admission<'a, S> {
        Admission {
            proxy: self.proxy,
            remote: self.remote,
            cert: self.cert,
            inner,
        }
    }
}

pub(crate) struct Admission<'a, S> {
    proxy: &'a Proxy,
    remote: SocketAddr,
    cert: Option<&'a ClientCert>,
    inner: S,
}

impl<S> Service<Request<Incoming>> for Admission<'_, S>
where
    S: Service<Request<ClientBody>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Admitted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let Passed {
            shell,
            authenticated,
            identity,
        } = match self.proxy.judge_plain(&mut parts, self.remote, self.cert) {
            Ok(passed) => passed,
            Err(answer) => {
                return Admitted::Answered {
                    answer: Some(answer),
                }
            }
        };
        let path = logged_target(&parts.uri, &self.proxy.creds.load());
        if shell == Some(Shell::Page) {
            parts.uri = control_ui::page_uri();
        }
        to_upstream(
            self.proxy,
            &mut parts,
            self.remote,
            &authenticated,
            identity.as_ref(),
        );
        let (body, watch) = ClientBody::new(body);
        parts.extensions.insert(Target {
            remote: self.remote,
            path,
            watch: Some(watch),
        });
        Admitted::Passed {
            inner: self.inner.call(Request::from_parts(parts, body)),
        }
    }
}

pin_project! {
    /// The gate's own answer, or the stack's below.
    #[project = AdmittedProj]
    pub(crate) enum Admitted<F> {
        Answered { answer: Option<Response<Body>> },
        Passed { #[pin] inner: F },
    }
}

impl<F, E> Future for Admitted<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmittedProj::Answered { answer } => Poll::Ready(Ok(answer
                .take()
                .expect("an answer is polled once it is done"))),
            AdmittedProj::Passed { inner } => inner.poll(cx),
        }
    }
}

/// The request's head as the upstream gets it: the header policy's headers (the gateway's
/// token only for a request gatewarden authenticated), its target, HTTP/1.1.
fn to_upstream(
    proxy: &Proxy,
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
        Some((found, secret)) if proxy.upstream_auth.inject == Inject::Header => {
            (found.as_ref(), secret.as_ref())
        }
        _ => (None, None),
    };
    let forward = Forward::new(proxy, &parts.headers, remote, false, found, inject).with_identity(
        identity.map(|(name, scopes)| Identity {
            name,
            scopes: scopes.clone(),
        }),
    );
    let (headers, target) = forward.plain(&parts.uri);
    parts.headers = headers;
    if let Some(uri) = target {
        parts.uri = uri;
    }
    if parts.version != Version::HTTP_11 && parts.version != Version::HTTP_10 {
        parts.version = Version::HTTP_11;
    }
}
