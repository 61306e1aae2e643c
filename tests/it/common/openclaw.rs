//! A fake OpenClaw gateway that behaves like the real one on the wire
//! (see ../shared/openclaw-protocol.md):
//! - after the 101 it speaks first: a `connect.challenge` event with a fresh nonce;
//! - it reads one `connect` request and checks `params.auth.token`; a `params.device` must
//!   echo the challenge nonce and carry a signature over the nonce *and the token*;
//! - a wrong/missing token gets an error `res` echoing the id, then close 1008;
//! - success is a `hello-ok` `res`; afterwards `{"method":"echo"}` requests are answered;
//! - a socket silent before `connect` is closed (1000) after `silent_timeout`;
//! - forwarded headers from a loopback peer get HTTP 403 `proxy_attribution_required`;
//! - `Mode::Password` checks `auth.password ?? auth.token`, the signature still covers
//!   `auth.token ?? auth.deviceToken`; `Mode::TrustedProxy` takes the user from the upgrade;
//! - a device-signed client gets a `deviceToken` in `hello-ok.auth`, accepted later alone;
//! - `/health` answers JSON, `POST /tools/invoke` needs `Authorization: Bearer <token>`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Body = BoxBody<Bytes, hyper::Error>;

#[derive(Default)]
pub struct Record {
    /// Exact text of every challenge sent.
    pub challenges: Vec<String>,
    /// Every `connect` request received (parsed).
    pub connects: Vec<Value>,
    /// Request headers of every upgrade / HTTP request.
    pub requests: Vec<(String, http::HeaderMap)>,
}

/// `gateway.auth.mode`, as far as the fake plays it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Checks `params.auth.token ?? params.auth.password` against `token`.
    Token,
    /// Checks `params.auth.password ?? params.auth.token` against `token` (the password).
    Password,
    /// Takes the user from this upgrade header (`allowLoopback: true`, loopback trusted);
    /// an upgrade without it, or whose `X-Forwarded-For` is missing or loopback, is closed
    /// 1011 ("unattributable proxy-shaped traffic") after the 101.
    TrustedProxy { user_header: String },
}

#[derive(Clone)]
pub struct FakeGateway {
    pub addr: SocketAddr,
    pub token: Arc<Mutex<String>>,
    pub record: Arc<Mutex<Record>>,
    pub mode: Arc<Mutex<Mode>>,
    /// Device tokens handed out in `hello-ok.auth.deviceToken` to device-signed clients.
    pub device_tokens: Arc<Mutex<Vec<String>>>,
}

impl FakeGateway {
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn connects(&self) -> Vec<Value> {
        self.record.lock().unwrap().connects.clone()
    }

    pub fn challenges(&self) -> Vec<String> {
        self.record.lock().unwrap().challenges.clone()
    }

    /// Every HTTP request the gateway saw: target and headers.
    pub fn requests(&self) -> Vec<(String, http::HeaderMap)> {
        self.record.lock().unwrap().requests.clone()
    }

    pub fn last_request(&self) -> (String, http::HeaderMap) {
        self.record
            .lock()
            .unwrap()
            .requests
            .last()
            .cloned()
            .unwrap()
    }
}

/// The fake's device "signature": SHA-256 over the same payload the real clients sign.
pub fn device_signature(device_id: &str, token: &str, nonce: &str, signed_at: u64) -> String {
    let payload = format!(
        "v3|{device_id}|cli|cli|operator|operator.read,operator.write|{signed_at}|{token}|{nonce}|linux|node"
    );
    hex(&Sha256::digest(payload.as_bytes()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A `connect` request shaped like the official CLI's.
pub fn cli_connect(id: &str, token: Option<&str>) -> String {
    let mut v = json!({
        "type": "req",
        "id": id,
        "method": "connect",
        "params": {
            "minProtocol": 4,
            "maxProtocol": 4,
            "client": {"id": "cli", "mode": "cli", "version": "2026.9.6", "platform": "linux"},
            "role": "operator",
            "scopes": ["operator.read", "operator.write"],
        }
    });
    if let Some(t) = token {
        v["params"]["auth"] = json!({ "token": t });
    }
    v.to_string()
}

/// A device-signed `connect`: the signature covers the challenge nonce and the token.
pub fn signed_connect(id: &str, token: &str, nonce: &str) -> String {
    let signed_at = 1_790_000_000_000u64;
    let mut v: Value = serde_json::from_str(&cli_connect(id, Some(token))).unwrap();
    v["params"]["device"] = json!({
        "id": "dev-1",
        "publicKey": "pk-test",
        "signature": device_signature("dev-1", token, nonce, signed_at),
        "signedAt": signed_at,
        "nonce": nonce,
    });
    v.to_string()
}

pub async fn start(token: &str) -> FakeGateway {
    start_with(token, Duration::from_secs(15)).await
}

pub async fn start_with(token: &str, silent_timeout: Duration) -> FakeGateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_on(listener, token, silent_timeout)
}

/// A gateway on a listener the caller bound (to start it on an address chosen earlier).
pub fn start_on(listener: TcpListener, token: &str, silent_timeout: Duration) -> FakeGateway {
    let gw = FakeGateway {
        addr: listener.local_addr().unwrap(),
        token: Arc::new(Mutex::new(token.to_string())),
        record: Arc::default(),
        mode: Arc::new(Mutex::new(Mode::Token)),
        device_tokens: Arc::default(),
    };
    let g = gw.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let g = g.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    handle(req, peer, g.clone(), silent_timeout)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    gw
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).map_err(|n| match n {}).boxed());
    *r.status_mut() = status;
    r
}

