//! Finding the token a client presents and deciding whether it is valid.
//!
//! Reason names are the product's log vocabulary (the OpenClaw gateway's own `authReason`
//! values), so `grep reason=token_mismatch` works the same in front of and behind gatewarden.

use std::fmt;

use http::header::{AUTHORIZATION, COOKIE, SEC_WEBSOCKET_PROTOCOL};
use http::request::Parts;
use http::HeaderMap;
use percent_encoding::percent_decode_str;

use crate::config::{AuthConfig, TokenSource};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::tls::ClientCert;

pub use crate::reason::Reason;

use crate::credentials::{Credential, Credentials, Fingerprint, Presented, Verdict};

/// A token found in a request, with where it was found.
pub struct Found {
    pub token: Vec<u8>,
    pub source: TokenSource,
    /// For the `client_cert` source: the verified certificate instead of a token.
    pub cert: Option<ClientCert>,
    /// The same source also carried a different token.
    pub ambiguous: bool,
}

impl fmt::Debug for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Found")
            .field("source", &self.source)
            .field("fingerprint", &Fingerprint::of(&self.token))
            .finish()
    }
}

/// The outcome of checking a token.
#[derive(Debug)]
pub enum Decision {
    Allow {
        source: TokenSource,
        credential: Credential,
        /// Accepted only because of the grace period: (generation, time left).
        grace: Option<(u64, Duration)>,
        /// For re-checking a live connection after a reload.
        presented: Presented,
    },
    Deny {
        reason: Reason,
        source: Option<TokenSource>,
        presented: Option<Fingerprint>,
        /// For `token_stale`: the last generation in which the token was valid.
        generation: Option<u64>,
        /// Tells this token from another (`Presented::key`; 0 without a token).
        key: u64,
    },
}

/// Looks for a token in `sources` (the effective ones, in order) that are read at upgrade
/// time. `websocket` enables the subprotocol source, which only exists on upgrades; `cert`
/// is the connection's verified client certificate (mTLS), for the `client_cert` source.
pub fn extract(
    cfg: &AuthConfig,
    sources: &[TokenSource],
    parts: &Parts,
    websocket: bool,
    cert: Option<&ClientCert>,
) -> Option<Found> {
    sources.iter().find_map(|&source| {
        if source == TokenSource::ClientCert {
            return cert.map(|c| Found {
                token: Vec::new(),
                source,
                cert: Some(c.clone()),
                ambiguous: false,
            });
        }
        let (token, ambiguous) = match source {
            TokenSource::Header => single(bearers(&parts.headers)),
            TokenSource::Query => single(
                parts
                    .uri
                    .query()
                    .into_iter()
                    .flat_map(|q| query_values(q, &cfg.query_param)),
            ),
            TokenSource::Cookie => single(cookie_values(&parts.headers, &cfg.cookie)),
            TokenSource::Subprotocol if websocket => {
                single(subprotocol_tokens(&parts.headers, &cfg.subprotocol_prefix))
            }
            TokenSource::Subprotocol | TokenSource::FirstMessage | TokenSource::ClientCert => None,
        }?;
        Some(Found {
            token,
            source,
            cert: None,
            ambiguous,
        })
    })
}

/// Decides on an extracted token (or its absence).
pub fn decide(found: Option<&Found>, creds: &Credentials) -> Decision {
    if creds.unloaded().is_some() && !matches!(found, Some(Found { cert: Some(_), .. })) {
        return Decision::Deny {
            reason: Reason::CredentialUnavailable,
            source: found.map(|f| f.source),
            presented: found.map(|f| Fingerprint::of(&f.token)),
            generation: None,
            key: 0,
        };
    }
    match found {
        // rustls verified the certificate against tls.client_ca during the handshake.
        Some(Found {
            cert: Some(cert), ..
        }) => {
            let digest = crate::credentials::digest(&cert.der);
            let mut credential =
                Credential::from_digest(digest, Arc::from(Path::new("tls.client_ca")));
            credential.client = Some(cert.name.clone());
            Decision::Allow {
                source: TokenSource::ClientCert,
                credential,
                grace: None,
                presented: Presented::new(&cert.der),
            }
        }
        Some(f) if f.ambiguous => Decision::Deny {
            reason: Reason::TokenAmbiguous,
            source: Some(f.source),
            presented: Some(Fingerprint::of(&f.token)),
            generation: None,
            key: Presented::new(&f.token).key(),
        },
        Some(f) => judge(&f.token, f.source, creds),
        None => Decision::Deny {
            reason: Reason::TokenMissing,
            source: None,
            presented: None,
            generation: None,
            key: 0,
        },
    }
}

