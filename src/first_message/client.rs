//! Who a `connect` request says its client is (`params.client`: id, mode, version), for the
//! log lines that name a client: read only when such a line is written, never to judge.

use serde::Deserialize;

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

#[derive(Deserialize)]
struct Params {
    client: Option<Client>,
}

#[derive(Deserialize)]
struct Client {
    id: Option<serde_json::Value>,
    mode: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

/// A short, printable string, or nothing: a client's fields reach log lines.
fn text(v: Option<serde_json::Value>) -> Option<String> {
    let s = v?.as_str()?.to_string();
    (!s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_graphic())).then_some(s)
}

impl ClientInfo {
    /// From a first message's (unmasked, inflated) payload; `None` when it names no client.
    pub fn of(payload: &[u8]) -> Option<ClientInfo> {
        let client = serde_json::from_slice::<Doc>(payload)
            .ok()?
            .params?
            .client?;
        let info = ClientInfo {
            id: text(client.id),
            mode: text(client.mode),
            version: text(client.version),
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
}
