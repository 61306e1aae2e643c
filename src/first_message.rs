//! In-band authentication: the token rides in the client's first WebSocket frame.
//!
//! OpenClaw clients never put the token in the upgrade. They wait for the gateway's
//! `connect.challenge`, then send one `connect` request carrying `params.auth.token`. So the
//! upstream upgrade happens first, the gateway's bytes are relayed to the client at once (a
//! made-up challenge would break device-signed clients), and only the client→gateway
//! direction is held until its first frame has been read and judged.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::auth::{self, Decision, Reason};
use crate::config::TokenSource;
use crate::credentials::{Credential, Credentials, Fingerprint, Presented, Secret};
use crate::splice::{self, Side, Stream};
use crate::ws::{self, FrameHeader, FrameTracker};

/// How long the gateway gets to answer a client's close before the sockets are dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// What the first frame is checked for.
pub struct Check<'a> {
    /// Authenticate with the token found in the frame (the `first_message` source).
    pub authenticate: bool,
    /// The gateway token to put in the frame (`upstream_auth.inject = "first_message"`).
    pub inject: Option<&'a Secret>,
    pub pointer: &'a str,
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// The client may proceed: these bytes go upstream first, then the relay takes over.
pub struct Proceed {
    /// The first frame (original bytes, or re-encoded with the injected token) and every
    /// byte the client sent behind it, in order.
    pub to_upstream: Vec<u8>,
    /// State of the gateway→client direction, which kept flowing during the phase.
    pub down: FrameTracker,
    pub bytes_out: u64,
    /// The matching credential, when the frame authenticated the client.
    pub credential: Option<Credential>,
    pub presented: Option<Presented>,
    /// Accepted within a grace period: (generation, time left).
    pub grace: Option<(u64, Duration)>,
    pub rewritten: bool,
}

/// The client is refused; [`reject`] tells it so in the gateway's own shape.
pub struct Rejection {
    pub reason: Reason,
    /// What exactly was wrong, for the log (never contains frame content).
    pub detail: &'static str,
    pub id: Option<Value>,
    pub presented: Option<Fingerprint>,
    /// For `token_stale`: the last generation in which the token was valid.
    pub generation: Option<u64>,
    pub down: FrameTracker,
    pub bytes_out: u64,
}

pub enum Outcome {
    Proceed(Proceed),
    Reject(Rejection),
    /// One side went away before the first frame was judged.
    Gone {
        side: crate::splice::Side,
        bytes_out: u64,
    },
    /// The client's first frame is a close (typically answering the gateway's own close of
    /// a silent socket): not an authentication attempt; [`pass_close`] completes it.
    ClientClosed {
        frame: Vec<u8>,
        down: FrameTracker,
        bytes_out: u64,
    },
}

