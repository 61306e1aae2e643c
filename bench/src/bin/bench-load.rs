//! Load generator for the gatewarden benchmark. One mode per run, on loopback, bounded.
//!
//! usage: bench-load MODE TARGET [--token T] [--conns N] [--secs S] [--pids P1,P2] [--sources K]
//!   handshake      connect, upgrade with the token, 1 small message, close; per second
//!   rtt            64 B ping-pong on N connections; messages per second and RTT
//!   bulk           64 KiB messages streamed both ways on N connections; MB/s echoed
//!   idle           open N upgraded connections, hold them; RSS of PIDS per connection
//!   reject         upgrades with a wrong token; refusals per second
//!   first_message  OpenClaw handshake: challenge, connect with the token, hello; per second
//!   plain          plain HTTP GETs with the token on N kept-alive connections, one in
//!                  flight each; requests per second and latency
//! Prints one JSON line.
//!
//! `--tls-ca FILE` speaks TLS (rustls, ring; the server named `localhost`, verified against
//! FILE): every connection a full handshake, or with `--resume 1` a resumed one where the
//! server allows it (one session cache shared by all connections, as a browser keeps).
//! `--h2 K` (with `--tls-ca`) opens each WebSocket as an HTTP/2 stream (extended CONNECT,
//! RFC 8441), K streams to a connection, as a browser tab puts its sockets on one
//! connection: the same frames, over h2's DATA frames instead of the TLS stream itself.
//!
//! Connections to a loopback target leave from K source addresses in turn (127.0.0.1 to
//! 127.0.0.K, default 16): a client that closes first leaves its port in TIME_WAIT, which
//! Linux lets a new connection to the same address reuse only after 1 s
//! (`tcp_tw_reuse_delay`), and connect() takes even ports only while it can — from one source
//! address that caps short sessions at ~14.1k/s (28,232 ports / 2 / 1 s) whatever the
//! server, as every earlier `reject` run did.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatewarden_bench::{client_frame, head_end, parse_header};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

/// The client's TLS side, when the run speaks TLS.
static TLS: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();

/// A connection to the target, plain or TLS, or a WebSocket stream of an HTTP/2 one.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    H2(H2Ws),
}

/// A WebSocket on an HTTP/2 stream, read and written as bytes (flow control included).
struct H2Ws {
    send: h2::SendStream<bytes::Bytes>,
    recv: h2::RecvStream,
    /// Received and not read yet.
    pending: bytes::Bytes,
}

impl AsyncRead for H2Ws {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match std::task::ready!(self.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Ok(d)) => {
                    let _ = self.recv.flow_control().release_capacity(d.len());
                    self.pending = d;
                }
                Some(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
            }
        }
    }
}

