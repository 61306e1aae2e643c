//! In-band authentication: the token rides in the client's first WebSocket frame.
//!
//! OpenClaw clients never put the token in the upgrade. They wait for the gateway's
//! `connect.challenge`, then send one `connect` request carrying `params.auth.token`. So the
//! upstream upgrade happens first and the gateway's first frame is relayed to the client at
//! once (a made-up challenge would break device-signed clients). Nothing else crosses before
//! the client's first frame has been read and judged: the client's bytes wait, and so does
//! everything the gateway sends after `auth.first_message_preauth_frames` whole frames.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::auth::{self, Decision, Reason};
use crate::config::TokenSource;
use crate::credentials::{Credential, Credentials, Fingerprint, Presented, Secret};
use crate::net::Stream;
use crate::relay::{self, Side};
use crate::ws::{self, FrameHeader, FrameTracker};

/// How long the gateway gets to answer a client's close before the sockets are dropped.
const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// Bytes of the gateway's held back before the client is judged; past this the gateway is
/// not read (TCP flow control holds the rest).
const HOLD_MAX: usize = 64 * 1024;

/// What the first frame is checked for.
pub struct Check<'a> {
    /// Authenticate with the token found in the frame (the `first_message` source).
    pub authenticate: bool,
    /// The gateway token to put in the frame (`upstream_auth.inject = "first_message"`).
    pub inject: Option<&'a Secret>,
    pub pointer: &'a str,
    pub max_bytes: usize,
    pub timeout: Duration,
    /// Whole upstream frames relayed before the client has authenticated (only while
    /// `authenticate`; a client authenticated at the upgrade gets everything at once).
    pub preauth_frames: u64,
    /// The upstream accepted `permessage-deflate`: RSV1 on a frame means "compressed".
    pub deflate: Option<ws::Deflate>,
}

/// The client may proceed: these bytes go upstream first, then the relay takes over.
pub struct Proceed {
    /// The first frame (original bytes, or re-encoded with the injected token) and every
    /// byte the client sent behind it, in order.
    pub to_upstream: Vec<u8>,
    /// State of the gateway→client direction, as far as it was relayed during the phase.
    pub down: FrameTracker,
    /// The gateway's bytes held back during the phase, for the relay to send first.
    pub held: Vec<u8>,
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
        side: crate::relay::Side,
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
    // The gateway's bytes pass to the client up to the end of its `limit`th frame; what
    // follows is held, and the gateway is not read again, until the client is judged.
    let limit = if check.authenticate {
        check.preauth_frames
    } else {
        u64::MAX
    };
    let mut held: Vec<u8> = Vec::new();
    // Follows the held bytes for one thing: the gateway closing before the client is judged
    // (the OpenClaw gateway closes a silent socket), whose close frame is passed on.
    let mut held_frames = FrameTracker::default();
    let mut upstream_closed = false;
    let deadline = Instant::now() + check.timeout;
    let mut buf: Vec<u8> = from_client.to_vec();
    // Small: it lives as long as the client takes to send its first frame (up to
    // auth.first_message_timeout), and the gateway says little before that.
    let mut relay_buf = from_upstream.to_vec();
    relay_buf.reserve(8 * 1024);
    let (frame_len, payload) = loop {
        if !relay_buf.is_empty() {
            let n = down.observe_frames(&relay_buf, limit);
            let (pass, hold) = relay_buf.split_at(n);
            held_frames.observe(hold);
            held.extend_from_slice(hold);
            if client.write_all(pass).await.is_err() {
                return Outcome::Gone {
                    side: Side::Client,
                    bytes_out,
                };
            }
            bytes_out += n as u64;
            relay_buf.clear();
            if let (Some(close), false) = (held_frames.close(), upstream_closed) {
                upstream_closed = true;
                let frame = close_frame_of(close);
                down.observe(&frame);
                if client.write_all(&frame).await.is_err() {
                    return Outcome::Gone {
                        side: Side::Client,
                        bytes_out,
                    };
                }
                bytes_out += frame.len() as u64;
            }
        }
        match parse(&buf, check.max_bytes, check.deflate) {
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
            Parsed::ProtocolError(detail) => {
                return reject(Reason::ProtocolError, detail, down, bytes_out)
            }
            Parsed::Close { len } => {
                return Outcome::ClientClosed {
                    frame: buf[..len].to_vec(),
                    down,
                    bytes_out,
                }
            }
            // The gateway has closed: nobody is left to answer this message.
            Parsed::Message { .. } if upstream_closed => {
                return Outcome::Gone {
                    side: Side::Upstream,
                    bytes_out,
                }
            }
            Parsed::Message { len, payload } => break (len, payload),
        }
        buf.reserve(4096);
        let reading = !upstream_closed && held.len() < HOLD_MAX;
        tokio::select! {
            r = client.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => return Outcome::Gone { side: Side::Client, bytes_out },
                Ok(_) => {}
            },
            // read_buf: into spare capacity, nothing to zero first.
            r = upstream.read_buf(&mut relay_buf), if reading => match r {
                Ok(0) | Err(_) => return Outcome::Gone { side: Side::Upstream, bytes_out },
                Ok(_) => {}
            },
            _ = tokio::time::sleep_until(deadline) => {
                return reject(Reason::FirstMessageTimeout, "no first frame in time", down, bytes_out);
            }
        }
    };
    let invalid =
        |detail, down, bytes_out| reject(Reason::FirstMessageInvalid, detail, down, bytes_out);
    // Only a rewrite needs the whole document; judging needs two values out of it.
    let (facts, doc) = if check.inject.is_some() {
        match serde_json::from_slice::<Value>(&payload) {
            Ok(doc) => (Facts::of(&doc, check.pointer), Some(doc)),
            Err(_) => return invalid("first message is not JSON", down, bytes_out),
        }
    } else {
        match Facts::scan(&payload, check.pointer) {
            Ok(facts) => (facts, None),
            Err(_) => return invalid("first message is not JSON", down, bytes_out),
        }
    };
    let Facts { id, token } = facts;
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
    if let (Some(gateway), Some(mut doc)) = (check.inject, doc) {
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
        held,
        bytes_out,
        credential,
        presented,
        grace,
        rewritten,
    })
}