async fn handle(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    g: FakeGateway,
    silent_timeout: Duration,
) -> Result<Response<Body>, Infallible> {
    g.record
        .lock()
        .unwrap()
        .requests
        .push((req.uri().to_string(), req.headers().clone()));
    let forwarded = ["x-forwarded-for", "x-real-ip", "forwarded"]
        .iter()
        .any(|h| req.headers().contains_key(*h));
    let is_ws = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if is_ws {
        let mode = g.mode.lock().unwrap().clone();
        let trusted_proxy = matches!(mode, Mode::TrustedProxy { .. });
        if forwarded && peer.ip().is_loopback() && !trusted_proxy {
            return Ok(full(StatusCode::FORBIDDEN, "proxy_attribution_required"));
        }
        let key = req.headers().get("sec-websocket-key").unwrap().clone();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        let user = match &mode {
            Mode::TrustedProxy { user_header } => Some(trusted_user(req.headers(), user_header)),
            _ => None,
        };
        tokio::spawn(async move {
            let Ok(up) = on_upgrade.await else { return };
            let ws = WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None).await;
            session(ws, g, silent_timeout, user).await;
        });
        let mut r = full(StatusCode::SWITCHING_PROTOCOLS, "");
        let h = r.headers_mut();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("sec-websocket-accept", accept.parse().unwrap());
        return Ok(r);
    }
    let path = req.uri().path().to_string();
    if path == "/health" || path == "/healthz" {
        return Ok(full(StatusCode::OK, r#"{"ok":true,"status":"live"}"#));
    }
    if path == "/tools/invoke" {
        let want = format!("Bearer {}", g.token.lock().unwrap());
        let ok = req
            .headers()
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == want.as_bytes());
        return Ok(if ok {
            full(StatusCode::OK, r#"{"ok":true}"#)
        } else {
            full(
                StatusCode::UNAUTHORIZED,
                r#"{"ok":false,"error":"unauthorized"}"#,
            )
        });
    }
    Ok(full(
        StatusCode::OK,
        "<!doctype html><title>OpenClaw Control</title>",
    ))
}

/// The user a trusted proxy names: its header, with an `X-Forwarded-For` that attributes the
/// request to a client that is not loopback.
fn trusted_user(h: &http::HeaderMap, user_header: &str) -> Option<String> {
    let xff = h.get("x-forwarded-for")?.to_str().ok()?;
    let client: std::net::IpAddr = xff.split(',').next_back()?.trim().parse().ok()?;
    if client.is_loopback() {
        return None;
    }
    Some(h.get(user_header)?.to_str().ok()?.to_string())
}

fn error_res(id: &Value, reason: &str, code: &str, message: &str) -> String {
    json!({
        "type": "res", "id": id, "ok": false,
        "error": {
            "code": "INVALID_REQUEST",
            "message": message,
            "details": { "code": code, "authReason": reason },
        }
    })
    .to_string()
}

async fn close<S>(ws: &mut WebSocketStream<S>, code: u16, reason: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = ws
        .close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        }))
        .await;
    // Drain until the peer answers or leaves.
    while let Some(Ok(_)) = ws.next().await {}
}

