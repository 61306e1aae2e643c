//! Token extraction from an upgrade request head: whatever bytes arrive, finding, redacting
//! and stripping the token never panics, and what gatewarden forwards or logs no longer
//! carries the token it found. The head is read by the proxy's own fast-path parser
//! (`parse_upgrade`, what every upgrade goes through); heads it leaves to hyper are read
//! with httparse, as hyper does, so the extractors see those too.
#![no_main]

use gatewarden::fuzz::{auth, parse_upgrade, ws};
use gatewarden::config::{AuthConfig, TokenSource};
use libfuzzer_sys::fuzz_target;

fn parts(data: &[u8]) -> Option<http::request::Parts> {
    let bytes = bytes::Bytes::copy_from_slice(data);
    if let Some((req, consumed, _close)) = parse_upgrade(&bytes, 100) {
        assert!(consumed <= data.len(), "the head ends inside what was read");
        return Some(req.into_parts().0);
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(data).ok()?;
    let mut b = http::Request::builder()
        .method(req.method?)
        .uri(req.path?);
    for h in req.headers.iter() {
        b = b.header(h.name, h.value);
    }
    Some(b.body(()).ok()?.into_parts().0)
}

fuzz_target!(|data: &[u8]| {
    let Some(parts) = parts(data) else { return };
    let _ = ws::check_upgrade_request(&http::Request::from_parts(parts.clone(), ()));
    let mut cfg = AuthConfig::default();
    cfg.allowed_origins = vec!["https://app.example.com".into(), "https://*.example.org".into()];
    for websocket in [false, true] {
        let all = cfg.effective_sources(&[]).list;
        let found = auth::extract(&cfg, &all, &parts, websocket, None);
        if let Some(f) = &found {
            assert!(!f.token.is_empty(), "an empty token is no token");
        }
        // Each source alone, so every extractor sees every input.
        for source in [TokenSource::Header, TokenSource::Query, TokenSource::Cookie, TokenSource::Subprotocol] {
            let _ = auth::extract(&cfg, &[source], &parts, websocket, None);
        }
        cfg = AuthConfig { allowed_origins: cfg.allowed_origins.clone(), ..AuthConfig::default() };
    }
    let _ = auth::origin_allowed(&cfg, &parts.headers);

    // What is forwarded upstream after stripping must not yield a token again.
    if let Some(q) = parts.uri.query() {
        let kept = auth::query_without(q, &cfg.query_param);
        assert!(auth::query_value(&kept, &cfg.query_param).is_none(), "query token survived stripping");
        let logged = gatewarden::fuzz::redact::target(&parts.uri, |_| false);
        let logged_query = logged.split_once('?').map_or("", |(_, q)| q);
        for pair in logged_query.split(['&', ';']) {
            if let Some((_, v)) = pair.split_once('=') {
                assert!(v.is_empty() || v == "REDACTED", "a query value survived redaction");
            }
        }
    }
    let mut rest = http::HeaderMap::new();
    if let Some(v) = auth::cookies_without(&parts.headers, &cfg.cookie) {
        rest.insert(http::header::COOKIE, v);
    }
    if let Some(v) = auth::strip_token_subprotocols(&parts.headers, &cfg.subprotocol_prefix) {
        if let Ok(v) = http::HeaderValue::from_bytes(&v) {
            rest.insert(http::header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
    let stripped = http::Request::builder().uri("/").body(()).unwrap().into_parts().0;
    let mut stripped = stripped;
    stripped.headers = rest;
    let sources = [TokenSource::Cookie, TokenSource::Subprotocol];
    assert!(auth::extract(&cfg, &sources, &stripped, true, None).is_none(), "cookie/subprotocol token survived stripping");
});
