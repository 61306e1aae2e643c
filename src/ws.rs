//! The few RFC 6455 pieces gatewarden needs itself: the accept key for the 101 it sends when
//! rejecting, close frames, and a tracker that follows frame boundaries in a spliced stream.
//!
//! The tracker never copies payload; it reads frame headers and skips payload lengths, so its
//! cost is per frame, not per byte. It is how the `[ws] closed` log line knows the close code
//! without terminating the WebSocket.

use std::time::Duration;

use base64::Engine;
use http::HeaderMap;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a given `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Why a request that says `Upgrade: websocket` is not a valid opening handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadUpgrade {
    #[error("WebSocket needs HTTP/1.1")]
    HttpVersion,
    #[error("WebSocket handshake must be a GET")]
    Method,
    #[error("Upgrade: websocket without Connection: upgrade")]
    NoConnectionUpgrade,
    #[error("missing Sec-WebSocket-Key")]
    NoKey,
    #[error("Sec-WebSocket-Key is not 16 bytes in base64")]
    InvalidKey,
    #[error("unsupported Sec-WebSocket-Version (13 is supported)")]
    Version,
    #[error("extended CONNECT for a protocol other than websocket")]
    Protocol,
}

impl BadUpgrade {
    pub fn status(self) -> http::StatusCode {
        match self {
            BadUpgrade::Version => http::StatusCode::UPGRADE_REQUIRED,
            BadUpgrade::Protocol => http::StatusCode::NOT_IMPLEMENTED,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// Checks an opening handshake (RFC 6455 §4.2.1) before anything is spent on it: the
/// upstream would refuse it anyway, less clearly, after an upstream connection.
pub fn check_upgrade_request<B>(req: &http::Request<B>) -> Result<(), BadUpgrade> {
    let h = req.headers();
    if req.version() != http::Version::HTTP_11 {
        return Err(BadUpgrade::HttpVersion);
    }
    if req.method() != http::Method::GET {
        return Err(BadUpgrade::Method);
    }
    if !header_has_token(h, http::header::CONNECTION, "upgrade") {
        return Err(BadUpgrade::NoConnectionUpgrade);
    }
    let mut keys = h.get_all(http::header::SEC_WEBSOCKET_KEY).iter();
    let key = keys.next().ok_or(BadUpgrade::NoKey)?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.as_bytes().trim_ascii());
    if keys.next().is_some() || !decoded.is_ok_and(|k| k.len() == 16) {
        return Err(BadUpgrade::InvalidKey);
    }
    version_13(h)
}

/// Exactly one `Sec-WebSocket-Version`, and it is 13: both HTTP versions' handshakes need it.
fn version_13(h: &HeaderMap) -> Result<(), BadUpgrade> {
    let mut versions = h.get_all(http::header::SEC_WEBSOCKET_VERSION).iter();
    if versions
        .next()
        .is_none_or(|v| v.as_bytes().trim_ascii() != b"13")
        || versions.next().is_some()
    {
        return Err(BadUpgrade::Version);
    }
    Ok(())
}

/// An HTTP/2 extended CONNECT (RFC 8441 §4-5) that opens a WebSocket: `:protocol` is
/// `websocket` (checked by the caller, which routes on it) and the version is 13. It has no
/// key, `Upgrade` or `Connection`: the stream itself is the tunnel.
pub fn check_extended_connect<B>(req: &http::Request<B>) -> Result<(), BadUpgrade> {
    if req.version() != http::Version::HTTP_2 {
        return Err(BadUpgrade::HttpVersion);
    }
    if req.method() != http::Method::CONNECT {
        return Err(BadUpgrade::Method);
    }
    version_13(req.headers())
}

/// A fresh `Sec-WebSocket-Key` (16 random bytes, base64): for the gateway's handshake when
/// the client's came over HTTP/2, which has none.
pub fn new_key() -> http::HeaderValue {
    let key: [u8; 16] = rand::random();
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    http::HeaderValue::from_str(&b64).expect("base64 is a valid header value")
}

/// Whether a comma-separated header contains `token` (case-insensitive).
pub fn header_has_token(h: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// `permessage-deflate` (RFC 7692) as the gateway accepted it in its 101.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The LZ77 window the client compresses with (`client_max_window_bits`, 8..=15;
    /// 15 when the gateway did not limit it).
    pub client_window_bits: u8,
}

impl Deflate {
    /// The extension the gateway's 101 agreed to, if it is `permessage-deflate`. A server
    /// accepts at most one offer, so the first `permessage-deflate` element is the one.
    pub fn negotiated(h: &HeaderMap) -> Option<Deflate> {
        h.get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .find_map(|ext| {
                let mut params = ext.split(|&b| b == b';').map(<[u8]>::trim_ascii);
                let name = params.next()?;
                if !name.eq_ignore_ascii_case(b"permessage-deflate") {
                    return None;
                }
                let mut bits = 15;
                for p in params {
                    let mut kv = p.splitn(2, |&b| b == b'=');
                    let key = kv.next().unwrap_or_default().trim_ascii();
                    let value = kv.next().map(|v| v.trim_ascii().trim_ascii_start());
                    if key.eq_ignore_ascii_case(b"client_max_window_bits") {
                        let v = value.map(|v| v.strip_prefix(b"\"").unwrap_or(v));
                        let v = v.map(|v| v.strip_suffix(b"\"").unwrap_or(v));
                        if let Some(n) = v
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(|v| v.parse::<u8>().ok())
                            .filter(|n| (8..=15).contains(n))
                        {
                            bits = n;
                        }
                    }
                }
                Some(Deflate {
                    client_window_bits: bits,
                })
            })
    }
}

/// Why a compressed message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the limit (a small frame can inflate a thousandfold).
    TooLarge,
    /// Not a valid DEFLATE stream for the negotiated window.
    Corrupt,
}

/// Inflates the payload of a message compressed with `permessage-deflate` as the first
/// message of a connection (no earlier message's window to draw on), stopping past `max`
/// bytes of output. RFC 7692 §7.2.2: the sender removed the trailing `00 00 ff ff`.
pub fn inflate_first_message(
    payload: &[u8],
    deflate: Deflate,
    max: usize,
) -> Result<Vec<u8>, InflateError> {
    use flate2::{Decompress, FlushDecompress, Status};
    // zlib inflates 9..=15; a 9-bit window reads everything an 8-bit one wrote.
    let bits = deflate.client_window_bits.clamp(9, 15);
    let mut d = Decompress::new_with_window_bits(false, bits);
    let mut input = Vec::with_capacity(payload.len() + 4);
    input.extend_from_slice(payload);
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity((payload.len() * 4).max(256).min(max.saturating_add(1)));
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.len().clamp(256, 64 * 1024));
        }
        let consumed = d.total_in() as usize;
        let before = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        if out.len() > max {
            return Err(InflateError::TooLarge);
        }
        if status == Status::StreamEnd {
            return Ok(out);
        }
        // With room left over, the inflater has written all it could from this input.
        if out.len() < out.capacity() {
            if d.total_in() as usize == input.len() {
                return Ok(out);
            }
            if (d.total_in(), d.total_out()) == before {
                return Err(InflateError::Corrupt);
            }
        }
    }
}

/// Opcodes gatewarden looks at.
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1-3 (`0x70` of the first byte): zero unless an extension gives them a meaning.
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes the header itself takes (2 to 14).
    pub header_len: usize,
}

impl FrameHeader {
    /// Parses a header from the start of `buf`; `None` until enough bytes are there.
    pub fn parse(buf: &[u8]) -> Option<FrameHeader> {
        if buf.len() < 2 {
            return None;
        }
        let masked = buf[1] & 0x80 != 0;
        let ext = match buf[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let header_len = 2 + ext + if masked { 4 } else { 0 };
        if buf.len() < header_len {
            return None;
        }
        let payload_len = match ext {
            2 => u16::from_be_bytes([buf[2], buf[3]]) as u64,
            8 => u64::from_be_bytes(buf[2..10].try_into().unwrap()),
            _ => (buf[1] & 0x7f) as u64,
        };
        let mask = masked.then(|| buf[2 + ext..6 + ext].try_into().unwrap());
        Some(FrameHeader {
            fin: buf[0] & 0x80 != 0,
            rsv: buf[0] & 0x70,
            opcode: buf[0] & 0x0f,
            mask,
            payload_len,
            header_len,
        })
    }

    /// Header length implied by however many bytes of it are present (2 until known).
    fn len_hint(buf: &[u8]) -> usize {
        if buf.len() < 2 {
            return 2;
        }
        let ext = match buf[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + if buf[1] & 0x80 != 0 { 4 } else { 0 }
    }

    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// XORs `data` with `mask`, as if `data` started `offset` bytes into the payload.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(offset + i) % 4];
    }
}

/// Encodes one final frame; `mask` is required for client→server frames (RFC 6455 §5.3).
pub fn encode_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let start = f.len() + if mask.is_some() { 4 } else { 0 };
    if let Some(m) = mask {
        f.extend_from_slice(&m);
    }
    f.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut f[start..], m, 0);
    }
    f
}

/// A fresh random masking key for frames gatewarden sends as a client.
pub fn random_mask() -> [u8; 4] {
    rand::random()
}

/// A close frame; unmasked (server→client) unless `mask` is given.
pub fn close_frame_masked(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    // Control frame payloads are limited to 125 bytes: 2 for the code, 123 for the reason.
    let mut reason = &reason.as_bytes()[..reason.len().min(123)];
    while std::str::from_utf8(reason).is_err() {
        reason = &reason[..reason.len() - 1];
    }
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    encode_frame(OP_CLOSE, &payload, mask)
}

/// An unmasked (server→client) close frame.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    close_frame_masked(code, reason, None)
}

/// How long a peer gets to answer our close frame before the socket is dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Sends `frames` (ending in a close frame), waits a bounded time for the peer's answering
/// close or EOF, then closes the TCP side, as RFC 6455 §7.1.1 asks of a server.
pub async fn close_gracefully<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, frames: &[u8]) {
    if stream.write_all(frames).await.is_err() {
        return;
    }
    let _ = stream.flush().await;
    let mut tracker = FrameTracker::default();
    let mut buf = [0u8; 512];
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while tracker.close().is_none() {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => tracker.observe(&buf[..n]),
            }
        }
    })
    .await;
    let _ = stream.shutdown().await;
}

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
            // payload is captured): skipped in one step. A quarter of a relayed small
            // message's user-space instructions went through the general path below.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw DEFLATE of `data` with a `bits` window, sync-flushed, trailing `00 00 ff ff`
    /// removed: a permessage-deflate message payload (RFC 7692 §7.2.1).
    fn compress(data: &[u8], bits: u8) -> Vec<u8> {
        use flate2::{Compress, Compression, FlushCompress};
        let mut c = Compress::new_with_window_bits(Compression::default(), false, bits);
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    fn ext(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::SEC_WEBSOCKET_EXTENSIONS, v.parse().unwrap());
        h
    }

    #[test]
    fn negotiated_deflate_reads_the_clients_window() {
        let d = |v| Deflate::negotiated(&ext(v)).map(|d| d.client_window_bits);
        assert_eq!(d("permessage-deflate"), Some(15));
        assert_eq!(
            d("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
            Some(12)
        );
        assert_eq!(
            d("PerMessage-Deflate;client_max_window_bits=\"9\""),
            Some(9)
        );
        assert_eq!(d("x-webkit-deflate-frame"), None);
        assert_eq!(
            d("foo, permessage-deflate; client_max_window_bits=10"),
            Some(10)
        );
        assert_eq!(Deflate::negotiated(&HeaderMap::new()), None);
    }

    #[test]
    fn a_first_message_inflates_within_its_window_and_its_limit() {
        let msg = br#"{"type":"req","id":"1","method":"connect","params":{"auth":{"token":"t"}}}"#;
        for bits in [9, 12, 15] {
            let d = Deflate {
                client_window_bits: bits,
            };
            let z = compress(msg, bits);
            assert_eq!(inflate_first_message(&z, d, 1024).unwrap(), msg);
            // One byte under the inflated size: refused before more is produced.
            assert_eq!(
                inflate_first_message(&z, d, msg.len() - 1),
                Err(InflateError::TooLarge)
            );
        }
        // Output that exactly fills a buffer, or needs it grown several times.
        let d15 = Deflate {
            client_window_bits: 15,
        };
        for n in [256, 257, 4096, 100_000] {
            let m = vec![b'a'; n];
            assert_eq!(inflate_first_message(&compress(&m, 15), d15, n).unwrap(), m);
        }
        // A bomb: 16 MiB of zeros compress to ~16 KiB; the limit stops it early.
        let zeros = compress(&vec![0u8; 16 << 20], 15);
        assert_eq!(
            inflate_first_message(&zeros, d15, 64 * 1024),
            Err(InflateError::TooLarge)
        );
        assert_eq!(
            inflate_first_message(b"\xff\xfe\xfd not deflate", d15, 1024),
            Err(InflateError::Corrupt)
        );
        // A client that reaches back further than the window it agreed to is refused, as
        // the gateway's own inflater (same window) would refuse it.
        let mut far = vec![0u8; 0];
        far.extend((0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        far.extend_from_within(..1024);
        let z = compress(&far, 15);
        let d9 = Deflate {
            client_window_bits: 9,
        };
        assert_eq!(
            inflate_first_message(&z, d9, 1 << 20),
            Err(InflateError::Corrupt)
        );
        assert_eq!(inflate_first_message(&z, d15, 1 << 20).unwrap(), far);
    }

    #[test]
    fn rfc_accept_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    fn masked(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        encode_frame(opcode, payload, Some(mask))
    }

    #[test]
    fn header_parse_all_length_forms() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let f = encode_frame(OP_BINARY, &vec![0u8; len], Some([1, 2, 3, 4]));
            let h = FrameHeader::parse(&f).unwrap();
            assert_eq!(h.payload_len as usize, len);
            assert_eq!(h.header_len + len, f.len());
            assert_eq!(h.mask, Some([1, 2, 3, 4]));
            assert!(h.fin);
            assert!(FrameHeader::parse(&f[..h.header_len - 1]).is_none());
        }
    }

    #[test]
    fn observe_frames_stops_at_the_limit_on_a_boundary() {
        let mut stream = encode_frame(OP_TEXT, b"challenge", None);
        let first = stream.len();
        stream.extend(encode_frame(OP_BINARY, &vec![1u8; 300], None));
        let second = stream.len();
        stream.extend(encode_frame(OP_TEXT, b"", None));
        // Whole, and in pieces of every size: always cut right after a frame.
        for piece in [stream.len(), 1, 2, 7, 130] {
            for limit in [0u64, 1, 2] {
                let mut t = FrameTracker::default();
                let mut taken = 0;
                for chunk in stream.chunks(piece) {
                    let n = t.observe_frames(chunk, limit);
                    taken += n;
                    if n < chunk.len() {
                        break;
                    }
                }
                let want = [0, first, second][limit as usize];
                assert_eq!((taken, t.frames()), (want, limit), "piece {piece}");
                assert!(t.at_boundary());
            }
        }
        let mut t = FrameTracker::default();
        assert_eq!(t.observe_frames(&stream, u64::MAX), stream.len());
        assert_eq!(t.frames(), 3);
    }

    #[test]
    fn rsv_bits_are_read() {
        let mut f = encode_frame(OP_TEXT, b"x", Some([1, 2, 3, 4]));
        assert_eq!(FrameHeader::parse(&f).unwrap().rsv, 0);
        f[0] |= 0x40;
        assert_eq!(FrameHeader::parse(&f).unwrap().rsv, 0x40);
    }

    #[test]
    fn tracks_close_after_large_frames_byte_by_byte() {
        let mut stream = masked(0x2, &vec![7u8; 70_000], [1, 2, 3, 4]);
        stream.extend(masked(0x1, &vec![b'a'; 300], [9, 9, 9, 9]));
        stream.extend(masked(0x9, b"", [0, 0, 0, 0]));
        let mut close_payload = 4001u16.to_be_bytes().to_vec();
        close_payload.extend_from_slice(b"gateway auth changed");
        stream.extend(masked(0x8, &close_payload, [0xde, 0xad, 0xbe, 0xef]));
        for chunk in [1usize, 3, 7, 4096, stream.len()] {
            let mut t = FrameTracker::default();
            for c in stream.chunks(chunk) {
                t.observe(c);
            }
            assert_eq!(t.frames(), 4, "chunk size {chunk}");
            assert!(t.at_boundary());
            let c = t.close().unwrap();
            assert_eq!(c.code, Some(4001));
            assert_eq!(c.reason, "gateway auth changed");
        }
    }

    /// Headers read in place and headers gathered across reads give the same result,
    /// wherever a read ends.
    #[test]
    fn tracks_frames_split_anywhere() {
        let mut stream = masked(0x1, b"hi", [1, 2, 3, 4]);
        stream.extend(masked(0x2, &[5u8; 200], [4, 3, 2, 1]));
        stream.extend(masked(0xA, b"", [0, 0, 0, 0]));
        stream.extend(masked(0x8, &1000u16.to_be_bytes(), [7, 7, 7, 7]));
        for cut in 0..=stream.len() {
            let mut t = FrameTracker::default();
            t.observe(&stream[..cut]);
            t.observe(&stream[cut..]);
            assert_eq!(t.frames(), 4, "cut at {cut}");
            assert!(t.at_boundary(), "cut at {cut}");
            assert_eq!(t.close().unwrap().code, Some(1000), "cut at {cut}");
        }
    }

    /// Many short frames in one read (the fast path), then a close frame in the same read,
    /// then short frames cut at every point: counted alike, and the close still captured.
    #[test]
    fn short_frames_in_one_read() {
        let mut stream = Vec::new();
        for i in 0..50u8 {
            let payload = vec![i; (i as usize * 7) % 126];
            stream.extend(if i % 2 == 0 {
                masked(0x2, &payload, [i, 1, 2, 3])
            } else {
                encode_frame(0x1, &payload, None)
            });
        }
        stream.extend(encode_frame(0x8, &1001u16.to_be_bytes(), None));
        stream.extend(masked(0x9, b"ping", [1, 1, 1, 1]));
        let mut t = FrameTracker::default();
        t.observe(&stream);
        assert_eq!(t.frames(), 52);
        assert!(t.at_boundary());
        assert_eq!(t.close().unwrap().code, Some(1001));
        for cut in 0..=stream.len() {
            let mut t = FrameTracker::default();
            t.observe(&stream[..cut]);
            t.observe(&stream[cut..]);
            assert_eq!(t.frames(), 52, "cut at {cut}");
            assert_eq!(t.close().unwrap().code, Some(1001), "cut at {cut}");
        }
    }

    /// Generated streams (every opcode, 7-, 16- and 64-bit lengths, masked or not, sometimes
    /// two close frames) fed in random chunks track exactly what a byte-at-a-time feed,
    /// which never takes the whole-frame fast path, tracks.
    #[test]
    fn random_chunks_track_like_single_bytes() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let mut stream = Vec::new();
            for _ in 0..1 + next() % 12 {
                let opcode = [0x0, 0x1, 0x2, 0x8, 0x9, 0xA][(next() % 6) as usize];
                let len = match next() % 4 {
                    0 => 0,
                    1 => next() % 126,
                    2 => 126 + next() % 1000,
                    _ => 65_536 + next() % 5,
                } as usize;
                let mut payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if opcode == 0x8 && len >= 2 {
                    payload.truncate(125);
                }
                let mask = (next() % 2 == 0).then(|| (next() as u32).to_be_bytes());
                stream.extend(encode_frame(opcode, &payload, mask));
            }
            let mut one = FrameTracker::default();
            for b in &stream {
                one.observe(std::slice::from_ref(b));
            }
            let mut chunked = FrameTracker::default();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let n = match next() % 3 {
                    0 => 1 + next() % 8,
                    1 => 1 + next() % 300,
                    _ => 1 + next() % 100_000,
                } as usize;
                let (chunk, tail) = rest.split_at(n.min(rest.len()));
                chunked.observe(chunk);
                rest = tail;
            }
            assert_eq!(chunked.frames(), one.frames());
            assert_eq!(chunked.close(), one.close());
            assert!(chunked.at_boundary() && one.at_boundary());
        }
    }

    #[test]
    fn unmasked_close_frame_round_trips() {
        let f = close_frame(1008, "unauthorized: gateway token mismatch");
        let mut t = FrameTracker::default();
        t.observe(&f);
        assert_eq!(t.close().unwrap().code, Some(1008));
        assert_eq!(
            t.close().unwrap().reason,
            "unauthorized: gateway token mismatch"
        );
        let long = "é".repeat(100);
        let f = close_frame(1000, &long);
        assert!(f.len() <= 127);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