/// Judges one presented token against a snapshot: current, within grace, stale or unknown.
pub fn judge(token: &[u8], source: TokenSource, creds: &Credentials) -> Decision {
    judge_presented(Presented::new(token), source, creds)
}

/// [`judge`] for a token already hashed (the first-message path hashes it for its log).
pub fn judge_presented(presented: Presented, source: TokenSource, creds: &Credentials) -> Decision {
    let deny = |reason, generation| Decision::Deny {
        reason,
        source: Some(source),
        presented: Some(presented.fingerprint),
        generation,
        key: presented.key(),
    };
    if creds.unloaded().is_some() {
        return deny(Reason::CredentialUnavailable, None);
    }
    match creds.verify(&presented, Instant::now()) {
        Verdict::Current(c) => Decision::Allow {
            source,
            credential: c.clone(),
            grace: None,
            presented,
        },
        Verdict::Grace {
            credential,
            generation,
            left,
        } => Decision::Allow {
            source,
            credential: credential.clone(),
            grace: Some((generation, left)),
            presented,
        },
        Verdict::Stale { generation } => deny(Reason::TokenStale, Some(generation)),
        Verdict::Unknown => deny(Reason::TokenMismatch, None),
    }
}

/// Whether a live connection's token is still good (current or within grace).
pub fn still_valid(presented: &Presented, creds: &Credentials) -> bool {
    matches!(
        creds.verify(presented, Instant::now()),
        Verdict::Current(_) | Verdict::Grace { .. }
    )
}

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

/// The first value, and whether a different one follows.
fn single(mut values: impl Iterator<Item = Vec<u8>>) -> Option<(Vec<u8>, bool)> {
    let first = values.next()?;
    let ambiguous = values.any(|v| v != first);
    Some((first, ambiguous))
}

/// `Authorization: Bearer <t>`; other schemes are not ours and are left alone.
fn bearers(headers: &HeaderMap) -> impl Iterator<Item = Vec<u8>> + '_ {
    headers.get_all(AUTHORIZATION).iter().filter_map(|v| {
        let v = v.as_bytes();
        let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return None;
        }
        let token = rest.trim_ascii();
        (!token.is_empty()).then(|| token.to_vec())
    })
}

/// The percent-decoded value of `name` in a query string.
pub fn query_value(query: &str, name: &str) -> Option<Vec<u8>> {
    query_values(query, name).next()
}

/// Every non-empty percent-decoded value of `name`, in order.
fn query_values<'a>(query: &'a str, name: &'a str) -> impl Iterator<Item = Vec<u8>> + 'a {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decode_component(k) != name.as_bytes() {
            return None;
        }
        let v = decode_component(v);
        (!v.is_empty()).then_some(v)
    })
}

fn decode_component(s: &str) -> Vec<u8> {
    let plus_as_space = s.replace('+', " ");
    percent_decode_str(&plus_as_space).collect()
}

fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = Vec<u8>> + 'a {
    headers.get_all(COOKIE).iter().flat_map(move |v| {
        v.as_bytes().split(|&b| b == b';').filter_map(move |pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (k, v) = (&pair[..eq], &pair[eq + 1..]);
            if k != name.as_bytes() {
                return None;
            }
            let v = v
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v);
            (!v.is_empty()).then(|| v.to_vec())
        })
    })
}

