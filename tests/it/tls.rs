//! TLS termination and upstream TLS, with certificates made by rcgen: wss with token auth,
//! certificate rotation seen by fresh handshakes while established ones continue, mismatched
//! pairs ignored, plain HTTP on the TLS port, handshake timeout, mTLS, a TLS upstream with a
//! private CA, and curl as a client nobody here wrote.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::certs::{ca, leaf, Ca};
use common::*;
use futures_util::SinkExt;
use gatewarden::config::{Config, Secs, TokenSource};
use rcgen::{CertificateParams, KeyPair, SerialNumber};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

fn serial_hex(serial: u64) -> String {
    // x509-parser's raw_serial_as_string: colon-separated hex of the DER integer bytes.
    let c = CertificateDer::from({
        let ca = ca("s");
        let mut p = CertificateParams::new(vec!["x".to_string()]).unwrap();
        p.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        p.signed_by(&key, &ca.cert, &ca.key).unwrap().der().to_vec()
    });
    peer_serial_of(&c)
}

fn peer_serial_of(der: &CertificateDer<'_>) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    c.raw_serial_as_string()
}

fn client_config(ca: &Ca, client: Option<(String, String)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut cfg = match client {
        None => b.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            b.with_client_auth_cert(certs, key).unwrap()
        }
    };
    // A resumed session reports the certificate of the original handshake; every handshake
    // here must be a full one to show which certificate is being served now.
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

use rustls::pki_types::pem::PemObject;

async fn tls_connect(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// wss through gatewarden; returns the socket and the serial of the certificate it saw.
async fn wss(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    headers: &[(&str, &str)],
) -> (WebSocketStream<TlsStream<TcpStream>>, String) {
    let tls = timeout(tls_connect(addr, cfg))
        .await
        .expect("TLS handshake");
    let serial = peer_serial_of(&tls.get_ref().1.peer_certificates().unwrap()[0]);
    let mut req = format!("wss://localhost:{}/ws", addr.port())
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let (ws, _) = timeout(tokio_tungstenite::client_async(req, tls))
        .await
        .unwrap();
    (ws, serial)
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    text: &str,
) {
    ws.send(Message::text(text)).await.unwrap();
    let got = timeout(futures_util::StreamExt::next(ws))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::text(text));
}

struct Setup {
    proxy: Running,
    _upstream: TestUpstream,
    ca: Ca,
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    token: String,
}

async fn setup(tweak: impl FnOnce(&mut Config, &Path)) -> Setup {
    let upstream = start_upstream().await;
    let ca = ca("gatewarden test CA");
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = leaf(&ca, "localhost", 1001);
    let cert = write_file(dir.path(), "cert.pem", &c);
    let key = write_file(dir.path(), "key.pem", &k);
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let mut config = config_for(upstream.addr, &tf);
    config.tls.cert = Some(cert.clone());
    config.tls.key = Some(key.clone());
    tweak(&mut config, dir.path());
    let proxy = serve(config).await;
    Setup {
        proxy,
        _upstream: upstream,
        ca,
        dir,
        cert,
        key,
        token,
    }
}

fn replace(path: &Path, contents: &str, atomic: bool) {
    if atomic {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    } else {
        std::fs::write(path, contents).unwrap();
    }
}

#[tokio::test]
async fn wss_with_token_auth() {
    // Upgrade-time sources only, so a missing token is refused at the upgrade.
    let s = setup(|c, _| c.auth.sources = Some(vec![TokenSource::Header])).await;
    let cfg = client_config(&s.ca, None);
    let (mut ws, serial) = wss(
        s.proxy.addr,
        cfg.clone(),
        &[("authorization", &format!("Bearer {}", s.token))],
    )
    .await;
    assert_eq!(serial, serial_hex(1001));
    echo(&mut ws, "over TLS").await;
    // Without a token the same TLS client gets the 1008 rejection.
    let (mut ws, _) = wss(s.proxy.addr, cfg, &[]).await;
    match timeout(futures_util::StreamExt::next(&mut ws)).await {
        Some(Ok(Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 1008);
            assert!(f.reason.contains("token missing"), "{}", f.reason);
        }
        other => panic!("{other:?}"),
    }
}