impl AsyncWrite for H2Ws {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.send.reserve_capacity(buf.len());
        match std::task::ready!(self.send.poll_capacity(cx)) {
            Some(Ok(n)) => {
                let n = n.min(buf.len());
                self.send
                    .send_data(bytes::Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(std::io::Error::other)?;
                Poll::Ready(Ok(n))
            }
            Some(Err(e)) => Poll::Ready(Err(std::io::Error::other(e))),
            None => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let _ = self.send.send_data(bytes::Bytes::new(), true);
        Poll::Ready(Ok(()))
    }
}

/// The HTTP/2 connection new streams go on, and how many it carries.
static H2_POOL: tokio::sync::Mutex<Option<(h2::client::SendRequest<bytes::Bytes>, usize)>> =
    tokio::sync::Mutex::const_new(None);

/// A WebSocket stream on the current HTTP/2 connection (a new one every `per_conn` streams).
async fn h2_open(o: &Opts) -> std::io::Result<Conn> {
    let send_req = {
        let mut pool = H2_POOL.lock().await;
        match pool.as_mut() {
            Some((s, n)) if *n < o.h2 => {
                *n += 1;
                s.clone()
            }
            _ => {
                let tls = connection(o.target, o.sources).await?;
                let (s, conn) = h2::client::Builder::new()
                    .initial_window_size(1 << 20)
                    .initial_connection_window_size(64 << 20)
                    .handshake::<_, bytes::Bytes>(tls)
                    .await
                    .map_err(std::io::Error::other)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                // The server's SETTINGS (ENABLE_CONNECT_PROTOCOL) arrive after the handshake.
                let mut ready = s.clone().ready().await.map_err(std::io::Error::other)?;
                for _ in 0..5000 {
                    if ready.is_extended_connect_protocol_enabled() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    ready = ready.ready().await.map_err(std::io::Error::other)?;
                }
                *pool = Some((s.clone(), 1));
                s
            }
        }
    };
    let mut send_req = send_req.ready().await.map_err(std::io::Error::other)?;
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri("https://localhost/ws")
        .header("sec-websocket-version", "13")
        .header("authorization", format!("Bearer {}", o.token))
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (resp, send) = send_req
        .send_request(req, false)
        .map_err(std::io::Error::other)?;
    let resp = resp.await.map_err(std::io::Error::other)?;
    if resp.status() != http::StatusCode::OK {
        return Err(std::io::Error::other(format!("status {}", resp.status())));
    }
    Ok(Conn::H2(H2Ws {
        send,
        recv: resp.into_body(),
        pending: bytes::Bytes::new(),
    }))
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Conn::H2(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Conn::H2(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
            Conn::H2(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Conn::H2(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The TLS client: trusts `ca` only; resumes sessions when `resume`.
fn tls_connector(ca: &str, resume: bool, h2: bool) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots
            .add(c.expect("a PEM certificate"))
            .expect("a CA certificate");
    }
    // Key exchange as browsers offer it (X25519 first; their post-quantum hybrid aside, which
    // ring does not have): ring's own default list has put P-384 first since rustls 0.23.48,
    // and a P-384 share makes every server do P-384 (4x the cost of X25519 in ring).
    #[allow(deprecated)] // ring's provider: see above
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![
        rustls::crypto::ring::kx_group::X25519,
        rustls::crypto::ring::kx_group::SECP256R1,
    ];
    let provider = Arc::new(provider);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = if resume {
        rustls::client::Resumption::in_memory_sessions(4096)
    } else {
        rustls::client::Resumption::disabled()
    };
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A connection to the target, with `TCP_NODELAY`, through TLS when the run speaks it.
async fn connection(target: SocketAddr, sources: u32) -> std::io::Result<Conn> {
    let tcp = dial(target, sources).await?;
    tcp.set_nodelay(true)?;
    match TLS.get() {
        None => Ok(Conn::Plain(tcp)),
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            Ok(Conn::Tls(Box::new(tls.connect(name, tcp).await?)))
        }
    }
}

struct Opts {
    mode: String,
    target: SocketAddr,
    token: String,
    conns: usize,
    secs: f64,
    pids: Vec<u32>,
    sources: u32,
    tls_ca: Option<String>,
    resume: bool,
    /// WebSocket streams per HTTP/2 connection; 0: HTTP/1.1.
    h2: usize,
}

fn opts() -> Opts {
    let mut a = std::env::args().skip(1);
    let mode = a.next().expect("mode");
    let target = a.next().expect("target").parse().expect("ip:port");
    let mut o = Opts {
        mode,
        target,
        token: String::new(),
        conns: 16,
        secs: 3.0,
        pids: vec![],
        sources: 16,
        tls_ca: None,
        resume: false,
        h2: 0,
    };
    while let Some(k) = a.next() {
        let v = a.next().expect("value");
        match k.as_str() {
            "--token" => o.token = v,
            "--tls-ca" => o.tls_ca = Some(v),
            "--resume" => o.resume = v == "1",
            "--h2" => o.h2 = v.parse().unwrap(),
            "--conns" => o.conns = v.parse().unwrap(),
            "--secs" => o.secs = v.parse().unwrap(),
            "--sources" => o.sources = v.parse::<u32>().unwrap().clamp(1, 250),
            "--pids" => {
                o.pids = v
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| p.parse().unwrap())
                    .collect()
            }
            _ => panic!("unknown option {k}"),
        }
    }
    o
}

fn main() {
    let o = opts();
    if let Some(ca) = &o.tls_ca {
        let _ = TLS.set(tls_connector(ca, o.resume, o.h2 > 0));
    }
    // Single-threaded: the generator should take as little of the 2 cores as it can.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let line = rt.block_on(async {
        match o.mode.as_str() {
            "handshake" | "reject" | "first_message" => sessions(&o).await,
            "rtt" => rtt(&o).await,
            "plain" => plain(&o).await,
            "bulk" => bulk(&o).await,
            "idle" => idle(&o).await,
            m => panic!("unknown mode {m}"),
        }
    });
    println!("{line}");
}

/// A connection to `target`; to a loopback IPv4 target from the next of `sources` source
/// addresses, its port chosen by connect() (IP_BIND_ADDRESS_NO_PORT), not by bind(), so
/// ports stay shared between destinations as without the bind.
async fn dial(target: SocketAddr, sources: u32) -> std::io::Result<TcpStream> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let loopback = matches!(target.ip(), IpAddr::V4(ip) if ip.is_loopback());
    if !loopback || sources <= 1 {
        return TcpStream::connect(target).await;
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % sources;
    let socket = TcpSocket::new_v4()?;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.bind(SocketAddr::new(
        Ipv4Addr::new(127, 0, 0, 1 + n as u8).into(),
        0,
    ))?;
    socket.connect(target).await
}

fn upgrade_request(o: &Opts, path: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n",
        o.target
    )
    .into_bytes()
}