/// Relays gateway→client while reading the client's first frame, then judges it.
pub async fn run(
    client: &mut Stream,
    upstream: &mut Stream,
    from_client: Bytes,
    from_upstream: Bytes,
    creds: &Credentials,
    check: &Check<'_>,
) -> Outcome {
    let mut down = FrameTracker::default();
    let mut bytes_out = 0u64;
    let reject = |reason, detail, down, bytes_out| {
        Outcome::Reject(Rejection {
            reason,
            detail,
            id: None,
            presented: None,
            generation: None,
            down,
            bytes_out,
        })
    };
    if !from_upstream.is_empty() {
        down.observe(&from_upstream);
        if client.write_all(&from_upstream).await.is_err() {
            return Outcome::Gone {
                side: Side::Client,
                bytes_out,
            };
        }
        bytes_out += from_upstream.len() as u64;
    }
    let deadline = Instant::now() + check.timeout;
    let mut buf: Vec<u8> = from_client.to_vec();
    // Small: it lives as long as the client takes to send its first frame (up to
    // auth.first_message_timeout), and the gateway says little before that.
    let mut relay_buf = Vec::with_capacity(8 * 1024);
    let (frame_len, mut doc) = loop {
        match parse(&buf, check.max_bytes) {
            Parsed::Incomplete => {}
            Parsed::TooLarge => {
                return reject(
                    Reason::FirstMessageTooLarge,
                    "first frame larger than auth.first_message_max_bytes",
                    down,
                    bytes_out,
                )
            }
            Parsed::Invalid(detail) => {
                return reject(Reason::FirstMessageInvalid, detail, down, bytes_out)
            }
            Parsed::Close { len } => {
                return Outcome::ClientClosed {
                    frame: buf[..len].to_vec(),
                    down,
                    bytes_out,
                }
            }
            Parsed::Message { len, doc } => break (len, doc),
        }
        buf.reserve(4096);
        tokio::select! {
            r = client.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => return Outcome::Gone { side: Side::Client, bytes_out },
                Ok(_) => {}
            },
            // read_buf: into spare capacity, nothing to zero first.
            r = upstream.read_buf(&mut relay_buf) => match r {
                Ok(0) | Err(_) => return Outcome::Gone { side: Side::Upstream, bytes_out },
                Ok(n) => {
                    down.observe(&relay_buf);
                    if client.write_all(&relay_buf).await.is_err() {
                        return Outcome::Gone { side: Side::Client, bytes_out };
                    }
                    bytes_out += n as u64;
                    relay_buf.clear();
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                return reject(Reason::FirstMessageTimeout, "no first frame in time", down, bytes_out);
            }
        }
    };
    let invalid =
        |detail, down, bytes_out| reject(Reason::FirstMessageInvalid, detail, down, bytes_out);
    let id = doc.get("id").cloned();
    let token = token_at(&doc, check.pointer);
    let presented = token.as_deref().map(|t| Presented::new(t.as_bytes()));
    let fingerprint = presented.as_ref().map(|p| p.fingerprint);
    let refuse = |reason, detail, generation, down, bytes_out| {
        Outcome::Reject(Rejection {
            reason,
            detail,
            id: id.clone(),
            presented: fingerprint,
            generation,
            down,
            bytes_out,
        })
    };

    let mut credential = None;
    let mut grace = None;
    if check.authenticate {
        let Some(p) = &presented else {
            return refuse(
                Reason::TokenMissing,
                "no token at the pointer",
                None,
                down,
                bytes_out,
            );
        };
        // Hashed once: SHA-256 in software is ~3,500 instructions a token here.
        match auth::judge_presented(p.clone(), TokenSource::FirstMessage, creds) {
            Decision::Allow {
                credential: c,
                grace: g,
                ..
            } => {
                credential = Some(c);
                grace = g;
            }
            Decision::Deny {
                reason, generation, ..
            } => {
                return refuse(
                    reason,
                    "token matches no current credential",
                    generation,
                    down,
                    bytes_out,
                )
            }
        }
    }

    let mut rewritten = false;
    let mut first = buf[..frame_len].to_vec();
    if let Some(gateway) = check.inject {
        let already = presented
            .as_ref()
            .is_some_and(|p| Presented::new(gateway.expose().as_bytes()).digest_eq(p));
        if !already {
            if is_device_signed(&doc) {
                return refuse(
                    Reason::TokenRewriteRefused,
                    "device signature covers the token",
                    None,
                    down,
                    bytes_out,
                );
            }
            if !set_pointer(
                &mut doc,
                check.pointer,
                Value::String(gateway.expose().into()),
            ) {
                return invalid(
                    "token pointer cannot be set in this message",
                    down,
                    bytes_out,
                );
            }
            let payload = serde_json::to_vec(&doc).expect("a JSON value serializes");
            first = ws::encode_frame(ws::OP_TEXT, &payload, Some(ws::random_mask()));
            rewritten = true;
        }
    }
    first.extend_from_slice(&buf[frame_len..]);
    Outcome::Proceed(Proceed {
        to_upstream: first,
        down,
        bytes_out,
        credential,
        presented,
        grace,
        rewritten,
    })
}

/// What the client's bytes so far amount to, as a first message.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole frame yet: read more.
    Incomplete,
    /// The frame header announces more than `max_bytes` of payload.
    TooLarge,
    /// A whole frame that cannot be a first message; the text says why (never its content).
    Invalid(&'static str),
    /// A close frame of `len` bytes.
    Close { len: usize },
    /// A masked, unfragmented text frame of `len` bytes holding a JSON document.
    Message { len: usize, doc: Value },
}