/// The `Cookie` header without the cookie `name` (`None` if nothing else remains).
pub fn cookies_without(headers: &HeaderMap, name: &str) -> Option<http::HeaderValue> {
    let kept: Vec<&[u8]> = headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .map(|p| p.trim_ascii())
        .filter(|p| !p.is_empty() && p.split(|&b| b == b'=').next() != Some(name.as_bytes()))
        .collect();
    if kept.is_empty() {
        return None;
    }
    http::HeaderValue::from_bytes(&kept.join(&b"; "[..])).ok()
}

/// Every entry of every `Sec-WebSocket-Protocol` header, trimmed.
pub fn subprotocols(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|p| p.trim_ascii())
        .filter(|p| !p.is_empty())
}

fn subprotocol_tokens<'a>(
    headers: &'a HeaderMap,
    prefix: &'a str,
) -> impl Iterator<Item = Vec<u8>> + 'a {
    subprotocols(headers).filter_map(move |p| {
        let t = p.strip_prefix(prefix.as_bytes())?;
        (!t.is_empty()).then(|| t.to_vec())
    })
}

/// The subprotocol list without the token-carrying entries, or `None` if nothing remains.
pub fn strip_token_subprotocols(headers: &HeaderMap, prefix: &str) -> Option<Vec<u8>> {
    let kept: Vec<&[u8]> = subprotocols(headers)
        .filter(|p| !p.starts_with(prefix.as_bytes()))
        .collect();
    (!kept.is_empty()).then(|| kept.join(&b", "[..]))
}