/// Reads until `buf` holds a complete head plus `frames` complete frames after it; returns
/// the status code.
async fn read_until(s: &mut Conn, buf: &mut Vec<u8>, frames: usize) -> std::io::Result<u16> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = head_end(buf) {
            let status: u16 = std::str::from_utf8(&buf[9..12])
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if status != 101 {
                return Ok(status);
            }
            if let Some(pos) = frames_end(buf, end, frames) {
                buf.drain(..pos);
                return Ok(status);
            }
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn percentiles(mut us: Vec<u32>) -> String {
    if us.is_empty() {
        return r#""p50_us":null,"p99_us":null,"p999_us":null"#.into();
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)];
    format!(
        r#""p50_us":{},"p99_us":{},"p999_us":{}"#,
        at(0.5),
        at(0.99),
        at(0.999)
    )
}

/// handshake / reject / first_message: whole short sessions, `conns` at a time.
/// Gathers the latencies (µs, one per operation) of every client task into the JSON line.
async fn report(
    mode: &str,
    unit: &str,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<Vec<u32>>>,
    errors: u64,
) -> String {
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    format!(
        r#"{{"mode":"{mode}","rate":{:.1},"unit":"{unit}","count":{},"errors":{errors},{}}}"#,
        lat.len() as f64 / secs,
        lat.len(),
        percentiles(lat)
    )
}

