//! What an HTTP/2 connection may hold, with frames written by hand (`common::h2raw`): a
//! connection that sends nothing, answers only PINGs, stops in a header block or goes idle
//! is closed with GOAWAY, so tokenless connections cannot lock everyone out; a stream whose
//! tunnel gatewarden ends is reset at once, with its queued data dropped; and the RFC 9113
//! rules hyper leaves to the server (SETTINGS first, `:authority`, `Host`).

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::certs::{ca, leaf, Ca};
use common::h2raw::*;
use common::*;
use gatewarden::config::{Config, OnRevoke, Secs};

/// Short, so the tests are quick; every wait below is generous against it.
const HEADER_READ: Duration = Duration::from_secs(2);
/// A deadline's close, allowing for a loaded machine: it happens at 2-3 s.
const CLOSED_WITHIN: Duration = Duration::from_secs(15);

struct Setup {
    proxy: Running,
    upstream: TestUpstream,
    ca: Ca,
    token: String,
    token_file: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup(tweak: impl FnOnce(&mut Config)) -> Setup {
    let upstream = start_upstream().await;
    let ca = ca("gatewarden h2 hold CA");
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = leaf(&ca, "localhost", 7);
    let token = random_token();
    let token_file = write_file(dir.path(), "token", &token);
    let mut config = config_for(upstream.addr, &token_file);
    config.tls.cert = Some(write_file(dir.path(), "cert.pem", &c));
    config.tls.key = Some(write_file(dir.path(), "key.pem", &k));
    config.timeouts.header_read = Secs(HEADER_READ);
    tweak(&mut config);
    Setup {
        proxy: serve(config).await,
        upstream,
        ca,
        token,
        token_file,
        _dir: dir,
    }
}

async fn connect(s: &Setup) -> H2Raw {
    timeout(H2Raw::connect(s.proxy.addr, &s.ca))
        .await
        .expect("TLS with h2")
}

fn has_goaway(frames: &[Frame]) -> bool {
    frames.iter().any(|f| f.kind == GOAWAY)
}

/// A complete GET with the token, on stream `id`; waits for its answer to end.
async fn authenticated_get(c: &mut H2Raw, s: &Setup, id: u32) {
    let port = s.proxy.addr.port().to_string();
    let block = header_block(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/plain"),
        (":authority", &format!("localhost:{port}")),
        ("authorization", &format!("Bearer {}", s.token)),
    ]);
    c.send(&frame(HEADERS, END_HEADERS | END_STREAM, id, &block))
        .await;
    loop {
        let f = c.read_frame(WAIT).await.expect("the answer");
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            c.send(&frame(SETTINGS, ACK, 0, &[])).await;
        }
        if f.stream == id && f.flags & END_STREAM != 0 {
            return;
        }
    }
}

#[tokio::test]
async fn a_connection_that_answers_nothing_is_closed_at_the_header_deadline() {
    let s = setup(|_| {}).await;
    let mut c = connect(&s).await;
    c.open().await;
    let started = Instant::now();
    // Reads, and answers nothing: not even the server's SETTINGS.
    let frames = tokio::time::timeout(CLOSED_WITHIN, async {
        let mut seen = Vec::new();
        while let Some(f) = c.read_frame(WAIT).await {
            seen.push(f);
        }
        seen
    })
    .await
    .expect("closed within the header deadline, not held for the keepalive (120 s)");
    assert!(has_goaway(&frames), "{frames:?}");
    assert!(started.elapsed() >= HEADER_READ - Duration::from_millis(100));
    wait_log(&["[http] HTTP/2 connection closed", "reason=header_timeout"]).await;
}

#[tokio::test]
async fn a_connection_that_answers_pings_is_closed_at_the_header_deadline() {
    let s = setup(|c| c.http2.keepalive_interval = Secs(Duration::from_millis(500))).await;
    let mut c = connect(&s).await;
    c.open().await;
    let frames = c
        .until_closed(true, CLOSED_WITHIN)
        .await
        .expect("closed within the header deadline, though it answers every PING");
    assert!(frames.iter().any(|f| f.kind == PING), "pings were sent");
    assert!(has_goaway(&frames));
}

