//! WebSocket transparency, differentially: the same scripted sessions run directly against
//! an upstream and through gatewarden must produce identical bytes on both ends.
//!
//! The upstream is an independent implementation (Python `websockets`, with
//! permessage-deflate on), reached through a recording tap that keeps, per connection, the
//! bytes the upstream received. The scripted client writes fixed frames (fixed masks) and
//! keeps every byte it receives. Only the HTTP heads may differ (gatewarden rewrites the
//! request's hop-by-hop headers); everything after them must be equal.

use crate::common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ------------------------------------------------------------------ the independent upstream

/// `tests/support/ws_peer.py server`; stops when dropped (its stdin closes).
struct PyServer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peer_script() -> String {
    format!("{}/tests/support/ws_peer.py", env!("CARGO_MANIFEST_DIR"))
}

async fn py_server() -> PyServer {
    py_server_args(&["server"]).await
}

async fn py_server_args(args: &[&str]) -> PyServer {
    let mut child = Command::new("python3")
        .arg(peer_script())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (the CI script installs it and `websockets`)");
    let stdout = child.stdout.take().unwrap();
    let port = timeout(tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    }))
    .await
    .unwrap();
    let port: u16 = port.trim().parse().unwrap_or_else(|_| {
        panic!("ws_peer.py server printed {port:?}; is `websockets` installed?")
    });
    PyServer {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

/// Bytes recorded on one connection.
type Recording = Arc<Mutex<Vec<u8>>>;

/// A TCP forwarder that records, per connection, the bytes it passes to the upstream.
#[derive(Clone)]
struct Tap {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Recording>>>,
}

impl Tap {
    async fn start(target: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tap = Tap {
            addr: listener.local_addr().unwrap(),
            conns: Arc::default(),
        };
        let conns = tap.conns.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let upstream = TcpStream::connect(target).await.unwrap();
                let log = Arc::new(Mutex::new(Vec::new()));
                conns.lock().unwrap().push(log.clone());
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                        if uw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = uw.shutdown().await;
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut ur, &mut cw).await;
                    let _ = cw.shutdown().await;
                });
            }
        });
        tap
    }

    fn last(&self) -> Vec<u8> {
        self.conns
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .lock()
            .unwrap()
            .clone()
    }
}

// ------------------------------------------------------------------ scripted client

/// A client frame, encoded here (not with gatewarden's encoder) with a fixed mask.
fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![(fin as u8) << 7 | opcode];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xffff => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if !masked {
        f.extend_from_slice(payload);
        return f;
    }
    let mask = [0x5a, 0x13, 0xc4, 0x7e];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONT: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// What one run of a session produced.
struct Run {
    /// `Sec-WebSocket-Extensions` of the 101 the client got.
    extensions: Option<String>,
    /// Every byte the client received after the response head.
    client_got: Vec<u8>,
    /// Every byte the upstream received after the request head.
    upstream_got: Vec<u8>,
}

fn after_head(bytes: &[u8]) -> (&[u8], &[u8]) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head")
        + 4;
    bytes.split_at(end)
}

