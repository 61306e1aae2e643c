//! What the upstream is told: one header policy for both doors. An upgrade's head is
//! written from it straight into the bytes sent upstream; a plain request's header map is
//! rebuilt from it for hyper. Responses lose their hop-by-hop headers here too.

use std::borrow::Cow;
use std::net::SocketAddr;

use ::http::header::{
    GetAll, HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, COOKIE, HOST, ORIGIN,
    SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use ::http::{HeaderMap, Uri};

use crate::auth;
use crate::config::{DeviceTokens, TokenSource, UpstreamOrigin};
use crate::credentials::{Credentials, Secret};

use super::Proxy;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Caps a connection's scopes at the OpenClaw gateway, in any auth mode.
const X_OPENCLAW_SCOPES: HeaderName = HeaderName::from_static("x-openclaw-scopes");

/// Who the client is, for a gateway in `trusted-proxy` mode (`upstream_auth.inject =
/// "trusted_proxy"`): set on the upgrade, every client-sent copy of these headers removed.
pub(crate) struct Identity<'a> {
    /// The credential's name, or the client certificate's subject.
    pub name: &'a str,
    /// The credential's `scopes`, as `x-openclaw-scopes`.
    pub scopes: Option<String>,
}

/// What a proxy says about the client and the original request: believed, and passed on,
/// only from `trusted_proxies`. From anyone else they are spoofing: the OpenClaw gateway
/// treats any of them as proxy-shaped traffic (403 `proxy_attribution_required` from an
/// unlisted proxy), and `X-Forwarded-Host` feeds host-based origin checks.
pub(crate) fn is_forwarded_family(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("x-forwarded-")
        || n.starts_with("x-original-")
        || matches!(
            n,
            "forwarded" | "x-real-ip" | "x-client-ip" | "true-client-ip" | "x-cluster-client-ip"
        )
}

/// RFC 9110 §7.6.1: `Connection` and every header it names (`listed`), the well-known
/// hop-by-hop ones and any `Proxy-*` header.
fn is_hop_by_hop(name: &HeaderName, listed: &GetAll<'_, HeaderValue>) -> bool {
    matches!(
        name.as_str(),
        "connection" | "te" | "trailer" | "transfer-encoding" | "upgrade" | "keep-alive"
    ) || name.as_str().starts_with("proxy-")
        || listed
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| {
                t.trim_ascii()
                    .eq_ignore_ascii_case(name.as_str().as_bytes())
            })
}

/// Removes hop-by-hop headers from a response (RFC 9110 §7.6.1), as [`is_hop_by_hop`] names
/// them for a request.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed = h.get_all(CONNECTION);
    let hop: Vec<HeaderName> = h
        .keys()
        .filter(|name| is_hop_by_hop(name, &listed))
        .cloned()
        .collect();
    for name in hop {
        h.remove(name);
    }
}

/// One request on its way upstream: which of the client's headers go, and what is added.
pub(crate) struct Forward<'a> {
    proxy: &'a Proxy,
    headers: &'a HeaderMap,
    remote: SocketAddr,
    /// A WebSocket upgrade (the subprotocol list, extensions, `Origin` and the upgrade's
    /// own headers are its rules); else a plain request.
    upgrade: bool,
    /// `upstream_auth.inject = "header"`: the header and the gateway's token it carries.
    inject: Option<(&'a HeaderName, &'a Secret)>,
    /// Where the client's own token came from, when it is replaced by the gateway's.
    replaced: Option<auth::Strip>,
    /// `upstream_auth.inject = "trusted_proxy"`: the client named to the gateway.
    identity: Option<Identity<'a>>,
    /// Where the client's token came from.
    found: Option<TokenSource>,
}

