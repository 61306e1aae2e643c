//! The token sources, one entry each in [`RULES`]: how a token is found in a request, and
//! what the request forwarded upstream loses of it when gatewarden replaces the client's
//! token with the gateway's or names the client instead ([`Strip`]). Both halves of a
//! source live here, so a source read one way is never stripped another.

use http::header::{AUTHORIZATION, COOKIE, SEC_WEBSOCKET_PROTOCOL};
use http::request::Parts;
use http::HeaderMap;
use percent_encoding::percent_decode_str;

use crate::config::{AuthConfig, TokenSource};

/// What the forwarded request loses of the source that carried the client's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strip {
    /// The `Authorization` header goes.
    Header,
    /// The `Cookie` header is rewritten without the token's cookie ([`cookies_without`]).
    Cookie,
    /// The target loses the token's parameter ([`query_without`]).
    Query,
    /// Token entries never reach the upstream, replaced or not
    /// ([`strip_token_subprotocols`], on every upgrade).
    Subprotocol,
    /// Nothing in the head: the first frame is rewritten by `first_message`, a client
    /// certificate ends at the TLS handshake.
    Nothing,
}

/// The token a source carries in a head, and whether a different one follows.
type Extract = fn(&AuthConfig, &Parts, bool) -> Option<(Vec<u8>, bool)>;

/// A token source: its extraction (the token, and whether a different one follows in the
/// same source) and its stripping.
pub(crate) struct Rule {
    pub(crate) source: TokenSource,
    extract: Extract,
    pub(crate) strip: Strip,
}

/// Every source read from the request head (`first_message` and `client_cert` find
/// nothing here: the first frame and the TLS handshake are read elsewhere).
pub(crate) const RULES: [Rule; 6] = [
    Rule {
        source: TokenSource::Header,
        extract: |_, parts, _| single(bearers(&parts.headers)),
        strip: Strip::Header,
    },
    Rule {
        source: TokenSource::Query,
        extract: |cfg, parts, _| {
            single(
                parts
                    .uri
                    .query()
                    .into_iter()
                    .flat_map(|q| query_values(q, &cfg.query_param)),
            )
        },
        strip: Strip::Query,
    },
    Rule {
        source: TokenSource::Cookie,
        extract: |cfg, parts, _| single(cookie_values(&parts.headers, &cfg.cookie)),
        strip: Strip::Cookie,
    },
    Rule {
        source: TokenSource::Subprotocol,
        // Only upgrades have subprotocols.
        extract: |cfg, parts, websocket| {
            websocket
                .then(|| single(subprotocol_tokens(&parts.headers, &cfg.subprotocol_prefix)))
                .flatten()
        },
        strip: Strip::Subprotocol,
    },
    Rule {
        source: TokenSource::FirstMessage,
        extract: |_, _, _| None,
        strip: Strip::Nothing,
    },
    Rule {
        source: TokenSource::ClientCert,
        extract: |_, _, _| None,
        strip: Strip::Nothing,
    },
];

/// The rule of `source`.
pub(crate) fn rule(source: TokenSource) -> &'static Rule {
    RULES
        .iter()
        .find(|r| r.source == source)
        .expect("every source has a rule")
}

impl Rule {
    /// The token this source carries in `parts`, and whether it carries another too.
    pub(crate) fn extract(
        &self,
        cfg: &AuthConfig,
        parts: &Parts,
        websocket: bool,
    ) -> Option<(Vec<u8>, bool)> {
        (self.extract)(cfg, parts, websocket)
    }
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