/// What the client's bytes so far amount to, as a first message.
pub enum Parsed {
    /// Not a whole frame yet: read more.
    Incomplete,
    /// The frame header announces more than `max_bytes` of payload.
    TooLarge,
    /// A whole frame that cannot be a first message; the text says why (never its content).
    Invalid(&'static str),
    /// A frame that breaks RFC 6455 itself (reserved bits without an extension that
    /// defines them): refused with 1002, as the gateway's WebSocket library would.
    ProtocolError(&'static str),
    /// A close frame of `len` bytes.
    Close { len: usize },
    /// A masked, unfragmented text frame of `len` bytes; its payload, unmasked, is yet to be
    /// read as JSON ([`Facts::scan`], or a whole `Value` when the token is to be rewritten).
    Message { len: usize, payload: Vec<u8> },
}

/// The payload's length only: it holds the token.
impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Parsed::Incomplete => f.write_str("Incomplete"),
            Parsed::TooLarge => f.write_str("TooLarge"),
            Parsed::Invalid(why) => f.debug_tuple("Invalid").field(why).finish(),
            Parsed::ProtocolError(why) => f.debug_tuple("ProtocolError").field(why).finish(),
            Parsed::Close { len } => f.debug_struct("Close").field("len", len).finish(),
            Parsed::Message { len, payload } => f
                .debug_struct("Message")
                .field("len", len)
                .field("payload_len", &payload.len())
                .finish(),
        }
    }
}

/// Judges the start of the client→gateway byte stream. Pure, so it can be fuzzed: every
/// input either asks for more bytes or gets a verdict, and never reads past `buf`.
/// `deflate`: `permessage-deflate` was negotiated, so RSV1 means "compressed": the payload
/// is judged inflated (`max_bytes` bounds the inflated size too), and the frame is still
/// forwarded as the client sent it.
pub fn parse(buf: &[u8], max_bytes: usize, deflate: Option<ws::Deflate>) -> Parsed {
    let Some(h) = FrameHeader::parse(buf) else {
        return Parsed::Incomplete;
    };
    // Judged on the header alone, before waiting for a payload that may never come.
    let allowed = if deflate.is_some() { 0x40 } else { 0 };
    if h.rsv & !allowed != 0 {
        return Parsed::ProtocolError("reserved bits set without an extension defining them");
    }
    let compressed = h.rsv & 0x40 != 0;
    if compressed && h.is_control() {
        // RFC 7692 §6.1: control frames are never compressed.
        return Parsed::ProtocolError("compressed control frame");
    }
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
    if let (true, Some(d)) = (compressed, deflate) {
        payload = match ws::inflate_first_message(&payload, d, max_bytes) {
            Ok(p) => p,
            Err(ws::InflateError::TooLarge) => return Parsed::TooLarge,
            Err(ws::InflateError::Corrupt) => {
                return Parsed::Invalid("compressed first message does not inflate")
            }
        };
    }
    Parsed::Message { len, payload }
}

