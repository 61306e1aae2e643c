//! WebSockets over HTTP/2 (RFC 8441) and plain HTTP over HTTP/2 on the TLS listener, driven
//! by an independent client: Python's `h2` and `wsproto` (`tests/support/h2_peer.py`), which
//! share no code with hyper or the `h2` crate. Every token source, the refusal shapes, 100
//! tunnels on one connection, a 1 MiB echo, a reset stream, a stalled stream, the
//! certificate reload, and the limits.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::certs::{ca, leaf, Ca};
use common::openclaw::{self, cli_connect, FakeGateway};
use common::*;
use gatewarden::config::{Config, CredentialFormat, CredentialSource, RejectMode, TokenSource};
use serde_json::{json, Value};

struct Setup {
    proxy: Running,
    upstream: TestUpstream,
    ca: Ca,
    ca_file: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    token: String,
    _dir: tempfile::TempDir,
}

/// gatewarden with TLS (h2 offered, as by default) in front of the test upstream.
async fn setup(tweak: impl FnOnce(&mut Config, &Path)) -> Setup {
    let upstream = start_upstream().await;
    let ca = ca("gatewarden h2 test CA");
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = leaf(&ca, "localhost", 1001);
    let cert = write_file(dir.path(), "cert.pem", &c);
    let key = write_file(dir.path(), "key.pem", &k);
    let ca_file = write_file(dir.path(), "ca.pem", &ca.cert.pem());
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let mut config = config_for(upstream.addr, &tf);
    config.tls.cert = Some(cert.clone());
    config.tls.key = Some(key.clone());
    tweak(&mut config, dir.path());
    let proxy = serve(config).await;
    Setup {
        proxy,
        upstream,
        ca,
        ca_file,
        cert,
        key,
        token,
        _dir: dir,
    }
}

/// Runs one scenario of the Python client against `s`; its JSON answer.
async fn peer(s: &Setup, scenario: &str, args: Value) -> Value {
    peer_at(s.proxy.addr.port(), &s.ca_file, scenario, args).await
}

