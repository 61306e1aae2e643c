//! Asking the gateway, instead of guessing: one WebSocket to the upstream, its first frame
//! read (an OpenClaw gateway speaks first, `connect.challenge`), and, when a secret is
//! given, one minimal `connect` as OpenClaw's own probe client (`openclaw-probe`, mode
//! `probe`, no scopes): the gateway's answer is reported, and the socket closed with 1000.
//! Nothing that changes state is sent. Used by `doctor` and, at start, to notice an OpenClaw
//! gateway behind a token gatewarden made up itself.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::Stream;
use crate::upstream::UpstreamClient;
use crate::ws;

/// Which secret a `connect` carries (`params.auth.token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretKind {
    Token,
    /// `params.auth.password`, for a gateway in password mode.
    Password,
    /// No secret (`auth: {}`): for a gateway in trusted-proxy mode, whose answer says
    /// whether it trusts gatewarden's address at all.
    Nothing,
}

/// What the upstream turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Probe {
    /// No connection, or no answer to the upgrade in time.
    Unreachable(String),
    /// It answered the upgrade with something other than 101.
    NoWebSocket(u16),
    /// A WebSocket server that did not speak first: not an OpenClaw gateway.
    NotOpenClaw,
    /// An OpenClaw gateway; its answer to the `connect`, when one was sent.
    OpenClaw(Option<Answer>),
}

/// The gateway's answer to the probe's `connect`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// `hello-ok`: the secret is the one the gateway expects.
    Accepted { version: Option<String> },
    /// An error response: its `error.code`, `details.code`, `details.authReason`, message.
    Refused {
        code: String,
        detail: Option<String>,
        auth_reason: Option<String>,
        message: String,
    },
    /// Closed without an answer.
    Closed { code: u16, reason: String },
    /// Nothing within the time allowed.
    Silent,
}

impl Answer {
    /// The gateway's auth mode, as far as its answer tells it.
    pub(crate) fn auth_mode(&self) -> Option<&'static str> {
        let reason = match self {
            Answer::Refused { auth_reason, .. } => auth_reason.as_deref()?,
            Answer::Closed { reason, .. } if reason.contains("unattributable") => {
                return Some("trusted-proxy")
            }
            _ => return None,
        };
        Some(if reason.starts_with("token") {
            "token"
        } else if reason.starts_with("password") {
            "password"
        } else if reason.starts_with("trusted_proxy") {
            "trusted-proxy"
        } else {
            return None;
        })
    }
}

/// Probes the upstream; with `secret`, also presents it in a `connect`.
pub(crate) async fn probe(
    upstream: &UpstreamClient,
    secret: Option<(SecretKind, &str)>,
    wait: Duration,
) -> Probe {
    probe_with(upstream, secret, &[], wait).await
}

/// [`probe`] with extra headers on the upgrade (a trusted proxy's naming of its user).
pub(crate) async fn probe_with(
    upstream: &UpstreamClient,
    secret: Option<(SecretKind, &str)>,
    headers: &[(&str, &str)],
    wait: Duration,
) -> Probe {
    let key = ws::new_key();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: gatewarden/{} (probe)\r\n{extra}\r\n",
        upstream.authority(),
        key.to_str().unwrap_or_default(),
        env!("CARGO_PKG_VERSION"),
    );
    let answer = match tokio::time::timeout(wait, upstream.upgrade(head.as_bytes())).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Probe::Unreachable(e.to_string()),
        Err(_) => return Probe::Unreachable(format!("no answer to the upgrade within {wait:?}")),
    };
    if answer.status != http::StatusCode::SWITCHING_PROTOCOLS {
        return Probe::NoWebSocket(answer.status.as_u16());
    }
    let mut conn = Frames {
        stream: answer.stream,
        buf: answer.rest.to_vec(),
    };
    let first = conn.next_text(wait).await;
    let is_challenge = first.as_ref().is_some_and(|t| {
        serde_json::from_str::<Value>(t).is_ok_and(|v| v["event"] == "connect.challenge")
    });
    if !is_challenge {
        conn.close().await;
        return Probe::NotOpenClaw;
    }
    let Some((kind, secret)) = secret else {
        conn.close().await;
        return Probe::OpenClaw(None);
    };
    let reply = connect(&mut conn, kind, secret, wait).await;
    conn.close().await;
    Probe::OpenClaw(Some(reply))
}

