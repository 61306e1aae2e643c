//! `[auth]` and `[upstream_auth]`: how clients present tokens, how refusals look, and the
//! gateway's own token.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::credentials::{CredentialSource, OPENCLAW_TOKEN_POINTER};
use super::values::Secs;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Token sources tried at upgrade time, in this order; the first that yields a token
    /// decides. Unset: header, query, cookie and subprotocol, plus `first_message` when a
    /// credential is the OpenClaw gateway's own config (see [`AuthConfig::effective_sources`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<TokenSource>>,
    pub query_param: String,
    pub cookie: String,
    pub subprotocol_prefix: String,
    pub reject: RejectMode,
    pub http: HttpAuthMode,
    /// Path prefixes served without a token (plain HTTP only).
    pub public_paths: Vec<String>,
    /// The OpenClaw Control UI's shell (its page and static files, GET/HEAD) without a
    /// token: `auto` when a credential is OpenClaw's config, `public`, or `private`.
    pub control_ui: ControlUiMode,
    /// Path prefixes that are Control UI routes: a browser navigation to one without a
    /// token is answered with the UI's page (the upstream is asked for `/`, nothing else).
    pub control_ui_routes: Vec<String>,
    /// Largest first WebSocket frame read for a token (`first_message` source).
    pub first_message_max_bytes: usize,
    /// With `first_message`: whole frames of the upstream's relayed to a client before it
    /// has authenticated (1: the OpenClaw gateway's `connect.challenge`). Anything the
    /// upstream sends after them waits until the client's token is accepted.
    pub first_message_preauth_frames: u64,
    /// How long a client has, after the 101, to send its first frame.
    pub first_message_timeout: Secs,
    /// RFC 6901 pointer to the token inside the first frame's JSON.
    pub first_message_pointer: String,
    /// After a rotation the previous token of a source stays valid this long (0 disables).
    pub grace: Secs,
    /// What happens to live connections whose token a reload made invalid (after grace).
    pub on_revoke: OnRevoke,
    /// Browser origins allowed to open WebSockets: exact origins (`https://app.example`),
    /// `*.suffix` patterns (`https://*.example.com`), or `*`. Empty: same origin as the
    /// request's Host, or a loopback origin (what the OpenClaw gateway itself accepts).
    pub allowed_origins: Vec<String>,
    /// Upgrades without an Origin header (non-browser clients) are allowed.
    pub allow_missing_origin: bool,
    /// Failed attempts from one client IP within `failure_window` before it is refused
    /// cheaply for a growing backoff (0 disables throttling).
    pub max_failures: u32,
    pub failure_window: Secs,
    /// The longest backoff a throttled IP gets.
    pub max_backoff: Secs,
    /// A `connect` carrying only `params.auth.deviceToken` (a paired device's token, issued
    /// by the gateway): `refuse` it, or forward it for the `gateway` to judge.
    pub device_tokens: DeviceTokens,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeviceTokens {
    /// gatewarden knows no device tokens: such a connect is a client without a token.
    Refuse,
    /// Forwarded untouched (nothing injected), logged `authenticated_by=gateway`; a refusal
    /// by the gateway counts as a failed attempt of the client's IP.
    Gateway,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ControlUiMode {
    /// Public when a credential is the OpenClaw gateway's config (gatewarden is in front of
    /// OpenClaw), private otherwise.
    Auto,
    Public,
    Private,
}

/// The Control UI's client-side routes (OpenClaw 2026.9): the gateway answers a browser
/// navigation to any of them with the UI's page.
pub const DEFAULT_CONTROL_UI_ROUTES: &[&str] = &[
    "/activity",
    "/agents",
    "/ai-agents",
    "/appearance",
    "/apps",
    "/automation",
    "/automations",
    "/channels",
    "/chat",
    "/communications",
    "/config",
    "/cron",
    "/custodian",
    "/dashboard",
    "/dashboards",
    "/debug",
    "/infrastructure",
    "/lobsterdex",
    "/logs",
    "/mcp",
    "/meetings",
    "/memory-import",
    "/model-providers",
    "/model-setup",
    "/new",
    "/nodes",
    "/plugin",
    "/plugins",
    "/portals",
    "/profile",
    "/sessions",
    "/settings",
    "/skills",
    "/systems",
    "/tasks",
    "/terminal",
    "/usage",
    "/workboard",
    "/worktrees",
];

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamOrigin {
    Keep,
    Rewrite,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnRevoke {
    /// Live connections continue; only new handshakes see the change.
    Keep,
    /// Live connections using a revoked token are closed with 1008 "token revoked".
    Close,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            sources: None,
            query_param: "token".into(),
            cookie: "gatewarden_token".into(),
            subprotocol_prefix: "bearer.".into(),
            reject: RejectMode::Close,
            http: HttpAuthMode::Require,
            public_paths: Vec::new(),
            control_ui: ControlUiMode::Auto,
            control_ui_routes: DEFAULT_CONTROL_UI_ROUTES
                .iter()
                .map(|r| r.to_string())
                .collect(),
            first_message_max_bytes: 64 * 1024,
            first_message_preauth_frames: 1,
            first_message_timeout: Secs(Duration::from_secs(10)),
            first_message_pointer: "/params/auth/token".into(),
            grace: Secs(Duration::from_secs(600)),
            on_revoke: OnRevoke::Keep,
            allowed_origins: Vec::new(),
            allow_missing_origin: true,
            max_failures: 10,
            failure_window: Secs(Duration::from_secs(60)),
            max_backoff: Secs(Duration::from_secs(300)),
            device_tokens: DeviceTokens::Refuse,
        }
    }
}

