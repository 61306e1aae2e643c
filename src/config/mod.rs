//! Configuration: built-in defaults < TOML file < `GATEWARDEN_*` environment < command-line flags.
//!
//! Every error names the key, the offending value and the place it came from, because the
//! usual way a proxy is misconfigured is a value the operator did not know was set somewhere.

use serde::{Deserialize, Serialize};

mod auth;
mod credentials;
mod error;
mod load;
mod sections;
mod validate;
mod values;

pub use auth::*;
pub use credentials::*;
pub use error::ConfigError;
pub use load::*;
pub use sections::*;
pub(crate) use validate::fetchable_url;
pub use values::*;

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
    /// HTTP/2 toward clients (TLS listeners that offer `h2`).
    pub http2: Http2Config,
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
            http2: Http2Config::default(),
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
