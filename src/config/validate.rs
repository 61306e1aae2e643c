//! Checks that span more than one value: run once at load, so what the rest of gatewarden
//! reads is known good.

use std::fmt;

use figment::Figment;

use super::error::{origin_of, ConfigError};
use super::{Config, CredentialFormat, Inject, TokenSource};

/// Checks that span more than one value's type, a section at a time: the first failure
/// is the error, naming the key and where its value came from.
pub(super) fn validate(config: &Config, fig: &Figment) -> Result<(), ConfigError> {
    let check = Check { fig };
    auth_names(config, &check)?;
    limits(config, &check)?;
    public_paths(config, &check)?;
    credentials(config, &check)?;
    first_message(config, &check)?;
    upstream_auth(config, &check)?;
    timeouts_and_admin(config, &check)?;
    tls(config, &check)?;
    http2(config, &check)?;
    log(config, &check)?;
    Ok(())
}

/// Renders a refused value: the key, the value, why, and the file or variable it came from.
struct Check<'a> {
    fig: &'a Figment,
}

impl Check<'_> {
    fn fail(&self, key: &str, value: &dyn fmt::Display, why: &str) -> Result<(), ConfigError> {
        // A key inside an array (`[[credentials]]`) has no metadata of its own: its
        // nearest parent's names the file.
        let mut parents = std::iter::successors(Some(key), |k| k.rsplit_once('.').map(|(p, _)| p));
        let origin = parents
            .find_map(|k| self.fig.find_metadata(k))
            .map(|md| {
                let path: Vec<String> = key.split('.').map(String::from).collect();
                format!(" (from {})", origin_of(md, &path))
            })
            .unwrap_or_default();
        Err(ConfigError(format!(
            "config error: key `{key}`: value `{value}` {why}{origin}"
        )))
    }
}

/// The names a token is looked for under, the token sources and allowed origins.
fn auth_names(config: &Config, check: &Check<'_>) -> Result<(), ConfigError> {
    let auth = &config.auth;
    if auth.query_param.is_empty() || auth.query_param.contains(['&', '=', '#', ' ']) {
        return check.fail(
            "auth.query_param",
            &auth.query_param,
            "is not a usable query parameter name",
        );
    }
    if auth.cookie.is_empty() || auth.cookie.contains([';', '=', ',', ' ']) {
        return check.fail("auth.cookie", &auth.cookie, "is not a usable cookie name");
    }
    if auth.subprotocol_prefix.is_empty() || auth.subprotocol_prefix.contains([',', ' ']) {
        return check.fail(
            "auth.subprotocol_prefix",
            &auth.subprotocol_prefix,
            "is not a usable subprotocol prefix",
        );
    }
    let mut seen = Vec::new();
    for s in auth.sources.iter().flatten() {
        if seen.contains(s) {
            return check.fail("auth.sources", s, "is listed twice");
        }
        seen.push(*s);
    }
    if auth.sources.as_ref().is_some_and(Vec::is_empty) {
        return check.fail(
            "auth.sources",
            &"[]",
            "leaves no way to present a token; list at least one source",
        );
    }
    for o in &auth.allowed_origins {
        if o != "*" && !o.contains("://") {
            return check.fail(
                "auth.allowed_origins",
                o,
                "is not an origin (scheme://host[:port], scheme://*.suffix, or *)",
            );
        }
    }
    Ok(())
}

/// Limits below which gatewarden could not serve a browser.
fn limits(config: &Config, check: &Check<'_>) -> Result<(), ConfigError> {
    let auth = &config.auth;
    if config.limits.max_header_bytes < 8192 {
        return check.fail(
            "limits.max_header_bytes",
            &config.limits.max_header_bytes,
            "must be at least 8192",
        );
    }
    if config.limits.max_request_line < 256 {
        return check.fail(
            "limits.max_request_line",
            &config.limits.max_request_line,
            "must be at least 256",
        );
    }
    if config.limits.max_headers == 0 {
        return check.fail("limits.max_headers", &0, "must be at least 1");
    }
    if auth.max_failures > 0 && auth.failure_window.0.is_zero() {
        return check.fail("auth.failure_window", &"0s", "must be greater than zero");
    }
    Ok(())
}

