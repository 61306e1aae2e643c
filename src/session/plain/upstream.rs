//! The innermost service of the plain-HTTP stack: the request, already in the shape the
//! upstream gets (`admission`), sent through the pooled client; the answer loses its
//! hop-by-hop headers and streams back.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::Service;

use crate::gate::headers::strip_hop_by_hop;
use crate::http1::body::ClientBody;
use crate::http1::respond::Body;
use crate::upstream::{UpstreamClient, UpstreamError};

/// Sends each request to the upstream.
#[derive(Clone)]
pub(crate) struct ToUpstream {
    upstream: Arc<UpstreamClient>,
}

impl ToUpstream {
    pub(crate) fn new(upstream: Arc<UpstreamClient>) -> ToUpstream {
        ToUpstream { upstream }
    }
}

type Sent = Pin<Box<dyn Future<Output = Result<Response<Body>, UpstreamError>> + Send>>;

impl Service<Request<ClientBody>> for ToUpstream {
    type Response = Response<Body>;
    type Error = UpstreamError;
    type Future = Sent;

    /// The client's pool takes any number of requests; the limit is a layer's.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), UpstreamError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ClientBody>) -> Sent {
        let upstream = self.upstream.clone();
        // Boxed: the client's future is an `async fn`'s, which has no name to put here.
        Box::pin(async move { upstream.request(req).await.map(passthrough) })
    }
}

fn passthrough(resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.boxed())
}
