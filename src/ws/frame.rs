//! Frames gatewarden reads or writes itself: headers, masks, close frames.

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
    pub(super) fn len_hint(buf: &[u8]) -> usize {
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