/// The query without the token parameter (for the `?token=` → cookie redirect).
pub fn query_without(query: &str, param: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !pair.is_empty() && decode_component(k) != param.as_bytes()
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    /// What no credential makes OpenClaw's: the four upgrade-time sources.
    fn generic() -> Vec<TokenSource> {
        AuthConfig::default().effective_sources(&[]).list
    }

    #[test]
    fn sources_in_configured_order() {
        let cfg = AuthConfig::default();
        let p = parts(
            "/ws?token=q",
            &[
                ("authorization", "Bearer h"),
                ("cookie", "a=1; gatewarden_token=c"),
            ],
        );
        let f = extract(&cfg, &generic(), &p, true, None).unwrap();
        assert_eq!(
            (f.token.as_slice(), f.source),
            (&b"h"[..], TokenSource::Header)
        );
        let f = extract(
            &cfg,
            &[TokenSource::Cookie, TokenSource::Query],
            &p,
            true,
            None,
        )
        .unwrap();
        assert_eq!(
            (f.token.as_slice(), f.source),
            (&b"c"[..], TokenSource::Cookie)
        );
        assert!(extract(&cfg, &[TokenSource::Subprotocol], &p, true, None).is_none());
    }

    /// `first_message` by default only in front of OpenClaw: with any other credential a
    /// tokenless upgrade would be connected upstream and shown what the upstream says first.
    #[test]
    fn first_message_is_a_default_only_for_openclaw_configs() {
        use crate::config::{CredentialFormat, CredentialSource};
        let cfg = AuthConfig::default();
        let plain = CredentialSource::plain("/run/token");
        let lines = CredentialSource {
            format: CredentialFormat::Lines,
            ..CredentialSource::plain("/run/clients")
        };
        let openclaw = CredentialSource {
            format: CredentialFormat::Json5,
            ..CredentialSource::plain("/home/node/.openclaw/openclaw.json")
        };
        let other_json = CredentialSource {
            format: CredentialFormat::Json5,
            pointer: Some("/secrets/token".into()),
            key: None,
            ..CredentialSource::plain("/etc/app.json")
        };
        for creds in [
            vec![],
            vec![plain.clone()],
            vec![lines.clone(), other_json.clone()],
        ] {
            let e = cfg.effective_sources(&creds);
            assert!(!e.list.contains(&TokenSource::FirstMessage), "{e:?}");
            assert!(e.why.contains("first_message is off"), "{e:?}");
        }
        let e = cfg.effective_sources(&[plain, openclaw]);
        assert_eq!(e.list.last(), Some(&TokenSource::FirstMessage));
        assert!(e.why.contains("openclaw.json"), "{e:?}");
        // Configured sources are taken as they are.
        let set = AuthConfig {
            sources: Some(vec![TokenSource::FirstMessage]),
            ..AuthConfig::default()
        };
        assert_eq!(set.effective_sources(&[]).list, [TokenSource::FirstMessage]);
    }

    #[test]
    fn query_is_percent_decoded() {
        assert_eq!(
            query_value("a=1&token=a%2Bb%20c", "token").unwrap(),
            b"a+b c"
        );
        assert_eq!(query_value("token=", "token"), None);
        assert_eq!(query_value("tokens=x", "token"), None);
    }

    #[test]
    fn basic_auth_is_not_a_token() {
        let p = parts("/", &[("authorization", "Basic dXNlcjpwYXNz")]);
        assert!(extract(&AuthConfig::default(), &generic(), &p, false, None).is_none());
    }

    #[test]
    fn subprotocol_entry_found_and_stripped() {
        let p = parts(
            "/",
            &[("sec-websocket-protocol", "chat, bearer.s3cret,  v2")],
        );
        let cfg = AuthConfig::default();
        assert_eq!(
            extract(&cfg, &generic(), &p, true, None).unwrap().token,
            b"s3cret"
        );
        assert!(extract(&cfg, &generic(), &p, false, None).is_none());
        assert_eq!(
            strip_token_subprotocols(&p.headers, "bearer.").unwrap(),
            b"chat, v2"
        );
        let only = parts("/", &[("sec-websocket-protocol", "bearer.x")]);
        assert!(strip_token_subprotocols(&only.headers, "bearer.").is_none());
    }

    #[test]
    fn origin_policy() {
        let mut cfg = AuthConfig::default();
        let h = |origin: Option<&str>, host: &str| {
            let mut b = http::Request::builder().uri("/").header("host", host);
            if let Some(o) = origin {
                b = b.header("origin", o);
            }
            b.body(()).unwrap().into_parts().0.headers
        };
        // Default: none, same origin, loopback.
        assert!(origin_allowed(&cfg, &h(None, "gw:18789")));
        assert!(origin_allowed(
            &cfg,
            &h(Some("http://gw:18789"), "gw:18789")
        ));
        assert!(origin_allowed(
            &cfg,
            &h(Some("http://127.0.0.1:5173"), "gw:18789")
        ));
        assert!(origin_allowed(&cfg, &h(Some("http://localhost"), "gw")));
        assert!(!origin_allowed(
            &cfg,
            &h(Some("https://evil.example"), "gw:18789")
        ));
        assert!(!origin_allowed(&cfg, &h(Some("null"), "gw")));
        cfg.allow_missing_origin = false;
        assert!(!origin_allowed(&cfg, &h(None, "gw")));
        // Configured: exact and *.suffix.
        cfg.allowed_origins = vec![
            "https://app.example.com".into(),
            "https://*.corp.example".into(),
        ];
        assert!(origin_allowed(
            &cfg,
            &h(Some("https://app.example.com"), "x")
        ));
        assert!(origin_allowed(
            &cfg,
            &h(Some("https://a.b.corp.example"), "x")
        ));
        assert!(!origin_allowed(&cfg, &h(Some("https://corp.example"), "x")));
        assert!(
            !origin_allowed(&cfg, &h(Some("http://a.corp.example"), "x")),
            "scheme matters"
        );
        assert!(!origin_allowed(
            &cfg,
            &h(Some("https://evilcorp.example"), "x")
        ));
        assert!(
            !origin_allowed(&cfg, &h(Some("https://a.corp.example:8443"), "x")),
            "port matters"
        );
    }

    #[test]
    fn query_token_removal() {
        assert_eq!(query_without("x=1&token=secret&y=2", "token"), "x=1&y=2");
        assert_eq!(query_without("token=secret", "token"), "");
    }
}
