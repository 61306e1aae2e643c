//! The client's HTTP/2 frames as they pass to hyper, read for what hyper does not check:
//! whether the first frame after the preface is SETTINGS (RFC 9113 §3.4), and how long a
//! header block has been left open (a HEADERS frame without END_HEADERS waiting for its
//! CONTINUATION). Only frame headers are read; payloads pass untouched.
//!
//! A first frame that is not SETTINGS is a connection error of type PROTOCOL_ERROR. hyper
//! offers no way to raise one, so hyper is shown, in its place, a frame it must answer that
//! way itself (an empty DATA frame on stream 0), and nothing after it: it then sends
//! GOAWAY(PROTOCOL_ERROR) and closes.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::net::Stream;

const PREFACE_LEN: usize = 24;
const HEADER_LEN: usize = 9;
const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
/// What hyper is shown instead of a first frame that is not SETTINGS.
const DATA_ON_STREAM_0: [u8; HEADER_LEN] = [0; HEADER_LEN];

/// What the serving loop learns from the frames.
pub(super) struct Seen {
    /// When the open header block began (nanoseconds after `epoch`), 0 while none is open.
    block_since: AtomicU64,
    epoch: Instant,
    /// The first frame was not SETTINGS.
    pub(super) bad_preface: AtomicBool,
    /// Woken when a header block opens.
    pub(super) changed: Notify,
}

impl Seen {
    /// When the header block now open began.
    pub(super) fn open_block(&self) -> Option<Instant> {
        match self.block_since.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.epoch + std::time::Duration::from_nanos(n)),
        }
    }
}

/// The connection's stream, with the client's frames read on their way.
pub(super) struct FrameWatch {
    inner: Stream,
    seen: Arc<Seen>,
    /// Preface bytes still to pass.
    preface_left: usize,
    /// The frame header being read, and how much of it.
    head: [u8; HEADER_LEN],
    head_len: usize,
    /// Payload bytes of the current frame still to pass.
    payload_left: u64,
    first_frame: bool,
    /// Reading stopped (after the stand-in for a bad first frame).
    stopped: bool,
}

impl FrameWatch {
    pub(super) fn new(inner: Stream) -> (FrameWatch, Arc<Seen>) {
        let seen = Arc::new(Seen {
            block_since: AtomicU64::new(0),
            epoch: Instant::now(),
            bad_preface: AtomicBool::new(false),
            changed: Notify::new(),
        });
        let watch = FrameWatch {
            inner,
            seen: seen.clone(),
            preface_left: PREFACE_LEN,
            head: [0; HEADER_LEN],
            head_len: 0,
            payload_left: 0,
            first_frame: true,
            stopped: false,
        };
        (watch, seen)
    }

    /// Reads the frame headers in `bytes`; the length to pass on (shorter after a bad first
    /// frame, whose header is then replaced in `bytes`).
    fn observe(&mut self, bytes: &mut [u8]) -> usize {
        let mut i = 0;
        while i < bytes.len() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len() - i);
                self.preface_left -= n;
                i += n;
                continue;
            }
            if self.payload_left > 0 {
                let n = (self.payload_left.min((bytes.len() - i) as u64)) as usize;
                self.payload_left -= n as u64;
                i += n;
                continue;
            }
            let start = i;
            let n = (HEADER_LEN - self.head_len).min(bytes.len() - i);
            self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[i..i + n]);
            self.head_len += n;
            i += n;
            if self.head_len < HEADER_LEN {
                continue;
            }
            self.head_len = 0;
            let len = u32::from_be_bytes([0, self.head[0], self.head[1], self.head[2]]);
            let (kind, flags) = (self.head[3], self.head[4]);
            self.payload_left = u64::from(len);
            if std::mem::take(&mut self.first_frame) && kind != SETTINGS {
                self.seen.bad_preface.store(true, Ordering::Release);
                self.stopped = true;
                // The stand-in goes where this frame's header began, when that is in this
                // read; a header split across reads has already passed in part, and then
                // nothing more is shown (hyper sees a frame cut short: also an error).
                if i - start == HEADER_LEN {
                    bytes[start..i].copy_from_slice(&DATA_ON_STREAM_0);
                    return i;
                }
                return start;
            }
            self.note_block(kind, flags);
        }
        bytes.len()
    }

    fn note_block(&self, kind: u8, flags: u8) {
        let ends = flags & END_HEADERS != 0;
        match kind {
            HEADERS | PUSH_PROMISE if !ends => {
                let since = (Instant::now() - self.seen.epoch).as_nanos().max(1) as u64;
                self.seen.block_since.store(since, Ordering::Release);
                self.seen.changed.notify_one();
            }
            CONTINUATION if ends => self.seen.block_since.store(0, Ordering::Release),
            _ => {}
        }
    }
}

impl AsyncRead for FrameWatch {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.stopped {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let me = &mut *self;
        std::task::ready!(Pin::new(&mut me.inner).poll_read(cx, buf))?;
        let filled = buf.filled_mut();
        let pass = me.observe(&mut filled[before..]);
        buf.set_filled(before + pass);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for FrameWatch {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    async fn watch() -> FrameWatch {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        FrameWatch::new(Stream::Tcp(c)).0
    }

    #[tokio::test]
    async fn header_blocks_are_followed_across_reads() {
        let mut w = watch().await;
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes.extend(frame(HEADERS, 0, 1, b"abc"));
        // In pieces of 5: every header split somewhere.
        for chunk in bytes.chunks_mut(5) {
            let n = chunk.len();
            assert_eq!(w.observe(chunk), n);
        }
        assert!(w.seen.open_block().is_some());
        let mut cont = frame(CONTINUATION, END_HEADERS, 1, b"de");
        w.observe(&mut cont);
        assert!(w.seen.open_block().is_none());
        assert!(!w.seen.bad_preface.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn a_first_frame_that_is_not_settings_is_shown_as_data_on_stream_0() {
        let mut w = watch().await;
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(HEADERS, END_HEADERS, 1, b"abc"));
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        let n = w.observe(&mut bytes);
        assert_eq!(n, PREFACE_LEN + HEADER_LEN);
        assert_eq!(bytes[PREFACE_LEN..n], DATA_ON_STREAM_0);
        assert!(w.seen.bad_preface.load(Ordering::Acquire));
        assert!(w.stopped);
    }
}