async fn sessions(o: &Opts) -> String {
    let deadline = Instant::now() + Duration::from_secs_f64(o.secs);
    let mode = o.mode.clone();
    let (path, token) = match mode.as_str() {
        "handshake" => ("/ws", Some(o.token.clone())),
        "reject" => ("/ws", Some("wrong-token-wrong-token".to_string())),
        _ => ("/openclaw", None),
    };
    let req = Arc::new(upgrade_request(o, path, token.as_deref()));
    let msg = Arc::new(client_frame(0x1, b"hello"));
    let connect = Arc::new(client_frame(
        0x1,
        format!(r#"{{"type":"req","id":"1","method":"connect","params":{{"minProtocol":3,"maxProtocol":3,"client":{{"id":"bench","version":"1"}},"auth":{{"token":"{}"}}}}}}"#, o.token).as_bytes(),
    ));
    let close = Arc::new(client_frame(0x8, &1000u16.to_be_bytes()));
    let started = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..o.conns {
        let (req, msg, connect, close, errors, mode) = (
            req.clone(),
            msg.clone(),
            connect.clone(),
            close.clone(),
            errors.clone(),
            mode.clone(),
        );
        let (target, sources) = (o.target, o.sources);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut buf = Vec::with_capacity(4096);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r: std::io::Result<()> = async {
                    let mut s = connection(target, sources).await?;
                    buf.clear();
                    s.write_all(&req).await?;
                    match mode.as_str() {
                        "reject" => {
                            let status = read_until(&mut s, &mut buf, 0).await?;
                            // 101 + close (auth.reject = close) also counts as a refusal.
                            if status == 101 {
                                read_until(&mut s, &mut buf, 1).await?;
                            } else if status < 400 {
                                return Err(std::io::Error::other(format!("status {status}")));
                            }
                            lat.push(t0.elapsed().as_micros() as u32);
                            return Ok(());
                        }
                        "first_message" => {
                            let status = read_until(&mut s, &mut buf, 1).await?; // the challenge
                            if status != 101 {
                                return Err(std::io::Error::other(format!("status {status}")));
                            }
                            s.write_all(&connect).await?;
                            read_until_frames(&mut s, &mut buf, 1).await?; // hello-ok
                            lat.push(t0.elapsed().as_micros() as u32);
                        }
                        _ => {
                            let status = read_until(&mut s, &mut buf, 0).await?;
                            if status != 101 {
                                return Err(std::io::Error::other(format!("status {status}")));
                            }
                            lat.push(t0.elapsed().as_micros() as u32);
                            s.write_all(&msg).await?;
                            read_until_frames(&mut s, &mut buf, 1).await?;
                        }
                    }
                    s.write_all(&close).await?;
                    read_until_frames(&mut s, &mut buf, 1).await?;
                    Ok(())
                }
                .await;
                if r.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    report(
        &o.mode,
        "/s",
        started,
        tasks,
        errors.load(Ordering::Relaxed),
    )
    .await
}

/// Where `frames` complete frames starting at `pos` end, if they are all in `buf`.
fn frames_end(buf: &[u8], mut pos: usize, frames: usize) -> Option<usize> {
    for _ in 0..frames {
        let (_, _, len, hl) = parse_header(&buf[pos..])?;
        let end = pos + hl + len as usize;
        if buf.len() < end {
            return None;
        }
        pos = end;
    }
    Some(pos)
}

/// Reads until `frames` complete frames are at the start of `buf` (no HTTP head), and drops them.
async fn read_until_frames(s: &mut Conn, buf: &mut Vec<u8>, frames: usize) -> std::io::Result<()> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(pos) = frames_end(buf, 0, frames) {
            buf.drain(..pos);
            return Ok(());
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn open(o: &Opts) -> std::io::Result<(Conn, Vec<u8>)> {
    if o.h2 > 0 {
        return Ok((h2_open(o).await?, Vec::new()));
    }
    let mut s = connection(o.target, o.sources).await?;
    s.write_all(&upgrade_request(o, "/ws", Some(&o.token)))
        .await?;
    let mut buf = Vec::new();
    let status = read_until(&mut s, &mut buf, 0).await?;
    if status != 101 {
        return Err(std::io::Error::other(format!("status {status}")));
    }
    Ok((s, buf))
}

/// 64 B ping-pong, one message in flight per connection.
async fn rtt(o: &Opts) -> String {
    let deadline = Instant::now() + Duration::from_secs_f64(o.secs);
    let frame = Arc::new(client_frame(0x2, &[0x42; 64]));
    let echo_len = 2 + 64;
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..o.conns {
        let (mut s, _) = open(o).await.expect("open");
        let frame = frame.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut buf = [0u8; 256];
            while Instant::now() < deadline {
                let t0 = Instant::now();
                s.write_all(&frame).await.unwrap();
                let mut got = 0;
                while got < echo_len {
                    let n = s.read(&mut buf[got..]).await.unwrap();
                    assert!(n > 0);
                    got += n;
                }
                lat.push(t0.elapsed().as_micros() as u32);
            }
            lat
        }));
    }
    report("rtt", "msg/s", started, tasks, 0).await
}

