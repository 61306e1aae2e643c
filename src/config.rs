//! Configuration: built-in defaults < TOML file < `GATEWARDEN_*` environment < command-line flags.
//!
//! Every error names the key, the offending value and the place it came from, because the
//! usual way a proxy is misconfigured is a value the operator did not know was set somewhere.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Prefix of every environment variable gatewarden reads.
pub const ENV_PREFIX: &str = "GATEWARDEN_";
/// Environment variable naming the config file (the `-c/--config` flag wins over it).
pub const CONFIG_ENV: &str = "GATEWARDEN_CONFIG";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the proxy accepts clients on.
    pub listen: ListenAddr,
    /// The gateway behind gatewarden.
    pub upstream: Upstream,
    pub auth: AuthConfig,
    /// What the gateway sees as the Origin of an upgrade: the browser's (`keep`), or the
    /// gateway's own (`rewrite`, for gateways that refuse non-loopback origins).
    pub upstream_origin: UpstreamOrigin,
    /// Where valid tokens come from, and how changes are noticed. Written either as
    /// `[[credentials]]` entries or as a `[credentials]` table with `sources`.
    pub credentials: CredentialsConfig,
    pub timeouts: Timeouts,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    /// What gatewarden presents to the gateway on the client's behalf.
    pub upstream_auth: UpstreamAuthConfig,
    /// TLS termination for clients (`wss://`, `https://`).
    pub tls: TlsConfig,
    /// The admin listener (health, readiness, metrics).
    pub admin: AdminConfig,
    pub limits: LimitsConfig,
    /// WebSocket tunnel limits.
    pub splice: SpliceConfig,
    /// TCP behaviour of the client and upstream sockets.
    pub tcp: TcpConfig,
    /// How gatewarden verifies an `https://`/`wss://` upstream.
    pub upstream_tls: UpstreamTlsConfig,
    /// Set `X-Forwarded-For`, `X-Real-IP` and `X-Forwarded-Proto` for upstreams that want
    /// them (off: the OpenClaw gateway answers 403 to them unless it trusts the proxy).
    pub forwarded_headers: bool,
    /// Peers (CIDRs) allowed to send `X-Forwarded-For`/`X-Real-IP`/`Forwarded`; from anyone
    /// else those headers are removed (the OpenClaw gateway answers 403 to them otherwise).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Connections from `trusted_proxies` start with a PROXY protocol header (v1 or v2)
    /// naming the real client (load balancers that would otherwise hide it); connections
    /// from anyone else are served as they are, and a header from them is not believed.
    pub listen_proxy_protocol: bool,
    /// Worker threads; 0 = one per CPU. Each worker is a thread with a single-threaded
    /// runtime accepting from the shared listening socket, like nginx's worker processes: no
    /// work stealing, no cross-thread wake-ups; a connection accepted by a worker with 2 or
    /// more open connections than another is handed to that one. 1 serves everything on the
    /// main thread, the cheapest for a sidecar given one core.
    pub workers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: ListenAddr("127.0.0.1:18789".parse().unwrap()),
            upstream: Upstream {
                host: "127.0.0.1".into(),
                port: 18790,
                tls: false,
            },
            auth: AuthConfig::default(),
            upstream_origin: UpstreamOrigin::Keep,
            credentials: CredentialsConfig::default(),
            timeouts: Timeouts::default(),
            shutdown: ShutdownConfig::default(),
            log: LogConfig::default(),
            upstream_auth: UpstreamAuthConfig::default(),
            tls: TlsConfig::default(),
            admin: AdminConfig::default(),
            limits: LimitsConfig::default(),
            splice: SpliceConfig::default(),
            tcp: TcpConfig::default(),
            upstream_tls: UpstreamTlsConfig::default(),
            forwarded_headers: false,
            trusted_proxies: Vec::new(),
            listen_proxy_protocol: false,
            workers: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. With `key`, the listener speaks TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// PEM CA certificates: when set, clients must present a certificate it signed (mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// A connection must complete its TLS handshake within this time.
    pub handshake_timeout: Secs,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            client_ca: None,
            handshake_timeout: Secs(Duration::from_secs(10)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpliceConfig {
    /// End a tunnel after this long without a byte either way (close 1001); 0 = off.
    pub idle_timeout: Secs,
    /// End every tunnel after this long (close 1001), so clients re-authenticate; 0 = off.
    pub max_lifetime: Secs,
    /// Move large WebSocket payloads socket → pipe → socket with splice(2) (Linux, plain
    /// TCP both sides), never through user space; frame headers are still read to track
    /// frames. Off: every byte is copied through a pooled buffer (portable).
    pub zero_copy: bool,
    /// Relay tunnels between two plain sockets in each worker thread's own loop: one task
    /// wake-up per batch of socket events, instead of a task wake-up per message. Off:
    /// every tunnel's own task moves its bytes (as TLS tunnels always are).
    pub worker_loop: bool,
    /// Frames (both ways) a tunnel carries in its own task before it moves to the worker
    /// loop: for a short tunnel the move (allocations, a hand-over between tasks) costs more
    /// than it saves. 0: at once.
    pub worker_loop_after: u64,
}

impl Default for SpliceConfig {
    fn default() -> Self {
        SpliceConfig {
            idle_timeout: Secs::default(),
            max_lifetime: Secs::default(),
            zero_copy: false,
            worker_loop: true,
            worker_loop_after: 16,
        }
    }
}

/// TCP options gatewarden sets on its sockets (Linux; elsewhere the system's defaults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Save the ACKs the kernel would send on its own for what gatewarden answers at once,
    /// as HAProxy's `tcp-smart-accept` and `tcp-smart-connect` do: `TCP_QUICKACK` off on the
    /// listener (accepted sockets inherit it, so the ACK of an upgrade request rides on the
    /// 101 or the 401) and on each upstream socket until the upgrade request is out (the
    /// handshake's last ACK rides on it). Where the peer has more to send before we answer
    /// (a head in pieces; the gateway's 101, often followed by a first frame) quick ACKs are
    /// turned back on, so a peer with Nagle's algorithm on does not wait the kernel's 40 ms
    /// delayed-ACK time for us during the handshake. A tunnel's ACKs are the kernel's own
    /// choice either way (which makes a client that writes each message in pieces with
    /// Nagle on wait 40 ms per message, with or without this option). Off: the kernel's
    /// own choice throughout.
    pub delayed_ack: bool,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig { delayed_ack: true }
    }
}

