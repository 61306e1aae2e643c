//! Test harness: a real upstream (hyper for HTTP, tokio-tungstenite for WebSocket) that
//! records what it saw, gatewarden itself on port 0, and a capture of gatewarden's logs.
#![allow(dead_code)]

pub mod binary;
pub mod certs;
pub mod fake_gateway;
pub mod h2raw;
pub mod openclaw;
pub mod raw;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gatewarden::config::{Config, CredentialSource, ListenAddr, Secs};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Generous: the suite must pass on a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(30);

pub type WsClient = WebSocketStream<TcpStream>;
type Body = BoxBody<Bytes, hyper::Error>;

// ---------------------------------------------------------------- log capture

struct LogBuf {
    text: Mutex<String>,
    notify: Notify,
}

fn logbuf() -> &'static LogBuf {
    static BUF: OnceLock<LogBuf> = OnceLock::new();
    BUF.get_or_init(|| LogBuf {
        text: Mutex::new(String::new()),
        notify: Notify::new(),
    })
}

struct CaptureWriter;

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let b = logbuf();
        b.text
            .lock()
            .unwrap()
            .push_str(&String::from_utf8_lossy(buf));
        b.notify.notify_waiters();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends gatewarden's logs (all tests in this binary) into a buffer tests can search.
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("gatewarden=debug")
            .with_ansi(false)
            .with_target(false)
            // The binary's own line format, so every test reads what production prints.
            .event_format(gatewarden::testing::TextFormat)
            .with_writer(|| CaptureWriter)
            .try_init();
        // The per-connection lines gatewarden writes by hand go to the same buffer.
        gatewarden::testing::capture_direct(|line| {
            let _ = std::io::Write::write(&mut CaptureWriter, line);
        });
    });
}

pub fn logs() -> String {
    logbuf().text.lock().unwrap().clone()
}

/// Waits for a log line that contains every needle; returns it.
pub async fn wait_log(needles: &[&str]) -> String {
    wait_logs(needles, 1).await.remove(0)
}

/// Waits for `n` log lines that each contain every needle; returns them in order.
pub async fn wait_logs(needles: &[&str], n: usize) -> Vec<String> {
    let find = || {
        let found: Vec<String> = logs()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
            .collect();
        (found.len() >= n).then_some(found)
    };
    let waited = tokio::time::timeout(WAIT, async {
        loop {
            let notified = logbuf().notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(l) = find() {
                return l;
            }
            notified.await;
        }
    })
    .await;
    match waited {
        Ok(l) => l,
        Err(_) => panic!(
            "not {n} log lines with {needles:?} within {WAIT:?}; logs:\n{}",
            logs()
        ),
    }
}

// ---------------------------------------------------------------- upstream

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
}

#[derive(Clone)]
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestUpstream {
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw a request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// Starts the upstream:
/// - WebSocket upgrades are accepted (except on `/refuse`: 403), the first offered
///   subprotocol among `chat`/`v2` is selected, and messages are echoed; the text
///   `close-4001` makes it close with 4001 "gateway auth changed"; `close-1008` with
///   1008, as a gateway refusing the session.
/// - `/echo` streams the request body back; any other path answers `upstream saw M URI`.
pub async fn start_upstream() -> TestUpstream {
    start_upstream_with(None).await
}

/// The same upstream, speaking TLS with `acceptor` when given.
pub async fn start_upstream_with(acceptor: Option<tokio_rustls::TlsAcceptor>) -> TestUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let up = TestUpstream {
        addr,
        seen: seen.clone(),
    };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| upstream_handle(req, seen.clone()));
                let builder = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), svc)
                            .with_upgrades()
                            .await;
                    }
                    Some(a) => {
                        let Ok(tls) = a.accept(stream).await else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(TokioIo::new(tls), svc)
                            .with_upgrades()
                            .await;
                    }
                }
            });
        }
    });
    up
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

async fn upstream_handle(
    mut req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Body>, Infallible> {
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers: req.headers().clone(),
    });
    let is_ws = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if is_ws {
        if req.uri().path() == "/h2c" {
            // A broken upstream: switches protocols, but not to WebSocket.
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("connection", "Upgrade".parse().unwrap());
            r.headers_mut().insert("upgrade", "h2c".parse().unwrap());
            return Ok(r);
        }
        if req.uri().path() == "/refuse" {
            let mut r = Response::new(full("upstream says no\n"));
            *r.status_mut() = StatusCode::FORBIDDEN;
            r.headers_mut()
                .insert("x-upstream", "refused".parse().unwrap());
            return Ok(r);
        }
        let key = req.headers().get("sec-websocket-key").unwrap().clone();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let protocol = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .flat_map(|v| v.to_str().unwrap().split(','))
            .map(str::trim)
            .find(|p| *p == "chat" || *p == "v2")
            .map(str::to_string);
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = on_upgrade.await.unwrap();
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            echo(ws).await;
        });
        let mut r = Response::new(full(""));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("sec-websocket-accept", accept.parse().unwrap());
        if let Some(p) = protocol {
            h.insert("sec-websocket-protocol", p.parse().unwrap());
        }
        return Ok(r);
    }
    if req.uri().path() == "/echo" {
        let mut r = Response::new(req.into_body().boxed());
        r.headers_mut()
            .insert("x-upstream", "echo".parse().unwrap());
        return Ok(r);
    }
    let text = format!("upstream saw {} {}\n", req.method(), req.uri());
    let mut r = Response::new(full(text));
    r.headers_mut()
        .insert("x-upstream", "plain".parse().unwrap());
    r.headers_mut()
        .insert("keep-alive", "timeout=5".parse().unwrap());
    Ok(r)
}