async fn session<S>(
    mut ws: WebSocketStream<S>,
    g: FakeGateway,
    silent_timeout: Duration,
    user: Option<Option<String>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let nonce = uuid::Uuid::new_v4().to_string();
    let challenge = json!({
        "type": "event",
        "event": "connect.challenge",
        "payload": { "nonce": nonce, "ts": 1_790_000_000_123u64 },
    })
    .to_string();
    g.record.lock().unwrap().challenges.push(challenge.clone());
    if ws.send(Message::text(challenge)).await.is_err() {
        return;
    }
    let first = match tokio::time::timeout(silent_timeout, ws.next()).await {
        Err(_) => return close(&mut ws, 1000, "").await,
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(_) => return,
    };
    let Ok(req) = serde_json::from_str::<Value>(&first) else {
        return close(&mut ws, 1008, "invalid handshake").await;
    };
    g.record.lock().unwrap().connects.push(req.clone());
    let user = match user {
        Some(None) => return close(&mut ws, 1011, "unattributable proxy-shaped traffic").await,
        Some(user) => user,
        None => None,
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let auth = |k: &str| {
        req.pointer(&format!("/params/auth/{k}"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    };
    let mode = g.mode.lock().unwrap().clone();
    // The gateway's rule: `params.auth[mode]`, else the other of token and password.
    let presented = match mode {
        Mode::Password => auth("password").or(auth("token")),
        _ => auth("token").or(auth("password")),
    };
    let device_token = auth("deviceToken");
    // What the device signature covers.
    let signed = auth("token").or(device_token);
    let current = g.token.lock().unwrap().clone();
    if let Some(device) = req.pointer("/params/device") {
        let dnonce = device.get("nonce").and_then(Value::as_str).unwrap_or("");
        if dnonce != nonce {
            let m = "device nonce mismatch";
            let _ = ws
                .send(Message::text(error_res(
                    &id,
                    "device_nonce_mismatch",
                    "DEVICE_NONCE_MISMATCH",
                    m,
                )))
                .await;
            return close(&mut ws, 1008, m).await;
        }
        let want = device_signature(
            device.get("id").and_then(Value::as_str).unwrap_or(""),
            signed.unwrap_or(""),
            &nonce,
            device.get("signedAt").and_then(Value::as_u64).unwrap_or(0),
        );
        if device.get("signature").and_then(Value::as_str) != Some(want.as_str()) {
            let m = "device signature invalid";
            let _ = ws
                .send(Message::text(error_res(
                    &id,
                    "device_signature_invalid",
                    "DEVICE_SIGNATURE_INVALID",
                    m,
                )))
                .await;
            return close(&mut ws, 1008, m).await;
        }
    }
    let issued =
        |t: Option<&str>| t.is_some_and(|d| g.device_tokens.lock().unwrap().iter().any(|i| i == d));
    // The gateway's "shared-token-fallback": a device-signed connect's `auth.token` that is
    // no shared secret is tried as a device token.
    let by_device_token = (presented.is_none() && issued(device_token))
        || (presented != Some(current.as_str())
            && req.pointer("/params/device").is_some()
            && issued(auth("token")));
    match presented {
        _ if user.is_some() || by_device_token => {}
        None if device_token.is_some() => {
            let m = "unauthorized: device token mismatch (rotate/reissue device token)";
            let _ = ws
                .send(Message::text(error_res(
                    &id,
                    "device_token_mismatch",
                    "AUTH_DEVICE_TOKEN_MISMATCH",
                    m,
                )))
                .await;
            return close(&mut ws, 1008, m).await;
        }
        None => {
            let m = "unauthorized: gateway token missing (provide gateway auth token)";
            let _ = ws
                .send(Message::text(error_res(
                    &id,
                    "token_missing",
                    "AUTH_TOKEN_MISSING",
                    m,
                )))
                .await;
            return close(&mut ws, 1008, m).await;
        }
        Some(t) if t != current => {
            let m = "unauthorized: gateway token mismatch (provide gateway auth token)";
            let _ = ws
                .send(Message::text(error_res(
                    &id,
                    "token_mismatch",
                    "AUTH_TOKEN_MISMATCH",
                    m,
                )))
                .await;
            return close(&mut ws, 1008, m).await;
        }
        Some(_) => {}
    }
    let mut hello = json!({"type": "res", "id": id, "ok": true, "payload": {"type": "hello-ok", "protocol": 4}});
    if req.pointer("/params/device").is_some() {
        let issued = format!("dt-{}", uuid::Uuid::new_v4().simple());
        g.device_tokens.lock().unwrap().push(issued.clone());
        hello["payload"]["auth"] = json!({ "deviceToken": issued, "role": "operator" });
    }
    if let Some(user) = &user {
        hello["payload"]["user"] = json!(user);
    }
    if ws.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = &msg {
            let Ok(v) = serde_json::from_str::<Value>(t) else {
                continue;
            };
            let res =
                json!({"type": "res", "id": v.get("id"), "ok": true, "payload": v.get("params")});
            if ws.send(Message::text(res.to_string())).await.is_err() {
                return;
            }
        }
    }
}