impl SpliceConfig {
    pub fn idle_timeout(&self) -> Option<Duration> {
        Some(self.idle_timeout.0).filter(|d| !d.is_zero())
    }

    pub fn max_lifetime(&self) -> Option<Duration> {
        Some(self.max_lifetime.0).filter(|d| !d.is_zero())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open connections (including WebSocket tunnels) at once; 0 = unlimited.
    pub max_connections: usize,
    /// Open connections from one client IP at once; 0 = unlimited.
    pub max_connections_per_ip: usize,
    /// Request header lines per request (431 beyond).
    pub max_headers: usize,
    /// Bytes of request line + headers (431 beyond); at least 8192.
    pub max_header_bytes: usize,
    /// Bytes of the request line (method, target, version) alone (414 beyond): a query
    /// string is where junk and oversized tokens arrive.
    pub max_request_line: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 10_000,
            max_connections_per_ip: 256,
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            max_request_line: 8 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `ip:port` for /healthz, /readyz, /metrics; empty disables the admin listener.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9187".into(),
        }
    }
}

impl AdminConfig {
    pub fn addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTlsConfig {
    /// PEM CA certificates to verify the upstream with, instead of the public web PKI roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Accept any upstream certificate. Only for tests and emergencies; logged loudly.
    pub insecure: bool,
}

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
}

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsConfig {
    /// Empty means: OpenClaw's own config if found, else gatewarden's generated token file.
    pub sources: Vec<CredentialSource>,
    /// Watch the files' directories with inotify.
    pub watch: bool,
    /// Also compare size/mtime/inode/content this often, for filesystems where inotify events
    /// never arrive (network filesystems, some Docker Desktop bind mounts). 0 disables.
    pub poll_interval: Secs,
    /// Largest credential or TLS file read; a larger one is refused (the last good stays).
    pub max_file_bytes: u64,
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        CredentialsConfig {
            sources: Vec::new(),
            watch: true,
            poll_interval: Secs(Duration::from_secs(5)),
            max_file_bytes: crate::files::DEFAULT_MAX_BYTES,
        }
    }
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
#[serde(deny_unknown_fields)]
pub struct CredentialSource {
    /// Names the credential for `upstream_auth.credential` and in logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub path: PathBuf,
    #[serde(default)]
    pub format: CredentialFormat,
    /// For `json5`: RFC 6901 pointer to the token (default `/gateway/auth/token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// For `dotenv`: the variable holding the token (default `OPENCLAW_GATEWAY_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl CredentialSource {
    pub fn plain(path: impl Into<PathBuf>) -> CredentialSource {
        CredentialSource {
            name: None,
            path: path.into(),
            format: CredentialFormat::Plain,
            pointer: None,
            key: None,
        }
    }