/// `auth.public_paths`, each checked as the upstream will normalize it.
fn public_paths(config: &Config, check: &Check<'_>) -> Result<(), ConfigError> {
    let auth = &config.auth;
    let lists = [
        ("auth.public_paths", &auth.public_paths),
        ("auth.control_ui_routes", &auth.control_ui_routes),
    ];
    for (key, list) in lists {
        normalized_paths(key, list, check)?;
    }
    Ok(())
}

/// Each entry of `key` a normalized absolute path: requests are matched after normalization.
fn normalized_paths(key: &str, list: &[String], check: &Check<'_>) -> Result<(), ConfigError> {
    for p in list {
        if !p.starts_with('/') {
            return check.fail(key, p, "must start with '/'");
        }
        // Requests are matched after normalization, so an entry must be normalized too.
        match crate::path::normalize(p) {
            Ok(n) if n == p.as_str() => {}
            Ok(n) => return check.fail(key, p, &format!("is not a normalized path (write `{n}`)")),
            Err(why) => return check.fail(key, p, &format!("is refused: {why}")),
        }
    }
    Ok(())
}

/// The credential files and their names.
/// The `jwks` keys only apply to `format = "jwks"`, and `algorithms` only narrows the
/// allowed four.
fn jwks_keys(c: &super::CredentialSource, check: &Check<'_>) -> Result<(), ConfigError> {
    let set = [
        ("credentials.issuer", c.issuer.is_some()),
        ("credentials.audience", c.audience.is_some()),
        ("credentials.name_claim", c.name_claim.is_some()),
        ("credentials.required_claims", c.required_claims.is_some()),
        ("credentials.algorithms", c.algorithms.is_some()),
        ("credentials.leeway", c.leeway.is_some()),
    ];
    if c.format != CredentialFormat::Jwks {
        if let Some((key, _)) = set.iter().find(|(_, s)| *s) {
            return check.fail(key, &c.location(), "only applies to format = \"jwks\"");
        }
        return Ok(());
    }
    for a in c.algorithms.iter().flatten() {
        if !["RS256", "PS256", "ES256", "EdDSA"].contains(&a.as_str()) {
            return check.fail(
                "credentials.algorithms",
                a,
                "is not allowed (allowed: RS256, PS256, ES256, EdDSA; never none or HS*)",
            );
        }
    }
    if c.algorithms.as_ref().is_some_and(Vec::is_empty) {
        return check.fail("credentials.algorithms", &"[]", "is empty");
    }
    Ok(())
}

/// A source reads a file (`path`), or, for `jwks`, fetches its keys from `jwks_url` or
/// the `issuer`'s discovery document: one of them, over TLS unless to loopback.
fn remote_keys(c: &super::CredentialSource, check: &Check<'_>) -> Result<(), ConfigError> {
    let has_path = !c.path.as_os_str().is_empty();
    if let Some(url) = &c.jwks_url {
        if c.format != CredentialFormat::Jwks {
            return check.fail(
                "credentials.jwks_url",
                url,
                "only applies to format = \"jwks\"",
            );
        }
        if has_path {
            return check.fail("credentials.jwks_url", url, "and `path` exclude each other");
        }
        if let Err(why) = fetchable_url(url) {
            return check.fail("credentials.jwks_url", url, why);
        }
    }
    if !has_path && c.format == CredentialFormat::Jwks && c.jwks_url.is_none() {
        let Some(issuer) = &c.issuer else {
            return check.fail(
                "credentials.path",
                &"",
                "is empty (a jwks source needs `path`, `jwks_url` or `issuer`)",
            );
        };
        if let Err(why) = fetchable_url(issuer) {
            return check.fail("credentials.issuer", issuer, why);
        }
    }
    if !has_path && c.format != CredentialFormat::Jwks {
        return check.fail("credentials.path", &"", "is empty");
    }
    Ok(())
}

/// A URL gatewarden may fetch keys from: `https://`, or `http://` to a loopback host (a
/// key set over plain HTTP elsewhere could be swapped by anyone on the path).
pub(crate) fn fetchable_url(url: &str) -> Result<http::Uri, &'static str> {
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL")?;
    let host = uri.host().ok_or("is not a URL with a host")?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare == "localhost"
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(uri)
            } else {
                Err("must be https:// (http:// only to a loopback host)")
            }
        }
        _ => Err("must be an https:// URL"),
    }
}