/// The non-empty string at `pointer`, the token a `connect` request carries.
pub fn token_at(doc: &Value, pointer: &str) -> Option<String> {
    doc.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// What judging a first message needs from it: the request's `id` (echoed in a refusal) and
/// the token at the pointer.
#[derive(Default, PartialEq)]
pub struct Facts {
    /// The top-level `id`, of whatever JSON type.
    pub id: Option<Value>,
    /// The non-empty string at the pointer.
    pub token: Option<String>,
}

/// Shows the token's fingerprint only, so it cannot leak through a log or a failed assertion.
impl std::fmt::Debug for Facts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facts")
            .field("id", &self.id)
            .field(
                "token",
                &self.token.as_deref().map(|t| Fingerprint::of(t.as_bytes())),
            )
            .finish()
    }
}

impl Facts {
    /// From a whole document (a rewrite builds one anyway).
    pub fn of(doc: &Value, pointer: &str) -> Facts {
        Facts {
            id: doc.get("id").cloned(),
            token: token_at(doc, pointer),
        }
    }

    /// One pass over the payload that keeps only the id and the token: building the document
    /// (an order-preserving map per object) was a fifth of a session's user-space work.
    ///
    /// Accepts exactly what `serde_json::from_slice::<Value>` accepts, and finds what
    /// [`Facts::of`] finds: the same deserializer reads every value (no `IgnoredAny`, whose
    /// skipping checks less, e.g. no UTF-8 in strings), a repeated key overrides as it does
    /// in a map, and the nesting limit is the deserializer's own.
    pub fn scan(payload: &[u8], pointer: &str) -> Result<Facts, serde_json::Error> {
        use serde::de::DeserializeSeed;
        let path = if pointer.is_empty() || pointer.starts_with('/') {
            Some(pointer)
        } else {
            None // not a pointer: finds nothing, as `Value::pointer` does
        };
        let mut de = serde_json::Deserializer::from_slice(payload);
        let facts = Walk { path, top: true }.deserialize(&mut de)?;
        de.end()?;
        Ok(facts)
    }
}

/// Reads one value. `path` is the rest of the pointer below it (`Some("")`: this value is the
/// token's place; `None`: off the path, only read); `top` marks the document itself, whose
/// `id` is kept.
struct Walk<'p> {
    path: Option<&'p str>,
    top: bool,
}

impl<'p> Walk<'p> {
    /// The next reference token and the pointer below it, unescaped as `Value::pointer` does.
    fn step(&self) -> Option<(std::borrow::Cow<'p, str>, &'p str)> {
        let rest = self.path?.strip_prefix('/')?;
        let (raw, below) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        Some((unescape(raw), below))
    }

