//! gatewarden as a drop-in in front of an OpenClaw-like gateway: first-message
//! authentication, the gateway's own JSON5 credential file, stable client tokens with
//! injection, and forwarded headers.

use crate::common;

use std::time::Duration;

use common::openclaw::{self, cli_connect, signed_connect, FakeGateway};
use common::*;
use futures_util::SinkExt;
use gatewarden::config::{Config, CredentialFormat, CredentialSource, Inject, Secs, TokenSource};
use gatewarden::testing::ws;
use gatewarden::Fingerprint;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

/// The gateway's own config, as a person might have edited it: JSON5 with comments,
/// unquoted keys and trailing commas.
fn openclaw_json(token: &str) -> String {
    format!(
        "// OpenClaw gateway config\n{{\n  gateway: {{\n    port: 18790, // moved behind gatewarden\n    \
         auth: {{\n      mode: 'token',\n      token: \"{token}\", /* persisted */\n    }},\n  }},\n}}\n"
    )
}

struct Setup {
    gw: FakeGateway,
    proxy: Running,
    gateway_token: String,
    client_token: String,
    _dir: tempfile::TempDir,
}

/// Fake gateway + gatewarden reading the gateway's `openclaw.json` (named `gateway`) and a
/// separate client token file (named `clients`).
async fn setup(tweak: impl FnOnce(&mut Config)) -> Setup {
    setup_with_gateway(openclaw::start, tweak).await
}