#[tokio::test]
async fn a_header_block_left_open_is_closed_at_the_header_deadline() {
    // As the connection's first request, and after an authenticated one (idle timeout far).
    for after_a_request in [false, true] {
        let s = setup(|c| c.http2.idle_timeout = Secs(Duration::from_secs(600))).await;
        let mut c = connect(&s).await;
        c.open().await;
        if after_a_request {
            authenticated_get(&mut c, &s, 1).await;
        }
        let block = header_block(&[(":method", "GET"), (":scheme", "https"), (":path", "/")]);
        // HEADERS without END_HEADERS, and no CONTINUATION ever.
        c.send(&frame(HEADERS, END_STREAM, 3, &block[..4])).await;
        let frames = c
            .until_closed(false, CLOSED_WITHIN)
            .await
            .expect("closed within the header deadline");
        assert!(has_goaway(&frames), "after a request: {after_a_request}");
    }
    wait_log(&[
        "[http] HTTP/2 connection closed",
        "reason=header_block_timeout",
    ])
    .await;
}

#[tokio::test]
async fn a_connection_with_no_open_stream_is_closed_after_the_idle_timeout() {
    let s = setup(|c| c.http2.idle_timeout = Secs(Duration::from_secs(3))).await;
    let mut c = connect(&s).await;
    c.open().await;
    authenticated_get(&mut c, &s, 1).await;
    let quiet = Instant::now();
    let frames = c
        .until_closed(true, CLOSED_WITHIN)
        .await
        .expect("closed after http2.idle_timeout");
    assert!(has_goaway(&frames));
    assert!(quiet.elapsed() >= Duration::from_millis(2900));
    wait_log(&["[http] HTTP/2 connection closed", "reason=idle_timeout"]).await;
}

#[tokio::test]
async fn tokenless_h2_connections_cannot_lock_the_others_out() {
    const MAX: usize = 10;
    let s = setup(|c| c.limits.max_connections = MAX).await;
    // Every slot taken by a connection that opens no stream and answers PINGs.
    let mut idle = Vec::new();
    for _ in 0..MAX {
        let mut c = connect(&s).await;
        c.open().await;
        idle.push(tokio::spawn(
            async move { c.until_closed(true, WAIT).await },
        ));
    }
    // A client with the token gets in once the deadline has freed the slots.
    let admitted = tokio::time::timeout(CLOSED_WITHIN, async {
        loop {
            if let Some(mut c) = H2Raw::connect(s.proxy.addr, &s.ca).await {
                c.open().await;
                let port = s.proxy.addr.port().to_string();
                let block = header_block(&[
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":path", "/plain"),
                    (":authority", &format!("localhost:{port}")),
                    ("authorization", &format!("Bearer {}", s.token)),
                ]);
                c.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
                    .await;
                while let Some(f) = c.read_frame(Duration::from_secs(5)).await {
                    if f.kind == HEADERS && f.stream == 1 {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(admitted.is_ok(), "the good client was locked out");
    for c in idle {
        assert!(c.await.unwrap().is_some(), "an idle connection stayed open");
    }
}

#[tokio::test]
async fn headers_before_settings_is_a_protocol_error() {
    let s = setup(|_| {}).await;
    let mut c = connect(&s).await;
    let port = s.proxy.addr.port().to_string();
    let block = header_block(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/plain"),
        (":authority", &format!("localhost:{port}")),
        ("authorization", &format!("Bearer {}", s.token)),
    ]);
    let mut b = PREFACE.to_vec();
    b.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &block));
    b.extend(frame(SETTINGS, 0, 0, &[]));
    c.send(&b).await;
    let frames = c.until_closed(false, WAIT).await.expect("closed");
    let goaway = frames.iter().find(|f| f.kind == GOAWAY).expect("a GOAWAY");
    assert_eq!(goaway.error_code(), 0x1, "PROTOCOL_ERROR");
    assert!(
        !frames.iter().any(|f| f.kind == HEADERS),
        "no answer to the request"
    );
    assert_eq!(s.upstream.count(), 0);
}

/// One request's stream: the RST_STREAM error code it got (`None`: answered or nothing).
async fn reset_code(c: &mut H2Raw, id: u32) -> Option<u32> {
    while let Some(f) = c.read_frame(WAIT).await {
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            c.send(&frame(SETTINGS, ACK, 0, &[])).await;
        }
        if f.stream == id {
            return (f.kind == RST_STREAM).then(|| f.error_code());
        }
    }
    None
}

#[tokio::test]
async fn malformed_requests_are_reset_with_protocol_error() {
    let s = setup(|_| {}).await;
    let mut c = connect(&s).await;
    c.open().await;
    let bearer = format!("Bearer {}", s.token);
    let port = s.proxy.addr.port().to_string();
    let authority = format!("localhost:{port}");
    // RFC 9113 §8.5: an (extended) CONNECT names its authority.
    let no_authority = header_block(&[
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "https"),
        (":path", "/ws"),
        ("sec-websocket-version", "13"),
        ("authorization", &bearer),
    ]);
    c.send(&frame(HEADERS, END_HEADERS, 1, &no_authority)).await;
    assert_eq!(reset_code(&mut c, 1).await, Some(0x1));
    // §8.3.1: a Host that names another server than :authority.
    for (id, method) in [(3, "GET"), (5, "CONNECT")] {
        let mut h = vec![(":method", method)];
        if method == "CONNECT" {
            h.push((":protocol", "websocket"));
        }
        h.extend([
            (":scheme", "https"),
            (":path", "/ws"),
            (":authority", &authority),
            ("host", "elsewhere.example"),
            ("sec-websocket-version", "13"),
            ("authorization", &bearer),
        ]);
        let flags = if method == "GET" {
            END_HEADERS | END_STREAM
        } else {
            END_HEADERS
        };
        c.send(&frame(HEADERS, flags, id, &header_block(&h))).await;
        assert_eq!(reset_code(&mut c, id).await, Some(0x1), "{method}");
    }
    assert_eq!(
        s.upstream.count(),
        0,
        "nothing malformed reached the upstream"
    );
    // A Host that agrees with :authority is fine.
    let agrees = header_block(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/plain"),
        (":authority", &authority),
        ("host", &authority),
        ("authorization", &bearer),
    ]);
    c.send(&frame(HEADERS, END_HEADERS | END_STREAM, 7, &agrees))
        .await;
    assert_eq!(reset_code(&mut c, 7).await, None);
    assert_eq!(s.upstream.count(), 1);
}

