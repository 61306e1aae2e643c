//! What an HTTP/2 connection knows of its streams, shared by the server (which closes idle or
//! unauthenticated connections) and the gate (which says when a request was admitted, and
//! ends a WebSocket stream when its tunnel ends).
//!
//! - [`Streams`]: how many streams are open (requests being answered, tunnels), and whether
//!   one was admitted yet. A [`StreamHold`] counts one stream while it lives.
//! - [`StreamEnd`]: the task hyper spawns to send an upgraded stream's data. hyper gives no
//!   handle to reset such a stream, and its send task lives on, holding the stream open and
//!   its queued data, while the client's flow-control window is closed. Ending that task
//!   when the tunnel ends drops the stream's last handle: h2 then discards its queued data
//!   and sends RST_STREAM.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;

/// One HTTP/2 connection's streams.
#[derive(Default)]
pub(crate) struct Streams {
    open: AtomicUsize,
    admitted: AtomicBool,
    /// Woken when the count leaves or reaches zero, and at the first admission.
    changed: Notify,
}

impl Streams {
    /// Counts one more open stream until the hold (and every clone of it) is dropped.
    pub(crate) fn hold(self: &Arc<Self>) -> StreamHold {
        if self.open.fetch_add(1, Ordering::AcqRel) == 0 {
            self.changed.notify_one();
        }
        StreamHold(Arc::new(Held(self.clone())))
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A request or stream on this connection passed the gate.
    pub(crate) fn admitted(&self) -> bool {
        self.admitted.load(Ordering::Acquire)
    }

    /// Resolves after the next change (the first stream opened or the last closed, the
    /// first admission).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await
    }
}

/// One open stream, counted while it (or a clone) lives: a request's answer, a tunnel.
#[derive(Clone)]
pub(crate) struct StreamHold(Arc<Held>);

struct Held(Arc<Streams>);

impl StreamHold {
    /// Marks the connection as having passed the gate (a token accepted, or a public path).
    pub(crate) fn admitted(&self) {
        let streams = &self.0 .0;
        if !streams.admitted.swap(true, Ordering::AcqRel) {
            streams.changed.notify_one();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_one();
        }
    }
}

/// Marks the connection of an HTTP/2 request as admitted; nothing for HTTP/1.1.
pub(crate) fn mark_admitted(extensions: &http::Extensions) {
    if let Some(hold) = extensions.get::<StreamHold>() {
        hold.admitted();
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its stream as open until it is done (or dropped).
    pub struct HeldBody<B> {
        #[pin]
        body: B,
        hold: StreamHold,
    }
}

impl<B> HeldBody<B> {
    pub(crate) fn new(body: B, hold: StreamHold) -> HeldBody<B> {
        HeldBody { body, hold }
    }
}

impl<B: hyper::body::Body> hyper::body::Body for HeldBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

tokio::task_local! {
    /// The stream whose task is being polled (set by [`Scoped`]).
    static CURRENT: Arc<StreamEnd>;
}

/// How long a tunnel's stream may take to finish by itself (its close frame and END_STREAM
/// handed to h2) once the tunnel is over, before it is reset.
const FINISH_WAIT: Duration = Duration::from_millis(250);

/// The send task of one stream's upgrade, once hyper has spawned it.
#[derive(Default)]
pub(crate) struct StreamEnd {
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl StreamEnd {
    /// The stream being served by the current task (inside hyper's HTTP/2 stream task).
    pub(crate) fn current() -> Option<Arc<StreamEnd>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    /// Ends the stream's send task: at once if it is done, else after [`FINISH_WAIT`] at
    /// most (a stream whose window is closed never finishes by itself). Dropping it drops
    /// the stream's last handle: h2 discards what is queued and resets the stream.
    pub(crate) async fn finish(&self) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut task) = task else {
            return;
        };
        if tokio::time::timeout(FINISH_WAIT, &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// hyper's executor for one HTTP/2 connection. A stream's task is polled inside its own
/// [`StreamEnd`] scope; what hyper spawns from inside that scope is that stream's upgraded
/// send task, whose handle the `StreamEnd` keeps.
#[derive(Clone, Copy, Default)]
pub(crate) struct StreamExec;

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        match StreamEnd::current() {
            Some(end) => {
                let task = tokio::spawn(fut);
                *end.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
            }
            None => {
                tokio::spawn(Scoped {
                    end: Arc::default(),
                    fut,
                });
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A stream's task, polled with its `StreamEnd` as the current one.
    struct Scoped<F> {
        end: Arc<StreamEnd>,
        #[pin]
        fut: F,
    }
}

impl<F: Future<Output = ()>> Future for Scoped<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let me = self.project();
        let end = me.end.clone();
        let fut = me.fut;
        CURRENT.sync_scope(end, || fut.poll(cx))
    }
}