    /// Whether this is the OpenClaw gateway's own token: its config (JSON5 with the token at
    /// `gateway.auth.token`) or the `.env` that gives it `OPENCLAW_GATEWAY_TOKEN`.
    pub fn is_openclaw_config(&self) -> bool {
        match self.format {
            CredentialFormat::Json5 => self.json_pointer() == OPENCLAW_TOKEN_POINTER,
            CredentialFormat::Dotenv => self.env_key() == OPENCLAW_TOKEN_ENV,
            _ => false,
        }
    }

    /// The variable in effect for a `dotenv` source.
    pub fn env_key(&self) -> &str {
        self.key.as_deref().unwrap_or(OPENCLAW_TOKEN_ENV)
    }

    /// The JSON pointer in effect for a `json5` source.
    pub fn json_pointer(&self) -> &str {
        self.pointer.as_deref().unwrap_or(OPENCLAW_TOKEN_POINTER)
    }
}

/// The environment variable OpenClaw compose setups give the gateway its token in.
pub const OPENCLAW_TOKEN_ENV: &str = "OPENCLAW_GATEWAY_TOKEN";

/// Where the OpenClaw gateway keeps its token inside `openclaw.json`.
pub const OPENCLAW_TOKEN_POINTER: &str = "/gateway/auth/token";

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CredentialFormat {
    /// The whole file is one token; surrounding whitespace is trimmed.
    #[default]
    Plain,
    /// A JSON5 document (the OpenClaw gateway's `openclaw.json`); the token is at `pointer`.
    Json5,
    /// Named client tokens: `name token` or `name sha256:<64 hex>` per line, `#` comments.
    Lines,
    /// A `.env` file (`KEY=value` lines, as docker compose reads them); the token is the
    /// value of `key`.
    Dotenv,
}

impl CredentialFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialFormat::Plain => "plain",
            CredentialFormat::Json5 => "json5",
            CredentialFormat::Lines => "lines",
            CredentialFormat::Dotenv => "dotenv",
        }
    }
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
}

impl UpstreamAuthConfig {
    /// The header the gateway's token goes in, with `inject = "header"` (a name that is
    /// not a header name is refused at load).
    pub fn header_name(&self) -> Option<http::HeaderName> {
        (self.inject == Inject::Header)
            .then(|| http::HeaderName::from_bytes(self.header.as_bytes()).ok())
            .flatten()
    }
}

impl Default for UpstreamAuthConfig {
    fn default() -> Self {
        UpstreamAuthConfig {
            inject: Inject::None,
            credential: None,
            header: "authorization".into(),
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// A client must finish sending request headers within this time.
    pub header_read: Secs,
    /// Connecting to the upstream (TCP) must succeed within this time.
    pub upstream_connect: Secs,
    /// A proxied plain HTTP request's response head must arrive within this time after the
    /// request was sent (504 otherwise). The body then streams for as long as it takes.
    pub upstream_response: Secs,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: Secs(Duration::from_secs(10)),
            upstream_connect: Secs(Duration::from_secs(5)),
            upstream_response: Secs(Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long open connections may keep going after SIGTERM/SIGINT.
    pub drain: Secs,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain: Secs(Duration::from_secs(30)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `gatewarden=debug`, ...); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// A listen address, parsed with an error message that repeats the bad value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl Serialize for ListenAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(ListenAddr).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid listen address `{s}`: expected ip:port such as 127.0.0.1:18789 or [::]:18789"
            ))
        })
    }
}