async fn setup_with_gateway<F, Fut>(start_gw: F, tweak: impl FnOnce(&mut Config)) -> Setup
where
    F: FnOnce(&'static str) -> Fut,
    Fut: std::future::Future<Output = FakeGateway>,
{
    let gateway_token: &'static str = Box::leak(random_token().into_boxed_str());
    let gw = start_gw(gateway_token).await;
    let dir = tempfile::tempdir().unwrap();
    let oc = write_file(dir.path(), "openclaw.json", &openclaw_json(gateway_token));
    let client_token = random_token();
    let clients = write_file(dir.path(), "client-token", &client_token);
    let mut config = Config {
        upstream: gw.addr.to_string().parse().unwrap(),
        ..Config::default()
    };
    config.credentials.sources = vec![
        CredentialSource {
            name: Some("gateway".into()),
            path: oc,
            format: CredentialFormat::Json5,
            ..CredentialSource::plain("")
        },
        CredentialSource {
            name: Some("clients".into()),
            ..CredentialSource::plain(clients)
        },
    ];
    tweak(&mut config);
    let proxy = serve(config).await;
    Setup {
        gw,
        proxy,
        gateway_token: gateway_token.to_string(),
        client_token,
        _dir: dir,
    }
}

fn inject_first_message(c: &mut Config) {
    c.upstream_auth.inject = Inject::FirstMessage;
    c.upstream_auth.credential = Some("gateway".into());
}

async fn text(ws: &mut WsClient) -> String {
    match next_msg(ws).await {
        Some(Message::Text(t)) => t,
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn json(ws: &mut WsClient) -> Value {
    serde_json::from_str(&text(ws).await).unwrap()
}

/// Connects with no token anywhere in the upgrade, as OpenClaw clients do, and returns the
/// challenge text as received.
async fn connect_like_openclaw(s: &Setup) -> (WsClient, String) {
    let (mut ws, resp) = ws_connect(s.proxy.addr, "/", &[]).await.unwrap();
    assert_eq!(resp.status(), 101);
    let challenge = text(&mut ws).await;
    (ws, challenge)
}

fn nonce_of(challenge: &str) -> String {
    let v: Value = serde_json::from_str(challenge).unwrap();
    assert_eq!(v["event"], "connect.challenge");
    v["payload"]["nonce"].as_str().unwrap().to_string()
}

async fn expect_close(ws: &mut WsClient, code: CloseCode, needle: &str) {
    match next_msg(ws).await {
        Some(Message::Close(Some(f))) => {
            assert_eq!(f.code, code, "{}", f.reason);
            assert!(
                f.reason.contains(needle),
                "close reason {:?} lacks {needle:?}",
                f.reason
            );
        }
        other => panic!("expected close {code}, got {other:?}"),
    }
}

/// The gateway-shaped rejection: error `res` echoing the id, then close 1008.
async fn expect_gateway_rejection(
    ws: &mut WsClient,
    id: &str,
    reason: &str,
    detail: &str,
    words: &str,
) {
    let res = json(ws).await;
    assert_eq!(res["type"], "res");
    assert_eq!(res["id"], id);
    assert_eq!(res["ok"], false);
    assert_eq!(res["error"]["code"], "INVALID_REQUEST");
    assert_eq!(res["error"]["details"]["code"], detail);
    assert_eq!(res["error"]["details"]["authReason"], reason);
    assert!(res["error"]["message"].as_str().unwrap().contains(words));
    expect_close(ws, CloseCode::Policy, words).await;
}

#[tokio::test]
async fn cli_client_authenticates_in_band_and_sees_the_gateways_own_challenge() {
    let s = setup(|_| {}).await;
    let (mut ws, challenge) = connect_like_openclaw(&s).await;
    // Byte-exact: the very text the gateway sent, not one gatewarden made up.
    assert_eq!(s.gw.challenges(), vec![challenge.clone()]);
    ws.send(Message::text(cli_connect("c1", Some(&s.gateway_token))))
        .await
        .unwrap();
    let hello = json(&mut ws).await;
    assert_eq!(hello["ok"], true, "{hello}");
    assert_eq!(hello["payload"]["type"], "hello-ok");
    assert_eq!(hello["id"], "c1");
    ws.send(Message::text(
        r#"{"type":"req","id":"e1","method":"echo","params":{"n":1}}"#,
    ))
    .await
    .unwrap();
    assert_eq!(json(&mut ws).await["payload"]["n"], 1);
    let fp = Fingerprint::of(s.gateway_token.as_bytes()).to_string();
    wait_log(&[
        "[ws] connected",
        "source=first_message",
        &format!("presented=fp:{fp}"),
    ])
    .await;
    // The connect frame reached the gateway unchanged.
    let connects = s.gw.connects();
    assert_eq!(connects.len(), 1);
    assert_eq!(
        connects[0].to_string(),
        cli_connect("c1", Some(&s.gateway_token))
    );
}

#[tokio::test]
async fn device_signed_client_authenticates() {
    let s = setup(|_| {}).await;
    let (mut ws, challenge) = connect_like_openclaw(&s).await;
    let nonce = nonce_of(&challenge);
    ws.send(Message::text(signed_connect(
        "d1",
        &s.gateway_token,
        &nonce,
    )))
    .await
    .unwrap();
    let hello = json(&mut ws).await;
    assert_eq!(hello["ok"], true, "{hello}");
}

#[tokio::test]
async fn client_tokens_from_another_file_also_authenticate() {
    // Without injection the client must hold the gateway's token for the gateway to accept,
    // but gatewarden's own decision accepts any configured credential.
    let s = setup(|_| {}).await;
    let (mut ws, _) = connect_like_openclaw(&s).await;
    ws.send(Message::text(cli_connect("c1", Some(&s.client_token))))
        .await
        .unwrap();
    // gatewarden let it through; the gateway itself refuses the foreign token.
    let res = json(&mut ws).await;
    assert_eq!(res["error"]["details"]["authReason"], "token_mismatch");
    assert_eq!(s.gw.connects().len(), 1);
}

#[tokio::test]
async fn wrong_token_is_rejected_by_gatewarden_in_the_gateways_shape() {
    let s = setup(|_| {}).await;
    let (mut ws, _) = connect_like_openclaw(&s).await;
    let wrong = random_token();
    ws.send(Message::text(cli_connect("c-42", Some(&wrong))))
        .await
        .unwrap();
    expect_gateway_rejection(
        &mut ws,
        "c-42",
        "token_mismatch",
        "AUTH_TOKEN_MISMATCH",
        "token mismatch",
    )
    .await;
    assert!(
        s.gw.connects().is_empty(),
        "the gateway never saw the connect"
    );
    let fp = Fingerprint::of(wrong.as_bytes()).to_string();
    let line = wait_log(&[
        "[ws] unauthorized",
        "reason=token_mismatch",
        &format!("presented=fp:{fp}"),
    ])
    .await;
    assert!(line.contains("source=first_message"), "{line}");
    assert!(!logs().contains(&wrong));
}

#[tokio::test]
async fn missing_token_is_rejected_by_gatewarden() {
    let s = setup(|_| {}).await;
    let (mut ws, _) = connect_like_openclaw(&s).await;
    ws.send(Message::text(cli_connect("c-7", None)))
        .await
        .unwrap();
    expect_gateway_rejection(
        &mut ws,
        "c-7",
        "token_missing",
        "AUTH_TOKEN_MISSING",
        "token missing",
    )
    .await;
    assert!(s.gw.connects().is_empty());
}

#[tokio::test]
async fn first_message_source_off_rejects_at_the_upgrade() {
    let s = setup(|c| c.auth.sources = Some(vec![TokenSource::Header])).await;
    let (mut ws, _) = ws_connect(s.proxy.addr, "/", &[]).await.unwrap();
    expect_close(&mut ws, CloseCode::Policy, "token missing").await;
    assert!(
        s.gw.challenges().is_empty(),
        "no upstream connection was made"
    );
}

/// A client that drives the socket by hand after a normal handshake, so tests control how
/// bytes are split into TCP writes.
async fn raw_client(addr: std::net::SocketAddr) -> (TcpStream, WsClient) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(timeout(s.read(&mut byte)).await.unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // A second handle on the same socket for tungstenite to read frames with; writes go
    // through the first, byte-exact as the test lays them out.
    let reader = s.into_std().unwrap();
    let writer = reader.try_clone().unwrap();
    let reader = TcpStream::from_std(reader).unwrap();
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(reader, Role::Client, None).await;
    (TcpStream::from_std(writer).unwrap(), ws)
}

fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    ws::encode_frame(opcode, payload, Some([0x11, 0x22, 0x33, 0x44]))
}

#[tokio::test]
async fn first_frame_split_across_tcp_writes() {
    let s = setup(|_| {}).await;
    let (mut w, mut ws) = raw_client(s.proxy.addr).await;
    let _challenge = text(&mut ws).await;
    let frame = client_frame(
        ws::OP_TEXT,
        cli_connect("split", Some(&s.gateway_token)).as_bytes(),
    );
    // 1 byte of header, the rest of the header, then the payload in two halves.
    let header_len = ws::FrameHeader::parse(&frame).unwrap().header_len;
    let mid = header_len + (frame.len() - header_len) / 2;
    for part in [
        &frame[..1],
        &frame[1..header_len],
        &frame[header_len..mid],
        &frame[mid..],
    ] {
        w.write_all(part).await.unwrap();
        w.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    let hello = json(&mut ws).await;
    assert_eq!(hello["id"], "split");
    assert_eq!(hello["ok"], true, "{hello}");
}

#[tokio::test]
async fn first_frame_and_next_frame_in_one_write_keep_their_order() {
    let s = setup(|_| {}).await;
    let (mut w, mut ws) = raw_client(s.proxy.addr).await;
    let _challenge = text(&mut ws).await;
    let mut bytes = client_frame(
        ws::OP_TEXT,
        cli_connect("first", Some(&s.gateway_token)).as_bytes(),
    );
    bytes.extend(client_frame(
        ws::OP_TEXT,
        br#"{"type":"req","id":"second","method":"echo","params":{"n":2}}"#,
    ));
    w.write_all(&bytes).await.unwrap();
    assert_eq!(json(&mut ws).await["id"], "first");
    let second = json(&mut ws).await;
    assert_eq!(second["id"], "second");
    assert_eq!(second["payload"]["n"], 2);
}

#[tokio::test]
async fn oversized_first_frame_is_refused_with_1009() {
    let s = setup(|c| c.auth.first_message_max_bytes = 1024).await;
    let (mut ws, _) = connect_like_openclaw(&s).await;
    let big = format!(
        r#"{{"type":"req","id":"big","pad":"{}"}}"#,
        "x".repeat(4096)
    );
    ws.send(Message::text(big)).await.unwrap();
    expect_close(&mut ws, CloseCode::Size, "too large").await;
    wait_log(&["[ws] unauthorized", "reason=first_message_too_large"]).await;
    assert!(s.gw.connects().is_empty());
}

#[tokio::test]
async fn non_json_first_frame_is_invalid() {
    let s = setup(|_| {}).await;
    let (mut ws, _) = connect_like_openclaw(&s).await;
    ws.send(Message::text("hello gateway")).await.unwrap();
    expect_close(&mut ws, CloseCode::Policy, "invalid connect").await;
    wait_log(&[
        "reason=first_message_invalid",
        "detail=first message is not JSON",
    ])
    .await;
    assert!(s.gw.connects().is_empty());
}

#[tokio::test]
async fn binary_first_frame_is_invalid() {
    let s = setup(|_| {}).await;
    let (mut ws, _) = connect_like_openclaw(&s).await;
    ws.send(Message::binary(
        cli_connect("b", Some(&s.gateway_token)).into_bytes(),
    ))
    .await
    .unwrap();
    expect_close(&mut ws, CloseCode::Policy, "invalid connect").await;
    wait_log(&[
        "reason=first_message_invalid",
        "detail=first message is not a text frame",
    ])
    .await;
}

#[tokio::test]
async fn control_or_fragmented_first_frame_is_invalid() {
    let s = setup(|_| {}).await;
    let (mut w, mut ws) = raw_client(s.proxy.addr).await;
    let _ = text(&mut ws).await;
    w.write_all(&client_frame(0x9, b"ping first"))
        .await
        .unwrap();
    expect_close(&mut ws, CloseCode::Policy, "invalid connect").await;
    wait_log(&[
        "reason=first_message_invalid",
        "detail=a control frame came first",
    ])
    .await;

    let (mut w, mut ws) = raw_client(s.proxy.addr).await;
    let _ = text(&mut ws).await;
    let mut frag = client_frame(ws::OP_TEXT, b"{\"type\":");
    frag[0] &= 0x7f; // FIN = 0
    w.write_all(&frag).await.unwrap();
    expect_close(&mut ws, CloseCode::Policy, "invalid connect").await;
    wait_log(&[
        "reason=first_message_invalid",
        "detail=fragmented first message",
    ])
    .await;
}

#[tokio::test]
async fn silent_client_times_out_before_the_gateway_would() {
    let s = setup(|c| c.auth.first_message_timeout = Secs(Duration::from_millis(300))).await;
    let (mut ws, _) = connect_like_openclaw(&s).await;
    // Send nothing: gatewarden's timeout (300 ms) fires before the gateway's own 15 s.
    expect_close(&mut ws, CloseCode::Policy, "connect timeout").await;
    wait_log(&["[ws] unauthorized", "reason=first_message_timeout"]).await;
}

#[tokio::test]
async fn injection_presents_the_gateway_token_for_a_client_token() {
    let s = setup(inject_first_message).await;
    let (mut ws, _) = connect_like_openclaw(&s).await;
    ws.send(Message::text(cli_connect("inj", Some(&s.client_token))))
        .await
        .unwrap();
    let hello = json(&mut ws).await;
    assert_eq!(
        hello["ok"], true,
        "the gateway accepted the injected token: {hello}"
    );
    let seen = s.gw.connects();
    assert_eq!(seen[0]["params"]["auth"]["token"], s.gateway_token.as_str());
    // Everything else in the request is as the client sent it.
    let mut expected: Value =
        serde_json::from_str(&cli_connect("inj", Some(&s.client_token))).unwrap();
    expected["params"]["auth"]["token"] = Value::String(s.gateway_token.clone());
    assert_eq!(seen[0], expected);
    assert!(!logs().contains(&s.gateway_token) && !logs().contains(&s.client_token));
}

#[tokio::test]
async fn injection_refuses_to_rewrite_a_device_signed_connect() {
    let s = setup(inject_first_message).await;
    let (mut ws, challenge) = connect_like_openclaw(&s).await;
    let nonce = nonce_of(&challenge);
    ws.send(Message::text(signed_connect(
        "sig",
        &s.client_token,
        &nonce,
    )))
    .await
    .unwrap();
    let res = json(&mut ws).await;
    assert_eq!(
        res["error"]["details"]["authReason"],
        "token_rewrite_refused"
    );
    expect_close(&mut ws, CloseCode::Policy, "device-signed").await;
    wait_log(&["[ws] unauthorized", "reason=token_rewrite_refused"]).await;
    assert!(s.gw.connects().is_empty());

    // The same signed client holding the gateway's current token passes untouched.
    let (mut ws, challenge) = connect_like_openclaw(&s).await;
    let nonce = nonce_of(&challenge);
    ws.send(Message::text(signed_connect(
        "sig2",
        &s.gateway_token,
        &nonce,
    )))
    .await
    .unwrap();
    assert_eq!(json(&mut ws).await["ok"], true);
}

#[tokio::test]
async fn header_injection_replaces_the_clients_credential() {
    let s = setup(|c| {
        c.upstream_auth.inject = Inject::Header;
        c.upstream_auth.credential = Some("gateway".into());
    })
    .await;
    // HTTP: the gateway's bearer-protected endpoint works with a client token.
    let req = hyper::Request::builder()
        .method("POST")
        .uri("/tools/invoke")
        .header("host", "x")
        .header("authorization", format!("Bearer {}", s.client_token))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    let resp = http_request(s.proxy.addr, req).await;
    assert_eq!(resp.status(), 200);
    let (_, headers) = s.gw.last_request();
    assert_eq!(
        headers["authorization"],
        format!("Bearer {}", s.gateway_token).as_str()
    );

    // WebSocket upgrade with the client token in the query: removed, gateway token in a header.
    let (_ws, _) = ws_connect(
        s.proxy.addr,
        &format!("/?x=1&token={}", s.client_token),
        &[],
    )
    .await
    .unwrap();
    let (uri, headers) = s.gw.last_request();
    assert_eq!(uri, "/?x=1");
    assert_eq!(
        headers["authorization"],
        format!("Bearer {}", s.gateway_token).as_str()
    );
}

#[tokio::test]
async fn forwarded_headers_are_dropped_unless_the_peer_is_trusted() {
    let s = setup(|_| {}).await;
    let spoof = [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-real-ip", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
    ];
    let (mut ws, resp) = ws_connect(s.proxy.addr, "/", &spoof).await.unwrap();
    assert_eq!(resp.status(), 101, "the gateway did not answer 403");
    let _ = text(&mut ws).await;
    let (_, headers) = s.gw.last_request();
    for (h, _) in spoof {
        assert!(!headers.contains_key(h), "{h} reached the gateway");
    }

    // A trusted peer's headers pass through (and this gateway then refuses them, as the real
    // one does without gateway.trustedProxies) — the gateway's answer comes back as is.
    let s = setup(|c| c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]).await;
    match ws_connect(s.proxy.addr, "/", &spoof).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403);
            assert_eq!(
                resp.body().as_deref(),
                Some(&b"proxy_attribution_required"[..])
            );
        }
        other => panic!("expected the gateway's 403, got {other:?}"),
    }
}