/// Opens a WebSocket at `addr` (offering permessage-deflate) and writes `script.frames`;
/// once `script.replies` server frames have arrived, sends `script.close` (if any); reads
/// until the server closes the connection.
async fn run_session(addr: SocketAddr, tap: &Tap, token: &str, script: &Script) -> Run {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let head = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    w.write_all(head.as_bytes()).await.unwrap();
    // RFC 6455 §4.1: a client waits for the server's answer before sending frames. (Python
    // websockets 17.4 answers a ping that arrives with the handshake before its 101.)
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = timeout(r.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "closed during the handshake");
        got.extend_from_slice(&chunk[..n]);
    }
    let frames = script.frames.clone();
    let close = script.close.clone();
    let (replied, answered) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        for f in frames {
            // The upstream may close (and reset) before reading everything.
            if w.write_all(&f).await.is_err() {
                return w;
            }
        }
        // Closing only after the replies: a server answers a close at once, and its reply
        // could overtake echoes it is still producing.
        if let (Some(close), Ok(())) = (close, answered.await) {
            let _ = w.write_all(&close).await;
        }
        w
    });
    let head_len = got.len() - after_head(&got).1.len();
    let mut replied = Some(replied);
    timeout(async {
        loop {
            if replied.is_some() && count_frames(&got[head_len..]) >= script.replies {
                let _ = replied.take().unwrap().send(());
            }
            // Read until the upstream closes; a reset after its close frame is fine.
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    drop(replied);
    let _w = writer.await.unwrap();
    let (head, body) = after_head(&got);
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let extensions = head
        .lines()
        .find_map(|l| l.strip_prefix("sec-websocket-extensions:"))
        .map(|v| v.trim().to_string());
    let seen = tap.last();
    let (_, upstream_got) = after_head(&seen);
    Run {
        extensions,
        client_got: body.to_vec(),
        upstream_got: upstream_got.to_vec(),
    }
}

/// What a scripted client sends.
struct Script {
    frames: Vec<Vec<u8>>,
    /// Server frames to wait for before sending `close`.
    replies: usize,
    close: Option<Vec<u8>>,
}

/// Complete frames in server bytes.
fn count_frames(mut bytes: &[u8]) -> usize {
    let mut n = 0;
    while bytes.len() >= 2 {
        let (hl, len) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (4, u16::from_be_bytes([bytes[2], bytes[3]]) as usize),
            127 if bytes.len() >= 10 => (
                10,
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
            ),
            126 | 127 => return n,
            len => (2, len as usize),
        };
        if bytes.len() < hl + len {
            return n;
        }
        bytes = &bytes[hl + len..];
        n += 1;
    }
    n
}

/// The first close frame's code in server bytes.
fn close_code(mut bytes: &[u8]) -> Option<u16> {
    while bytes.len() >= 2 {
        let len7 = (bytes[1] & 0x7f) as usize;
        let (hl, len) = match len7 {
            126 => (4, u16::from_be_bytes([bytes[2], bytes[3]]) as usize),
            127 => (
                10,
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
            ),
            n => (2, n),
        };
        if bytes[0] & 0x0f == CLOSE {
            return Some(u16::from_be_bytes([bytes[hl], bytes[hl + 1]]));
        }
        bytes = &bytes[hl + len..];
    }
    None
}

struct Setup {
    _py: PyServer,
    tap: Tap,
    proxy: Harness,
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

async fn setup_with(tweak: impl FnOnce(&mut gatewarden::config::SpliceConfig)) -> Setup {
    let py = py_server().await;
    let tap = Tap::start(py.addr).await;
    let upstream = tap.addr;
    let proxy = start_with(|c| {
        c.upstream = upstream.to_string().parse().unwrap();
        tweak(&mut c.splice);
    })
    .await;
    Setup {
        _py: py,
        tap,
        proxy,
    }
}

/// Runs `frames` directly and through gatewarden; both ends must see the same bytes.
async fn differential(s: &Setup, script: &Script) -> Run {
    let direct = run_session(s.tap.addr, &s.tap, &s.proxy.token, script).await;
    let proxied = run_session(s.proxy.addr, &s.tap, &s.proxy.token, script).await;
    assert_eq!(
        direct.extensions, proxied.extensions,
        "negotiated extensions differ"
    );
    assert!(
        direct.upstream_got == proxied.upstream_got,
        "the upstream received different bytes: {} direct, {} through gatewarden",
        direct.upstream_got.len(),
        proxied.upstream_got.len()
    );
    assert!(
        direct.client_got == proxied.client_got,
        "the client received different bytes: {} direct, {} through gatewarden (direct ends {:?})",
        direct.client_got.len(),
        proxied.client_got.len(),
        &direct.client_got[direct.client_got.len().saturating_sub(24)..]
    );
    proxied
}

fn close(code: u16, reason: &str) -> Vec<u8> {
    frame(
        true,
        CLOSE,
        &[&code.to_be_bytes()[..], reason.as_bytes()].concat(),
        true,
    )
}

// ------------------------------------------------------------------ sessions

#[tokio::test]
async fn fragments_control_frames_empty_and_16mib_frames_pass_byte_for_byte() {
    mixed_session(setup().await).await;
}

/// The same with `splice.zero_copy`: large payloads move through a pipe with splice(2).
#[tokio::test]
async fn zero_copy_splice_is_just_as_transparent() {
    mixed_session(setup_with(|s| s.zero_copy = true).await).await;
}

/// The same relayed by the tunnel's own task (`splice.worker_loop = false`) instead of the
/// worker's epoll loop (which the other sessions here use from the start).
#[tokio::test]
async fn task_relay_is_just_as_transparent() {
    mixed_session(setup_with(|s| s.worker_loop = false).await).await;
}

/// The same with the move from the tunnel's task to the worker loop in mid-session.
#[tokio::test]
async fn moving_to_the_worker_loop_mid_session_is_just_as_transparent() {
    mixed_session(setup_with(|s| s.worker_loop_after = 5).await).await;
}

async fn mixed_session(s: Setup) {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let big: Vec<u8> = (0..16 << 20)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        })
        .collect();
    let frames = vec![
        frame(false, TEXT, b"frag", true),
        frame(true, PING, b"between fragments", true),
        frame(false, CONT, b"men", true),
        frame(true, PONG, b"unsolicited", true),
        frame(true, CONT, b"ted", true),
        frame(true, BINARY, b"", true),
        frame(true, TEXT, b"", true),
        frame(true, BINARY, &big, true),
        frame(true, TEXT, "ünïcödé ✓".as_bytes(), true),
    ];
    let script = Script {
        frames,
        // The pong, then five echoes.
        replies: 6,
        close: Some(close(1000, "done")),
    };
    let run = differential(&s, &script).await;
    // The upstream negotiated compression and gatewarden passed the extension through.
    let ext = run.extensions.expect("permessage-deflate negotiated");
    assert!(ext.starts_with("permessage-deflate"), "{ext}");
    // The upstream answered: pong, five echoes (compressed), close 1000.
    assert_eq!(close_code(&run.client_got), Some(1000));
    assert!(run.upstream_got.len() > 16 << 20);
}

