//! What reaches the upstream, and what reaches the client, before the client has shown a
//! valid token. Each test here was written against a defect found by attacking gatewarden
//! from outside; each failed on the code before its fix.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::raw::{raw_http, response_head};
use common::*;
use gatewarden::config::{Config, CredentialFormat, CredentialSource};
use gatewarden::testing::ws::{self, FrameHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHALLENGE: &str = r#"{"type":"event","event":"connect.challenge","payload":{"nonce":"6f1c2f7e-0c8a-4a57-9a5e-2d1f3b7c9e10","ts":1790000000123}}"#;
const SECRET: &str = "SECRET-STATE-SNAPSHOT";
/// What the upstream answers to anything the client sends.
const REPLY: &str = "SECRET-REPLY";

/// An upstream that, like a legacy gateway with weak auth, talks before the client has
/// said anything: right after its 101 it sends a challenge frame and then a frame of state
/// that only an authenticated client may see. Counts the connections it accepted, records
/// what the client sends and answers each read of it with a `REPLY` frame.
#[derive(Clone)]
struct Chatty {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    received: Arc<std::sync::Mutex<Vec<u8>>>,
}

async fn chatty_upstream() -> Chatty {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = Chatty {
        addr: listener.local_addr().unwrap(),
        connections: Arc::default(),
        received: Arc::default(),
    };
    let u = up.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            u.connections.fetch_add(1, Ordering::SeqCst);
            let received = u.received.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let key = text
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let mut out = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    ws::accept_key(key.as_bytes())
                )
                .into_bytes();
                out.extend(ws::encode_frame(ws::OP_TEXT, CHALLENGE.as_bytes(), None));
                out.extend(ws::encode_frame(ws::OP_TEXT, SECRET.as_bytes(), None));
                if s.write_all(&out).await.is_err() {
                    return;
                }
                loop {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            received.lock().unwrap().extend_from_slice(&b[..n]);
                            let reply = ws::encode_frame(ws::OP_TEXT, REPLY.as_bytes(), None);
                            if s.write_all(&reply).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    up
}

fn upgrade_request(addr: SocketAddr, extra: &str) -> Vec<u8> {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// Reads the response head; returns its status code and the bytes behind it.
async fn read_head(s: &mut TcpStream) -> (u16, Vec<u8>) {
    match response_head(s).await {
        (Some(status), rest) => (status, rest),
        (None, _) => panic!("closed before a response head"),
    }
}

/// Server frames (unmasked) as (opcode, payload), read from `buf` and then the socket.
struct Frames<'a> {
    s: &'a mut TcpStream,
    buf: Vec<u8>,
    /// Every byte that arrived, in order.
    all: Vec<u8>,
}

impl<'a> Frames<'a> {
    fn new(s: &'a mut TcpStream, rest: Vec<u8>) -> Self {
        Frames {
            s,
            all: rest.clone(),
            buf: rest,
        }
    }

    /// The next whole frame; `None` at the end of the stream.
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut b = [0u8; 4096];
        timeout(async {
            loop {
                if let Some(h) = FrameHeader::parse(&self.buf) {
                    let len = h.header_len + h.payload_len as usize;
                    if self.buf.len() >= len {
                        let payload = self.buf[h.header_len..len].to_vec();
                        self.buf.drain(..len);
                        return Some((h.opcode, payload));
                    }
                }
                match self.s.read(&mut b).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => {
                        self.buf.extend_from_slice(&b[..n]);
                        self.all.extend_from_slice(&b[..n]);
                    }
                }
            }
        })
        .await
    }

    /// Frames until (and including) the close frame or the end; the close code.
    async fn until_close(&mut self) -> Option<u16> {
        while let Some((op, p)) = self.next().await {
            if op == ws::OP_CLOSE {
                // Answer it, as a client does, so the server can finish.
                let _ = self
                    .s
                    .write_all(&ws::close_frame_masked(1000, "", Some([1, 2, 3, 4])))
                    .await;
                return (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
            }
        }
        None
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn connect_frame(token: &str) -> Vec<u8> {
    let payload = format!(
        r#"{{"type":"req","id":"c1","method":"connect","params":{{"auth":{{"token":"{token}"}}}}}}"#
    );
    ws::encode_frame(ws::OP_TEXT, payload.as_bytes(), Some([9, 8, 7, 6]))
}

/// gatewarden with only a plain token file (no OpenClaw config) in front of `up`.
async fn generic(
    up: &Chatty,
    tweak: impl FnOnce(&mut Config),
) -> (Running, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let mut config = config_for(up.addr, &tf);
    tweak(&mut config);
    (serve(config).await, token, dir)
}

/// gatewarden reading the gateway's own `openclaw.json` (OpenClaw mode) in front of `up`.
async fn openclaw_mode(
    up: &Chatty,
    tweak: impl FnOnce(&mut Config),
) -> (Running, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let oc = write_file(
        dir.path(),
        "openclaw.json",
        &format!(r#"{{"gateway":{{"mode":"local","auth":{{"mode":"token","token":"{token}"}}}}}}"#),
    );
    let mut config = config_for(up.addr, &oc);
    config.credentials.sources = vec![CredentialSource {
        format: CredentialFormat::Json5,
        ..CredentialSource::plain(oc)
    }];
    tweak(&mut config);
    (serve(config).await, token, dir)
}

/// The leak: with only a token file, a client that shows no token at all used to be
/// connected upstream, answered 101 and sent whatever the upstream said first.
#[tokio::test]
async fn generic_mode_a_tokenless_client_reaches_nothing_and_receives_nothing() {
    let up = chatty_upstream().await;
    let (gw, _token, _dir) = generic(&up, |_| {}).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(&upgrade_request(gw.addr, "")).await.unwrap();
    let (status, rest) = read_head(&mut s).await;
    assert_eq!(status, 101, "auth.reject = close answers 101 itself");
    let mut frames = Frames::new(&mut s, rest);
    let code = frames.until_close().await;
    assert_eq!(code, Some(1008));
    let all = frames.all.clone();
    assert!(
        !contains(&all, SECRET) && !contains(&all, "connect.challenge"),
        "the upstream's bytes reached a tokenless client: {:?}",
        String::from_utf8_lossy(&all)
    );
    assert!(
        contains(&all, "token missing"),
        "{:?}",
        String::from_utf8_lossy(&all)
    );
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        0,
        "the upstream saw a connection for a client with no token"
    );
}

/// In front of OpenClaw the gateway's challenge must reach the client before it has
/// authenticated (the client signs its nonce), but nothing more: the second frame waits
/// until the client's token is accepted, and a refused client never sees it.
#[tokio::test]
async fn openclaw_mode_relays_the_challenge_and_holds_the_rest_until_the_token_is_accepted() {
    let up = chatty_upstream().await;
    let (gw, token, _dir) = openclaw_mode(&up, |_| {}).await;

    // A client with a wrong token: the challenge, byte-exact, then only the refusal.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(&upgrade_request(gw.addr, "")).await.unwrap();
    let (status, rest) = read_head(&mut s).await;
    assert_eq!(status, 101);
    let mut frames = Frames::new(&mut s, rest);
    let first = frames.next().await.expect("the challenge");
    assert_eq!(
        (first.0, first.1.as_slice()),
        (ws::OP_TEXT, CHALLENGE.as_bytes())
    );
    // Give a leaking relay every chance to pass the second frame on before the verdict.
    wait_until(|| up.connections.load(Ordering::SeqCst) == 1).await;
    frames
        .s
        .write_all(&connect_frame("not-the-token"))
        .await
        .unwrap();
    let code = frames.until_close().await;
    assert_eq!(code, Some(1008));
    assert!(
        !contains(&frames.all, SECRET),
        "a refused client received the upstream's second frame: {:?}",
        String::from_utf8_lossy(&frames.all)
    );

    // The right token: the held frame follows once the token is accepted.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(&upgrade_request(gw.addr, "")).await.unwrap();
    let (status, rest) = read_head(&mut s).await;
    assert_eq!(status, 101);
    let mut frames = Frames::new(&mut s, rest);
    assert_eq!(frames.next().await.unwrap().1, CHALLENGE.as_bytes());
    let connect = connect_frame(&token);
    frames.s.write_all(&connect).await.unwrap();
    assert_eq!(frames.next().await.unwrap().1, SECRET.as_bytes());
    wait_until(|| {
        contains(&up.received.lock().unwrap(), "\"method\"")
            || up.received.lock().unwrap().len() >= connect.len()
    })
    .await;
    assert!(
        up.received.lock().unwrap().ends_with(&connect),
        "the connect frame reached the upstream byte-exact"
    );
}

/// Polls a condition the test cannot wait on as an event (another task's counter).
async fn wait_until(cond: impl Fn() -> bool) {
    timeout(async {
        while !cond() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
}

/// `first_message` configured by hand in front of a generic upstream, with no frame allowed
/// before authentication: a refused client sees nothing of the upstream at all, an
/// accepted one everything, in order.
#[tokio::test]
async fn no_preauth_frames_means_nothing_before_the_token() {
    use gatewarden::config::TokenSource::*;
    let up = chatty_upstream().await;
    let (gw, token, _dir) = generic(&up, |c| {
        c.auth.sources = Some(vec![Header, FirstMessage]);
        c.auth.first_message_preauth_frames = 0;
    })
    .await;
    for (presented, accepted) in [("wrong-token", false), (token.as_str(), true)] {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(&upgrade_request(gw.addr, "")).await.unwrap();
        let (status, rest) = read_head(&mut s).await;
        assert_eq!(status, 101);
        let mut frames = Frames::new(&mut s, rest);
        frames.s.write_all(&connect_frame(presented)).await.unwrap();
        if accepted {
            assert_eq!(frames.next().await.unwrap().1, CHALLENGE.as_bytes());
            assert_eq!(frames.next().await.unwrap().1, SECRET.as_bytes());
            assert_eq!(frames.next().await.unwrap().1, REPLY.as_bytes());
        } else {
            assert_eq!(frames.until_close().await, Some(1008));
            assert!(
                !contains(&frames.all, "connect.challenge") && !contains(&frames.all, SECRET),
                "{:?}",
                String::from_utf8_lossy(&frames.all)
            );
        }
    }
}

/// A client whose first frame is a close (it gives up before authenticating) gets the
/// closing handshake, not what the upstream says in answer to it.
#[tokio::test]
async fn a_client_closing_before_it_authenticates_gets_no_upstream_data() {
    let up = chatty_upstream().await;
    let (gw, _token, _dir) = openclaw_mode(&up, |_| {}).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(&upgrade_request(gw.addr, "")).await.unwrap();
    let (status, rest) = read_head(&mut s).await;
    assert_eq!(status, 101);
    let mut frames = Frames::new(&mut s, rest);
    assert_eq!(frames.next().await.unwrap().1, CHALLENGE.as_bytes());
    frames
        .s
        .write_all(&ws::close_frame_masked(1000, "bye", Some([5, 5, 5, 5])))
        .await
        .unwrap();
    // The upstream got the close and answered it with data; the client must see none.
    wait_until(|| !up.received.lock().unwrap().is_empty()).await;
    while frames.next().await.is_some() {}
    assert!(
        !contains(&frames.all, REPLY) && !contains(&frames.all, SECRET),
        "{:?}",
        String::from_utf8_lossy(&frames.all)
    );
}

fn get_head(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: gatewarden.test\r\nConnection: close\r\n\r\n")
}

/// `auth.public_paths` is matched on the path the upstream will serve: dot-segments (plain
/// or percent-encoded) cannot walk out of a public prefix, what no normalization settles is
/// refused, and the upstream receives exactly the path that was judged.
#[tokio::test]
async fn public_paths_are_matched_on_the_normalized_path() {
    let h = start_with(|c| c.auth.public_paths = vec!["/healthz".into()]).await;
    // Walks out of the public prefix: now a private path, which needs a token.
    for target in [
        "/healthz/../admin",
        "/healthz/%2e%2e/admin",
        "/healthz/%2E%2E/admin",
        "/healthz/.%2e/admin",
        "/healthz/./../admin?x=1",
        "/healthzadmin",
    ] {
        let (status, text) = raw_http(h.addr, &get_head(target)).await;
        assert_eq!(status, 401, "{target}: {text}");
    }
    // What servers read differently is refused outright.
    for target in [
        "/healthz\\..\\admin",
        "/healthz%00/../admin",
        "/healthz%2f..%2fadmin",
        "/healthz/..%5cadmin",
    ] {
        let (status, text) = raw_http(h.addr, &get_head(target)).await;
        assert_eq!(status, 400, "{target}: {text}");
    }
    assert_eq!(h.upstream.count(), 0, "nothing reached the upstream");
    // Public paths still pass, forwarded as judged.
    for (target, forwarded) in [
        ("/healthz", "/healthz"),
        ("/healthz/live?probe=1", "/healthz/live?probe=1"),
        ("/healthz/./live", "/healthz/live"),
        ("/%68ealthz", "/healthz"),
        ("/admin/../healthz", "/healthz"),
    ] {
        let (status, text) = raw_http(h.addr, &get_head(target)).await;
        assert_eq!(status, 200, "{target}: {text}");
        assert_eq!(h.upstream.last().uri, forwarded, "{target}");
    }
    wait_log(&["[http] request refused", "reason=bad_path"]).await;
}

/// CONNECT reached the upstream unauthenticated through a public path; two Host headers
/// leave open which server is meant (RFC 9112 §3.2).
#[tokio::test]
async fn connect_and_a_second_host_header_are_refused() {
    let h = start_with(|c| c.auth.public_paths = vec!["/".into()]).await;
    let (status, text) = raw_http(
        h.addr,
        "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405, "{text}");
    assert!(text.to_ascii_lowercase().contains("allow: get"), "{text}");
    let (status, text) = raw_http(
        h.addr,
        "GET / HTTP/1.1\r\nHost: gatewarden.test\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{text}");
    // The same on the upgrade path, which the listener reads itself.
    let (status, text) = raw_http(
        h.addr,
        &format!(
            "GET /ws HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {}\r\n\r\n",
            h.token
        ),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(h.upstream.count(), 0, "nothing reached the upstream");
}

/// `OPTIONS *` became `http://host:PORT*`, whose port does not parse, and went to port 80 of
/// the upstream host — with header injection, carrying the gateway's token there.
#[tokio::test]
async fn asterisk_form_is_answered_here_and_never_leaves() {
    let h = start_with(|c| c.auth.http = gatewarden::config::HttpAuthMode::Pass).await;
    let (status, text) = raw_http(
        h.addr,
        "OPTIONS * HTTP/1.1\r\nHost: gatewarden.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.to_ascii_lowercase().contains("allow: "), "{text}");
    let (status, text) = raw_http(
        h.addr,
        "GET * HTTP/1.1\r\nHost: gatewarden.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(h.upstream.count(), 0);
    // An absolute-form target names another server: the request still goes to the
    // configured upstream, with the path alone.
    let (status, text) = raw_http(
        h.addr,
        "GET http://elsewhere.test:81/x?y=1 HTTP/1.1\r\nHost: elsewhere.test:81\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(h.upstream.last().uri, "/x?y=1");
}

// ------------------------------------------------------------------ hostile files

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Replaces `target` by rename, as a rotation does: `make` builds the new entry beside it.
fn swap_in(target: &std::path::Path, make: impl FnOnce(&std::path::Path)) {
    let tmp = target.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    make(&tmp);
    std::fs::rename(&tmp, target).unwrap();
}

/// `check` run with a deadline: a hang is a failure, not a stuck test run.
fn check_within(args: &[&str]) -> (Option<i32>, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(common::binary::BIN)
        .arg("check")
        .args(args)
        .env_remove("GATEWARDEN_CONFIG")
        .env_remove("OPENCLAW_CONFIG_PATH")
        .env_remove("OPENCLAW_STATE_DIR")
        .env_remove("OPENCLAW_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            return (status.code(), text);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, "check hung".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A credential path that turns into a FIFO, a device or a huge file must not wedge or
/// exhaust gatewarden: with one worker everything shares the main thread, so a blocking
/// read there (the old code's) froze clients, health, reloads and signals alike. Each is
/// refused with its reason, the last good token keeps working, and SIGTERM still ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_credential_files_never_wedge_gatewarden() {
    use common::binary::Proc;
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let mut p = Proc::gatewarden(&upstream.addr.to_string())
        .token_file(tf.to_str().unwrap())
        .envs(&[("GATEWARDEN_WORKERS", "1")])
        .spawn();
    let addr = p.listening_addr();
    let bearer = format!("Bearer {token}");
    let still_served = || async {
        let (mut ws, _) = ws_connect(addr, "/ws", &[("authorization", &bearer)])
            .await
            .expect("the last good token still opens a tunnel");
        futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::text("x"))
            .await
            .unwrap();
        assert!(next_msg(&mut ws).await.is_some());
    };
    swap_in(&tf, mkfifo);
    tokio::task::block_in_place(|| p.wait_line("FIFO"));
    still_served().await;
    swap_in(&tf, |tmp| {
        std::os::unix::fs::symlink("/dev/zero", tmp).unwrap()
    });
    tokio::task::block_in_place(|| p.wait_line("a character device"));
    still_served().await;
    swap_in(&tf, |tmp| std::fs::write(tmp, vec![b'a'; 2 << 20]).unwrap());
    tokio::task::block_in_place(|| p.wait_line("larger than 1048576 bytes"));
    still_served().await;
    p.signal("HUP");
    tokio::task::block_in_place(|| p.wait_line("SIGHUP result"));
    p.signal("TERM");
    let status = tokio::task::block_in_place(|| p.wait_exit());
    assert_eq!(status.code(), Some(0));
}

/// A FIFO named at start-up: the proxy starts anyway (the file is watched, as a missing one
/// is), and `check` answers at once instead of hanging — for a FIFO credential and a FIFO
/// config file alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_at_start_up_is_refused_with_its_reason() {
    use common::binary::Proc;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("token");
    mkfifo(&fifo);
    let (code, text) =
        tokio::task::block_in_place(|| check_within(&["--token-file", fifo.to_str().unwrap()]));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("is a FIFO (named pipe), not a regular file"),
        "{text}"
    );
    let (code, text) =
        tokio::task::block_in_place(|| check_within(&["-c", fifo.to_str().unwrap()]));
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("config file") && text.contains("FIFO"),
        "{text}"
    );
    let mut p = Proc::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            fifo.to_str().unwrap(),
        ],
        &[("GATEWARDEN_WORKERS", "1")],
    );
    tokio::task::block_in_place(|| {
        p.wait_line("FIFO");
        p.listening_addr();
    });
    p.signal("TERM");
    assert_eq!(
        tokio::task::block_in_place(|| p.wait_exit()).code(),
        Some(0)
    );
}

/// An HTTP request through gatewarden with a bearer token; its status.
async fn status_with(addr: SocketAddr, token: &str) -> u16 {
    let mut req = get(addr, "/");
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    http_request(addr, req).await.status().as_u16()
}

/// A plain credential file with a BOM is read without it; one with a NUL, whitespace inside
/// the token or a second line is refused by line number (its token would match nobody) and
/// the last good token stays; a file over `credentials.max_file_bytes` is refused too.
#[tokio::test]
async fn plain_credential_files_are_checked_before_they_are_applied() {
    let gw =
        start_with(|c| c.auth.grace = gatewarden::config::Secs(std::time::Duration::ZERO)).await;
    let first = gw.token.clone();
    let dir = &gw.dir;
    let tf = dir.path().join("token");
    let second = random_token();
    swap_in(&tf, |tmp| {
        std::fs::write(tmp, format!("\u{feff}{second}\n")).unwrap()
    });
    wait_log(&[
        "[reload] credentials applied",
        &format!(
            "current=fp:{}",
            gatewarden::Fingerprint::of(second.as_bytes())
        ),
    ])
    .await;
    assert_eq!(
        status_with(gw.addr, &second).await,
        200,
        "the BOM is not part of the token"
    );
    assert_eq!(status_with(gw.addr, &first).await, 401);
    for (content, why) in [
        (
            format!("{second}\nleftover-line\n"),
            "line 2 is a second non-empty line",
        ),
        (
            format!("{second} trailing-words"),
            "line 1 has whitespace inside the token",
        ),
        (format!("{second}\0"), "line 1 holds a NUL byte"),
        ("x".repeat(2 << 20), "is larger than 1048576 bytes"),
    ] {
        swap_in(&tf, |tmp| std::fs::write(tmp, &content).unwrap());
        let line = wait_log(&[
            "[reload] credentials rejected",
            &tf.display().to_string(),
            why,
        ])
        .await;
        assert!(!line.contains(&second), "{line}");
        assert_eq!(
            status_with(gw.addr, &second).await,
            200,
            "{why}: the last good token stays"
        );
    }
}

/// An upstream that accepts and never answers left a proxied request hanging for good;
/// now it gets 504 once `timeouts.upstream_response` passes.
#[tokio::test]
async fn a_silent_upstream_gets_a_504() {
    let silent = common::fake_gateway::FakeGateway::silent().start().await;
    let (silent_addr, held) = (silent.addr, silent.accepted.clone());
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let mut config = config_for(silent_addr, &tf);
    config.timeouts.upstream_response = gatewarden::config::Secs(std::time::Duration::from_secs(1));
    let gw = serve(config).await;
    assert_eq!(status_with(gw.addr, &token).await, 504);
    wait_log(&[
        "[http] upstream did not answer in time",
        "reason=upstream_timeout",
    ])
    .await;
    assert_eq!(
        held.lock().unwrap().len(),
        1,
        "the request did reach the upstream"
    );
}

/// `limits.max_http_requests`: with its one permit held by a request the upstream sits on,
/// the next plain request is answered 503 at once (not queued behind it), with
/// `Retry-After`, and logged `reason=overloaded`. A wrong token still gets its 401: the
/// gate judges before the limit counts.
#[tokio::test]
async fn plain_requests_over_the_limit_are_shed_with_a_503() {
    let silent = common::fake_gateway::FakeGateway::silent().start().await;
    let held = silent.accepted.clone();
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let mut config = config_for(silent.addr, &tf);
    config.limits.max_http_requests = 1;
    let gw = serve(config).await;
    let (addr, first_token) = (gw.addr, token.clone());
    let first = tokio::spawn(async move { status_with(addr, &first_token).await });
    timeout(async {
        while held.lock().unwrap().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let path = format!("/shed-{}", &random_token()[..12]);
    let mut req = get(gw.addr, &path);
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let resp = timeout(http_request(gw.addr, req)).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    wait_log(&["[http] request refused", "reason=overloaded", &path]).await;
    assert_eq!(status_with(gw.addr, "not-the-token").await, 401);
    assert!(!first.is_finished(), "the first request is still in flight");
    first.abort();
}
