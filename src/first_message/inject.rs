//! The gateway's secret put into a client's first frame: its token in place of the client's
//! (`upstream_auth.inject = "first_message"`), or its password beside the client's own token
//! (`"password"`).

use indexmap::IndexMap;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::credentials::{Presented, Secret};
use crate::ws;

use super::{is_device_signed, set_pointer};

/// What goes into the first frame, and where.
#[derive(Clone, Copy)]
pub(crate) enum Injection<'a> {
    /// The gateway's token at the token's pointer (refused for a device-signed connect).
    Token(&'a Secret),
    /// The gateway's password at `params.auth.password`; nothing else changes.
    Password(&'a Secret),
}

/// Why the gateway's secret cannot go into a first message.
pub(super) enum Unwritable {
    /// A device signature covers the token: a rewritten message would fail its check.
    DeviceSigned,
    /// The secret's place cannot be made in this document.
    NoPointer,
}

/// One JSON object with its members' values as the client wrote them.
type Object = IndexMap<String, Box<RawValue>>;

/// `payload` with `params.auth.password` added or replaced. Every other value (the client's
/// `auth.token`, `device`, `scopes`, `role`, `client`, the nonce) is copied byte for byte, so
/// a device signature over them still verifies; only the members' spacing and the key
/// escapes of the three objects on the path are re-written. `None` when `params` is not an
/// object (or the payload not a JSON object).
pub(super) fn with_password(payload: &[u8], password: &str) -> Option<Vec<u8>> {
    let mut top: Object = serde_json::from_slice(payload).ok()?;
    let mut params: Object = serde_json::from_str(top.get("params")?.get()).ok()?;
    let mut auth: Object = match params.get("auth") {
        Some(raw) => serde_json::from_str(raw.get()).ok()?,
        None => Object::new(),
    };
    auth.insert("password".into(), raw(&Value::String(password.into())));
    params.insert("auth".into(), raw(&auth));
    top.insert("params".into(), raw(&params));
    serde_json::to_vec(&top).ok()
}

fn raw<T: serde::Serialize + ?Sized>(v: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(v).expect("a JSON value serializes")
}

/// The first frame re-encoded with the gateway's secret, or `None` when it goes as it came
/// (the client presented the gateway's very token, or nothing is injected). `doc` is the
/// parsed payload, needed for a token rewrite only.
pub(super) fn rewrite(
    injection: Option<Injection<'_>>,
    payload: &[u8],
    doc: Option<Value>,
    presented: Option<&Presented>,
    pointer: &str,
) -> Result<Option<Vec<u8>>, Unwritable> {
    let payload = match injection {
        None => return Ok(None),
        Some(Injection::Password(password)) => {
            with_password(payload, password.expose()).ok_or(Unwritable::NoPointer)?
        }
        Some(Injection::Token(gateway)) => {
            let Some(mut doc) = doc else {
                return Ok(None);
            };
            let already =
                presented.is_some_and(|p| Presented::new(gateway.expose().as_bytes()).digest_eq(p));
            if already {
                return Ok(None);
            }
            if is_device_signed(&doc) {
                return Err(Unwritable::DeviceSigned);
            }
            if !set_pointer(&mut doc, pointer, Value::String(gateway.expose().into())) {
                return Err(Unwritable::NoPointer);
            }
            serde_json::to_vec(&doc).expect("a JSON value serializes")
        }
    };
    Ok(Some(ws::encode_frame(
        ws::OP_TEXT,
        &payload,
        Some(ws::random_mask()),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_goes_beside_the_token_and_every_signed_value_stays_byte_for_byte() {
        // Spacing, escapes and number forms a re-encoding through `Value` would change.
        let p = br#"{"type":"req", "id":"c1","method":"connect","params":{"minProtocol":3,"client":{"id":"cli","version":"2026.9.6","x":1.50},"role":"operator","scopes":["operator.read", "operator.write"],"auth":{"token":"own\u0041token","password":"client's"},"device":{"id":"d","publicKey":"k","signature":"s\/x","signedAt":1.0e3,"nonce":"n"}}}"#;
        let out = with_password(p, "gw-pass").unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        for kept in [
            r#""token":"own\u0041token""#,
            r#""device":{"id":"d","publicKey":"k","signature":"s\/x","signedAt":1.0e3,"nonce":"n"}"#,
            r#""scopes":["operator.read", "operator.write"]"#,
            r#""client":{"id":"cli","version":"2026.9.6","x":1.50}"#,
            r#""role":"operator""#,
            r#""id":"c1""#,
        ] {
            assert!(text.contains(kept), "{kept} lost in {text}");
        }
        let doc: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["params"]["auth"]["password"], "gw-pass");
        assert!(
            !text.contains("client's"),
            "the client's password is replaced"
        );
        // Member order stays: `auth` where the client put it.
        let keys: Vec<_> = doc["params"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            ["minProtocol", "client", "role", "scopes", "auth", "device"]
        );
    }

    #[test]
    fn auth_is_made_when_missing_and_a_params_that_is_no_object_is_refused() {
        let out = with_password(br#"{"method":"connect","params":{"role":"node"}}"#, "p").unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"method":"connect","params":{"role":"node","auth":{"password":"p"}}}"#
        );
        assert!(with_password(br#"{"params":[1]}"#, "p").is_none());
        assert!(with_password(br#"{"method":"connect"}"#, "p").is_none());
        assert!(with_password(br#"[]"#, "p").is_none());
        assert!(with_password(br#"{"params":{"auth":"x"}}"#, "p").is_none());
    }
}