/// The gateway's address: `host:port`, `http://host:port`, or `https://host:port` /
/// `wss://host:port` for a gateway that speaks TLS itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Upstream {
    /// `host:port` as used in a URI authority (IPv6 hosts bracketed).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority())
    }
}

impl std::str::FromStr for Upstream {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid upstream `{s}`: {why}");
        let (tls, rest) = match s.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" | "ws" => (false, rest),
                "https" | "wss" => (true, rest),
                _ => {
                    return Err(bad(&format!(
                        "unsupported scheme `{scheme}` (expected host:port, http://, https://, ws:// or wss://)"
                    )))
                }
            },
            None => (false, s),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') {
            return Err(bad("a path is not supported, give host:port"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, port) = v6
                .split_once("]:")
                .ok_or_else(|| bad("expected [ipv6]:port"))?;
            (host, port)
        } else {
            rest.rsplit_once(':')
                .ok_or_else(|| bad("missing port, expected host:port such as 127.0.0.1:18790"))?
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| bad(&format!("port `{port}` is not a number 1-65535")))?;
        if port == 0 {
            return Err(bad("port 0 is not a valid upstream port"));
        }
        Ok(Upstream {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

impl Serialize for Upstream {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A duration written as `10s`, `500ms`, `10m` (humantime), or a bare number of seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Secs(pub Duration);

impl Serialize for Secs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(Secs(Duration::from_secs(n))),
            Raw::Text(s) => humantime::parse_duration(s.trim()).map(Secs).map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration `{s}`: {e} (examples: 10s, 500ms, 5m)"
                ))
            }),
        }
    }
}

/// Overrides from the command line; only flags that were given are set.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SourcesOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminOverrides>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct AdminOverrides {
    pub listen: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct TlsOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct SourcesOverride {
    pub sources: Vec<CredentialSource>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct LogOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

/// Turns the `[[credentials]]` array form into the table form (`credentials.sources`), so
/// every provider merges into the same shape: without this an environment variable such as
/// `GATEWARDEN_CREDENTIALS__POLL_INTERVAL` would replace a file's array instead of joining it.
struct Normalized<P>(P);

impl<P: Provider> Provider for Normalized<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<figment::value::Map<Profile, figment::value::Dict>, figment::Error> {
        use figment::value::{Dict, Value};
        let mut data = self.0.data()?;
        for dict in data.values_mut() {
            if matches!(dict.get("credentials"), Some(Value::Array(..))) {
                if let Some(Value::Array(tag, list)) = dict.remove("credentials") {
                    let table = Dict::from([("sources".to_string(), Value::Array(tag, list))]);
                    dict.insert("credentials".into(), Value::Dict(tag, table));
                }
            }
        }
        Ok(data)
    }
}

impl Provider for FlagOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("command-line flag")
    }

    fn data(&self) -> Result<figment::value::Map<Profile, figment::value::Dict>, figment::Error> {
        Serialized::defaults(self).data()
    }
}

/// A configuration problem, already phrased for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn from_figment(err: figment::Error) -> ConfigError {
        let lines: Vec<String> = err.into_iter().map(describe_figment_error).collect();
        ConfigError(lines.join("\n"))
    }
}

fn describe_figment_error(e: figment::Error) -> String {
    use figment::error::Kind;
    let key = e.path.join(".");
    let from = e
        .metadata
        .as_ref()
        .map(|md| format!(" (from {})", origin_of(md, &e.path)))
        .unwrap_or_default();
    match &e.kind {
        Kind::UnknownField(field, expected) => {
            let hint = match closest(field, expected) {
                Some(near) => {
                    let mut path = e.path.clone();
                    path.pop();
                    path.push(near.to_string());
                    format!("; did you mean `{}`?", path.join("."))
                }
                None => format!("; known keys here: {}", expected.join(", ")),
            };
            format!("config error: unknown key `{key}`{hint}{from}")
        }
        Kind::UnknownVariant(value, expected) => {
            let hint = closest(value, expected)
                .map(|near| format!(" (did you mean `{near}`?)"))
                .unwrap_or_default();
            format!(
                "config error: key `{key}`: unknown value `{value}`; expected one of: {}{hint}{from}",
                expected.join(", ")
            )
        }
        kind => {
            let what = kind.to_string();
            let what = what.trim_end();
            let at = if key.is_empty() {
                String::new()
            } else {
                format!(": key `{key}`")
            };
            if what.contains('\n') {
                // A parser's multi-line report (with a caret under the column): where first.
                format!("config error{at}{from}:\n{what}")
            } else {
                format!("config error{at}: {what}{from}")
            }
        }
    }
}