    fn off_path() -> Walk<'static> {
        Walk {
            path: None,
            top: false,
        }
    }

    fn scalar<E>(self) -> Result<Facts, E> {
        Ok(Facts::default())
    }

    fn string<E>(self, v: &str) -> Result<Facts, E> {
        let here = self.path == Some("") && !v.is_empty();
        Ok(Facts {
            id: None,
            token: here.then(|| v.to_owned()),
        })
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Walk<'_> {
    type Value = Facts;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Facts, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Walk<'_> {
    type Value = Facts;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Facts, E> {
        self.scalar()
    }
    fn visit_i64<E>(self, _: i64) -> Result<Facts, E> {
        self.scalar()
    }
    fn visit_u64<E>(self, _: u64) -> Result<Facts, E> {
        self.scalar()
    }
    fn visit_f64<E>(self, _: f64) -> Result<Facts, E> {
        self.scalar()
    }
    fn visit_unit<E>(self) -> Result<Facts, E> {
        self.scalar()
    }
    fn visit_str<E>(self, v: &str) -> Result<Facts, E> {
        self.string(v)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Facts, A::Error> {
        let step = self.step();
        let index = step.as_ref().and_then(|(t, _)| array_index(t));
        let mut token = None;
        let mut i = 0usize;
        loop {
            let walk = match (&step, index) {
                (Some((_, below)), Some(at)) if at == i => Walk {
                    path: Some(below),
                    top: false,
                },
                _ => Walk::off_path(),
            };
            match seq.next_element_seed(walk)? {
                Some(f) => token = token.or(f.token),
                None => break,
            }
            i += 1;
        }
        Ok(Facts { id: None, token })
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Facts, A::Error> {
        let step = self.step();
        let mut facts = Facts::default();
        while let Some(key) = map.next_key_seed(Key {
            token: step.as_ref().map(|(t, _)| &**t),
            top: self.top,
        })? {
            // A repeated key overrides, as inserting into a map does.
            match key {
                KeyIs::Other => {
                    map.next_value_seed(Walk::off_path())?;
                }
                KeyIs::OnPath => {
                    let below = step.as_ref().map(|(_, b)| *b);
                    facts.token = map
                        .next_value_seed(Walk {
                            path: below,
                            top: false,
                        })?
                        .token;
                }
                KeyIs::Id { on_path } => {
                    let id: Value = map.next_value()?;
                    if on_path {
                        let below = step.as_ref().map_or("", |(_, b)| *b);
                        facts.token = token_at(&id, below);
                    }
                    facts.id = Some(id);
                }
            }
        }
        Ok(facts)
    }
}

/// A pointer's reference token unescaped as `Value::pointer` does (`~1` is `/`, `~0` is
/// `~`); allocates only when there is an escape.
fn unescape(raw: &str) -> std::borrow::Cow<'_, str> {
    if raw.contains('~') {
        std::borrow::Cow::Owned(raw.replace("~1", "/").replace("~0", "~"))
    } else {
        std::borrow::Cow::Borrowed(raw)
    }
}

/// An array index as `Value::pointer` reads one: digits, no sign, no leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

/// What an object key is to the walk.
enum KeyIs {
    Other,
    OnPath,
    /// The document's `id` (possibly also the pointer's next token).
    Id {
        on_path: bool,
    },
}

/// Reads a key and compares it, without allocating unless it holds escapes.
struct Key<'a> {
    token: Option<&'a str>,
    top: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for Key<'_> {
    type Value = KeyIs;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<KeyIs, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Key<'_> {
    type Value = KeyIs;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, k: &str) -> Result<KeyIs, E> {
        let on_path = self.token == Some(k);
        Ok(if self.top && k == "id" {
            KeyIs::Id { on_path }
        } else if on_path {
            KeyIs::OnPath
        } else {
            KeyIs::Other
        })
    }
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
        .map(|t| unescape(t).into_owned())
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
/// sockets close. A client that has not authenticated gets only the gateway's close frame
/// (its code and reason), none of the data the gateway may send before it.
pub async fn pass_close(
    client: &mut Stream,
    upstream: &mut Stream,
    frame: &[u8],
    mut down: FrameTracker,
    bytes_out: u64,
    authenticated: bool,
) -> relay::Outcome {
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
        let mut unseen = FrameTracker::default();
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            loop {
                let n = match upstream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let pass = if authenticated {
                    buf[..n].to_vec()
                } else {
                    unseen.observe(&buf[..n]);
                    match unseen.close() {
                        Some(c) if down.close().is_none() => close_frame_of(c),
                        _ => continue,
                    }
                };
                down.observe(&pass);
                if client.write_all(&pass).await.is_err() {
                    break;
                }
                out += pass.len() as u64;
            }
        })
        .await;
    }
    let _ = upstream.shutdown().await;
    if let Err(e) = client.shutdown().await {
        error.get_or_insert(e);
    }
    let tracker = if first == Side::Client { &up } else { &down };
    relay::Outcome {
        bytes_in: frame.len() as u64,
        bytes_out: out,
        close: tracker.close().cloned().map(|c| (first, c)),
        error,
        ended_by: None,
        in_loop: false,
    }
}

