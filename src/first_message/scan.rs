//! Finding the token inside a client's first frame (a JSON document, possibly compressed)
//! without building the document: a serde visitor walks to the configured pointer only.

use serde_json::Value;

use crate::credentials::Fingerprint;
use crate::ws::{self, FrameHeader};

use std::cell::RefCell;

use super::said::{Kind, Place, Said};

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
    /// What the `connect` says of its client and asks for.
    pub said: Said,
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
            .field("said", &self.said)
            .finish()
    }
}

impl Facts {
    /// From a whole document (a rewrite builds one anyway).
    pub fn of(doc: &Value, pointer: &str) -> Facts {
        Facts {
            id: doc.get("id").cloned(),
            token: token_at(doc, pointer),
            said: Said::of(doc),
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
        let said = RefCell::default();
        let found = Walk {
            path,
            top: true,
            place: Place::Top,
            said: &said,
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(Facts {
            id: found.id,
            token: found.token,
            said: said.into_inner(),
        })
    }
}

/// What the walk finds of the token and the id below one value (small: it is returned
/// through every level).
#[derive(Default)]
struct Found {
    id: Option<Value>,
    token: Option<String>,
}

/// Reads one value. `path` is the rest of the pointer below it (`Some("")`: this value is the
/// token's place; `None`: off the path, only read); `top` marks the document itself, whose
/// `id` is kept.
struct Walk<'p> {
    path: Option<&'p str>,
    top: bool,
    /// Where this value sits, for what the `connect` says.
    place: Place,
    /// What the `connect` says, written as the walk passes (not returned: a `Facts` moved up
    /// through every level was a tenth of a session's work).
    said: &'p RefCell<Said>,
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

    /// A value below this one, off the token's path.
    fn off_path(&self, place: Place) -> Walk<'p> {
        Walk {
            path: None,
            top: false,
            place,
            said: self.said,
        }
    }

    /// Notes a value that is not a string where the `connect`'s facts are.
    fn other(&self, kind: Kind) {
        if self.place != Place::Off {
            self.said.borrow_mut().other(self.place, kind);
        }
    }

    fn scalar<E>(self, kind: Kind) -> Result<Found, E> {
        self.other(kind);
        Ok(Found::default())
    }

    fn string<E>(self, v: &str) -> Result<Found, E> {
        if self.place != Place::Off {
            self.said.borrow_mut().string(self.place, v);
        }
        let here = self.path == Some("") && !v.is_empty();
        Ok(Found {
            id: None,
            token: here.then(|| v.to_owned()),
        })
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Walk<'_> {
    type Value = Found;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Walk<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Found, E> {
        self.scalar(Kind::Scalar)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Found, E> {
        self.scalar(Kind::Scalar)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Found, E> {
        self.scalar(Kind::Scalar)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Found, E> {
        self.scalar(Kind::Scalar)
    }
    fn visit_unit<E>(self) -> Result<Found, E> {
        self.scalar(Kind::Null)
    }
    fn visit_str<E>(self, v: &str) -> Result<Found, E> {
        self.string(v)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
        let step = self.step();
        let index = step.as_ref().and_then(|(t, _)| array_index(t));
        let mut token = None;
        let mut i = 0usize;
        self.other(Kind::Array);
        // The elements of `params.scopes` are scopes; an array anywhere else says nothing.
        let element = match self.place {
            Place::Scopes => Place::Scope,
            _ => Place::Off,
        };
        loop {
            let walk = match (&step, index) {
                (Some((_, below)), Some(at)) if at == i => Walk {
                    path: Some(below),
                    top: false,
                    place: element,
                    said: self.said,
                },
                _ => self.off_path(element),
            };
            match seq.next_element_seed(walk)? {
                Some(f) => token = token.or(f.token),
                None => break,
            }
            i += 1;
        }
        Ok(Found {
            token,
            ..Found::default()
        })
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let step = self.step();
        let mut facts = Found::default();
        self.other(Kind::Object);
        while let Some((key, child)) = map.next_key_seed(Key {
            token: step.as_ref().map(|(t, _)| &**t),
            top: self.top,
            place: self.place,
        })? {
            // A repeated key overrides, as inserting into a map does.
            match key {
                KeyIs::Other => {
                    if child != Place::Off {
                        self.said.borrow_mut().clear(child);
                    }
                    map.next_value_seed(self.off_path(child))?;
                }
                KeyIs::OnPath => {
                    if child != Place::Off {
                        self.said.borrow_mut().clear(child);
                    }
                    let below = step.as_ref().map(|(_, b)| *b);
                    facts.token = map
                        .next_value_seed(Walk {
                            path: below,
                            top: false,
                            place: child,
                            said: self.said,
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

/// Reads a key and compares it, without allocating unless it holds escapes; also says where
/// its value sits (`Place::child`).
struct Key<'a> {
    token: Option<&'a str>,
    top: bool,
    place: Place,
}

impl<'de> serde::de::DeserializeSeed<'de> for Key<'_> {
    type Value = (KeyIs, Place);

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(KeyIs, Place), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Key<'_> {
    type Value = (KeyIs, Place);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, k: &str) -> Result<(KeyIs, Place), E> {
        let on_path = self.token == Some(k);
        let child = match self.place {
            Place::Off => Place::Off,
            place => place.child(k),
        };
        let is = if self.top && k == "id" {
            KeyIs::Id { on_path }
        } else if on_path {
            KeyIs::OnPath
        } else {
            KeyIs::Other
        };
        Ok((is, child))
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