/// First 8 hex of the SHA-256 of the certificate in a PEM file, as gatewarden logs it.
fn fingerprint_of(cert: &Path) -> String {
    use sha2::Digest;
    let der = CertificateDer::from_pem_file(cert).unwrap();
    sha2::Sha256::digest(der.as_ref())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn rotate(s: &Setup, serial: u64, atomic: bool, key_first: bool) {
    let (c, k) = leaf(&s.ca, "localhost", serial);
    if key_first {
        replace(&s.key, &k, atomic);
        replace(&s.cert, &c, atomic);
    } else {
        replace(&s.cert, &c, atomic);
        replace(&s.key, &k, atomic);
    }
}

#[tokio::test]
async fn certificate_rotation_is_seen_by_new_handshakes_only() {
    let s = setup(|_, _| {}).await;
    let cfg = client_config(&s.ca, None);
    let auth = format!("Bearer {}", s.token);
    let (mut established, serial) =
        wss(s.proxy.addr, cfg.clone(), &[("authorization", &auth)]).await;
    assert_eq!(serial, serial_hex(1001));
    // Every write order a renewal tool uses: atomic rename and in place, key before the
    // certificate and after it. A half-written pair is never served.
    for (n, (atomic, key_first)) in [(true, true), (true, false), (false, true), (false, false)]
        .into_iter()
        .enumerate()
    {
        let serial = 2000 + n as u64;
        rotate(&s, serial, atomic, key_first).await;
        let want = serial_hex(serial);
        // Wait for the swap (its log line names the new fingerprint), then a fresh handshake
        // sees the new certificate.
        wait_log(&[
            "[reload] tls applied",
            &format!("fingerprint={}", fingerprint_of(&s.cert)),
        ])
        .await;
        let (_, seen) = wss(s.proxy.addr, cfg.clone(), &[("authorization", &auth)]).await;
        assert_eq!(seen, want, "rotation {n}");
        echo(
            &mut established,
            &format!("established connection survives rotation {n}"),
        )
        .await;
    }
    let line = wait_log(&["[reload] tls applied", "subject=localhost"]).await;
    assert!(
        line.contains("not_after=") && line.contains("fingerprint="),
        "{line}"
    );
}

#[tokio::test]
async fn mismatched_pair_is_ignored_with_a_warning() {
    let s = setup(|_, _| {}).await;
    let cfg = client_config(&s.ca, None);
    let (_, other_key) = leaf(&s.ca, "localhost", 3000);
    replace(&s.key, &other_key, true);
    wait_log(&[
        "[reload] tls rejected",
        "does not match certificate",
        s.cert.to_str().unwrap(),
    ])
    .await;
    let (mut ws, serial) = wss(
        s.proxy.addr,
        cfg,
        &[("authorization", &format!("Bearer {}", s.token))],
    )
    .await;
    assert_eq!(serial, serial_hex(1001), "the old pair keeps serving");
    echo(&mut ws, "still served").await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_clear_400() {
    let s = setup(|_, _| {}).await;
    let mut tcp = TcpStream::connect(s.proxy.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    timeout(tcp.read_to_string(&mut resp)).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(
        resp.contains("this port speaks TLS; use https:// or wss://"),
        "{resp}"
    );
    wait_log(&["[tls] plain HTTP on the TLS port"]).await;
}

#[tokio::test]
async fn silent_or_stalled_handshakes_are_cut() {
    let s = setup(|c, _| c.tls.handshake_timeout = Secs(Duration::from_millis(300))).await;
    // Sends nothing at all.
    let mut idle = TcpStream::connect(s.proxy.addr).await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(timeout(idle.read(&mut buf)).await.unwrap_or(0), 0);
    // Starts a TLS record and stalls.
    let mut stalled = TcpStream::connect(s.proxy.addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    assert_eq!(timeout(stalled.read(&mut buf)).await.unwrap_or(0), 0);
    wait_log(&["[tls] handshake timeout"]).await;
    // Others are still served.
    let (mut ws, _) = wss(
        s.proxy.addr,
        client_config(&s.ca, None),
        &[("authorization", &format!("Bearer {}", s.token))],
    )
    .await;
    echo(&mut ws, "after timeouts").await;
}

/// Whether the server refused this client: the handshake fails, or (TLS 1.3, where the
/// client finishes first) the server's alert arrives with the first read.
async fn tls_refused(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> bool {
    match tls_connect(addr, cfg).await {
        Err(_) => true,
        Ok(mut t) => {
            let _ = t.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let mut b = [0u8; 64];
            !matches!(t.read(&mut b).await, Ok(n) if n > 0)
        }
    }
}

#[tokio::test]
async fn mutual_tls_certificate_stands_in_for_a_token() {
    let client_ca = ca("client CA");
    let ca_file = Arc::new(std::sync::Mutex::new(PathBuf::new()));
    let cf = ca_file.clone();
    let pem = client_ca.cert.pem();
    let s = setup(move |c, dir| {
        let p = write_file(dir, "client-ca.pem", &pem);
        c.tls.client_ca = Some(p.clone());
        *cf.lock().unwrap() = p;
        c.auth.sources = Some(vec![TokenSource::ClientCert, TokenSource::Header]);
    })
    .await;
    let alice = leaf(&client_ca, "laptop-alice", 7);
    let cfg = client_config(&s.ca, Some(alice));
    let (mut ws, _) = wss(s.proxy.addr, cfg, &[]).await;
    echo(&mut ws, "no token, a certificate").await;
    wait_log(&[
        "[ws] connected",
        "source=client_cert",
        "client=laptop-alice",
    ])
    .await;
    // No client certificate: the handshake itself is refused.
    assert!(
        tls_refused(s.proxy.addr, client_config(&s.ca, None)).await,
        "a client without a certificate must not get through"
    );
    // A certificate from another CA is refused too.
    let mallory = leaf(&ca("other CA"), "mallory", 8);
    assert!(tls_refused(s.proxy.addr, client_config(&s.ca, Some(mallory))).await);
    drop(ca_file);
}

#[tokio::test]
async fn upstream_over_tls_with_a_private_ca() {
    let up_ca = ca("upstream CA");
    let (c, k) = leaf(&up_ca, "localhost", 55);
    let mut server_cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_slice(c.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap(),
    )
    .unwrap();
    server_cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let upstream =
        start_upstream_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg)))).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_file(dir.path(), "upstream-ca.pem", &up_ca.cert.pem());
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let url = format!("https://localhost:{}", upstream.addr.port());

    let mut config = config_for(upstream.addr, &tf);
    config.upstream = url.parse().unwrap();
    config.upstream_tls.ca = Some(ca_file.clone());
    let proxy = serve(config).await;
    let auth = format!("Bearer {token}");
    let (mut ws, _) = ws_connect(proxy.addr, "/ws", &[("authorization", &auth)])
        .await
        .unwrap();
    ws.send(Message::text("to a TLS gateway")).await.unwrap();
    assert_eq!(
        next_msg(&mut ws).await,
        Some(Message::text("to a TLS gateway"))
    );
    let mut req = get(proxy.addr, "/over-tls");
    req.headers_mut()
        .insert("authorization", auth.parse().unwrap());
    let resp = http_request(proxy.addr, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "upstream saw GET /over-tls\n");

    // Without the private CA the gateway's certificate is not trusted: 502, cause logged.
    let mut config = config_for(upstream.addr, &tf);
    config.upstream = url.parse().unwrap();
    let untrusting = serve(config).await;
    match ws_connect(untrusting.addr, "/ws", &[("authorization", &auth)]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 502),
        other => panic!("expected 502, got {other:?}"),
    }
    wait_log(&[
        "[ws] upstream unavailable",
        "reason=upstream_tls_failed",
        "TLS handshake",
    ])
    .await;

    // insecure: works, with a loud warning at start-up.
    let mut config = config_for(upstream.addr, &tf);
    config.upstream = url.parse().unwrap();
    config.upstream_tls.insecure = true;
    let insecure = serve(config).await;
    wait_log(&["upstream_tls.insecure = true", "NOT verified"]).await;
    let (mut ws, _) = ws_connect(insecure.addr, "/ws", &[("authorization", &auth)])
        .await
        .unwrap();
    assert_echo(&mut ws, "insecure").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_https_through_gatewarden() {
    let s = setup(|_, _| {}).await;
    let ca_file = write_file(s.dir.path(), "ca.pem", &s.ca.cert.pem());
    let port = s.proxy.addr.port();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&ca_file)
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["-H", &format!("Authorization: Bearer {}", s.token)])
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
        "upstream saw GET /from-curl?x=1\n"
    );
}