// ------------------------------------------------------------ streams of ended tunnels

/// A masked binary WebSocket frame carrying `len` bytes.
fn ws_binary(len: usize) -> Vec<u8> {
    let mut f = vec![0x82, 0x80 | 127];
    f.extend_from_slice(&(len as u64).to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    f.extend((0..len).map(|i| (i as u8) ^ [1, 2, 3, 4][i % 4]));
    f
}

/// The client's send windows, as the server sets and opens them.
struct Flow {
    connection: i64,
    initial: i64,
    streams: std::collections::HashMap<u32, i64>,
}

impl Flow {
    /// Takes in a frame of the server's: SETTINGS (acked), WINDOW_UPDATE.
    async fn note(&mut self, c: &mut H2Raw, f: &Frame) {
        if f.kind == SETTINGS && f.flags & ACK == 0 {
            for s in f.payload.chunks(6) {
                if s[..2] == [0, 4] {
                    let v = i64::from(u32::from_be_bytes(s[2..6].try_into().unwrap()));
                    for w in self.streams.values_mut() {
                        *w += v - self.initial;
                    }
                    self.initial = v;
                }
            }
            c.send(&frame(SETTINGS, ACK, 0, &[])).await;
        }
        if f.kind == WINDOW_UPDATE {
            let n = i64::from(u32::from_be_bytes(f.payload[..4].try_into().unwrap()) & 0x7fff_ffff);
            match f.stream {
                0 => self.connection += n,
                id => *self.streams.entry(id).or_insert(self.initial) += n,
            }
        }
    }
}

/// Opens `n` WebSocket streams with `token` on a connection whose stream window is 0 (the
/// server may send them nothing), and sends each `bytes` in WebSocket messages, as far as
/// the server's windows let it, for the upstream to echo into the shut windows: until all
/// is sent, or the server stops opening its windows (everything between the client and the
/// upstream is full). Returns the stream ids.
async fn stalled_streams(
    c: &mut H2Raw,
    addr: std::net::SocketAddr,
    token: &str,
    n: u32,
    bytes: usize,
) -> Vec<u32> {
    let mut b = PREFACE.to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE = 0.
    b.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]));
    c.send(&b).await;
    let mut flow = Flow {
        connection: 65_535,
        initial: 65_535,
        streams: Default::default(),
    };
    let authority = format!("localhost:{}", addr.port());
    let bearer = format!("Bearer {token}");
    let ids: Vec<u32> = (0..n).map(|i| 1 + 2 * i).collect();
    for &id in &ids {
        let block = header_block(&[
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":path", "/ws"),
            (":authority", &authority),
            ("sec-websocket-version", "13"),
            ("authorization", &bearer),
        ]);
        c.send(&frame(HEADERS, END_HEADERS, id, &block)).await;
        flow.streams.entry(id).or_insert(flow.initial);
    }
    let mut open = 0;
    while open < n {
        let f = c.read_frame(WAIT).await.expect("the streams' answers");
        flow.note(c, &f).await;
        if f.kind == HEADERS {
            open += 1;
        }
    }
    let msg: Vec<u8> = (0..bytes.div_ceil(64 * 1024))
        .flat_map(|_| ws_binary(64 * 1024))
        .collect();
    let mut sent: std::collections::HashMap<u32, usize> = ids.iter().map(|&i| (i, 0)).collect();
    loop {
        let mut moved = false;
        for &id in &ids {
            let done = sent[&id];
            let room = flow.connection.min(flow.streams[&id]).clamp(0, 16 * 1024) as usize;
            let n = room.min(msg.len() - done);
            if n > 0 {
                c.send(&frame(DATA, 0, id, &msg[done..done + n])).await;
                *sent.get_mut(&id).unwrap() += n;
                flow.connection -= n as i64;
                *flow.streams.get_mut(&id).unwrap() -= n as i64;
                moved = true;
            }
        }
        if sent.values().all(|&v| v == msg.len()) {
            break;
        }
        if !moved {
            // Wait for the server to open a window; a second without: stalled.
            match c.read_frame(Duration::from_secs(1)).await {
                Some(f) => flow.note(c, &f).await,
                None => break,
            }
        }
    }
    ids
}