/// Plain HTTP/1.1 GETs with the token, one in flight per kept-alive connection.
async fn plain(o: &Opts) -> String {
    let deadline = Instant::now() + Duration::from_secs_f64(o.secs);
    let req = Arc::new(
        format!(
            "GET /plain HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\n\r\n",
            o.token
        )
        .into_bytes(),
    );
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..o.conns {
        let mut s = connection(o.target, o.sources).await.expect("open");
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut buf = Vec::with_capacity(4096);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                s.write_all(&req).await.unwrap();
                read_answer(&mut s, &mut buf).await;
                lat.push(t0.elapsed().as_micros() as u32);
            }
            lat
        }));
    }
    report("plain", "req/s", started, tasks, 0).await
}

/// One `200` answer with a `Content-Length` body, read whole (what follows stays in `buf`).
async fn read_answer(s: &mut Conn, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = head_end(buf) {
            let head = std::str::from_utf8(&buf[..end])
                .expect("a text head")
                .to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .expect("a content-length")
                .trim()
                .parse()
                .unwrap();
            if buf.len() >= end + len {
                buf.drain(..end + len);
                return;
            }
        }
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the answer ended early");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// 64 KiB messages streamed both ways; MB/s of echo received.
async fn bulk(o: &Opts) -> String {
    let frame = Arc::new(client_frame(0x2, &vec![0x5a; 64 * 1024]));
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..o.conns {
        conns.push(open(o).await.expect("open").0);
    }
    let started = Instant::now();
    for s in conns {
        let (mut r, mut w) = tokio::io::split(s);
        let (frame, stop2) = (frame.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop2.load(Ordering::Relaxed) {
                if w.write_all(&frame).await.is_err() {
                    return;
                }
            }
        }));
        let (received, stop) = (received.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            while !stop.load(Ordering::Relaxed) {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received.fetch_add(n as u64, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(o.secs)).await;
    let bytes = received.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    format!(
        r#"{{"mode":"bulk","rate":{:.1},"unit":"MB/s","count":{},"errors":0,"p50_us":null,"p99_us":null,"p999_us":null}}"#,
        bytes as f64 / secs / 1e6,
        bytes
    )
}

fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// Opens `conns` upgraded connections (each echoes one message), measures the RSS growth
/// of `pids`, holds them a moment, closes them.
async fn idle(o: &Opts) -> String {
    let before = rss_kib(&o.pids);
    let msg = client_frame(0x1, b"hi");
    let mut conns = Vec::with_capacity(o.conns);
    let mut errors = 0;
    for chunk in 0..o.conns.div_ceil(100) {
        let n = 100.min(o.conns - chunk * 100);
        let opened = futures_join(n, o).await;
        for r in opened {
            match r {
                Ok((mut s, mut buf)) => {
                    if s.write_all(&msg).await.is_err()
                        || read_until_frames(&mut s, &mut buf, 1).await.is_err()
                    {
                        errors += 1;
                    }
                    conns.push(s);
                }
                Err(_) => errors += 1,
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(&o.pids);
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / conns.len().max(1) as f64;
    drop(conns);
    format!(
        r#"{{"mode":"idle","rate":{:.0},"unit":"B/conn","count":{},"errors":{},"rss_before_kib":{},"rss_after_kib":{},"p50_us":null,"p99_us":null,"p999_us":null}}"#,
        per, o.conns, errors, before, after
    )
}

async fn futures_join(n: usize, o: &Opts) -> Vec<std::io::Result<(Conn, Vec<u8>)>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let o2 = Opts {
            mode: String::new(),
            target: o.target,
            token: o.token.clone(),
            conns: 0,
            secs: 0.0,
            pids: vec![],
            sources: o.sources,
            tls_ca: o.tls_ca.clone(),
            resume: o.resume,
            h2: o.h2,
        };
        set.spawn(async move { open(&o2).await });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}