/// The candidate a near miss was probably meant to be (one or two typing slips away).
fn closest<'a>(typed: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let typed = typed.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&typed, c), *c))
        .filter(|(d, c)| *d <= (c.len() / 4).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Where a value came from, in words an operator can act on.
fn origin_of(md: &Metadata, path: &[String]) -> String {
    if md.name.contains("environment variable") {
        let var = format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase());
        return format!("environment variable {var}");
    }
    match &md.source {
        Some(figment::Source::File(p)) => format!("{} {}", md.name, p.display()),
        _ => md.name.to_string(),
    }
}

/// A TOML config file read by gatewarden itself (see [`crate::files`]: a FIFO or a device
/// named as the config must not hang start-up or `check`), shown in errors as the file.
#[derive(Clone)]
struct TomlFile {
    path: PathBuf,
    text: String,
}

impl Provider for TomlFile {
    fn metadata(&self) -> Metadata {
        Metadata::from("TOML file", self.path.as_path())
    }

    fn data(&self) -> Result<figment::value::Map<Profile, figment::value::Dict>, figment::Error> {
        Toml::string(&self.text).data()
    }
}

/// Builds the layered figment over an already-read config file. `ignored`: environment
/// variables (without the prefix) that are not settings and are left out.
fn figment(file: Option<TomlFile>, flags: &FlagOverrides, ignored: &[String]) -> Figment {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = file {
        fig = fig.merge(Normalized(file));
    }
    let mut skip: Vec<&str> = vec!["CONFIG"];
    skip.extend(ignored.iter().map(String::as_str));
    fig.merge(Normalized(
        Env::prefixed(ENV_PREFIX)
            .ignore(&skip)
            .split("__")
            .lowercase(true),
    ))
    .merge(flags.clone())
}

/// A `GATEWARDEN_*` environment variable that is not a setting, left out of the
/// configuration. Kubernetes injects `<SERVICE>_PORT`, `<SERVICE>_SERVICE_HOST`, … for
/// every Service, so a Service named `gatewarden` must not stop gatewarden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredVar {
    pub name: String,
    /// The variable a near miss probably meant.
    pub did_you_mean: Option<String>,
}

impl fmt::Display for IgnoredVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(m) = &self.did_you_mean {
            write!(f, " (did you mean {m}?)")?;
        }
        Ok(())
    }
}

/// The one warning that names every ignored variable.
pub fn ignored_env_warning(vars: &[IgnoredVar]) -> String {
    let list: Vec<String> = vars.iter().map(ToString::to_string).collect();
    format!(
        "ignoring environment variables that are not gatewarden settings: {} ({SERVICE_LINKS_HINT})",
        list.join(", ")
    )
}

/// Where such variables usually come from.
pub const SERVICE_LINKS_HINT: &str =
    "Kubernetes sets <SERVICE>_* variables for every Service; enableServiceLinks: false stops them";

/// A loaded configuration and what loading it had to say.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub ignored_env: Vec<IgnoredVar>,
}

/// Loads and validates the configuration. `config_file` is the `-c/--config` flag (else
/// `$GATEWARDEN_CONFIG`).
pub fn load(config_file: Option<&Path>, flags: &FlagOverrides) -> Result<Config, ConfigError> {
    load_reporting(config_file, flags).map(|l| l.config)
}