/// Judges the start of the client→gateway byte stream. Pure, so it can be fuzzed: every
/// input either asks for more bytes or gets a verdict, and never reads past `buf`.
pub fn parse(buf: &[u8], max_bytes: usize) -> Parsed {
    let Some(h) = FrameHeader::parse(buf) else {
        return Parsed::Incomplete;
    };
    if h.payload_len > max_bytes as u64 {
        return Parsed::TooLarge;
    }
    let len = h.header_len + h.payload_len as usize;
    if buf.len() < len {
        return Parsed::Incomplete;
    }
    let Some(mask) = h.mask else {
        return Parsed::Invalid("client frame not masked");
    };
    if h.opcode == ws::OP_CLOSE {
        return Parsed::Close { len };
    }
    if h.is_control() {
        return Parsed::Invalid("a control frame came first");
    }
    if !h.fin || h.opcode == ws::OP_CONTINUATION {
        return Parsed::Invalid("fragmented first message");
    }
    if h.opcode != ws::OP_TEXT {
        return Parsed::Invalid("first message is not a text frame");
    }
    let mut payload = buf[h.header_len..len].to_vec();
    ws::apply_mask(&mut payload, mask, 0);
    match serde_json::from_slice::<Value>(&payload) {
        Ok(doc) => Parsed::Message { len, doc },
        Err(_) => Parsed::Invalid("first message is not JSON"),
    }
}

/// The non-empty string at `pointer`, the token a `connect` request carries.
pub fn token_at(doc: &Value, pointer: &str) -> Option<String> {
    doc.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// A `connect` whose `params.device` carries a signature: the signature covers the token, so
/// rewriting the token would make the gateway reject it.
pub fn is_device_signed(doc: &Value) -> bool {
    doc.pointer("/params/device")
        .and_then(Value::as_object)
        .is_some_and(|d| d.contains_key("signature"))
}

/// Sets the value at an RFC 6901 pointer, creating missing objects on the way.
pub fn set_pointer(doc: &mut Value, pointer: &str, value: Value) -> bool {
    if pointer.is_empty() {
        *doc = value;
        return true;
    }
    let tokens: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut cur = doc;
    for (i, key) in tokens.iter().enumerate() {
        let last = i == tokens.len() - 1;
        let Some(obj) = cur.as_object_mut() else {
            return false;
        };
        if last {
            obj.insert(key.clone(), value);
            return true;
        }
        cur = obj
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    false
}

/// Completes a closing handshake started before authentication: the client's close frame
/// (and nothing after it) goes to the gateway, the gateway's answer comes back, then both
/// sockets close.
pub async fn pass_close(
    client: &mut Stream,
    upstream: &mut Stream,
    frame: &[u8],
    mut down: FrameTracker,
    bytes_out: u64,
) -> splice::Outcome {
    let mut up = FrameTracker::default();
    up.observe(frame);
    let first = if down.close().is_some() {
        Side::Upstream
    } else {
        Side::Client
    };
    let mut out = bytes_out;
    let mut error = upstream.write_all(frame).await.err();
    if error.is_none() {
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            loop {
                match upstream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        down.observe(&buf[..n]);
                        if client.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        out += n as u64;
                    }
                }
            }
        })
        .await;
    }
    let _ = upstream.shutdown().await;
    if let Err(e) = client.shutdown().await {
        error.get_or_insert(e);
    }
    let tracker = if first == Side::Client { &up } else { &down };
    splice::Outcome {
        bytes_in: frame.len() as u64,
        bytes_out: out,
        close: tracker.close().cloned().map(|c| (first, c)),
        error,
        ended_by: None,
    }
}

/// Tells the client why, the way the gateway would: an error `res` echoing the request id
/// (when there was one), then a close frame; closes the gateway side cleanly.
pub async fn reject(client: &mut Stream, upstream: &mut Stream, r: &Rejection) {
    let _ = upstream
        .write_all(&ws::close_frame_masked(1000, "", Some(ws::random_mask())))
        .await;
    let _ = upstream.shutdown().await;
    if !r.down.at_boundary() {
        // The gateway was mid-frame: a frame of ours would corrupt the stream. Cut instead.
        let _ = client.shutdown().await;
        return;
    }
    let mut frames = Vec::new();
    if let Some(id) = &r.id {
        let res = serde_json::json!({
            "type": "res",
            "id": id,
            "ok": false,
            "error": {
                "code": "INVALID_REQUEST",
                "message": r.reason.close_text(),
                "details": { "code": r.reason.detail_code(), "authReason": r.reason.as_str() },
            },
        });
        frames.extend(ws::encode_frame(
            ws::OP_TEXT,
            res.to_string().as_bytes(),
            None,
        ));
    }
    frames.extend(ws::close_frame(
        r.reason.close_code(),
        r.reason.close_text(),
    ));
    ws::close_gracefully(client, &frames).await;
}
