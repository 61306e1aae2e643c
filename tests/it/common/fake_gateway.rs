//! A gateway on raw TCP, built for the case at hand (after linkerd2-proxy's test support): it
//! reads each connection's request head, records it, and then answers as told: a real 101
//! and a WebSocket echo, a refusal, a 101 with a wrong accept key, raw bytes, a reset, or
//! nothing at all. OpenClaw's challenge and connect are played by [`super::openclaw`], the
//! protocol-faithful fake, reached through [`FakeGateway::openclaw`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// What the gateway does once it has read a request head.
#[derive(Clone)]
enum Answer {
    /// 101 with the right `Sec-WebSocket-Accept`, then echo every message.
    Upgrade,
    /// A complete HTTP answer with this status and body, then close.
    Refuse(u16, &'static str),
    /// 101 with an accept key for some other key.
    WrongAccept,
    /// These bytes as they are.
    Raw(&'static [u8]),
    /// A TCP reset (`SO_LINGER` 0, then close).
    Reset,
    /// Nothing: the connection is held open, unanswered.
    Silent,
}

/// How a fake gateway is to behave; [`FakeGateway::start`] runs it.
#[derive(Clone)]
pub struct FakeGateway {
    answer: Answer,
    /// After answering: keep the connection until the peer closes it.
    hold: bool,
}

/// A running fake gateway.
pub struct Running {
    pub addr: SocketAddr,
    /// Every request head it read, in order.
    pub heads: Arc<Mutex<Vec<String>>>,
    /// Connections it accepted (a silent gateway's are held here).
    pub accepted: Arc<Mutex<Vec<TcpStream>>>,
}

impl Running {
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl FakeGateway {
    /// Upgrades every request and echoes what the client sends.
    pub fn upgrading() -> FakeGateway {
        FakeGateway::with(Answer::Upgrade)
    }

    /// Answers every request `status` with `body`.
    pub fn refusing(status: u16, body: &'static str) -> FakeGateway {
        FakeGateway::with(Answer::Refuse(status, body))
    }

    /// Answers 101 with an accept key that is not the request's.
    pub fn accepting_another_key() -> FakeGateway {
        FakeGateway::with(Answer::WrongAccept).holding()
    }

    /// Writes `bytes` as its answer, whatever they say.
    pub fn raw(bytes: &'static [u8]) -> FakeGateway {
        FakeGateway::with(Answer::Raw(bytes))
    }

    /// Resets each connection once it has read the head.
    pub fn resetting() -> FakeGateway {
        FakeGateway::with(Answer::Reset)
    }

    /// Accepts and never answers.
    pub fn silent() -> FakeGateway {
        FakeGateway::with(Answer::Silent)
    }

    /// The OpenClaw gateway fake (challenge, connect, hello-ok), with its shared token.
    pub async fn openclaw(token: &str) -> super::openclaw::FakeGateway {
        super::openclaw::start(token).await
    }

    /// Keeps each connection open after the answer until the peer closes it.
    pub fn holding(mut self) -> FakeGateway {
        self.hold = true;
        self
    }

    fn with(answer: Answer) -> FakeGateway {
        FakeGateway {
            answer,
            hold: false,
        }
    }

    pub async fn start(self) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = Running {
            addr: listener.local_addr().unwrap(),
            heads: Arc::default(),
            accepted: Arc::default(),
        };
        let (heads, accepted) = (running.heads.clone(), running.accepted.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (this, heads, accepted) = (self.clone(), heads.clone(), accepted.clone());
                tokio::spawn(async move { this.serve(s, heads, accepted).await });
            }
        });
        running
    }

    async fn serve(
        self,
        mut s: TcpStream,
        heads: Arc<Mutex<Vec<String>>>,
        accepted: Arc<Mutex<Vec<TcpStream>>>,
    ) {
        if let Answer::Silent = self.answer {
            accepted.lock().unwrap().push(s);
            return;
        }
        let Some(head) = read_head(&mut s).await else {
            return;
        };
        heads.lock().unwrap().push(head.clone());
        let key = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_default();
        match self.answer {
            Answer::Upgrade => {
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
                    gatewarden::testing::ws::accept_key(key.as_bytes())
                );
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let mut ws = WebSocketStream::from_raw_socket(s, Role::Server, None).await;
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_close() || ws.send(m).await.is_err() {
                        break;
                    }
                }
                return;
            }
            Answer::Refuse(status, body) => {
                let answer = format!(
                    "HTTP/1.1 {status} Refused\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            }
            Answer::WrongAccept => {
                let _ = s
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                          Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                    )
                    .await;
            }
            Answer::Raw(bytes) => {
                let _ = s.write_all(bytes).await;
            }
            Answer::Reset => {
                // A zero linger never blocks: the close sends RST at once.
                #[allow(deprecated)]
                let _ = s.set_linger(Some(std::time::Duration::ZERO));
                return;
            }
            Answer::Silent => unreachable!("handled above"),
        }
        let mut b = [0u8; 1024];
        while self.hold && matches!(s.read(&mut b).await, Ok(1..)) {}
    }
}

/// A request head, up to its blank line; `None` when the peer left first.
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&b[..n]),
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The builder's gateways behave as they say (so the tests built on them can fail).
    #[tokio::test]
    async fn each_answer_is_what_it_says() {
        let refusing = FakeGateway::refusing(403, "no").start().await;
        let mut s = TcpStream::connect(refusing.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(
            out.starts_with("HTTP/1.1 403") && out.ends_with("no"),
            "{out}"
        );
        assert_eq!(refusing.heads().len(), 1);

        let upgrading = FakeGateway::upgrading().start().await;
        let url = format!("ws://{}/", upgrading.addr);
        let (mut ws, resp) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(resp.status(), 101);
        ws.send("echo?".into()).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap().into_text().unwrap(),
            "echo?"
        );

        let resetting = FakeGateway::resetting().start().await;
        let mut s = TcpStream::connect(resetting.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut b = [0u8; 16];
        let e = s.read(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    }
}
