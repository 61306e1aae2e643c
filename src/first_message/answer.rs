//! The gateway's answer to a `connect`, read on its way to the client: with
//! `auth.device_tokens = "gateway"`, a `hello-ok` that hands a paired device its device
//! token (`payload.auth.deviceToken`) is how gatewarden learns that token (see
//! `credentials::PairedDevices`). Every frame is passed on as soon as it is whole; none is
//! changed, and a frame too large to hold ends the watch (the relay takes over).

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::Stream;
use crate::relay::Side;
use crate::ws::{self, FrameHeader, FrameTracker};

/// Largest gateway frame held whole to be read (a `hello-ok` is a few tens of KiB).
const MAX_FRAME: u64 = 1024 * 1024;

/// What the watch saw, and the bytes it passed to the client.
#[derive(Default)]
pub(crate) struct Answered {
    /// The device token of a `hello-ok` (a secret: only its digest is kept).
    pub device_token: Option<String>,
    pub bytes_out: u64,
}

/// Sends `to_upstream`, then passes the gateway's frames (`held` first) to the client until
/// the answer to the connect (the first `res`) has passed, a close, or `timeout`.
pub(crate) async fn watch(
    client: &mut Stream,
    upstream: &mut Stream,
    to_upstream: &[u8],
    held: Vec<u8>,
    down: &mut FrameTracker,
    timeout: Duration,
) -> Result<Answered, Side> {
    upstream
        .write_all(to_upstream)
        .await
        .map_err(|_| Side::Upstream)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = held;
    let mut seen = Answered::default();
    loop {
        match next_frame(&buf) {
            Next::Frame(h, len) => {
                let frame: Vec<u8> = buf.drain(..len).collect();
                pass(client, &frame, down, &mut seen).await?;
                if h.opcode == ws::OP_CLOSE {
                    return Ok(seen);
                }
                if let Some(answer) = res_of(&h, &frame) {
                    seen.device_token = device_token(&answer);
                    return Ok(seen);
                }
                continue;
            }
            Next::TooLarge => {
                pass(client, &buf, down, &mut seen).await?;
                return Ok(seen);
            }
            Next::Incomplete => {}
        }
        buf.reserve(16 * 1024);
        tokio::select! {
            r = upstream.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    pass(client, &buf, down, &mut seen).await?;
                    return Err(Side::Upstream);
                }
                Ok(_) => {}
            },
            _ = tokio::time::sleep_until(deadline) => {
                pass(client, &buf, down, &mut seen).await?;
                return Ok(seen);
            }
        }
    }
}

enum Next {
    Frame(FrameHeader, usize),
    TooLarge,
    Incomplete,
}

fn next_frame(buf: &[u8]) -> Next {
    let Some(h) = FrameHeader::parse(buf) else {
        return Next::Incomplete;
    };
    if h.payload_len > MAX_FRAME {
        return Next::TooLarge;
    }
    let len = h.header_len + h.payload_len as usize;
    if buf.len() < len {
        return Next::Incomplete;
    }
    Next::Frame(h, len)
}

async fn pass(
    client: &mut Stream,
    bytes: &[u8],
    down: &mut FrameTracker,
    seen: &mut Answered,
) -> Result<(), Side> {
    client.write_all(bytes).await.map_err(|_| Side::Client)?;
    down.observe(bytes);
    seen.bytes_out += bytes.len() as u64;
    Ok(())
}

/// A whole, unmasked, uncompressed text frame that is a `res`.
fn res_of(h: &FrameHeader, frame: &[u8]) -> Option<Value> {
    if h.opcode != ws::OP_TEXT || !h.fin || h.rsv != 0 || h.mask.is_some() {
        return None;
    }
    let doc: Value = serde_json::from_slice(&frame[h.header_len..]).ok()?;
    (doc.get("type").and_then(Value::as_str) == Some("res")).then_some(doc)
}

fn device_token(res: &Value) -> Option<String> {
    if res.get("ok").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    res.pointer("/payload/auth/deviceToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_ok_hands_over_its_device_token_and_a_refusal_none() {
        let frame = |text: &str| ws::encode_frame(ws::OP_TEXT, text.as_bytes(), None);
        let hello = frame(
            r#"{"type":"res","id":"1","ok":true,"payload":{"type":"hello-ok","auth":{"deviceToken":"dt-9"}}}"#,
        );
        let Next::Frame(h, len) = next_frame(&hello) else {
            panic!("whole")
        };
        assert_eq!(len, hello.len());
        assert_eq!(
            device_token(&res_of(&h, &hello).unwrap()).as_deref(),
            Some("dt-9")
        );
        let refused =
            frame(r#"{"type":"res","id":"1","ok":false,"payload":{"auth":{"deviceToken":"x"}}}"#);
        let Next::Frame(h, _) = next_frame(&refused) else {
            panic!("whole")
        };
        assert_eq!(device_token(&res_of(&h, &refused).unwrap()), None);
        let event = frame(r#"{"type":"event","event":"tick"}"#);
        let Next::Frame(h, _) = next_frame(&event) else {
            panic!("whole")
        };
        assert!(res_of(&h, &event).is_none());
        assert!(matches!(
            next_frame(&hello[..hello.len() - 1]),
            Next::Incomplete
        ));
        let mut big = vec![0x81, 127];
        big.extend_from_slice(&(MAX_FRAME + 1).to_be_bytes());
        assert!(matches!(next_frame(&big), Next::TooLarge));
    }
}
