//! Who a session is, for its lines from `[ws] connected` to `[ws] closed`: the credential's
//! name, who judged the credential, and what the `connect` said of its client and asked
//! for. Known from the upgrade (the credential) and from the first frame, where it is read.

use crate::credentials::Credential;
use crate::first_message::Connect;

#[derive(Debug, Default, Clone)]
pub(crate) struct Who {
    /// The credential's name (`-` when it has none).
    pub client: Option<String>,
    /// A paired device's token, judged by the gateway (`auth.device_tokens = "gateway"`).
    pub by_gateway: bool,
    pub client_id: Option<String>,
    pub client_version: Option<String>,
    /// The scopes the `connect` asked for, comma-separated.
    pub scopes: Option<String>,
    /// With `by_gateway`: the device token's throttle key (a refusal by the gateway counts).
    pub device_token: Option<u64>,
}

impl Who {
    pub(crate) fn of_credential(c: Option<&Credential>) -> Who {
        Who {
            client: c.map(|c| c.who().to_string()),
            ..Who::default()
        }
    }

    /// Adds what the first frame said.
    pub(crate) fn saw(&mut self, connect: &Connect) {
        if let Some(c) = &connect.client {
            self.client_id.clone_from(&c.id);
            self.client_version.clone_from(&c.version);
        }
        self.scopes = connect.ask.as_ref().map(|a| a.describe_scopes());
    }

    pub(crate) fn client(&self) -> &str {
        self.client.as_deref().unwrap_or("-")
    }

    pub(crate) fn authenticated_by(&self) -> &'static str {
        if self.by_gateway {
            "gateway"
        } else {
            "gatewarden"
        }
    }

    pub(crate) fn client_id(&self) -> &str {
        self.client_id.as_deref().unwrap_or("-")
    }

    pub(crate) fn client_version(&self) -> &str {
        self.client_version.as_deref().unwrap_or("-")
    }

    pub(crate) fn scopes(&self) -> &str {
        self.scopes.as_deref().unwrap_or("-")
    }

    /// The fields after `client`, as the direct writer writes them.
    pub(crate) fn fields(&self, l: &mut crate::logging::Line) {
        l.text("client_id", self.client_id());
        l.text("client_version", self.client_version());
        l.text("scopes", self.scopes());
        l.text("authenticated_by", self.authenticated_by());
    }
}

/// What the throttle and a stale client's line need of a refused token.
#[derive(Default)]
pub(crate) struct Seen<'a> {
    /// `Presented::key` of the token (0: none; `admit::ORIGIN_KEY`: refused for its Origin).
    pub key: u64,
    /// The credential generation it was judged against.
    pub generation: u64,
    pub presented: Option<crate::credentials::Fingerprint>,
    /// For `token_stale`: the generation it was retired at.
    pub retired: Option<u64>,
    /// Who the first frame says the client is.
    pub client: Option<&'a crate::first_message::ClientInfo>,
    /// No credential is loaded at all: nothing could have passed.
    pub nothing_loaded: bool,
}
