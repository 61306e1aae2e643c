//! The plain-HTTP stack's layers below the admission, without sockets: each failure of the
//! layers under `answer` becomes its answer, and the concurrency limit sheds, not queues.

use std::sync::Arc;
use std::time::Duration;

use ::http::{Request, Response, StatusCode};
use tokio::sync::{Notify, Semaphore};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};

use crate::http1::respond::{text, Body};
use crate::metrics::Metrics;

use super::answer::AnswerLayer;

const DEADLINE: Duration = Duration::from_secs(60);

/// The stack as `Proxy::plain` builds it under the admission, over `upstream`.
fn stack<S>(
    permits: &Arc<Semaphore>,
    upstream: S,
    deadline: Duration,
) -> impl Service<Request<()>, Response = Response<Body>, Error = std::convert::Infallible>
where
    S: Service<Request<()>, Response = Response<Body>, Error = BoxError>,
{
    ServiceBuilder::new()
        .layer(AnswerLayer::new(Arc::new(Metrics::new()), deadline))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(permits.clone()))
        .timeout(deadline)
        .service(upstream)
}

fn ok() -> Response<Body> {
    text(StatusCode::OK, "ok\n")
}

#[tokio::test]
async fn an_upstream_silent_past_the_deadline_is_a_504() {
    let permits = Arc::new(Semaphore::new(4));
    let silent = service_fn(|_: Request<()>| async {
        std::future::pending::<()>().await;
        Ok::<_, BoxError>(ok())
    });
    let resp = stack(&permits, silent, Duration::from_millis(50))
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(permits.available_permits(), 4, "the permit came back");
}

#[tokio::test]
async fn an_upstream_error_is_a_502_and_a_broken_client_body_a_400() {
    let permits = Arc::new(Semaphore::new(4));
    let failing =
        service_fn(|_: Request<()>| async { Err::<Response<Body>, BoxError>("refused".into()) });
    let resp = stack(&permits, failing, DEADLINE)
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let mut req = Request::new(());
    req.extensions_mut().insert(super::answer::Target {
        remote: "192.0.2.1:1".parse().unwrap(),
        path: "/upload".into(),
        watch: Some(crate::http1::body::broken_watch()),
    });
    let failing =
        service_fn(|_: Request<()>| async { Err::<Response<Body>, BoxError>("body".into()) });
    let resp = stack(&permits, failing, DEADLINE)
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers()["connection"], "close");
}

/// With every permit held by a request in flight, one more is answered 503 at once (it
/// does not wait for a permit); when the first is answered, the next one passes.
#[tokio::test]
async fn one_request_over_the_limit_is_shed_at_once() {
    let permits = Arc::new(Semaphore::new(1));
    let release = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let (r, e) = (release.clone(), entered.clone());
    let held = service_fn(move |_: Request<()>| {
        let (r, e) = (r.clone(), e.clone());
        async move {
            e.notify_one();
            r.notified().await;
            Ok::<_, BoxError>(ok())
        }
    });
    let first = stack(&permits, held, DEADLINE).oneshot(Request::new(()));
    tokio::pin!(first);
    tokio::select! {
        _ = &mut first => panic!("answered while held"),
        _ = entered.notified() => {}
    }
    let instant = service_fn(|_: Request<()>| async { Ok::<_, BoxError>(ok()) });
    let shed = stack(&permits, instant, DEADLINE)
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()["retry-after"], "1");
    release.notify_one();
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
    let instant = service_fn(|_: Request<()>| async { Ok::<_, BoxError>(ok()) });
    let next = stack(&permits, instant, DEADLINE)
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(next.status(), StatusCode::OK);
}
