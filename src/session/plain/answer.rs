//! What the client gets when an admitted plain request does not come back from the
//! upstream: the stack's errors (the deadline passed, too many in flight, the client's own
//! body broke, the upstream failed) turned into answers, logged and counted. Every failure's
//! renderings (status, text, log reason) are in [`Failure`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use ::http::header::{HeaderValue, CONNECTION, RETRY_AFTER};
use ::http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::{BoxError, Layer, Service};
use tracing::{info, warn};

use crate::http1::body::BodyWatch;
use crate::http1::respond::{text, Body};
use crate::metrics::Metrics;
use crate::upstream::UpstreamError;

/// What the answer's line needs to know of the request, put in its extensions by the
/// admission: who asked, for what (as logged: tokens redacted), and the body's watch.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) remote: SocketAddr,
    pub(crate) path: String,
    pub(crate) watch: Option<BodyWatch>,
}

/// Why an admitted request got no answer from the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// `timeouts.upstream_response` passed before the answer's head.
    UpstreamTimeout,
    /// `limits.max_http_requests` are in flight already.
    Overloaded,
    /// The client's body was malformed: its error, not the upstream's.
    BadRequestBody,
    /// The upstream could not be reached or answered badly (the reason is its error's).
    Upstream(&'static str),
}

impl Failure {
    fn of(e: &BoxError, watch: Option<&BodyWatch>) -> Failure {
        if e.is::<tower::timeout::error::Elapsed>() {
            Failure::UpstreamTimeout
        } else if e.is::<tower::load_shed::error::Overloaded>() {
            Failure::Overloaded
        } else if watch.is_some_and(BodyWatch::broken) {
            Failure::BadRequestBody
        } else {
            Failure::Upstream(
                e.downcast_ref::<UpstreamError>()
                    .map_or("upstream_bad_answer", UpstreamError::reason),
            )
        }
    }

    /// The log's and the metrics' `reason`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Failure::UpstreamTimeout => "upstream_timeout",
            Failure::Overloaded => "overloaded",
            Failure::BadRequestBody => "bad_request",
            Failure::Upstream(reason) => reason,
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Failure::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Failure::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Failure::BadRequestBody => StatusCode::BAD_REQUEST,
            Failure::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Failure::UpstreamTimeout => "gateway timeout: upstream did not answer\n",
            Failure::Overloaded => "service unavailable: too many requests in flight, retry\n",
            Failure::BadRequestBody => "bad request: malformed request body\n",
            Failure::Upstream(_) => "bad gateway: upstream unavailable\n",
        }
    }

    /// The client's answer.
    pub(crate) fn response(self) -> Response<Body> {
        let mut resp = text(self.status(), self.text());
        match self {
            // The rest of a broken body cannot be read past: the connection ends.
            Failure::BadRequestBody => {
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Failure::Overloaded => {
                resp.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }

    fn log(self, target: Option<&Target>, cause: &BoxError, deadline: Duration) {
        let (remote, path) = target.map_or((None, "-"), |t| (Some(t.remote), t.path.as_str()));
        let remote = remote.map(tracing::field::display);
        match self {
            Failure::UpstreamTimeout => warn!(
                remote,
                path = %path,
                reason = %self.as_str(),
                timeout_s = deadline.as_secs_f64(),
                "[http] upstream did not answer in time"
            ),
            Failure::Overloaded => {
                info!(remote, path = %path, reason = %self.as_str(), "[http] request refused")
            }
            Failure::BadRequestBody => {
                info!(remote, path = %path, reason = %self.as_str(), cause = %cause, "[http] request refused")
            }
            Failure::Upstream(_) => {
                warn!(remote, path = %path, reason = %self.as_str(), cause = %cause, "[http] upstream unavailable")
            }
        }
    }

    fn count(self, metrics: &Metrics) {
        match self {
            Failure::UpstreamTimeout => {
                metrics.upstream_timeouts.inc();
            }
            Failure::Upstream(_) => {
                metrics.upstream_connect_errors.inc();
            }
            Failure::Overloaded | Failure::BadRequestBody => metrics.refused(self.as_str()),
        }
    }
}

/// Turns the inner stack's errors into answers (see [`Failure`]).
pub(crate) struct AnswerLayer {
    metrics: Arc<Metrics>,
    deadline: Duration,
}

impl AnswerLayer {
    /// `deadline` is the response deadline, for the timeout's line.
    pub(crate) fn new(metrics: Arc<Metrics>, deadline: Duration) -> AnswerLayer {
        AnswerLayer { metrics, deadline }
    }
}

impl<S> Layer<S> for AnswerLayer {
    type Service = Answer<S>;

    fn layer(&self, inner: S) -> Answer<S> {
        Answer {
            inner,
            metrics: self.metrics.clone(),
            deadline: self.deadline,
            not_ready: None,
        }
    }
}

pub(crate) struct Answer<S> {
    inner: S,
    metrics: Arc<Metrics>,
    deadline: Duration,
    /// The inner stack's readiness failed: the next call answers with it.
    not_ready: Option<BoxError>,
}

impl<S, B> Service<Request<B>> for Answer<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = AnswerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        let ready = ready!(self.inner.poll_ready(cx));
        self.not_ready = ready.err().map(Into::into);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let target = req.extensions_mut().remove::<Target>();
        let (inner, early) = match self.not_ready.take() {
            Some(e) => (None, Some(e)),
            None => (Some(self.inner.call(req)), None),
        };
        AnswerFuture {
            inner,
            early,
            target,
            metrics: self.metrics.clone(),
            deadline: self.deadline,
        }
    }
}

pin_project! {
    /// The inner stack's answer, or the one its failure gets.
    pub(crate) struct AnswerFuture<F> {
        #[pin]
        inner: Option<F>,
        early: Option<BoxError>,
        target: Option<Target>,
        metrics: Arc<Metrics>,
        deadline: Duration,
    }
}

impl<F, E> Future for AnswerFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.as_pin_mut() {
            Some(f) => ready!(f.poll(cx)).map_err(Into::into),
            None => Err(this
                .early
                .take()
                .expect("an answer is polled once it is done")),
        };
        Poll::Ready(Ok(match result {
            Ok(resp) => resp,
            Err(e) => {
                let target = this.target.as_ref();
                let failure = Failure::of(&e, target.and_then(|t| t.watch.as_ref()));
                failure.count(this.metrics);
                failure.log(target, &e, *this.deadline);
                failure.response()
            }
        }))
    }
}