async fn peer_at(port: u16, ca_file: &Path, scenario: &str, args: Value) -> Value {
    let script = format!("{}/tests/support/h2_peer.py", env!("CARGO_MANIFEST_DIR"));
    let ca_file = ca_file.to_path_buf();
    let scenario = scenario.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(&scenario)
            .arg("127.0.0.1")
            .arg(port.to_string())
            .arg(ca_file)
            .arg(args.to_string())
            .output()
            .expect("python3 runs (the CI script installs it with `h2` and `wsproto`)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "h2_peer.py printed no JSON (are `h2` and `wsproto` installed?)\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(v.get("error").is_none(), "the client failed: {v}");
    v
}

fn bearer(token: &str) -> Value {
    json!([["authorization", format!("Bearer {token}")]])
}

fn header<'a>(resp: &'a Value, name: &str) -> Option<&'a str> {
    resp["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

#[tokio::test]
async fn h2_is_offered_with_extended_connect_and_the_configured_limits() {
    let s = setup(|c, _| {
        c.http2.max_concurrent_streams = 77;
        c.http2.stream_window_bytes = 300_000;
    })
    .await;
    let hello = peer(&s, "hello", json!({})).await;
    assert_eq!(hello["alpn"], "h2");
    assert_eq!(hello["enable_connect_protocol"], 1, "{hello}");
    assert_eq!(hello["max_concurrent_streams"], 77);
    assert_eq!(hello["initial_window_size"], 300_000);
}

#[tokio::test]
async fn alpn_without_h2_keeps_clients_on_http11() {
    let s = setup(|c, _| c.tls.alpn = vec!["http/1.1".into()]).await;
    let hello = peer(&s, "hello", json!({})).await;
    assert_eq!(hello["alpn"], "http/1.1", "{hello}");
}

#[tokio::test]
async fn every_upgrade_time_token_source_opens_a_tunnel_over_h2() {
    let s = setup(|_, _| {}).await;
    let t = &s.token;
    let cases = [
        ("header", "/h", bearer(t)),
        ("query", &*format!("/q?token={t}&keep=1"), json!([])),
        (
            "cookie",
            "/c",
            json!([["cookie", format!("theme=dark; gatewarden_token={t}")]]),
        ),
        (
            "subprotocol",
            "/s",
            json!([["sec-websocket-protocol", format!("chat, bearer.{t}")]]),
        ),
    ];
    for (source, path, headers) in cases {
        let got = peer(
            &s,
            "ws",
            json!({"path": path, "headers": headers, "send": [format!("via {source}")], "expect": 1}),
        )
        .await;
        assert_eq!(got["status"], 200, "{source}: {got}");
        assert_eq!(
            got["messages"],
            json!([format!("via {source}")]),
            "{source}"
        );
        // What an HTTP/1.1 client would have sent the gateway: Host from `:authority`, a
        // key of gatewarden's making, the upgrade headers, and never the token where it
        // was only the client's credential.
        let seen = s.upstream.last();
        let h = &seen.headers;
        assert_eq!(seen.method, "GET");
        assert_eq!(h["host"], "localhost", "{source}");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-version"], "13");
        assert!(h.contains_key("sec-websocket-key"));
        if source == "subprotocol" {
            assert_eq!(h["sec-websocket-protocol"], "chat");
            assert_eq!(header(&got, "sec-websocket-protocol"), Some("chat"));
        }
        assert!(header(&got, "sec-websocket-accept").is_none(), "{got}");
        assert!(header(&got, "upgrade").is_none() && header(&got, "connection").is_none());
        let port = got["local_port"].to_string();
        wait_log(&[
            "[ws] connected",
            &format!("source={source}"),
            &format!("remote=127.0.0.1:{port}"),
        ])
        .await;
    }
}

/// The gateway's own config as OpenClaw writes it (JSON5).
fn openclaw_json(token: &str) -> String {
    format!("{{ gateway: {{ port: 18790, auth: {{ mode: 'token', token: \"{token}\" }} }} }}\n")
}

#[tokio::test]
async fn a_first_message_token_authenticates_like_an_openclaw_client() {
    let gateway_token: &'static str = Box::leak(random_token().into_boxed_str());
    let gw: FakeGateway = openclaw::start(gateway_token).await;
    // gatewarden reads the gateway's own config, so `first_message` is a source by default.
    let s = setup(|c, dir| {
        c.upstream = gw.addr.to_string().parse().unwrap();
        c.credentials.sources = vec![CredentialSource {
            name: Some("gateway".into()),
            path: write_file(dir, "openclaw.json", &openclaw_json(gateway_token)),
            format: CredentialFormat::Json5,
            ..CredentialSource::plain("")
        }];
    })
    .await;
    // The gateway speaks first; the client answers the challenge with its `connect`.
    let ok = peer(
        &s,
        "ws",
        json!({"after": 1, "send": [cli_connect("c1", Some(gateway_token))], "expect": 2}),
    )
    .await;
    assert_eq!(ok["status"], 200, "{ok}");
    let challenge: Value = serde_json::from_str(ok["messages"][0].as_str().unwrap()).unwrap();
    assert_eq!(challenge["event"], "connect.challenge", "{ok}");
    assert_eq!(gw.challenges(), vec![ok["messages"][0].as_str().unwrap()]);
    let hello: Value = serde_json::from_str(ok["messages"][1].as_str().unwrap()).unwrap();
    assert_eq!(hello["payload"]["type"], "hello-ok", "{ok}");
    let port = ok["local_port"].to_string();
    wait_log(&[
        "[ws] connected",
        "source=first_message",
        &format!("remote=127.0.0.1:{port}"),
    ])
    .await;
    // A wrong token: the gateway's own rejection shape, then close 1008; the gateway never
    // sees the wrong token.
    let bad = peer(
        &s,
        "ws",
        json!({"after": 1, "send": [cli_connect("c2", Some("not-the-token"))],
               "expect": 2, "await_close": true}),
    )
    .await;
    let res: Value = serde_json::from_str(bad["messages"][1].as_str().unwrap()).unwrap();
    assert_eq!(res["id"], "c2");
    assert_eq!(res["ok"], false);
    assert_eq!(bad["close"]["code"], 1008, "{bad}");
    assert!(
        bad["close"]["reason"]
            .as_str()
            .unwrap()
            .contains("token mismatch"),
        "{bad}"
    );
    assert_eq!(
        gw.connects().len(),
        1,
        "only the good connect reached the gateway"
    );
}

#[tokio::test]
async fn refusals_over_h2_have_the_http11_shapes() {
    // `auth.reject = "http"`: a stream answered 401 / 403 / 429 like an HTTP/1.1 upgrade.
    let s = setup(|c, _| {
        c.auth.reject = RejectMode::Http;
        c.auth.allowed_origins = vec!["https://app.example".into()];
        c.auth.max_failures = 3;
    })
    .await;
    let missing = peer(&s, "ws", json!({})).await;
    assert_eq!(missing["status"], 401, "{missing}");
    assert_eq!(header(&missing, "www-authenticate"), Some("Bearer"));
    assert!(
        missing["body"].as_str().unwrap().contains("token_missing"),
        "{missing}"
    );
    let wrong = peer(
        &s,
        "ws",
        json!({"headers": bearer("wrong-token-0123456789")}),
    )
    .await;
    assert_eq!(wrong["status"], 401);
    assert!(wrong["body"].as_str().unwrap().contains("token_mismatch"));
    let origin = peer(
        &s,
        "ws",
        json!({"headers": [["origin", "https://evil.example"],
                           ["authorization", format!("Bearer {}", s.token)]]}),
    )
    .await;
    assert_eq!(origin["status"], 403, "{origin}");
    // The third failure from this IP: throttled, with when to come back.
    let throttled = peer(&s, "ws", json!({"headers": bearer(&s.token)})).await;
    assert_eq!(throttled["status"], 429, "{throttled}");
    assert!(header(&throttled, "retry-after").is_some());
    // Nothing reached the gateway.
    assert_eq!(s.upstream.count(), 0);
    wait_log(&["[ws] unauthorized", "reason=token_missing"]).await;
}

#[tokio::test]
async fn close_mode_refuses_with_a_200_and_close_1008() {
    let s = setup(|c, _| c.auth.reject = RejectMode::Close).await;
    let got = peer(
        &s,
        "ws",
        json!({"headers": [["sec-websocket-protocol", "chat"]], "await_close": true}),
    )
    .await;
    assert_eq!(got["status"], 200, "{got}");
    // A strict client fails a handshake that offered subprotocols and got none back.
    assert_eq!(header(&got, "sec-websocket-protocol"), Some("chat"));
    assert_eq!(got["close"]["code"], 1008, "{got}");
    assert!(got["close"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("unauthorized: gateway token missing"));
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn a_malformed_extended_connect_is_refused_before_the_gateway() {
    let s = setup(|_, _| {}).await;
    let old = peer(&s, "ws", json!({"version": "8"})).await;
    assert_eq!(old["status"], 426, "{old}");
    assert_eq!(header(&old, "sec-websocket-version"), Some("13"));
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn the_header_limits_hold_for_h2_requests() {
    let s = setup(|c, _| c.limits.max_headers = 20).await;
    let many: Vec<Value> = (0..30).map(|i| json!([format!("x-h{i}"), "v"])).collect();
    let got = peer(&s, "ws", json!({"headers": many})).await;
    assert_eq!(got["status"], 431, "{got}");
    let plain = peer(&s, "plain", json!({"path": "/", "headers": many})).await;
    assert_eq!(plain["status"], 431, "{plain}");
    // A long target: 414, as over HTTP/1.1.
    let long = format!("/{}", "a".repeat(9000));
    let got = peer(
        &s,
        "plain",
        json!({"path": long, "headers": bearer(&s.token)}),
    )
    .await;
    assert_eq!(got["status"], 414, "{got}");
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn a_hundred_websocket_streams_share_one_connection() {
    let s = setup(|_, _| {}).await;
    let got = peer(&s, "many", json!({"n": 100, "headers": bearer(&s.token)})).await;
    assert_eq!(got["opened"], 100, "{got}");
    assert_eq!(got["echoed"], 100, "{got}");
    assert_eq!(s.upstream.count(), 100);
}

#[tokio::test]
async fn each_stream_counts_against_the_connection_limits() {
    // The connection holds one slot, each tunnel one more: 3 per IP leaves room for two.
    let s = setup(|c, _| c.limits.max_connections_per_ip = 3).await;
    let got = peer(&s, "many", json!({"n": 3, "headers": bearer(&s.token)})).await;
    assert_eq!(got["opened"], 2, "{got}");
    assert_eq!(got["statuses"], json!([200, 503]), "{got}");
    wait_log(&["[ws] request refused", "reason=ip_connection_limit"]).await;
}

#[tokio::test]
async fn a_mebibyte_echoes_byte_exact_over_h2() {
    let s = setup(|_, _| {}).await;
    let got = peer(
        &s,
        "bulk",
        json!({"size": 1024 * 1024, "headers": bearer(&s.token)}),
    )
    .await;
    assert_eq!(got["status"], 200);
    assert_eq!(got["received"], 1024 * 1024, "{got}");
    assert_eq!(got["same"], true);
}

#[tokio::test]
async fn a_reset_stream_ends_its_tunnel_and_leaves_its_neighbours_alone() {
    let s = setup(|_, _| {}).await;
    let got = peer(&s, "reset", json!({"headers": bearer(&s.token)})).await;
    let after0: Vec<String> = (0..10).map(|r| format!("after 0.{r}")).collect();
    let after2: Vec<String> = (0..10).map(|r| format!("after 2.{r}")).collect();
    assert_eq!(got["after"], json!([after0, after2]), "{got}");
    assert_eq!(got["neighbours_reset"], json!([null, null]));
    assert_eq!(
        got["closes"],
        json!([{"code": 1000, "reason": ""}, {"code": 1000, "reason": ""}])
    );
    assert_eq!(
        got["goaway"],
        Value::Null,
        "the connection was not torn down"
    );
    // Three tunnels closed on this connection, the reset one first (while the others were
    // still relaying), without a close handshake; the others normally.
    let remote = format!("remote=127.0.0.1:{}", got["local_port"]);
    let closed = wait_logs(&["[ws] closed", &remote], 3).await;
    assert!(closed[0].contains("code=1006"), "{closed:?}");
    assert!(closed[1].contains("code=1000") && closed[2].contains("code=1000"));
}

#[tokio::test]
async fn a_stalled_stream_does_not_hold_up_the_others() {
    let s = setup(|_, _| {}).await;
    // Stream A sends and never reads: once the gateway side and every buffer on the way are
    // full, A's window stays shut. Stream B's round trips go on meanwhile.
    let got = peer(
        &s,
        "slow",
        json!({"flood": 256 * 1024 * 1024, "flood_for": 20, "rounds": 20,
               "headers": bearer(&s.token)}),
    )
    .await;
    assert!(
        got["a_sent"].as_u64().unwrap() < 256 * 1024 * 1024 && got["a_window"] == 0,
        "A was never held back: {got}"
    );
    assert_eq!(got["a_reset"], Value::Null);
    assert_eq!(got["b_echoed"], true, "{got}");
}

#[tokio::test]
async fn a_reloaded_certificate_is_served_to_new_h2_connections() {
    let s = setup(|_, _| {}).await;
    let before = peer(
        &s,
        "hello",
        json!({"ws": true, "headers": bearer(&s.token)}),
    )
    .await;
    assert_eq!(before["ws"]["messages"], json!(["over h2"]));
    let (c, k) = leaf(&s.ca, "localhost", 2002);
    std::fs::write(s.key.with_extension("new"), &k).unwrap();
    std::fs::rename(s.key.with_extension("new"), &s.key).unwrap();
    std::fs::write(s.cert.with_extension("new"), &c).unwrap();
    std::fs::rename(s.cert.with_extension("new"), &s.cert).unwrap();
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(c.as_bytes()).unwrap();
    let sha = {
        use sha2::Digest;
        sha2::Sha256::digest(der.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    wait_log(&[
        "[reload] tls applied",
        &format!("fingerprint={}", &sha[..8]),
    ])
    .await;
    let after = peer(
        &s,
        "hello",
        json!({"ws": true, "headers": bearer(&s.token)}),
    )
    .await;
    assert_ne!(before["cert_sha256"], after["cert_sha256"]);
    assert_eq!(after["cert_sha256"], sha.as_str());
    assert_eq!(after["alpn"], "h2");
    assert_eq!(after["ws"]["messages"], json!(["over h2"]));
}

#[tokio::test]
async fn plain_http_over_h2_is_proxied_and_judged() {
    let s = setup(|_, _| {}).await;
    let got = peer(
        &s,
        "plain",
        json!({"path": "/some/page?x=1", "headers": bearer(&s.token)}),
    )
    .await;
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["body"], "upstream saw GET /some/page?x=1\n");
    assert_eq!(header(&got, "x-upstream"), Some("plain"));
    // The gateway's hop-by-hop header stays on its hop (HTTP/2 forbids it anyway).
    assert!(header(&got, "keep-alive").is_none());
    let seen = s.upstream.last();
    assert_eq!(seen.headers["host"], "localhost");
    // A body both ways.
    let echo = peer(
        &s,
        "plain",
        json!({"method": "POST", "path": "/echo", "body": "posted over h2",
               "headers": bearer(&s.token)}),
    )
    .await;
    assert_eq!(echo["status"], 200, "{echo}");
    assert_eq!(echo["body"], "posted over h2");
    // `auth.http = "require"` (the default) holds for HTTP/2 too.
    let refused = peer(&s, "plain", json!({"path": "/some/page"})).await;
    assert_eq!(refused["status"], 401, "{refused}");
    assert_eq!(s.upstream.count(), 2);
    // CONNECT without `:protocol` is still not a tunnel to anywhere.
    let connect = peer(
        &s,
        "plain",
        json!({"method": "CONNECT", "path": null, "authority": "example.com:443"}),
    )
    .await;
    assert_eq!(connect["status"], 405, "{connect}");
}

#[tokio::test]
async fn a_token_source_list_without_first_message_refuses_a_tokenless_stream() {
    // Only the header: a stream without one is refused at the CONNECT, before the gateway.
    let s = setup(|c, _| c.auth.sources = Some(vec![TokenSource::Header])).await;
    let got = peer(&s, "ws", json!({"await_close": true})).await;
    assert_eq!(got["close"]["code"], 1008, "{got}");
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn a_drain_sends_goaway_and_open_streams_finish_until_its_end() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut s = setup(|c, _| {
        c.shutdown.drain = gatewarden::config::Secs(std::time::Duration::from_secs(2))
    })
    .await;
    let script = format!("{}/tests/support/h2_peer.py", env!("CARGO_MANIFEST_DIR"));
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .arg("hold")
        .arg("127.0.0.1")
        .arg(s.proxy.addr.port().to_string())
        .arg(&s.ca_file)
        .arg(json!({"headers": bearer(&s.token)}).to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready: Value =
        serde_json::from_str(&timeout(out.next_line()).await.unwrap().unwrap()).unwrap();
    assert_eq!(ready["messages"], json!(["before"]), "{ready}");
    s.proxy.shutdown();
    wait_log(&["[shutdown] stopped accepting; draining"]).await;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let end: Value =
        serde_json::from_str(&timeout(out.next_line()).await.unwrap().unwrap()).unwrap();
    assert!(end.get("error").is_none(), "{end}");
    // GOAWAY with NO_ERROR: no new streams, the open one goes on...
    assert_eq!(end["goaway"], 0, "{end}");
    assert_eq!(end["messages"], json!(["before", "during drain"]), "{end}");
    // ...until the drain's end closes it the way a shutdown closes an HTTP/1.1 tunnel.
    assert_eq!(end["close"]["code"], 1001, "{end}");
    s.proxy.finished().await;
}

#[tokio::test]
async fn a_client_certificate_authenticates_streams_over_h2() {
    let client_ca = ca("client CA");
    let pem = client_ca.cert.pem();
    let s = setup(move |c, dir| {
        c.tls.client_ca = Some(write_file(dir, "client-ca.pem", &pem));
        c.auth.sources = Some(vec![TokenSource::ClientCert, TokenSource::Header]);
    })
    .await;
    let (cert, key) = leaf(&client_ca, "laptop-alice", 7);
    let dir = tempfile::tempdir().unwrap();
    let cert = write_file(dir.path(), "alice.pem", &cert);
    let key = write_file(dir.path(), "alice.key", &key);
    let got = peer(
        &s,
        "ws",
        json!({"client_cert": cert, "client_key": key, "send": ["no token, a certificate"],
               "expect": 1}),
    )
    .await;
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["messages"], json!(["no token, a certificate"]));
    let port = got["local_port"].to_string();
    wait_log(&[
        "[ws] connected",
        "source=client_cert",
        "client=laptop-alice",
        &format!("remote=127.0.0.1:{port}"),
    ])
    .await;
}

/// curl (nghttp2) as a second HTTP/2 implementation nobody here wrote: it negotiates `h2`
/// by ALPN and its request is proxied; forced to HTTP/1.1 it is served on the same port.
#[tokio::test]
async fn curl_negotiates_h2_and_is_proxied() {
    let s = setup(|_, _| {}).await;
    let port = s.proxy.addr.port();
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let ca_file = s.ca_file.clone();
        let token = s.token.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "20",
                    flag,
                    "-w",
                    "\n%{http_version}",
                    "--cacert",
                ])
                .arg(&ca_file)
                .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
                .args(["-H", &format!("Authorization: Bearer {token}")])
                .arg(format!("https://localhost:{port}/from-curl?x=1"))
                .output()
                .expect("curl is installed (.ci/run installs it)")
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("upstream saw GET /from-curl?x=1\n\n{version}"),
            "{flag}"
        );
    }
}

/// The client of an HTTP/2 stream never sees the gateway's `Sec-WebSocket-Accept`, so
/// gatewarden checks it: a gateway that answers for another key gets the client a 502.
#[tokio::test]
async fn a_gateway_accepting_another_key_is_a_502() {
    let wrong = common::fake_gateway::FakeGateway::accepting_another_key()
        .start()
        .await;
    let wrong_addr = wrong.addr;
    let s = setup(move |c, _| c.upstream = wrong_addr.to_string().parse().unwrap()).await;
    let got = peer(&s, "ws", json!({"headers": bearer(&s.token)})).await;
    assert_eq!(got["status"], 502, "{got}");
    wait_log(&["[ws] upstream answered 101 with a wrong Sec-WebSocket-Accept"]).await;
}