#[tokio::test]
async fn plain_http_control_ui_passes_with_cookie() {
    let s = setup(|_| {}).await;
    let resp = http_request(
        s.proxy.addr,
        get(s.proxy.addr, &format!("/?token={}", s.client_token)),
    )
    .await;
    assert_eq!(resp.status(), 303);
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let mut req = get(s.proxy.addr, "/");
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let resp = http_request(s.proxy.addr, req).await;
    assert_eq!(resp.status(), 200);
    assert!(String::from_utf8_lossy(&body_bytes(resp).await).contains("OpenClaw Control"));
}

#[tokio::test]
async fn gateway_silence_timer_is_shorter_than_ours() {
    // The gateway closes a silent pre-auth socket itself (1000); that close reaches the
    // client and the tunnel ends cleanly.
    let s = setup_with_gateway(
        |t| openclaw::start_with(t, Duration::from_millis(200)),
        |c| c.auth.first_message_timeout = Secs(Duration::from_secs(20)),
    )
    .await;
    let (mut ws, _) = connect_like_openclaw(&s).await;
    expect_close(&mut ws, CloseCode::Normal, "").await;
    // tungstenite sends its answering close on the next read.
    assert!(next_msg(&mut ws).await.is_none());
    // The client's answering close went through; the tunnel ended as a normal close.
    wait_log(&["[ws] closed", "code=1000", "by=upstream"]).await;
    assert!(s.gw.connects().is_empty());
}