async fn rotate(file: &Path, to: &str) {
    let tmp = file.with_extension("new");
    std::fs::write(&tmp, to).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

#[tokio::test]
async fn a_revoked_stream_with_its_window_shut_is_reset_at_once_and_gets_nothing_more() {
    let s = setup(|c| {
        c.auth.grace = Secs(Duration::ZERO);
        c.auth.on_revoke = OnRevoke::Close;
    })
    .await;
    let mut c = connect(&s).await;
    let ids = stalled_streams(&mut c, s.proxy.addr, &s.token, 4, 64 * 1024).await;
    // The echoes have reached gatewarden and are queued behind the shut windows.
    wait_logs(&["[ws] connected"], 4).await;
    let generation = s.proxy.creds.load().generation;
    rotate(&s.token_file, &random_token()).await;
    let revoked = timeout(async {
        while s.proxy.creds.load().generation == generation {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Instant::now()
    })
    .await;
    let mut reset = Vec::new();
    while reset.len() < ids.len() {
        let f = c
            .read_frame(Duration::from_secs(5))
            .await
            .expect("RST_STREAM, not silence");
        assert_ne!(f.kind, DATA, "data before the reset: {f:?}");
        if f.kind == RST_STREAM {
            reset.push(f.stream);
        }
    }
    let took = revoked.elapsed();
    assert!(took < Duration::from_secs(1), "the resets took {took:?}");
    // Windows opened now bring nothing of the gateway's: what was queued is gone.
    c.send(&frame(WINDOW_UPDATE, 0, 0, &(1u32 << 24).to_be_bytes()))
        .await;
    for &id in &ids {
        c.send(&frame(WINDOW_UPDATE, 0, id, &(1u32 << 20).to_be_bytes()))
            .await;
    }
    while let Some(f) = c.read_frame(Duration::from_secs(1)).await {
        assert_ne!(f.kind, DATA, "gateway bytes after the revocation: {f:?}");
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Rounds of 40 stalled streams, each round's token revoked: the binary's memory stays
/// where the first round left it (the streams are reset and their queued data dropped),
/// while every connection stays open on the client's side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_over_rounds_of_revoked_stalled_streams() {
    use common::binary::Proc;
    let upstream = start_upstream().await;
    let ca = ca("gatewarden h2 rounds CA");
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = leaf(&ca, "localhost", 8);
    let cert = write_file(dir.path(), "cert.pem", &c);
    let key = write_file(dir.path(), "key.pem", &k);
    let mut token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let upstream_arg = upstream.addr.to_string();
    let mut p = Proc::gatewarden(&upstream_arg)
        .token_file(tf.to_str().unwrap())
        .args(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
        .envs(&[
            ("GATEWARDEN_AUTH__GRACE", "0s"),
            ("GATEWARDEN_AUTH__ON_REVOKE", "close"),
            ("GATEWARDEN_LIMITS__MAX_CONNECTIONS_PER_IP", "0"),
        ])
        .spawn();
    let addr = p.listening_addr();
    let pid = p.child.id();
    const ROUNDS: usize = 10;
    const STREAMS: u32 = 40;
    let mut held = Vec::new();
    let mut rss = Vec::new();
    for round in 0..ROUNDS {
        let mut c = timeout(H2Raw::connect(addr, &ca))
            .await
            .expect("TLS with h2");
        let ids = stalled_streams(&mut c, addr, &token, STREAMS, 4 << 20).await;
        // Give the echoes time to pile up behind the shut windows: the upstream has
        // answered every message once gatewarden has read them all.
        tokio::task::block_in_place(|| {
            for _ in 0..STREAMS {
                p.wait_line("[ws] connected");
            }
        });
        let next = random_token();
        rotate(&tf, &next).await;
        token = next;
        let mut reset = 0;
        while reset < ids.len() {
            match c.read_frame(Duration::from_secs(10)).await {
                Some(f) if f.kind == RST_STREAM => reset += 1,
                Some(_) => {}
                None => break,
            }
        }
        tokio::task::block_in_place(|| {
            for _ in 0..STREAMS {
                p.wait_line("[ws] revoked");
            }
        });
        // Each round's connection stays open, its streams' windows shut.
        held.push(c);
        rss.push(rss_kib(pid));
        eprintln!(
            "round {round}: {reset} streams reset, RSS {} KiB",
            rss[round]
        );
    }
    // The trend past the first round (the allocator's own warm-up), by least squares: a
    // leak of the streams' queues grows it by ~12 MiB a round; flat is noise around 0.
    let pts: Vec<(f64, f64)> = rss[1..]
        .iter()
        .enumerate()
        .map(|(i, &r)| (i as f64, r as f64))
        .collect();
    let n = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let slope = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
        / pts.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
    assert!(slope < 4096.0, "RSS grows {slope:.0} KiB a round: {rss:?}");
}

/// RFC 7301 §3.2: a client offering only protocols the server does not speak is refused in
/// the handshake; one that offers none gets HTTP/1.1.
#[tokio::test]
async fn alpn_without_a_common_protocol_is_refused_and_without_alpn_is_http11() {
    use rustls::pki_types::ServerName;
    let s = setup(|_| {}).await;
    for (offer, served) in [(vec![b"spdy/3".to_vec()], false), (vec![], true)] {
        let mut cfg = (*client_config(&s.ca)).clone();
        cfg.alpn_protocols = offer;
        let tcp = tokio::net::TcpStream::connect(s.proxy.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await;
        match (tls, served) {
            (Err(e), false) => assert!(format!("{e:?}").contains("NoApplicationProtocol"), "{e:?}"),
            (Ok(mut tls), true) => {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                assert_eq!(tls.get_ref().1.alpn_protocol(), None);
                let req = format!(
                    "GET /plain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                    s.token
                );
                tls.write_all(req.as_bytes()).await.unwrap();
                let mut out = Vec::new();
                let _ = timeout(tls.read_to_end(&mut out)).await;
                assert!(
                    out.starts_with(b"HTTP/1.1 200"),
                    "{}",
                    String::from_utf8_lossy(&out)
                );
            }
            (other, _) => panic!("unexpected: {:?}", other.map(|_| ())),
        }
    }
}

/// A WebSocket stream is an open stream however quiet it is: the idle timeout leaves its
/// connection alone.
#[tokio::test]
async fn a_quiet_websocket_stream_keeps_its_connection_past_the_idle_timeout() {
    let idle = Duration::from_secs(2);
    let s = setup(|c| c.http2.idle_timeout = Secs(idle)).await;
    let mut c = connect(&s).await;
    c.open().await;
    let block = header_block(&[
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "https"),
        (":path", "/ws"),
        (":authority", &format!("localhost:{}", s.proxy.addr.port())),
        ("sec-websocket-version", "13"),
        ("authorization", &format!("Bearer {}", s.token)),
    ]);
    c.send(&frame(HEADERS, END_HEADERS, 1, &block)).await;
    assert_eq!(reset_code(&mut c, 1).await, None, "the stream opened");
    // Quiet for twice the idle timeout (the scenario, not a wait for an event), answering
    // what the server sends meanwhile.
    let quiet_until = Instant::now() + 2 * idle;
    while let Some(f) = c
        .read_frame(quiet_until.saturating_duration_since(Instant::now()))
        .await
    {
        assert_ne!(f.kind, GOAWAY, "closed while a stream was open");
        if f.kind == PING && f.flags & ACK == 0 {
            c.send(&frame(PING, ACK, 0, &f.payload)).await;
        }
    }
    // A masked text frame "hi", echoed back.
    c.send(&frame(
        DATA,
        0,
        1,
        &[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2],
    ))
    .await;
    loop {
        let f = c.read_frame(WAIT).await.expect("the echo");
        assert_ne!(f.kind, GOAWAY);
        if f.kind == DATA && f.stream == 1 {
            assert_eq!(f.payload, [0x81, 2, b'h', b'i']);
            break;
        }
    }
}