/// [`load`], also returning the environment variables it ignored, for the caller to warn
/// about once logging is set up. An unknown key in the config file stays an error: the
/// operator wrote it.
pub fn load_reporting(
    config_file: Option<&Path>,
    flags: &FlagOverrides,
) -> Result<Loaded, ConfigError> {
    let path = config_file
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from));
    let file = match path {
        Some(path) => {
            let bytes = crate::files::read_limited(&path, crate::files::DEFAULT_MAX_BYTES)
                .map_err(|why| {
                    ConfigError(format!(
                        "config error: config file {} {why}",
                        path.display()
                    ))
                })?;
            let text = String::from_utf8(bytes).map_err(|_| {
                ConfigError(format!(
                    "config error: config file {} is not valid UTF-8",
                    path.display()
                ))
            })?;
            Some(TomlFile { path, text })
        }
        None => None,
    };
    let mut ignored: Vec<String> = Vec::new();
    let mut ignored_env = Vec::new();
    // serde stops at the first unknown field, so each round finds at most one more; the
    // environment is finite and every round ignores a new variable.
    let (fig, mut config) = loop {
        let fig = figment(file.clone(), flags, &ignored);
        match fig.extract::<Config>() {
            Ok(config) => break (fig, config),
            Err(err) => {
                let unknown: Vec<(String, Option<String>)> = err
                    .clone()
                    .into_iter()
                    .filter_map(|e| unknown_env_var(&e))
                    .filter(|(k, _)| !ignored.contains(k))
                    .collect();
                if unknown.is_empty() {
                    return Err(ConfigError::from_figment(err));
                }
                for (key, near) in unknown {
                    ignored_env.push(IgnoredVar {
                        name: format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
                        did_you_mean: near,
                    });
                    ignored.push(key);
                }
            }
        }
    };
    validate(&config, &fig)?;
    config.resolve_paths();
    Ok(Loaded {
        config,
        ignored_env,
    })
}

/// For an unknown key that came from the environment: the variable's name without the
/// prefix (as `Env::ignore` wants it) and the variable a near miss probably meant.
fn unknown_env_var(e: &figment::Error) -> Option<(String, Option<String>)> {
    let figment::error::Kind::UnknownField(field, expected) = &e.kind else {
        return None;
    };
    if !e
        .metadata
        .as_ref()
        .is_some_and(|md| md.name.contains("environment variable"))
    {
        return None;
    }
    let mut path = e.path.clone();
    path.pop();
    // `GATEWARDEN_LOG_FORMAT` for `GATEWARDEN_LOG__FORMAT`: nesting takes two `_`.
    let nested = expected
        .iter()
        .filter(|k| field.len() > k.len() + 1 && field.starts_with(&format!("{k}_")))
        .max_by_key(|k| k.len())
        .map(|k| format!("{k}__{}", &field[k.len() + 1..]));
    let near = nested
        .or_else(|| closest(field, expected).map(str::to_string))
        .map(|near| {
            path.push(near);
            format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase())
        });
    Some((e.path.join("__"), near))
}

impl Config {
    /// Makes every file path absolute against the working directory at start. The watcher
    /// compares inotify's (absolute) event paths with these, and a relative path would
    /// only ever be noticed by the slow poll; logs then name the file unambiguously too.
    pub fn resolve_paths(&mut self) {
        let paths = self
            .credentials
            .sources
            .iter_mut()
            .map(|s| &mut s.path)
            .chain(self.tls.cert.as_mut())
            .chain(self.tls.key.as_mut())
            .chain(self.tls.client_ca.as_mut())
            .chain(self.upstream_tls.ca.as_mut());
        for p in paths {
            *p = absolute(p);
        }
    }
}

