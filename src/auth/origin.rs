//! The `Origin` policy for WebSocket upgrades (cross-site WebSocket hijacking).

use http::HeaderMap;

use crate::config::AuthConfig;

/// The Origin policy. No Origin (a non-browser client) is `allow_missing_origin`. With no
/// `allowed_origins`, only the request's own origin (Origin host == Host) and loopback
/// origins pass — what the OpenClaw gateway itself accepts.
pub fn origin_allowed(cfg: &AuthConfig, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return cfg.allow_missing_origin;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim().to_ascii_lowercase();
    let Some((scheme, authority)) = origin.split_once("://") else {
        // `null` (sandboxed frames, file://) and garbage.
        return cfg.allowed_origins.iter().any(|p| p == "*");
    };
    if cfg.allowed_origins.is_empty() {
        let host = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase);
        return host.as_deref() == Some(authority) || is_loopback_authority(authority);
    }
    cfg.allowed_origins.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        if pattern == "*" || pattern == origin {
            return true;
        }
        let Some((pscheme, prest)) = pattern.split_once("://") else {
            return false;
        };
        let Some(suffix) = prest.strip_prefix("*.") else {
            return false;
        };
        let (shost, sport) = split_port(suffix);
        let (ohost, oport) = split_port(authority);
        pscheme == scheme && sport == oport && ohost.ends_with(&format!(".{shost}"))
    })
}

/// `host[:port]` → (host, port); an IPv6 host keeps its brackets.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rsplit_once(':') {
        Some((h, p))
            if !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            (h, Some(p))
        }
        _ => (authority, None),
    }
}

fn is_loopback_authority(authority: &str) -> bool {
    let (host, _) = split_port(authority);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
