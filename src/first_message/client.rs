//! Who a `connect` request says its client is (`params.client`: id, mode, version) and what
//! it asks for (`params.role`, `params.scopes`, a paired device's `auth.deviceToken`): one
//! typed pass over the payload, for the session's audit and the credential's scope check.

use serde::Deserialize;

use crate::credentials::Ask;

/// `params.client` of a `connect` request, as far as it is there and is text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub id: Option<String>,
    pub mode: Option<String>,
    pub version: Option<String>,
}

#[derive(Deserialize)]
struct Doc {
    params: Option<Params>,
}

/// Every member read as any JSON value: a member of an unexpected type must not make the
/// whole document unreadable (a scope check reading nothing would let everything pass).
#[derive(Deserialize)]
struct Params {
    client: Option<serde_json::Value>,
    role: Option<serde_json::Value>,
    scopes: Option<serde_json::Value>,
    auth: Option<serde_json::Value>,
    device: Option<serde_json::Value>,
}

/// What a session's `connect` says, as far as it is there.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    pub client: Option<ClientInfo>,
    /// `None` when the ask cannot be read (no JSON object with an object `params`, or
    /// `scopes` that is no array): a credential with scopes refuses it.
    pub ask: Option<Ask>,
    /// `params.auth.deviceToken`, when a non-empty string: its throttle key
    /// (`Presented::key`), to tell one refused device token from another.
    pub device_token: Option<u64>,
    /// `params.device` is an object: a device-signed connect.
    pub signed: bool,
}

impl Connect {
    /// From a first message's (unmasked, inflated) payload.
    pub fn of(payload: &[u8]) -> Connect {
        let Ok(Doc {
            params: Some(params),
        }) = serde_json::from_slice::<Doc>(payload)
        else {
            return Connect::default();
        };
        let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
        let scopes = match &params.scopes {
            None | Some(serde_json::Value::Null) => Some(Vec::new()),
            Some(serde_json::Value::Array(a)) => Some(a.iter().map(text).collect()),
            Some(_) => None,
        };
        Connect {
            signed: params.device.as_ref().is_some_and(|d| d.is_object()),
            client: params.client.and_then(ClientInfo::from_value),
            ask: scopes.map(|scopes| Ask {
                role: params.role.as_ref().map(text),
                scopes,
            }),
            device_token: params
                .auth
                .as_ref()
                .and_then(|a| a.get("deviceToken"))
                .and_then(|t| t.as_str())
                .filter(|t| !t.is_empty())
                .map(|t| crate::credentials::Presented::new(t.as_bytes()).key()),
        }
    }
}

/// A short, printable string, or nothing: a client's fields reach log lines.
fn text(v: Option<&serde_json::Value>) -> Option<String> {
    let s = v?.as_str()?.to_string();
    (!s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_graphic())).then_some(s)
}

impl ClientInfo {
    /// From a first message's (unmasked, inflated) payload; `None` when it names no client.
    pub fn of(payload: &[u8]) -> Option<ClientInfo> {
        Connect::of(payload).client
    }

    fn from_value(client: serde_json::Value) -> Option<ClientInfo> {
        let info = ClientInfo {
            id: text(client.get("id")),
            mode: text(client.get("mode")),
            version: text(client.get("version")),
        };
        (info != ClientInfo::default()).then_some(info)
    }

    /// "cli 2026.9.6" (id, then mode where it differs, then version).
    pub fn describe(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        parts.extend(self.id.as_deref());
        if self.mode != self.id {
            parts.extend(self.mode.as_deref());
        }
        parts.extend(self.version.as_deref());
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_client_of_a_connect() {
        let p = br#"{"type":"req","id":"1","method":"connect","params":{"client":{"id":"cli","mode":"cli","version":"2026.9.6","x":1},"auth":{"token":"t"}}}"#;
        let c = ClientInfo::of(p).unwrap();
        assert_eq!(c.describe(), "cli 2026.9.6");
        assert_eq!(ClientInfo::of(br#"{"params":{}}"#), None);
        assert_eq!(ClientInfo::of(b"not json"), None);
        let odd = br#"{"params":{"client":{"id":"a b\nc","mode":7,"version":"1"}}}"#;
        assert_eq!(ClientInfo::of(odd).unwrap().describe(), "1");
    }

    #[test]
    fn reads_the_ask_and_refuses_to_guess_it() {
        let p = br#"{"params":{"client":"odd","role":"operator","scopes":["operator.read"],"auth":{"deviceToken":"dt"}}}"#;
        let c = Connect::of(p);
        let ask = c.ask.unwrap();
        assert_eq!(ask.role.as_deref(), Some("operator"));
        assert_eq!(ask.scopes, ["operator.read"]);
        assert!(c.device_token.is_some() && c.client.is_none());
        assert!(Connect::of(br#"{"params":{"scopes":"operator.admin"}}"#)
            .ask
            .is_none());
        assert!(Connect::of(br#"{"params":{"scopes":[],"scopes":["x"]}}"#)
            .ask
            .is_none());
        assert_eq!(
            Connect::of(br#"{"params":{}}"#).ask.unwrap().scopes.len(),
            0
        );
        assert!(Connect::of(b"[]").ask.is_none());
    }
}