const PROBE_ID: &str = "gatewarden-doctor";

async fn connect(conn: &mut Frames, kind: SecretKind, secret: &str, wait: Duration) -> Answer {
    let auth = match kind {
        SecretKind::Token => json!({ "token": secret }),
        SecretKind::Password => json!({ "password": secret }),
        SecretKind::Nothing => json!({}),
    };
    let req = json!({
        "type": "req",
        "id": PROBE_ID,
        "method": "connect",
        "params": {
            "minProtocol": 4,
            "maxProtocol": 4,
            "client": {
                "id": "openclaw-probe",
                "mode": "probe",
                "version": concat!("gatewarden-", env!("CARGO_PKG_VERSION")),
                "platform": std::env::consts::OS,
            },
            "role": "operator",
            "scopes": [],
            "auth": auth,
        }
    });
    let frame = ws::encode_frame(
        ws::OP_TEXT,
        req.to_string().as_bytes(),
        Some(ws::random_mask()),
    );
    if conn.stream.write_all(&frame).await.is_err() {
        return Answer::Closed {
            code: 1006,
            reason: String::new(),
        };
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match conn.next(left).await {
            Some(Message::Text(t)) => {
                let Ok(v) = serde_json::from_str::<Value>(&t) else {
                    continue;
                };
                if v["type"] != "res" || v["id"] != PROBE_ID {
                    continue;
                }
                return read_res(&v);
            }
            Some(Message::Close(code, reason)) => return Answer::Closed { code, reason },
            Some(Message::Other) => {}
            None => return Answer::Silent,
        }
    }
}

fn read_res(v: &Value) -> Answer {
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    if v["ok"] == true {
        return Answer::Accepted {
            version: text("/payload/server/version"),
        };
    }
    Answer::Refused {
        code: text("/error/code").unwrap_or_default(),
        detail: text("/error/details/code"),
        auth_reason: text("/error/details/authReason"),
        message: text("/error/message").unwrap_or_default(),
    }
}

enum Message {
    Text(String),
    Close(u16, String),
    Other,
}

/// Server frames off the probe's socket.
struct Frames {
    stream: Stream,
    buf: Vec<u8>,
}

impl Frames {
    async fn next_text(&mut self, wait: Duration) -> Option<String> {
        match self.next(wait).await? {
            Message::Text(t) => Some(t),
            _ => None,
        }
    }

    async fn next(&mut self, wait: Duration) -> Option<Message> {
        tokio::time::timeout(wait, self.read_frame()).await.ok()?
    }

    async fn read_frame(&mut self) -> Option<Message> {
        const MAX: u64 = 4 << 20;
        loop {
            if let Some(h) = ws::FrameHeader::parse(&self.buf) {
                if h.payload_len > MAX {
                    return None;
                }
                let len = h.header_len + h.payload_len as usize;
                if self.buf.len() >= len {
                    let payload: Vec<u8> = self.buf[h.header_len..len].to_vec();
                    self.buf.drain(..len);
                    return Some(match h.opcode {
                        ws::OP_TEXT => Message::Text(String::from_utf8_lossy(&payload).into()),
                        ws::OP_CLOSE => {
                            let code = payload
                                .get(..2)
                                .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                            let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]));
                            Message::Close(code, reason.into())
                        }
                        _ => Message::Other,
                    });
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// A clean close: 1000, then a short wait for the gateway's answering close.
    async fn close(&mut self) {
        let frame = ws::close_frame_masked(1000, "gatewarden probe done", Some(ws::random_mask()));
        let _ = self.stream.write_all(&frame).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(m) = self.read_frame().await {
                if matches!(m, Message::Close(..)) {
                    break;
                }
            }
        })
        .await;
        let _ = self.stream.shutdown().await;
    }
}
