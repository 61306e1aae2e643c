//! Who a `connect` request says its client is (`params.client`: id, mode, version) and what
//! it asks for (`params.role`, `params.scopes`, a paired device's `auth.deviceToken`), for
//! the session's audit and the credential's scope check (read by the token's walk, `said`).

use crate::credentials::Ask;

use super::said::{Said, Scopes};

/// `params.client` of a `connect` request, as far as it is there and is text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClientInfo {
    pub id: Option<String>,
    pub mode: Option<String>,
    pub version: Option<String>,
}

/// What a session's `connect` says, as far as it is there.
#[derive(Debug, Clone, Default)]
pub(crate) struct Connect {
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
    /// From a first message's (unmasked, inflated) payload, read on its own (a refusal's
    /// line); a judged message has it from its one walk ([`Connect::from_said`]).
    pub(crate) fn of(payload: &[u8]) -> Connect {
        super::Facts::scan(payload, "")
            .map(|f| Connect::from_said(f.said))
            .unwrap_or_default()
    }

    pub(crate) fn from_said(said: Said) -> Connect {
        let client = ClientInfo {
            id: text(said.client_id),
            mode: text(said.client_mode),
            version: text(said.client_version),
        };
        let scopes = match said.scopes {
            _ if !said.params => None,
            Scopes::Absent => Some(Vec::new()),
            Scopes::List(list) => Some(list),
            Scopes::Invalid => None,
        };
        Connect {
            client: (client != ClientInfo::default()).then_some(client),
            ask: scopes.map(|scopes| Ask {
                role: said.role,
                scopes,
            }),
            device_token: said.device_token,
            signed: said.signed,
        }
    }
}

/// A short, printable string, or nothing: a client's fields reach log lines.
fn text(v: Option<String>) -> Option<String> {
    let s = v?;
    (!s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_graphic())).then_some(s)
}

impl ClientInfo {
    /// From a first message's (unmasked, inflated) payload; `None` when it names no client.
    pub(crate) fn of(payload: &[u8]) -> Option<ClientInfo> {
        Connect::of(payload).client
    }

    /// "cli 2026.9.6" (id, then mode where it differs, then version).
    pub(crate) fn describe(&self) -> String {
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
        assert_eq!(
            // A repeated key: the last one counts, as in the gateway's JSON.parse.
            Connect::of(br#"{"params":{"scopes":["operator.admin"],"scopes":["x"]}}"#)
                .ask
                .unwrap()
                .scopes,
            ["x"]
        );
        assert_eq!(
            Connect::of(br#"{"params":{}}"#).ask.unwrap().scopes.len(),
            0
        );
        assert!(Connect::of(b"[]").ask.is_none());
    }
}
