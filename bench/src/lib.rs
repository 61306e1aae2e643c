//! Minimal WebSocket framing for the benchmark tools: only what the echo server and the load
//! generator need, written for speed (no per-message allocation on the hot path).

use base64::Engine;
use sha1::{Digest, Sha1};

pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Appends a frame header for `len` payload bytes.
pub fn header(out: &mut Vec<u8>, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    out.push(0x80 | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(k) = mask {
        out.extend_from_slice(&k);
    }
}

/// A whole client frame (masked with `MASK`).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    header(&mut f, opcode, payload.len(), Some(MASK));
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

/// A zero mask: valid on the wire, and free for the echo server to undo. (RFC 6455 wants
/// unpredictable masks against cache poisoning by browsers; irrelevant on loopback.)
pub const MASK: [u8; 4] = [0, 0, 0, 0];

/// (fin+opcode byte, masked, payload length, header length), once the header is complete.
pub fn parse_header(b: &[u8]) -> Option<(u8, bool, u64, usize)> {
    if b.len() < 2 {
        return None;
    }
    let masked = b[1] & 0x80 != 0;
    let (len, mut hl) = match b[1] & 0x7f {
        126 => (
            b.get(2..4)
                .map(|x| u16::from_be_bytes([x[0], x[1]]) as u64)?,
            4,
        ),
        127 => (
            b.get(2..10)
                .map(|x| u64::from_be_bytes(x.try_into().unwrap()))?,
            10,
        ),
        n => (n as u64, 2),
    };
    if masked {
        hl += 4;
    }
    (b.len() >= hl).then_some((b[0], masked, len, hl))
}

/// Position just past the first `\r\n\r\n`.
pub fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}
