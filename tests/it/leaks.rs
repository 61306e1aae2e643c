//! What must never leave gatewarden by a side door: a secret in a logged request target,
//! wherever in the target a client put it, and a proxy's headers (the `X-Forwarded-*`
//! family and its relatives) from a peer that is not a trusted proxy.

use crate::common;

use std::path::Path;

use common::raw::{raw_http, response_head};
use common::*;
use gatewarden::config::CredentialSource;
use tokio::io::AsyncWriteExt;

/// Where a client might put a secret in its request target, `{t}` standing for it.
const PLACEMENTS: &[&str] = &[
    "/ws?TOKEN={t}",
    "/ws?Token={t}&x=1",
    "/ws?a=1;token={t}",
    "/ws?a=1&b=2;token={t}",
    "/ws?%74oken={t}",
    "/ws?%54%4F%4B%45%4E={t}",
    "/ws?access_token={t}",
    "/ws?auth={t}",
    "/ws?{t}",
    "/ws/{t}",
    "/ws;token={t}",
];

/// Sends a WebSocket upgrade to `target` (refused: no token where gatewarden reads one)
/// and a plain GET (refused, `auth.http = "require"`); waits for both refusal lines.
async fn refused_both_ways(h: &Harness, target: &str) {
    let ws = format!(
        "GET {target} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    // Refused as configured (by default a 101 and close 1008, the gateway's own shape):
    // the answer's head is enough.
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(ws.as_bytes()).await.unwrap();
    assert!(response_head(&mut s).await.0.is_some(), "{target}");
    let (status, _) = raw_http(
        h.addr,
        &format!("GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 401, "{target}");
}

fn assert_not_logged(secrets: &[String]) {
    let logs = logs();
    for s in secrets {
        assert!(
            !logs.contains(s.as_str()),
            "a secret ({s}) was logged:\n{logs}"
        );
    }
}

#[tokio::test]
async fn no_placement_of_a_token_in_the_target_reaches_a_log_line() {
    // Every refusal is logged, none throttled.
    let h = start_with(|c| c.auth.max_failures = 1000).await;
    let mut secrets = Vec::new();
    for (i, p) in PLACEMENTS.iter().enumerate() {
        // The real token in one half of the cases (a client that put the right token in the
        // wrong place), a made-up one in the other.
        // `%74oken` is `token`, read as the parameter: a right token there would pass.
        let t = if i % 2 == 0 && !p.contains("%74oken") {
            h.token.clone()
        } else {
            random_token()
        };
        let target = p.replace("{t}", &t);
        refused_both_ways(&h, &target).await;
        secrets.push(t);
    }
    let n = PLACEMENTS.len();
    let ws = wait_logs(&["[ws] unauthorized", "path=/ws"], n).await;
    let http = wait_logs(&["[http] unauthorized", "path=/ws"], n).await;
    assert_not_logged(&secrets);
    // Names stay for diagnosis; values do not.
    let all = [ws, http].concat().join("\n");
    for shown in [
        "path=/ws?TOKEN=REDACTED",
        "path=/ws?a=REDACTED;token=REDACTED",
        "path=/ws?%74oken=REDACTED",
        "path=/ws?access_token=REDACTED",
        "path=/ws/REDACTED",
    ] {
        assert!(all.contains(shown), "no {shown:?} in\n{all}");
    }
}

#[tokio::test]
async fn user_info_in_an_absolute_target_is_not_logged() {
    let h = start().await;
    let secret = random_token();
    let (status, _) = raw_http(
        h.addr,
        &format!(
            "GET http://user:{secret}@gw/private?x=1 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 401);
    wait_log(&["[http] unauthorized", "path=/private?x=REDACTED"]).await;
    assert_not_logged(&[secret]);
}

/// A public path is not judged, so a secret in its segments is only ever logged by an
/// upstream failure: a short one (no token's shape) is recognised as a loaded credential.
#[tokio::test]
async fn a_token_as_a_segment_of_a_public_path_is_not_logged_when_the_upstream_fails() {
    let dir = tempfile::tempdir().unwrap();
    let short = "s3cr3tpass";
    let tf = write_file(dir.path(), "short", short);
    let long = random_token();
    let mut config = config_for(dead_addr().await, Path::new("/nonexistent"));
    config.credentials.sources = vec![CredentialSource::plain(&tf)];
    config.auth.public_paths = vec!["/pub".into()];
    let proxy = serve(config).await;
    for t in [short, long.as_str()] {
        let (status, _) = raw_http(
            proxy.addr,
            &format!("GET /pub/{t}/x?k={t} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 502);
    }
    let lines = wait_logs(
        &[
            "[http] upstream unavailable",
            "path=/pub/REDACTED/x?k=REDACTED",
        ],
        2,
    )
    .await;
    assert_eq!(lines.len(), 2);
    assert_not_logged(&[short.to_string(), long]);
}

/// The whole family a gateway may read as "a proxy says so", each sent by a client on
/// loopback (not a trusted proxy).
const FORWARDED: &[(&str, &str)] = &[
    ("x-forwarded-for", "203.0.113.9"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
    ("x-forwarded-port", "443"),
    ("x-forwarded-prefix", "/admin"),
    ("x-forwarded-server", "evil.example"),
    ("x-forwarded-user", "admin"),
    ("forwarded", "for=203.0.113.9;host=evil.example;proto=https"),
    ("x-real-ip", "203.0.113.9"),
    ("x-original-forwarded-for", "203.0.113.9"),
    ("x-original-host", "evil.example"),
    ("x-original-url", "/admin"),
    ("x-client-ip", "203.0.113.9"),
    ("true-client-ip", "203.0.113.9"),
    ("x-cluster-client-ip", "203.0.113.9"),
];

#[tokio::test]
async fn no_forwarded_header_from_an_untrusted_peer_reaches_the_upstream() {
    for forwarded_headers in [false, true] {
        let h = start_with(|c| c.forwarded_headers = forwarded_headers).await;
        let bearer = format!("Bearer {}", h.token);
        let mut with: Vec<(&str, &str)> = FORWARDED.to_vec();
        with.push(("authorization", &bearer));
        let (mut ws, _) = ws_connect(h.addr, "/ws", &with).await.unwrap();
        assert_echo(&mut ws, "hi").await;
        let mut req = get(h.addr, "/plain");
        for (k, v) in &with {
            req.headers_mut().append(*k, v.parse().unwrap());
        }
        let resp = http_request(h.addr, req).await;
        assert_eq!(resp.status(), 200);
        let _ = body_bytes(resp).await;
        // Both the upgrade and the plain request, as the upstream recorded them.
        let seen = h.upstream.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        for seen in seen {
            for (name, sent) in FORWARDED {
                let got = seen
                    .headers
                    .get(*name)
                    .map(|v| v.to_str().unwrap().to_string());
                match (forwarded_headers, *name) {
                    // gatewarden's own, in the documented mode: the peer, never the client's.
                    (true, "x-forwarded-for" | "x-real-ip") => {
                        assert_eq!(got.as_deref(), Some("127.0.0.1"), "{name}")
                    }
                    (true, "x-forwarded-proto") => {
                        assert_eq!(got.as_deref(), Some("http"), "{name}")
                    }
                    _ => assert!(
                        got.is_none(),
                        "{name}: {sent} reached the upstream ({})",
                        seen.uri
                    ),
                }
            }
        }
    }
}

#[tokio::test]
async fn a_trusted_proxy_passes_the_family_on() {
    let h = start_with(|c| c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]).await;
    let mut req = get(h.addr, "/plain");
    for (k, v) in FORWARDED {
        req.headers_mut().append(*k, v.parse().unwrap());
    }
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", h.token).parse().unwrap(),
    );
    let resp = http_request(h.addr, req).await;
    assert_eq!(resp.status(), 200);
    let seen = h.upstream.last();
    for (name, sent) in FORWARDED {
        assert_eq!(seen.headers[*name], *sent, "{name}");
    }
}