/// The token sources in effect, and why: what `gatewarden check` prints and the start-up
/// log says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveSources {
    pub list: Vec<TokenSource>,
    pub why: String,
}

/// The sources every client may use: they are read from the upgrade request itself, so a
/// client without a token is refused before anything is sent upstream.
const UPGRADE_TIME_SOURCES: [TokenSource; 4] = [
    TokenSource::Header,
    TokenSource::Query,
    TokenSource::Cookie,
    TokenSource::Subprotocol,
];

impl AuthConfig {
    /// `auth.sources` as configured, else the default for these credentials: the
    /// `first_message` source means connecting upstream and relaying the gateway's first
    /// frame before the client has shown anything, which only the OpenClaw protocol needs
    /// (its clients send the token in the first frame, after the gateway's challenge). So
    /// it is on by default only when a credential is OpenClaw's own config.
    pub fn effective_sources(&self, credentials: &[CredentialSource]) -> EffectiveSources {
        if let Some(list) = &self.sources {
            return EffectiveSources {
                list: list.clone(),
                why: "auth.sources is set".into(),
            };
        }
        let mut list = UPGRADE_TIME_SOURCES.to_vec();
        match credentials.iter().find(|c| c.is_openclaw_config()) {
            Some(c) => {
                list.push(TokenSource::FirstMessage);
                EffectiveSources {
                    list,
                    why: format!(
                        "default; first_message is on because {} is the OpenClaw gateway's config (json5 at {OPENCLAW_TOKEN_POINTER})",
                        c.path.display()
                    ),
                }
            }
            None => EffectiveSources {
                list,
                why: "default; first_message is off because no credential is the OpenClaw gateway's config (an upgrade without a token is refused before any upstream connection)".into(),
            },
        }
    }
}