fn credentials(config: &Config, check: &Check<'_>) -> Result<(), ConfigError> {
    for c in &config.credentials.sources {
        remote_keys(c, check)?;
        if let Some(k) = &c.key {
            if c.format != CredentialFormat::Dotenv {
                return check.fail("credentials.key", k, "only applies to format = \"dotenv\"");
            }
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return check.fail("credentials.key", k, "is not an environment variable name");
            }
        }
        jwks_keys(c, check)?;
        if let Some(p) = &c.pointer {
            if c.format != CredentialFormat::Json5 {
                return check.fail(
                    "credentials.pointer",
                    p,
                    "only applies to format = \"json5\"",
                );
            }
            if !p.is_empty() && !p.starts_with('/') {
                return check.fail(
                    "credentials.pointer",
                    p,
                    "is not a JSON pointer (must start with '/')",
                );
            }
        }
    }
    if config.credentials.jwks_refetch_min.0 < std::time::Duration::from_secs(1) {
        return check.fail(
            "credentials.jwks_refetch_min",
            &humantime::format_duration(config.credentials.jwks_refetch_min.0),
            "must be at least 1s (it bounds how often an issuer is asked)",
        );
    }
    let max = config.credentials.max_file_bytes;
    if !(64..=64 << 20).contains(&max) {
        return check.fail(
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
            return check.fail("credentials.name", &n, "names two credentials");
        }
        names.push(n);
    }
    Ok(())
}

/// The in-band token in the first WebSocket message.
fn first_message(config: &Config, check: &Check<'_>) -> Result<(), ConfigError> {
    let auth = &config.auth;
    let p = &auth.first_message_pointer;
    if !p.is_empty() && !p.starts_with('/') {
        return check.fail(
            "auth.first_message_pointer",
            p,
            "is not a JSON pointer (must start with '/')",
        );
    }
    if auth.first_message_max_bytes == 0 || auth.first_message_max_bytes > 16 << 20 {
        return check.fail(
            "auth.first_message_max_bytes",
            &auth.first_message_max_bytes,
            "must be between 1 and 16777216",
        );
    }
    if auth.first_message_timeout.0.is_zero() {
        return check.fail(
            "auth.first_message_timeout",
            &"0s",
            "must be greater than zero",
        );
    }
    Ok(())
}