/// `path` made absolute against the working directory, lexically (`..` and symlinks are
/// left for the kernel: the watched directory is the one the operator named).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Checks that span more than one value's type.
fn validate(config: &Config, fig: &Figment) -> Result<(), ConfigError> {
    let fail = |key: &str, value: &dyn fmt::Display, why: &str| {
        let origin = fig
            .find_metadata(key)
            .map(|md| {
                let path: Vec<String> = key.split('.').map(String::from).collect();
                format!(" (from {})", origin_of(md, &path))
            })
            .unwrap_or_default();
        Err(ConfigError(format!(
            "config error: key `{key}`: value `{value}` {why}{origin}"
        )))
    };
    let auth = &config.auth;
    if auth.query_param.is_empty() || auth.query_param.contains(['&', '=', '#', ' ']) {
        return fail(
            "auth.query_param",
            &auth.query_param,
            "is not a usable query parameter name",
        );
    }
    if auth.cookie.is_empty() || auth.cookie.contains([';', '=', ',', ' ']) {
        return fail("auth.cookie", &auth.cookie, "is not a usable cookie name");
    }
    if auth.subprotocol_prefix.is_empty() || auth.subprotocol_prefix.contains([',', ' ']) {
        return fail(
            "auth.subprotocol_prefix",
            &auth.subprotocol_prefix,
            "is not a usable subprotocol prefix",
        );
    }
    let mut seen = Vec::new();
    for s in auth.sources.iter().flatten() {
        if seen.contains(s) {
            return fail("auth.sources", s, "is listed twice");
        }
        seen.push(*s);
    }
    if auth.sources.as_ref().is_some_and(Vec::is_empty) {
        return fail(
            "auth.sources",
            &"[]",
            "leaves no way to present a token; list at least one source",
        );
    }
    for o in &auth.allowed_origins {
        if o != "*" && !o.contains("://") {
            return fail(
                "auth.allowed_origins",
                o,
                "is not an origin (scheme://host[:port], scheme://*.suffix, or *)",
            );
        }
    }
    if config.limits.max_header_bytes < 8192 {
        return fail(
            "limits.max_header_bytes",
            &config.limits.max_header_bytes,
            "must be at least 8192",
        );
    }
    if config.limits.max_request_line < 256 {
        return fail(
            "limits.max_request_line",
            &config.limits.max_request_line,
            "must be at least 256",
        );
    }
    if config.limits.max_headers == 0 {
        return fail("limits.max_headers", &0, "must be at least 1");
    }
    if auth.max_failures > 0 && auth.failure_window.0.is_zero() {
        return fail("auth.failure_window", &"0s", "must be greater than zero");
    }
    for p in &auth.public_paths {
        if !p.starts_with('/') {
            return fail("auth.public_paths", p, "must start with '/'");
        }
        // Requests are matched after normalization, so an entry must be normalized too.
        match crate::path::normalize(p) {
            Ok(n) if n == p.as_str() => {}
            Ok(n) => {
                return fail(
                    "auth.public_paths",
                    p,
                    &format!("is not a normalized path (write `{n}`)"),
                )
            }
            Err(why) => return fail("auth.public_paths", p, &format!("is refused: {why}")),
        }
    }
    for c in &config.credentials.sources {
        if c.path.as_os_str().is_empty() {
            return fail("credentials.path", &"", "is empty");
        }
        if let Some(k) = &c.key {
            if c.format != CredentialFormat::Dotenv {
                return fail("credentials.key", k, "only applies to format = \"dotenv\"");
            }
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return fail("credentials.key", k, "is not an environment variable name");
            }
        }
        if let Some(p) = &c.pointer {
            if c.format != CredentialFormat::Json5 {
                return fail(
                    "credentials.pointer",
                    p,
                    "only applies to format = \"json5\"",
                );
            }
            if !p.is_empty() && !p.starts_with('/') {
                return fail(
                    "credentials.pointer",
                    p,
                    "is not a JSON pointer (must start with '/')",
                );
            }
        }
    }
    let max = config.credentials.max_file_bytes;
    if !(64..=64 << 20).contains(&max) {
        return fail(
            "credentials.max_file_bytes",
            &max,
            "must be between 64 and 67108864",
        );
    }
    let mut names: Vec<&str> = Vec::new();
    for n in config
        .credentials
        .sources
        .iter()
        .filter_map(|c| c.name.as_deref())
    {
        if names.contains(&n) {
            return fail("credentials.name", &n, "names two credentials");
        }
        names.push(n);
    }
    let p = &auth.first_message_pointer;
    if !p.is_empty() && !p.starts_with('/') {
        return fail(
            "auth.first_message_pointer",
            p,
            "is not a JSON pointer (must start with '/')",
        );
    }
    if auth.first_message_max_bytes == 0 || auth.first_message_max_bytes > 16 << 20 {
        return fail(
            "auth.first_message_max_bytes",
            &auth.first_message_max_bytes,
            "must be between 1 and 16777216",
        );
    }
    if auth.first_message_timeout.0.is_zero() {
        return fail(
            "auth.first_message_timeout",
            &"0s",
            "must be greater than zero",
        );
    }
    let ua = &config.upstream_auth;
    if ua.inject != Inject::None {
        match &ua.credential {
            None => {
                return fail(
                    "upstream_auth.credential",
                    &"",
                    "is required when upstream_auth.inject is set: name the gateway's credential",
                )
            }
            // With no credentials configured the discovered OpenClaw file is named `openclaw`.
            Some(n) if !config.credentials.sources.is_empty() && !names.contains(&n.as_str()) => {
                return fail(
                    "upstream_auth.credential",
                    n,
                    "names no credential (give the gateway's [[credentials]] entry that name)",
                )
            }
            Some(_) => {}
        }
        if ua.inject == Inject::Header
            && http::HeaderName::from_bytes(ua.header.as_bytes()).is_err()
        {
            return fail(
                "upstream_auth.header",
                &ua.header,
                "is not a valid header name",
            );
        }
    }
    if config.timeouts.header_read.0.is_zero() {
        return fail("timeouts.header_read", &"0s", "must be greater than zero");
    }
    if config.timeouts.upstream_connect.0.is_zero() {
        return fail(
            "timeouts.upstream_connect",
            &"0s",
            "must be greater than zero",
        );
    }
    if config.timeouts.upstream_response.0.is_zero() {
        return fail(
            "timeouts.upstream_response",
            &"0s",
            "must be greater than zero",
        );
    }
    if !config.admin.listen.is_empty() && config.admin.addr().is_none() {
        return fail(
            "admin.listen",
            &config.admin.listen,
            "is not ip:port (such as 127.0.0.1:9187); empty disables the admin listener",
        );
    }
    let tls = &config.tls;
    match (&tls.cert, &tls.key) {
        (Some(_), None) => return fail("tls.key", &"", "is required when tls.cert is set"),
        (None, Some(_)) => return fail("tls.cert", &"", "is required when tls.key is set"),
        _ => {}
    }
    if let (Some(ca), None) = (&tls.client_ca, &tls.cert) {
        return fail(
            "tls.client_ca",
            &ca.display(),
            "needs tls.cert and tls.key (client certificates are a TLS feature)",
        );
    }
    if seen.contains(&TokenSource::ClientCert) && tls.client_ca.is_none() {
        return fail(
            "auth.sources",
            &"client_cert",
            "needs tls.client_ca to verify client certificates against",
        );
    }
    if tls.handshake_timeout.0.is_zero() {
        return fail("tls.handshake_timeout", &"0s", "must be greater than zero");
    }
    if (config.upstream_tls.ca.is_some() || config.upstream_tls.insecure) && !config.upstream.tls {
        return fail(
            "upstream_tls",
            &config.upstream,
            "applies only to an https:// or wss:// upstream",
        );
    }
    if let Err(e) = config.log.level.parse::<tracing_subscriber::EnvFilter>() {
        return fail(
            "log.level",
            &config.log.level,
            &format!("is not a log filter: {e}"),
        );
    }
    Ok(())
}

/// The effective configuration as TOML. Nothing secret lives in the config itself (tokens are
/// only ever read from credential files), so nothing needs redacting yet; keep it that way.
pub fn to_toml(config: &Config) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        let u: Upstream = "127.0.0.1:18790".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 18790));
        let u: Upstream = "http://gateway:8080/".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("gateway", 8080));
        let u: Upstream = "[::1]:9".parse().unwrap();
        assert_eq!(u.authority(), "[::1]:9");
        assert!("ftp://x:1".parse::<Upstream>().is_err());
        let u: Upstream = "wss://gw.example:443".parse().unwrap();
        assert!(u.tls && u.to_string() == "https://gw.example:443");
        assert!(!"ws://h:1".parse::<Upstream>().unwrap().tls);
        assert!("host".parse::<Upstream>().unwrap_err().contains("`host`"));
        assert!("host:0".parse::<Upstream>().is_err());
        assert!("http://h:1/path".parse::<Upstream>().is_err());
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = to_toml(&Config::default());
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, Config::default());
    }
}