fn check(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatewarden"))
        .arg("check")
        .args(args)
        .env_remove("GATEWARDEN_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn startup_errors_name_the_file_and_the_problem() {
    let ca = ca("CA");
    let dir = tempfile::tempdir().unwrap();
    let token = write_file(dir.path(), "token", "t");
    let (c, k) = leaf(&ca, "localhost", 1);
    let cert = write_file(dir.path(), "cert.pem", &c);
    let key = write_file(dir.path(), "key.pem", &k);
    let (_, other_key) = leaf(&ca, "localhost", 2);
    let other = write_file(dir.path(), "other-key.pem", &other_key);
    let junk = write_file(dir.path(), "junk.pem", "not a certificate\n");
    let run = |cert: &Path, key: &Path| {
        check(&[
            "--token-file",
            token.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
    };
    let (code, out, err) = run(&cert, &key);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("# tls") && out.contains("subject localhost"),
        "{out}"
    );
    let missing = dir.path().join("nope.pem");
    let (code, _, err) = run(&missing, &key);
    assert_ne!(code, 0);
    assert!(
        err.contains(missing.to_str().unwrap()) && err.contains("does not exist"),
        "{err}"
    );
    let (code, _, err) = run(&junk, &key);
    assert_ne!(code, 0);
    assert!(
        err.contains(junk.to_str().unwrap()) && err.contains("no PEM certificate"),
        "{err}"
    );
    let (code, _, err) = run(&cert, &junk);
    assert_ne!(code, 0);
    assert!(err.contains("no usable PEM private key"), "{err}");
    let (code, _, err) = run(&cert, &other);
    assert_ne!(code, 0);
    assert!(err.contains("does not match certificate"), "{err}");
    // Expired: a warning, not a refusal.
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let ek = KeyPair::generate().unwrap();
    let ec = p.signed_by(&ek, &ca.cert, &ca.key).unwrap();
    let ecert = write_file(dir.path(), "expired.pem", &ec.pem());
    let ekey = write_file(dir.path(), "expired-key.pem", &ek.serialize_pem());
    let (code, out, err) = run(&ecert, &ekey);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("0 days left") && err.contains("expires within 14 days"),
        "{out}\n{err}"
    );
}

/// gatewarden serving a certificate made from `params` (signed by a throwaway CA); returns the
/// running proxy, the certificate path and the temp dir holding the files.
async fn serve_cert(
    params: CertificateParams,
) -> (Running, PathBuf, tempfile::TempDir, TestUpstream) {
    let ca = ca("CA");
    let dir = tempfile::tempdir().unwrap();
    let k = KeyPair::generate().unwrap();
    let c = params.signed_by(&k, &ca.cert, &ca.key).unwrap();
    let cert = write_file(dir.path(), "cert.pem", &c.pem());
    let key = write_file(dir.path(), "key.pem", &k.serialize_pem());
    let upstream = start_upstream().await;
    let tf = write_file(dir.path(), "token", "t");
    let mut config = config_for(upstream.addr, &tf);
    config.tls.cert = Some(cert.clone());
    config.tls.key = Some(key);
    (serve(config).await, cert, dir, upstream)
}

#[tokio::test]
async fn expired_certificate_starts_with_a_loud_warning() {
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let (_proxy, cert, _dir, _up) = serve_cert(p).await;
    wait_log(&["[tls] certificate has EXPIRED", cert.to_str().unwrap()]).await;
}

#[tokio::test]
async fn expiry_warning_fires_while_running() {
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    // Enters its last 14 days two seconds after start-up: no warning at start, one later.
    p.not_after =
        time::OffsetDateTime::now_utc() + time::Duration::days(14) + time::Duration::seconds(2);
    let (_proxy, cert, _dir, _up) = serve_cert(p).await;
    let line = wait_log(&["[tls] certificate expires soon", cert.to_str().unwrap()]).await;
    assert!(line.contains("days_left=13"), "{line}");
}

/// The listener does key exchange with X25519 or P-256 only. A client whose first key share
/// is P-384 (ring's client default since rustls 0.23.48) is asked to retry with one of
/// those, instead of making gatewarden do P-384, ring's slowest group (~1 ms a handshake
/// against ~0.24 ms with X25519 on this machine): one client, or a flood of them, cannot
/// make handshakes four times dearer. A client with nothing but P-384 is refused.
#[tokio::test]
async fn key_exchange_stays_on_the_cheap_groups_whatever_the_client_offers_first() {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    use rustls::NamedGroup;
    let s = setup(|_, _| {}).await;
    let offering = |groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(s.ca.cert.der().clone()).unwrap();
        let mut provider = rustls::crypto::ring::default_provider();
        provider.kx_groups = groups;
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    };
    for (offered, agreed) in [
        (vec![SECP384R1, X25519, SECP256R1], NamedGroup::X25519),
        (vec![SECP384R1, SECP256R1], NamedGroup::secp256r1),
        (vec![X25519], NamedGroup::X25519),
    ] {
        let tls = tls_connect(s.proxy.addr, offering(offered))
            .await
            .expect("handshake");
        let group = tls.get_ref().1.negotiated_key_exchange_group().unwrap();
        assert_eq!(group.name(), agreed);
    }
    assert!(
        tls_refused(s.proxy.addr, offering(vec![SECP384R1])).await,
        "a P-384-only client is refused"
    );
}