/// A close frame with the code and reason of one seen on the wire (server to client).
fn close_frame_of(c: &ws::Close) -> Vec<u8> {
    match c.code {
        Some(code) => ws::close_frame(code, &c.reason),
        None => ws::encode_frame(ws::OP_CLOSE, &[], None),
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

#[cfg(test)]
mod tests {
    use super::*;

    const POINTERS: &[&str] = &[
        "/params/auth/token",
        "/id",
        "",
        "/a/0",
        "/a/01",
        "/a~1b/c",
        "/~0",
        "/",
        "/params/auth",
        "no-slash",
    ];

    /// A small deterministic generator (xorshift): no extra crate, same cases on every run.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[(self.next() % from.len() as u64) as usize]
        }
        /// JSON text with keys and values chosen to hit the pointers above often: repeated
        /// keys, escaped keys, `id` of every type, arrays on the path.
        fn value(&mut self, depth: u32, out: &mut String) {
            let kinds = match depth {
                0 | 1 => 8, // mostly objects near the top, where the pointer leads
                2..=4 => 6,
                _ => 3,
            };
            match self.next() % kinds {
                0 => out.push_str(self.pick(&[
                    "\"tok\"",
                    "\"\"",
                    "\"t\\u00e9k\\n\"",
                    "\"\\ud83d\\ude00\"",
                ])),
                1 => out.push_str(self.pick(&[
                    "1",
                    "-0.5e3",
                    "null",
                    "true",
                    "18446744073709551616",
                ])),
                2 => out.push_str(self.pick(&["\"a/b\"", "\"x\"", "0"])),
                3 | 4 | 6 | 7 => {
                    out.push('{');
                    for i in 0..self.next() % 4 {
                        if i > 0 {
                            out.push(',');
                        }
                        let path = ["params", "auth", "token"];
                        let key = match path.get(depth as usize) {
                            Some(on_path) if self.next() % 2 == 0 => on_path,
                            _ => self.pick(&[
                                "params",
                                "auth",
                                "token",
                                "id",
                                "a",
                                "a/b",
                                "~",
                                "",
                                "\\u0061uth",
                                "to\\u006ben",
                                "device",
                            ]),
                        };
                        out.push('"');
                        out.push_str(key);
                        out.push_str("\":");
                        if key == "token" && self.next() % 4 != 0 {
                            out.push_str(self.pick(&["\"tok\"", "\"t\\u00e9k\\n\""]));
                            continue;
                        }
                        self.value(depth + 1, out);
                    }
                    out.push('}');
                }
                _ => {
                    out.push('[');
                    for i in 0..self.next() % 3 {
                        if i > 0 {
                            out.push(',');
                        }
                        self.value(depth + 1, out);
                    }
                    out.push(']');
                }
            }
        }
    }

    fn same_as_value(text: &[u8]) {
        for pointer in POINTERS {
            let scanned = Facts::scan(text, pointer);
            match serde_json::from_slice::<Value>(text) {
                Ok(doc) => assert_eq!(
                    scanned.ok(),
                    Some(Facts::of(&doc, pointer)),
                    "{pointer:?} in {:?}",
                    String::from_utf8_lossy(text)
                ),
                Err(_) => assert!(
                    scanned.is_err(),
                    "scan accepted what Value refuses: {:?}",
                    String::from_utf8_lossy(text)
                ),
            }
        }
    }

    #[test]
    fn scan_finds_what_the_document_holds() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let mut found = 0;
        for _ in 0..4000 {
            let mut text = String::new();
            g.value(0, &mut text);
            same_as_value(text.as_bytes());
            found += usize::from(
                Facts::scan(text.as_bytes(), "/params/auth/token").is_ok_and(|f| f.token.is_some()),
            );
            // Damaged copies: cut short, one byte changed, a byte that is not UTF-8.
            let bytes = text.as_bytes();
            let at = (g.next() % bytes.len() as u64) as usize;
            same_as_value(&bytes[..at]);
            let mut flipped = bytes.to_vec();
            let noise = b"{}[]\",:\\ 0e-x";
            flipped[at] = noise[(g.next() % noise.len() as u64) as usize];
            same_as_value(&flipped);
            flipped[at] = 0xff;
            same_as_value(&flipped);
        }
        // The generator reaches the interesting case, or this test would prove little (the
        // cases are the same on every run: 54 of 4,000 carry a token at the default pointer).
        assert!(found > 40, "only {found} documents carried a token");
    }

    #[test]
    fn scan_edge_cases() {
        for text in [
            r#"{"type":"req","id":"1","method":"connect","params":{"auth":{"token":"T"}}}"#,
            r#"{"params":{"auth":{"token":"first"}},"params":{"auth":{}}}"#,
            r#"{"params":{"auth":{"token":"a","token":"b"}}}"#,
            r#"{"id":1,"id":{"x":[1,2]},"params":{"auth":{"token":""}}}"#,
            r#"{"params":{"auth":{"token":"\ud800"}}}"#,
            r#"{"params":{"auth":{"token":"T"}}} x"#,
            r#"{"params":{"auth":{"token":"T"}}}   "#,
            r#"{"n":1e400}"#,
            r#"{"n":-0}"#,
            r#"{"a":["x",{"b":1}],"a~1b":{"c":"slash"},"~":"tilde","":"empty"}"#,
            r#"{"id":"only"}"#,
            r#""just a string""#,
            r#"[]"#,
            "",
        ] {
            same_as_value(text.as_bytes());
        }
        // Nesting past the deserializer's limit is refused by both.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        same_as_value(deep.as_bytes());
        assert!(Facts::scan(deep.as_bytes(), "/a").is_err());
        let f = Facts::scan(
            br#"{"id":"r1","params":{"auth":{"token":"T"}}}"#,
            "/params/auth/token",
        )
        .unwrap();
        assert_eq!(f.id, Some(Value::String("r1".into())));
        assert_eq!(f.token.as_deref(), Some("T"));
        // What a log or a failed assertion would show holds no token.
        let secret = "s3cr3t-first-message-token";
        let frame = ws::encode_frame(
            ws::OP_TEXT,
            format!(r#"{{"params":{{"auth":{{"token":"{secret}"}}}}}}"#).as_bytes(),
            Some([1, 2, 3, 4]),
        );
        let parsed = parse(&frame, 1 << 16, None);
        let len = frame.len();
        assert_eq!(
            format!("{parsed:?}"),
            format!("Message {{ len: {len}, payload_len: {} }}", len - 6)
        );
        let Parsed::Message { payload, .. } = parsed else {
            panic!("not a message: {parsed:?}");
        };
        let facts = Facts::scan(&payload, "/params/auth/token").unwrap();
        assert_eq!(facts.token.as_deref(), Some(secret));
        assert!(!format!("{facts:?}").contains(secret));
    }

    /// A compressed first frame (RSV1, permessage-deflate negotiated) is judged on its
    /// inflated payload; the inflated size counts against the limit; RSV1 on a control frame
    /// or without the extension is a protocol error.
    #[test]
    fn compressed_first_frames_are_judged_inflated() {
        use flate2::{Compress, Compression, FlushCompress};
        let doc = br#"{"id":"c1","params":{"auth":{"token":"T0k3n"}}}"#;
        let mut c = Compress::new_with_window_bits(Compression::default(), false, 12);
        let mut z = Vec::with_capacity(256);
        c.compress_vec(doc, &mut z, FlushCompress::Sync).unwrap();
        z.truncate(z.len() - 4);
        let mut frame = ws::encode_frame(ws::OP_TEXT, &z, Some([9, 8, 7, 6]));
        frame[0] |= 0x40;
        let d = Some(ws::Deflate {
            client_window_bits: 12,
        });
        let Parsed::Message { len, payload } = parse(&frame, 1 << 16, d) else {
            panic!("not a message");
        };
        assert_eq!((len, payload.as_slice()), (frame.len(), &doc[..]));
        assert!(matches!(parse(&frame, doc.len() - 1, d), Parsed::TooLarge));
        assert!(matches!(
            parse(&frame, 1 << 16, None),
            Parsed::ProtocolError(_)
        ));
        let mut close = ws::close_frame_masked(1000, "", Some([1, 2, 3, 4]));
        close[0] |= 0x40;
        assert!(matches!(
            parse(&close, 1 << 16, d),
            Parsed::ProtocolError(_)
        ));
        let mut junk = ws::encode_frame(ws::OP_TEXT, b"\xff\xff\xff", Some([1, 1, 1, 1]));
        junk[0] |= 0x40;
        assert!(matches!(parse(&junk, 1 << 16, d), Parsed::Invalid(_)));
    }
}