impl AuthConfig {
    /// Whether the Control UI's shell is served without a token, and why.
    pub fn control_ui_public(&self, credentials: &[CredentialSource]) -> (bool, &'static str) {
        match self.control_ui {
            ControlUiMode::Public => (true, "auth.control_ui = \"public\""),
            ControlUiMode::Private => (false, "auth.control_ui = \"private\""),
            ControlUiMode::Auto if credentials.iter().any(|c| c.is_openclaw_config()) => (
                true,
                "default; a credential is the OpenClaw gateway's config",
            ),
            ControlUiMode::Auto => (
                false,
                "default; no credential is the OpenClaw gateway's config",
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`
    Header,
    /// `?<auth.query_param>=<token>`
    Query,
    /// `Cookie: <auth.cookie>=<token>`
    Cookie,
    /// `Sec-WebSocket-Protocol: <auth.subprotocol_prefix><token>`
    Subprotocol,
    /// Inside the client's first WebSocket frame (OpenClaw's `connect` request), read after
    /// the upgrade; only used when no upgrade-time source yielded a token.
    FirstMessage,
    /// A client certificate verified against `tls.client_ca` stands in for a token.
    ClientCert,
}

impl TokenSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenSource::Header => "header",
            TokenSource::Query => "query",
            TokenSource::Cookie => "cookie",
            TokenSource::Subprotocol => "subprotocol",
            TokenSource::FirstMessage => "first_message",
            TokenSource::ClientCert => "client_cert",
        }
    }
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RejectMode {
    /// Answer 101 ourselves and close with 1008: browsers can read a close reason, not a status.
    Close,
    /// `401 Unauthorized` with `WWW-Authenticate: Bearer`.
    Http,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HttpAuthMode {
    Require,
    Pass,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamAuthConfig {
    pub inject: Inject,
    /// Name of the credential whose current token is presented upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Header set by `inject = "header"`; `authorization` gets `Bearer <token>`, any other
    /// header the bare token.
    pub header: String,
    /// The identity header of `inject = "trusted_proxy"` (the gateway's
    /// `gateway.auth.trustedProxy.userHeader`).
    pub user_header: String,
}

impl UpstreamAuthConfig {
    /// The header the gateway's token goes in, with `inject = "header"` (a name that is
    /// not a header name is refused at load).
    pub fn header_name(&self) -> Option<http::HeaderName> {
        (self.inject == Inject::Header)
            .then(|| http::HeaderName::from_bytes(self.header.as_bytes()).ok())
            .flatten()
    }

    /// The identity header, with `inject = "trusted_proxy"` (refused at load when invalid).
    pub fn user_header_name(&self) -> Option<http::HeaderName> {
        (self.inject == Inject::TrustedProxy)
            .then(|| http::HeaderName::from_bytes(self.user_header.as_bytes()).ok())
            .flatten()
    }
}

impl Default for UpstreamAuthConfig {
    fn default() -> Self {
        UpstreamAuthConfig {
            inject: Inject::None,
            credential: None,
            header: "authorization".into(),
            user_header: "x-forwarded-user".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Inject {
    /// Forward what the client sent.
    None,
    /// Rewrite the token in the client's first frame to the gateway's current token.
    FirstMessage,
    /// Present the gateway's token in a header on the upgrade and on HTTP requests.
    Header,
    /// Add or replace `params.auth.password` in the client's first frame with the gateway's
    /// password, leaving the client's own (signed) `auth.token` alone: the gateway in
    /// `password` mode checks `auth.password` first, the device signature covers `auth.token`.
    Password,
    /// Name the client on the upstream upgrade (`user_header`, `X-Forwarded-*`) for a gateway
    /// in `trusted-proxy` mode.
    TrustedProxy,
}

impl Inject {
    pub fn as_str(self) -> &'static str {
        match self {
            Inject::None => "none",
            Inject::FirstMessage => "first_message",
            Inject::Header => "header",
            Inject::Password => "password",
            Inject::TrustedProxy => "trusted_proxy",
        }
    }

    /// Whether the client's first frame is re-encoded on its way to the gateway.
    pub fn rewrites_first_frame(self) -> bool {
        matches!(self, Inject::FirstMessage | Inject::Password)
    }

    /// Whether a gateway secret (`upstream_auth.credential`) is presented.
    pub fn needs_credential(self) -> bool {
        matches!(
            self,
            Inject::FirstMessage | Inject::Header | Inject::Password
        )
    }
}