#[tokio::test]
async fn invalid_frames_reach_the_upstream_which_answers_them() {
    let s = setup().await;
    for (name, bad, code) in [
        ("reserved opcode", frame(true, 0x3, b"x", true), 1002),
        (
            "unmasked client frame",
            frame(true, TEXT, b"x", false),
            1002,
        ),
        (
            "invalid UTF-8 in text",
            frame(true, TEXT, b"ok \xc3\x28 no", true),
            1007,
        ),
    ] {
        let script = Script {
            frames: vec![frame(true, TEXT, b"before", true), bad.clone()],
            replies: 0,
            close: None,
        };
        let run = differential(&s, &script).await;
        assert!(
            run.upstream_got.ends_with(&bad),
            "{name}: the upstream did not get the frame"
        );
        assert_eq!(close_code(&run.client_got), Some(code), "{name}");
    }
}

/// An independent client implementation (Python `websockets`) runs its own session, with
/// permessage-deflate, fragmentation, ping and a 16 MiB message, directly and through
/// gatewarden, and reports the same observations.
#[tokio::test]
async fn python_websockets_client_sees_the_same_session() {
    let s = setup().await;
    let client = |url: String, token: String| {
        tokio::task::spawn_blocking(move || {
            let out = Command::new("python3")
                .arg(peer_script())
                .args(["client", &url, &token])
                .output()
                .expect("python3 runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        })
    };
    let token = s.proxy.token.clone();
    let direct = timeout(client(format!("ws://{}/ws", s.tap.addr), token.clone()))
        .await
        .unwrap();
    let proxied = timeout(client(format!("ws://{}/ws", s.proxy.addr), token))
        .await
        .unwrap();
    assert_eq!(direct, proxied);
    assert!(proxied.contains("permessage-deflate"), "{proxied}");
    assert!(proxied.contains(r#""close": [4000, "bye"]"#), "{proxied}");
}

// ------------------------------------------------- compressed first messages (in-band auth)

/// Runs `ws_peer.py client connect URL TOKEN` and returns its JSON summary.
async fn py_connect_client(addr: SocketAddr, token: &str) -> serde_json::Value {
    let (url, token) = (format!("ws://{addr}/ws"), token.to_string());
    let out = timeout(tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(peer_script())
            .args(["client", "connect", &url, &token])
            .output()
            .expect("python3 runs")
    }))
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A deflate-enabled in-band gateway (Python `websockets`) behind gatewarden, which reads
/// the gateway token from a file named `gateway` and client tokens from one named `clients`,
/// with `first_message` among its sources.
struct InBand {
    _py: PyServer,
    proxy: Running,
    gateway_token: String,
    client_token: String,
    _dir: tempfile::TempDir,
}

async fn in_band(tweak: impl FnOnce(&mut gatewarden::config::Config)) -> InBand {
    use gatewarden::config::{CredentialSource, TokenSource};
    let gateway_token = random_token();
    let py = py_server_args(&["server", "openclaw", &gateway_token]).await;
    let dir = tempfile::tempdir().unwrap();
    let client_token = random_token();
    let gw = write_file(dir.path(), "gateway", &gateway_token);
    let clients = write_file(dir.path(), "clients", &client_token);
    let mut config = config_for(py.addr, &gw);
    config.credentials.sources = vec![
        CredentialSource {
            name: Some("gateway".into()),
            ..CredentialSource::plain(gw)
        },
        CredentialSource {
            name: Some("clients".into()),
            ..CredentialSource::plain(clients)
        },
    ];
    config.auth.sources = Some(vec![TokenSource::Header, TokenSource::FirstMessage]);
    tweak(&mut config);
    InBand {
        _py: py,
        proxy: serve(config).await,
        gateway_token,
        client_token,
        _dir: dir,
    }
}

/// A client and gateway that negotiate permessage-deflate (window bits 12, context kept):
/// the client's `connect` arrives compressed (RSV1). gatewarden reads it inflated, accepts
/// the right token and forwards the frame as it was sent — the gateway inflates it and the
/// next message, compressed against the first one's window, still reads right. A wrong
/// token in a compressed frame is refused by gatewarden as a mismatch, not as invalid.
#[tokio::test]
async fn a_compressed_first_message_is_read_inflated_and_forwarded_untouched() {
    let s = in_band(|_| {}).await;
    let ok = py_connect_client(s.proxy.addr, &s.gateway_token).await;
    assert!(
        ok["extensions"]
            .as_str()
            .is_some_and(|e| e.starts_with("permessage-deflate")),
        "{ok}"
    );
    assert_eq!(ok["challenge"], "connect.challenge", "{ok}");
    assert_eq!(ok["ok"], true, "the right token, compressed: {ok}");
    assert_eq!(ok["echo_matches"], true, "context takeover intact: {ok}");
    wait_log(&["[ws] connected", "source=first_message"]).await;

    let bad = py_connect_client(s.proxy.addr, &random_token()).await;
    assert_eq!(bad["ok"], false, "{bad}");
    assert_eq!(bad["close"][0], 1008, "{bad}");
    let reason = bad["close"][1].as_str().unwrap_or_default();
    assert!(reason.contains("token mismatch"), "{bad}");
    wait_log(&["[ws] unauthorized", "reason=token_mismatch"]).await;
}

/// `upstream_auth.inject = "first_message"` rewrites the first frame, which a compressed
/// session could not take (the client's later frames refer to bytes the gateway would never
/// see): gatewarden keeps the extension offer from the gateway, so the session runs
/// uncompressed, and the gateway sees its own token for the client's.
#[tokio::test]
async fn first_message_injection_keeps_compression_off_for_its_sessions() {
    use gatewarden::config::Inject;
    let s = in_band(|c| {
        c.upstream_auth.inject = Inject::FirstMessage;
        c.upstream_auth.credential = Some("gateway".into());
    })
    .await;
    let out = py_connect_client(s.proxy.addr, &s.client_token).await;
    assert_eq!(out["extensions"], serde_json::Value::Null, "{out}");
    assert_eq!(out["ok"], true, "the gateway got its own token: {out}");
    assert_eq!(out["echo_matches"], true, "{out}");
    wait_log(&["[ws] connected", "source=first_message"]).await;
}