/// The gateway's own token, presented by gatewarden.
fn upstream_auth(config: &Config, check: &Check<'_>) -> Result<(), ConfigError> {
    let ua = &config.upstream_auth;
    if ua.inject == Inject::TrustedProxy {
        if http::HeaderName::from_bytes(ua.user_header.as_bytes()).is_err() {
            return check.fail(
                "upstream_auth.user_header",
                &ua.user_header,
                "is not a valid header name",
            );
        }
        if let Some(n) = &ua.credential {
            return check.fail(
                "upstream_auth.credential",
                n,
                "is not used with inject = \"trusted_proxy\": the gateway takes the user from the upgrade, and a gateway in trusted-proxy mode has no token (remove the key)",
            );
        }
    }
    if ua.inject.needs_credential() {
        match &ua.credential {
            None => {
                return check.fail(
                    "upstream_auth.credential",
                    &"",
                    "is required when upstream_auth.inject is set: name the gateway's credential",
                )
            }
            // With no credentials configured the discovered OpenClaw file is named `openclaw`.
            Some(n)
                if !config.credentials.sources.is_empty()
                    && !config
                        .credentials
                        .sources
                        .iter()
                        .any(|c| c.name.as_deref() == Some(n.as_str())) =>
            {
                return check.fail(
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
            return check.fail(
                "upstream_auth.header",
                &ua.header,
                "is not a valid header name",
            );
        }
    }
    Ok(())
}

/// Timeouts that must be positive, and the admin listener's address.
fn timeouts_and_admin(config: &Config, check: &Check<'_>) -> Result<(), ConfigError> {
    if config.timeouts.header_read.0.is_zero() {
        return check.fail("timeouts.header_read", &"0s", "must be greater than zero");
    }
    if config.timeouts.upstream_connect.0.is_zero() {
        return check.fail(
            "timeouts.upstream_connect",
            &"0s",
            "must be greater than zero",
        );
    }
    if config.timeouts.upstream_response.0.is_zero() {
        return check.fail(
            "timeouts.upstream_response",
            &"0s",
            "must be greater than zero",
        );
    }
    if !config.admin.listen.is_empty() && config.admin.addr().is_none() {
        return check.fail(
            "admin.listen",
            &config.admin.listen,
            "is not ip:port (such as 127.0.0.1:9187); empty disables the admin listener",
        );
    }
    Ok(())
}

/// TLS toward clients and toward the upstream.
fn tls(config: &Config, check: &Check<'_>) -> Result<(), ConfigError> {
    let auth = &config.auth;
    let client_cert = auth
        .sources
        .iter()
        .flatten()
        .any(|s| *s == TokenSource::ClientCert);
    let tls = &config.tls;
    match (&tls.cert, &tls.key) {
        (Some(_), None) => return check.fail("tls.key", &"", "is required when tls.cert is set"),
        (None, Some(_)) => return check.fail("tls.cert", &"", "is required when tls.key is set"),
        _ => {}
    }
    if let (Some(ca), None) = (&tls.client_ca, &tls.cert) {
        return check.fail(
            "tls.client_ca",
            &ca.display(),
            "needs tls.cert and tls.key (client certificates are a TLS feature)",
        );
    }
    if client_cert && tls.client_ca.is_none() {
        return check.fail(
            "auth.sources",
            &"client_cert",
            "needs tls.client_ca to verify client certificates against",
        );
    }
    if tls.handshake_timeout.0.is_zero() {
        return check.fail("tls.handshake_timeout", &"0s", "must be greater than zero");
    }
    alpn(&tls.alpn, check)?;
    if (config.upstream_tls.ca.is_some() || config.upstream_tls.insecure) && !config.upstream.tls {
        return check.fail(
            "upstream_tls",
            &config.upstream,
            "applies only to an https:// or wss:// upstream",
        );
    }
    Ok(())
}

/// `tls.alpn`: known protocols, each once.
fn alpn(alpn: &[String], check: &Check<'_>) -> Result<(), ConfigError> {
    let list = || format!("{alpn:?}");
    if alpn.is_empty() {
        return check.fail(
            "tls.alpn",
            &list(),
            "must name at least one of \"h2\", \"http/1.1\"",
        );
    }
    for (i, p) in alpn.iter().enumerate() {
        if p != "h2" && p != "http/1.1" {
            return check.fail(
                "tls.alpn",
                &list(),
                &format!("names {p:?}; gatewarden speaks \"h2\" and \"http/1.1\""),
            );
        }
        if alpn[..i].contains(p) {
            return check.fail("tls.alpn", &list(), &format!("names {p:?} twice"));
        }
    }
    Ok(())
}

/// HTTP/2's limits: within what RFC 9113 allows, the connection's window no smaller than
/// one stream's.
fn http2(config: &Config, check: &Check<'_>) -> Result<(), ConfigError> {
    let h2 = &config.http2;
    if h2.max_concurrent_streams == 0 {
        return check.fail("http2.max_concurrent_streams", &0, "must be at least 1");
    }
    // RFC 9113 §6.9.1: windows run from 65,535 (the protocol's default) to 2^31 - 1.
    const MAX_WINDOW: u32 = (1 << 31) - 1;
    for (key, v) in [
        ("http2.stream_window_bytes", h2.stream_window_bytes),
        ("http2.connection_window_bytes", h2.connection_window_bytes),
    ] {
        if !(65_535..=MAX_WINDOW).contains(&v) {
            return check.fail(key, &v, "must be from 65535 to 2147483647");
        }
    }
    if h2.connection_window_bytes < h2.stream_window_bytes {
        return check.fail(
            "http2.connection_window_bytes",
            &h2.connection_window_bytes,
            "must be at least http2.stream_window_bytes (or one stream can stall the others)",
        );
    }
    Ok(())
}

/// The log filter.
fn log(config: &Config, check: &Check<'_>) -> Result<(), ConfigError> {
    if let Err(e) = config.log.level.parse::<tracing_subscriber::EnvFilter>() {
        return check.fail(
            "log.level",
            &config.log.level,
            &format!("is not a log filter: {e}"),
        );
    }
    Ok(())
}
