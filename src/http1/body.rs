//! A client's request body on its way upstream, which remembers that it was the client who
//! broke it: a malformed chunked body (`ffffffffffffffff1`, `-5`, a bare-LF chunk, a huge
//! chunk extension) fails the upstream request too, and that failure is the client's (400),
//! not the upstream's (502, an upstream error alert).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// The client's body, passed through frame by frame.
pub(crate) struct ClientBody {
    inner: Incoming,
    broken: Arc<AtomicBool>,
}

/// Tells whether the client's body failed (after the upstream request ended).
#[derive(Clone)]
pub(crate) struct BodyWatch(Arc<AtomicBool>);

impl ClientBody {
    pub(crate) fn new(inner: Incoming) -> (ClientBody, BodyWatch) {
        let broken = Arc::new(AtomicBool::new(false));
        (
            ClientBody {
                inner,
                broken: broken.clone(),
            },
            BodyWatch(broken),
        )
    }
}

impl BodyWatch {
    /// The client's body failed to read (malformed, or the client went away mid-body).
    pub(crate) fn broken(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.broken.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The watch of a client body that broke (tests of what a broken body is answered).
#[cfg(test)]
pub(crate) fn broken_watch() -> BodyWatch {
    BodyWatch(Arc::new(AtomicBool::new(true)))
}