async fn echo<S>(mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(msg)) = ws.next().await {
        if msg == Message::text("close-4001") {
            let close = CloseFrame {
                code: CloseCode::Library(4001),
                reason: "gateway auth changed".into(),
            };
            let _ = ws.close(Some(close)).await;
        } else if msg == Message::text("close-1008") {
            let close = CloseFrame {
                code: CloseCode::Policy,
                reason: "unauthorized: gateway token mismatch".into(),
            };
            let _ = ws.close(Some(close)).await;
        } else if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------- gatewarden

/// A test's gatewarden with what it stands in front of: a test upstream and a fresh token
/// file. Reads as the server it holds (`h.addr`, `h.admin`, `h.shutdown()`, …).
pub struct Harness {
    pub server: Running,
    pub upstream: TestUpstream,
    pub token: String,
    pub token_file: PathBuf,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for Harness {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.server
    }
}

impl std::ops::DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut Running {
        &mut self.server
    }
}

pub fn random_token() -> String {
    gatewarden::generate_token()
}

pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// A config for gatewarden in front of `upstream`, listening on an ephemeral port.
pub fn config_for(upstream: SocketAddr, token_file: &Path) -> Config {
    let mut c = Config {
        listen: ListenAddr("127.0.0.1:0".parse().unwrap()),
        upstream: upstream.to_string().parse().unwrap(),
        ..Config::default()
    };
    c.credentials.sources = vec![CredentialSource::plain(token_file)];
    // Many servers run at once: no fixed admin port.
    c.admin.listen = "127.0.0.1:0".into();
    c.shutdown.drain = Secs(Duration::from_secs(20));
    // Tunnels move to the worker loop at once, not after 16 frames: the tests' tunnels are
    // short, and the loop is the path busy tunnels take. Tests of the tunnel's own task set
    // `worker_loop = false` (TLS tunnels and zero-copy take it always).
    c.splice.worker_loop_after = 0;
    c
}

/// gatewarden (`config_for`, then `tweak`) in front of a test upstream, with a fresh token
/// file.
pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Harness {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let token_file = write_file(dir.path(), "token", &format!("  {token}\n"));
    let mut config = config_for(upstream.addr, &token_file);
    tweak(&mut config);
    Harness {
        server: serve(config).await,
        upstream,
        token,
        token_file,
        dir,
    }
}

/// gatewarden running in-process: the one handle every test holds on a server it started.
pub struct Running {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub creds: Arc<gatewarden::CredentialStore>,
    stop: Option<oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Starts the drain; `finished` resolves when `run` returns.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    pub async fn finished(&mut self) {
        let done = self.done.take().expect("not awaited twice");
        tokio::time::timeout(WAIT, done)
            .await
            .expect("server stopped in time")
            .unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done.abort();
        }
    }
}

pub async fn serve(mut config: Config) -> Running {
    capture_logs();
    config.listen = ListenAddr("127.0.0.1:0".parse().unwrap());
    if config.admin.listen == gatewarden::config::AdminConfig::default().listen {
        config.admin.listen = "127.0.0.1:0".into();
    }
    let server = gatewarden::Server::bind(config)
        .await
        .expect("gatewarden binds");
    let addr = server.local_addr();
    let admin = server.admin_addr();
    let creds = server.credentials();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        admin,
        creds,
        stop: Some(stop),
        done: Some(done),
    }
}

/// GET on the admin listener: status and body.
pub async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let resp = http_request(admin, get(admin, path)).await;
    let status = resp.status().as_u16();
    (
        status,
        String::from_utf8(body_bytes(resp).await.to_vec()).unwrap(),
    )
}

pub async fn start() -> Harness {
    start_with(|_| {}).await
}

// ---------------------------------------------------------------- clients

/// Opens a WebSocket through `addr` with extra request headers.
pub async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<
    (
        WsClient,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    timeout(tokio_tungstenite::client_async(req, stream)).await
}

/// The next data or close message, skipping nothing: fails on timeout.
pub async fn next_msg(ws: &mut WsClient) -> Option<Message> {
    timeout(ws.next()).await.map(|r| r.expect("websocket read"))
}

/// A WebSocket to `/ws` through `addr` with `Authorization: Bearer <token>`; fails the test
/// if the upgrade does not succeed.
pub async fn ws_bearer(addr: SocketAddr, token: &str) -> WsClient {
    let (ws, _) = ws_connect(
        addr,
        "/ws",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .unwrap();
    ws
}

/// Sends `text` and expects it back (the test upstreams echo).
pub async fn assert_echo(ws: &mut WsClient, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(next_msg(ws).await, Some(Message::text(text)));
}

pub async fn timeout<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("timed out waiting")
}

/// One HTTP/1.1 request over a fresh connection.
pub async fn http_request<B>(addr: SocketAddr, req: Request<B>) -> Response<Incoming>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    timeout(sender.send_request(req)).await.unwrap()
}

pub async fn body_bytes(resp: Response<Incoming>) -> Bytes {
    timeout(resp.into_body().collect())
        .await
        .unwrap()
        .to_bytes()
}

pub fn get(addr: SocketAddr, path_and_query: &str) -> Request<http_body_util::Empty<Bytes>> {
    Request::builder()
        .uri(path_and_query)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::new())
        .unwrap()
}

/// An address nothing listens on.
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}
