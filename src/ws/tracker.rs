//! Follows frame boundaries in one direction of a spliced stream. It never copies payload: it
//! reads frame headers and skips payload lengths, so its cost is per frame, not per byte. It
//! is how the `[ws] closed` line knows the close code without terminating the WebSocket.

use super::frame::{apply_mask, FrameHeader, OP_CLOSE};

/// A close frame seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// `None` for a close frame without a status code (RFC 6455: 1005 "no status").
    pub code: Option<u16>,
    pub reason: String,
}

/// Follows frame boundaries in one direction of a WebSocket stream.
#[derive(Debug, Default)]
pub struct FrameTracker {
    /// Header bytes of the frame being read (at most 14).
    hdr: [u8; 14],
    hdr_len: usize,
    /// Payload bytes still to skip in the current frame.
    remaining: u64,
    /// Capturing the payload of the first close frame.
    capture: Option<Capture>,
    close: Option<Close>,
    frames: u64,
}

#[derive(Debug)]
struct Capture {
    mask: Option<[u8; 4]>,
    payload: Vec<u8>,
}

impl FrameTracker {
    /// Feeds bytes that passed through, in order.
    pub fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            // The usual case, one or more whole short frames (not a close frame, whose
            // payload is captured): skipped in one step, not through the general path below.
            if self.remaining == 0 && self.hdr_len == 0 && data.len() >= 2 {
                let len7 = data[1] & 0x7f;
                if len7 < 126 && data[0] & 0x0f != OP_CLOSE {
                    let end = FrameHeader::len_hint(data) + len7 as usize;
                    if data.len() >= end {
                        self.frames += 1;
                        data = &data[end..];
                        continue;
                    }
                }
            }
            if self.remaining > 0 {
                let n = self.remaining.min(data.len() as u64) as usize;
                if let Some(c) = &mut self.capture {
                    c.payload.extend_from_slice(&data[..n]);
                }
                self.remaining -= n as u64;
                data = &data[n..];
                if self.remaining == 0 {
                    self.finish_frame();
                }
                continue;
            }
            // A whole header in `data` (a longer or a close frame) is read in place.
            if self.hdr_len == 0 && data.len() >= 2 {
                let need = FrameHeader::len_hint(data);
                if data.len() >= need {
                    let h = FrameHeader::parse(&data[..need]).expect("header complete");
                    data = &data[need..];
                    self.start_frame(h);
                    continue;
                }
            }
            // Accumulate a header; its length is known after the first two bytes.
            let need = self.header_len();
            let take = (need - self.hdr_len).min(data.len());
            self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&data[..take]);
            self.hdr_len += take;
            data = &data[take..];
            if self.hdr_len == self.header_len() {
                let h = FrameHeader::parse(&self.hdr[..self.hdr_len]).expect("header complete");
                self.start_frame(h);
            }
        }
    }

    /// Like [`observe`](Self::observe), but stops at the end of the frame that brings the
    /// count of whole frames to `limit`: returns how many bytes of `data` it took. The rest
    /// of `data` (from a frame boundary on) is left for later. Byte-wise through headers: it
    /// is for the few frames before authentication, not the relay.
    pub fn observe_frames(&mut self, data: &[u8], limit: u64) -> usize {
        let mut used = 0;
        while used < data.len() && self.frames < limit {
            let step = if self.remaining > 0 {
                self.remaining.min((data.len() - used) as u64) as usize
            } else {
                1
            };
            self.observe(&data[used..used + step]);
            used += step;
        }
        used
    }

    /// The first close frame seen in this direction.
    pub fn close(&self) -> Option<&Close> {
        self.close.as_ref()
    }

    /// Payload bytes of the current frame that may pass without being looked at: a data
    /// frame's (a close frame's payload is captured for the log).
    pub fn skippable(&self) -> u64 {
        if self.capture.is_some() {
            0
        } else {
            self.remaining
        }
    }

    /// Accounts for `n` (at most [`skippable`](Self::skippable)) payload bytes that passed
    /// unseen.
    pub fn skip(&mut self, n: u64) {
        debug_assert!(n <= self.skippable());
        self.remaining -= n;
        if self.remaining == 0 && n > 0 {
            self.finish_frame();
        }
    }

    /// True between frames: a frame of our own could be inserted here.
    pub fn at_boundary(&self) -> bool {
        self.hdr_len == 0 && self.remaining == 0
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    fn header_len(&self) -> usize {
        FrameHeader::len_hint(&self.hdr[..self.hdr_len])
    }

    fn start_frame(&mut self, h: FrameHeader) {
        if h.opcode == OP_CLOSE && self.close.is_none() && h.payload_len <= 125 {
            self.capture = Some(Capture {
                mask: h.mask,
                payload: Vec::with_capacity(h.payload_len as usize),
            });
        }
        self.remaining = h.payload_len;
        if h.payload_len == 0 {
            self.finish_frame();
        }
    }

    fn finish_frame(&mut self) {
        self.hdr_len = 0;
        self.frames += 1;
        if let Some(mut c) = self.capture.take() {
            if let Some(mask) = c.mask {
                apply_mask(&mut c.payload, mask, 0);
            }
            let (code, reason) = if c.payload.len() >= 2 {
                (
                    Some(u16::from_be_bytes([c.payload[0], c.payload[1]])),
                    String::from_utf8_lossy(&c.payload[2..]).into_owned(),
                )
            } else {
                (None, String::new())
            };
            self.close = Some(Close { code, reason });
        }
    }
}
