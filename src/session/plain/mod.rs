//! A plain HTTP request past the door, as a tower stack, outermost first:
//! - `admission`: the gate's judgement; what it refuses or answers goes no further;
//! - `answer`: the errors of the layers below become the client's answers (504, 503, 400,
//!   502), each logged and counted once;
//! - load shedding over a concurrency limit (`limits.max_http_requests`, shared by every
//!   connection): one request more is answered 503 at once, not queued;
//! - the response deadline (`timeouts.upstream_response`) on the answer's head; the body
//!   then streams for as long as it takes;
//! - `upstream`: the request sent through the pooled client.
//!
//! WebSocket upgrades do not come this way (`session::upgrade`).

use std::net::SocketAddr;
use std::sync::Arc;

use ::http::{Request, Response};
use hyper::body::Incoming;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{ServiceBuilder, ServiceExt};

use crate::gate::Proxy;
use crate::http1::respond::Body;
use crate::tls::ClientCert;

mod admission;
mod answer;
mod upstream;

use admission::AdmissionLayer;
use answer::AnswerLayer;
use upstream::ToUpstream;

impl Proxy {
    /// A plain request: judged, then forwarded.
    pub(crate) async fn plain(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
        cert: Option<&ClientCert>,
    ) -> Response<Body> {
        let stack = ServiceBuilder::new()
            .layer(AdmissionLayer::new(&self, remote, cert))
            .layer(AnswerLayer::new(
                self.metrics.clone(),
                self.upstream_response,
            ))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::with_semaphore(
                self.http_permits.clone(),
            ))
            .timeout(self.upstream_response)
            .service(ToUpstream::new(self.upstream.clone()));
        match stack.oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

#[cfg(test)]
mod tests;