impl<'a> Forward<'a> {
    /// `found` is the client's token; `inject` the gateway's, when it is presented in a
    /// header (the client's own is then removed from where it came).
    pub(crate) fn new(
        proxy: &'a Proxy,
        headers: &'a HeaderMap,
        remote: SocketAddr,
        upgrade: bool,
        found: Option<&auth::Found>,
        inject: Option<&'a Secret>,
    ) -> Forward<'a> {
        let inject = inject
            .zip(proxy.inject_header.as_ref())
            .map(|(secret, name)| (name, secret));
        Forward {
            proxy,
            headers,
            remote,
            upgrade,
            replaced: inject.and(found.map(|f| auth::rule(f.source).strip)),
            inject,
            identity: None,
            found: found.map(|f| f.source),
        }
    }

    /// The client named to a gateway in trusted-proxy mode.
    /// The client's own token goes too: the gateway is told who, not with what.
    pub(crate) fn with_identity(mut self, identity: Option<Identity<'a>>) -> Forward<'a> {
        if identity.is_some() {
            self.replaced = self.found.map(|s| auth::rule(s).strip);
        }
        self.identity = identity;
        self
    }

    /// The request target as forwarded: the token's query parameter goes when the
    /// gateway's token replaces it.
    pub(crate) fn target<'u>(&self, uri: &'u Uri) -> Cow<'u, str> {
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        if self.replaced != Some(auth::Strip::Query) {
            return Cow::Borrowed(pq);
        }
        let query = auth::query_without(uri.query().unwrap_or(""), &self.proxy.auth.query_param);
        let path = uri.path();
        Cow::Owned(if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        })
    }

    /// Every header the upstream gets, in order: the client's that stay, then gatewarden's.
    pub(crate) fn each(&self, mut put: impl FnMut(&HeaderName, &[u8])) {
        let (p, h) = (self.proxy, self.headers);
        let trusted = p.is_trusted(self.remote.ip().to_canonical());
        // Looked up once, not once per header.
        let listed = h.get_all(CONNECTION);
        let inject_name = self.inject.map(|(n, _)| n);
        // Naming the client is gatewarden's alone: no client-sent copy passes, not even
        // from a trusted proxy.
        let naming = p.user_header.is_some();
        let user_header = p.user_header.as_ref();
        for (name, value) in h {
            let dropped = is_hop_by_hop(name, &listed)
                || (!trusted && is_forwarded_family(name))
                || match name.as_str() {
                    // Replaced below.
                    "x-forwarded-for" | "x-real-ip" | "x-forwarded-proto" => {
                        p.forwarded_headers || self.identity.is_some()
                    }
                    "x-forwarded-host" | "x-openclaw-scopes" => naming,
                    "sec-websocket-protocol" => self.upgrade,
                    // The first frame may be rewritten: an extension that transforms
                    // payloads (permessage-deflate with context takeover) would make the
                    // client's later frames refer to bytes the gateway never saw.
                    "sec-websocket-extensions" => {
                        self.upgrade
                            && (p.upstream_auth.inject.rewrites_first_frame()
                                || p.auth.device_tokens == DeviceTokens::Gateway)
                    }
                    "origin" => self.upgrade && p.upstream_origin == UpstreamOrigin::Rewrite,
                    "authorization" => self.replaced == Some(auth::Strip::Header),
                    "cookie" => self.replaced == Some(auth::Strip::Cookie),
                    _ => false,
                }
                || inject_name == Some(name)
                || user_header == Some(name);
            if !dropped {
                put(name, value.as_bytes());
            }
        }
        if self.upgrade {
            self.upgrade_headers(&mut put);
        }
        if let Some(id) = &self.identity {
            self.name_the_client(id, trusted, &mut put);
        } else if p.forwarded_headers {
            put(&X_FORWARDED_FOR, self.forwarded_for(trusted).as_bytes());
            put(
                &X_REAL_IP,
                p.client_ip(self.remote, h).to_string().as_bytes(),
            );
            put(&X_FORWARDED_PROTO, if p.tls { b"https" } else { b"http" });
        }
        if self.replaced == Some(auth::Strip::Cookie) {
            if let Some(v) = auth::cookies_without(h, &p.auth.cookie) {
                put(&COOKIE, v.as_bytes());
            }
        }
        self.put_injected(&mut put);
    }

    /// An upgrade's own headers: the token's subprotocol entry taken out, the gateway's
    /// origin when rewritten, the upgrade itself, a Host when the client sent none.
    #[inline]
    fn upgrade_headers(&self, put: &mut impl FnMut(&HeaderName, &[u8])) {
        let (p, h) = (self.proxy, self.headers);
        // Without the subprotocol entry that carried the token (never echo a token).
        if let Some(list) = auth::strip_token_subprotocols(h, &p.auth.subprotocol_prefix) {
            put(&SEC_WEBSOCKET_PROTOCOL, &list);
        }
        if p.upstream_origin == UpstreamOrigin::Rewrite && h.contains_key(ORIGIN) {
            // The gateway sees its own origin (it refuses non-loopback ones by default);
            // the browser's origin was already checked against auth.allowed_origins.
            put(&ORIGIN, p.upstream.origin().as_bytes());
        }
        put(&CONNECTION, b"Upgrade");
        put(
            &UPGRADE,
            h.get(UPGRADE).map_or(&b"websocket"[..], |v| v.as_bytes()),
        );
        if !h.contains_key(HOST) {
            put(&HOST, p.upstream.authority().as_bytes());
        }
    }

    /// The gateway's secret, when gatewarden presents it in a header.
    #[inline]
    fn put_injected(&self, put: &mut impl FnMut(&HeaderName, &[u8])) {
        if let Some((name, secret)) = self.inject {
            let value = if *name == AUTHORIZATION {
                format!("Bearer {}", secret.expose())
            } else {
                secret.expose().to_string()
            };
            if HeaderValue::from_str(&value).is_ok() {
                put(name, value.as_bytes());
            }
        }
    }

    /// The `X-Forwarded-For` gatewarden sends: the peer, appended to the chain a trusted
    /// peer sent (an untrusted peer's was dropped).
    fn forwarded_for(&self, trusted: bool) -> String {
        let peer = self.remote.ip().to_canonical().to_string();
        let prev = self
            .headers
            .get(X_FORWARDED_FOR)
            .filter(|_| trusted)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.trim().is_empty());
        match prev {
            Some(prev) => format!("{prev}, {peer}"),
            None => peer,
        }
    }

    /// The trusted-proxy headers: the user, the client's address (appended to a trusted
    /// proxy's chain), the scheme and host it asked for, and its scopes where bounded.
    fn name_the_client(
        &self,
        id: &Identity<'_>,
        trusted: bool,
        put: &mut impl FnMut(&HeaderName, &[u8]),
    ) {
        let (p, h) = (self.proxy, self.headers);
        if let Some(name) = &p.user_header {
            put(name, id.name.as_bytes());
        }
        put(&X_FORWARDED_FOR, self.forwarded_for(trusted).as_bytes());
        put(&X_FORWARDED_PROTO, if p.tls { b"https" } else { b"http" });
        if let Some(host) = h.get(HOST) {
            put(&X_FORWARDED_HOST, host.as_bytes());
        }
        if let Some(scopes) = &id.scopes {
            put(&X_OPENCLAW_SCOPES, scopes.as_bytes());
        }
    }

    /// The upgrade request's head as the gateway should see it, in one buffer for one
    /// write. Written straight from the client's header map, because copying the map,
    /// editing it and serializing the copy showed in every handshake (bench/RESULTS.md).
    pub(crate) fn upgrade_head(&self, uri: &Uri) -> Vec<u8> {
        let pq = self.target(uri);
        let size: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        let mut head = Vec::with_capacity(256 + pq.len() + size);
        head.extend_from_slice(b"GET ");
        head.extend_from_slice(pq.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        self.each(|name, value| {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        });
        head.extend_from_slice(b"\r\n");
        head
    }

    /// A plain request's headers as hyper sends them upstream, and its new target when
    /// the token's query parameter was taken out.
    pub(crate) fn plain(&self, uri: &Uri) -> (HeaderMap, Option<Uri>) {
        let mut out = HeaderMap::with_capacity(self.headers.len() + 3);
        let injected = self.inject.map(|(n, _)| n);
        self.each(|name, value| {
            if let Ok(mut v) = HeaderValue::from_bytes(value) {
                // Kept out of HPACK tables and debug output.
                v.set_sensitive(Some(name) == injected);
                out.append(name.clone(), v);
            }
        });
        let target = match self.target(uri) {
            Cow::Owned(pq) => pq.parse().ok(),
            Cow::Borrowed(_) => None,
        };
        (out, target)
    }
}

impl Proxy {
    /// The token gatewarden presents upstream, when `upstream_auth` asks for one.
    pub(crate) fn gateway_token(&self, creds: &Credentials) -> Option<Secret> {
        if !self.upstream_auth.inject.needs_credential() {
            return None;
        }
        let name = self.upstream_auth.credential.as_deref()?;
        creds.by_name(name)?.secret.clone()
    }
}

#[cfg(test)]
mod tests {
    use ::http::header::TE;

    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert("x-end-to-end", HeaderValue::from_static("stays"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-end-to-end"));
    }
}
