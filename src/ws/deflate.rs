//! `permessage-deflate` (RFC 7692): what the gateway agreed to, and the inflation of a
//! connection's first message, the one gatewarden reads.

use http::HeaderMap;

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