/// Clients that reconnect resume their TLS session — all of them, not only the last 256
/// (the size of a default session cache): after a gateway restart every client reconnects
/// at once, and a resumed handshake skips the certificate and its signature.
#[tokio::test]
async fn hundreds_of_reconnecting_clients_all_resume() {
    const CLIENTS: usize = 400;
    let s = setup(|_, _| {}).await;
    // One session store per client, as each browser has its own.
    let configs: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(s.ca.cert.der().clone()).unwrap();
            let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            cfg.resumption = rustls::client::Resumption::in_memory_sessions(4);
            Arc::new(cfg)
        })
        .collect();
    // A TLS 1.3 ticket arrives after the handshake: read until the server has spoken.
    async fn handshake(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> rustls::HandshakeKind {
        let mut tls = tls_connect(addr, cfg).await.expect("handshake");
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut sink = Vec::new();
        let _ = timeout(tls.read_to_end(&mut sink)).await;
        tls.get_ref().1.handshake_kind().unwrap()
    }
    for cfg in &configs {
        assert_eq!(
            handshake(s.proxy.addr, cfg.clone()).await,
            rustls::HandshakeKind::Full
        );
    }
    let mut resumed = 0;
    for cfg in &configs {
        if handshake(s.proxy.addr, cfg.clone()).await == rustls::HandshakeKind::Resumed {
            resumed += 1;
        }
    }
    assert_eq!(resumed, CLIENTS, "clients that resumed");
}
