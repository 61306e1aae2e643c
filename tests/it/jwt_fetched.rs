//! JWT key sets fetched from the network (#41): from an issuer's discovery document or a
//! `jwks_url`, served here by a small HTTP server on loopback that counts its requests. A
//! rotated key is picked up on the first token that names it, with the fetches bounded; a
//! failing issuer keeps the last good keys; an issuer down at start is waited for; a
//! discovery document naming another issuer is not trusted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::binary::run_check;
use crate::common::*;
use crate::jwt::{fingerprint, key_set, signer};
use gatewarden::config::{CredentialFormat, CredentialSource, Secs};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// What the issuer serves now.
#[derive(Clone, Default)]
struct Served {
    /// The key set, or `None`: 503 for it (the issuer is down).
    jwks: Option<String>,
    /// The `issuer` its discovery document names (default: its own URL).
    names_issuer: Option<String>,
    max_age: Option<u32>,
    /// How far the issuer's `Date` is ahead of this host's clock, in seconds.
    clock_ahead: i64,
}

struct Issuer {
    url: String,
    served: Arc<Mutex<Served>>,
    /// Requests for the key set.
    jwks_hits: Arc<AtomicUsize>,
}

impl Issuer {
    async fn start(served: Served) -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = Arc::new(Mutex::new(served));
        let jwks_hits = Arc::new(AtomicUsize::new(0));
        let (s, hits, base) = (served.clone(), jwks_hits.clone(), url.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (s, hits, base) = (s.clone(), hits.clone(), base.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let path = String::from_utf8_lossy(&head)
                        .split(' ')
                        .nth(1)
                        .unwrap_or("")
                        .to_string();
                    let now = s.lock().unwrap().clone();
                    let (status, body) = match path.as_str() {
                        "/.well-known/openid-configuration" => {
                            let iss = now.names_issuer.clone().unwrap_or(base.clone());
                            let doc = json!({"issuer": iss, "jwks_uri": format!("{base}/jwks")});
                            ("200 OK", doc.to_string())
                        }
                        "/jwks" => {
                            hits.fetch_add(1, Ordering::SeqCst);
                            match now.jwks {
                                Some(set) => ("200 OK", set),
                                None => ("503 Service Unavailable", String::new()),
                            }
                        }
                        _ => ("404 Not Found", String::new()),
                    };
                    let cache = now
                        .max_age
                        .map(|a| format!("cache-control: max-age={a}\r\n"))
                        .unwrap_or_default();
                    let date = std::time::SystemTime::now()
                        .checked_add(Duration::from_secs(now.clock_ahead.max(0) as u64))
                        .and_then(|t| {
                            t.checked_sub(Duration::from_secs((-now.clock_ahead).max(0) as u64))
                        })
                        .unwrap();
                    let date = httpdate::fmt_http_date(date);
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ndate: {date}\r\ncontent-type: application/json\r\n{cache}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        Issuer {
            url,
            served,
            jwks_hits,
        }
    }

    fn set(&self, f: impl FnOnce(&mut Served)) {
        f(&mut self.served.lock().unwrap());
    }
}

/// gatewarden with one fetched key set: `issuer` alone (discovery) or with `jwks_url`.
async fn start(issuer: &Issuer, by_url: bool) -> Running {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let unused = write_file(dir.path(), "unused", "x");
    let mut config = config_for(up.addr, &unused);
    config.credentials.jwks_refetch_min = Secs(Duration::from_secs(2));
    config.auth.max_failures = 5;
    config.credentials.sources = vec![CredentialSource {
        format: CredentialFormat::Jwks,
        issuer: Some(issuer.url.clone()),
        jwks_url: by_url.then(|| format!("{}/jwks", issuer.url)),
        audience: Some("gatewarden-test".into()),
        ..CredentialSource::plain("")
    }];
    serve(config).await
}

/// An upgrade with `token`: `Ok` when echoed, else the refusal's reason from the log.
async fn refused(gw: &Running, token: &str) -> String {
    let auth = format!("Bearer {token}");
    let (mut ws, _) = ws_connect(gw.addr, "/ws", &[("authorization", &auth)])
        .await
        .unwrap();
    match next_msg(&mut ws).await {
        Some(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::Policy),
        other => panic!("not refused: {other:?}"),
    }
    let line = wait_log(&["[ws] unauthorized", &fingerprint(token)]).await;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("reason="))
        .unwrap_or("-")
        .to_string()
}

#[tokio::test]
async fn keys_found_by_discovery_admit_a_token_and_a_rotated_key_is_fetched_once() {
    let (k1, k2) = (signer("k1"), signer("k2"));
    let issuer = Issuer::start(Served {
        jwks: Some(key_set(&[&k1])),
        ..Served::default()
    })
    .await;
    let gw = start(&issuer, false).await;
    wait_log(&[
        "[auth] key set fetched",
        &format!("url={}/jwks", issuer.url),
        "keys=1",
    ])
    .await;
    let user = format!("alice-{}", &random_token()[..8]);
    let mut ws = ws_bearer(
        gw.addr,
        &k1.sign_as(&issuer.url, &user, "gatewarden-test", 300),
    )
    .await;
    assert_echo(&mut ws, "hello").await;
    wait_log(&["[ws] connected", &format!("client={user}")]).await;
    assert_eq!(issuer.jwks_hits.load(Ordering::SeqCst), 1);

    // The issuer rotates to k2: tokens naming it are refused until the set is refetched,
    // which happens once for the whole burst (bounded by `jwks_refetch_min`). Those
    // clients (one IP here, as behind a sidecar) are not throttled as guessers.
    issuer.set(|s| s.jwks = Some(key_set(&[&k1, &k2])));
    let rotated = |n: usize| k2.sign_as(&issuer.url, &format!("bob-{n}"), "gatewarden-test", 300);
    for n in 0..20 {
        assert_eq!(refused(&gw, &rotated(n)).await, "jwt_unknown_key");
    }
    wait_log(&[
        "[auth] key set fetched",
        &format!("url={}/jwks", issuer.url),
        "keys=2",
    ])
    .await;
    let mut ws = ws_bearer(gw.addr, &rotated(99)).await;
    assert_echo(&mut ws, "rotated").await;
    let hits = issuer.jwks_hits.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&hits),
        "20 unknown keys made {hits} fetches"
    );
}

#[tokio::test]
async fn an_issuer_down_at_start_is_waited_for_and_a_failing_one_keeps_the_last_good_keys() {
    let k1 = signer("k1");
    let issuer = Issuer::start(Served {
        jwks: None,
        max_age: Some(1),
        ..Served::default()
    })
    .await;
    let gw = start(&issuer, true).await;
    let url = format!("url={}/jwks", issuer.url);
    wait_log(&["[auth] key set fetch failed", &issuer.url, "503"]).await;
    let token = k1.sign_as(&issuer.url, "carol", "gatewarden-test", 300);
    assert_eq!(refused(&gw, &token).await, "credential_unavailable");

    issuer.set(|s| s.jwks = Some(key_set(&[&k1])));
    wait_log(&["[auth] key set fetched", &url]).await;
    let mut ws = ws_bearer(gw.addr, &token).await;
    assert_echo(&mut ws, "came up").await;

    // `max-age=1` (held to `jwks_refetch_min`): refetched, and now failing.
    issuer.set(|s| s.jwks = None);
    wait_log(&[
        "[auth] key set fetch failed",
        &issuer.url,
        "kept_last_good=true",
    ])
    .await;
    let again = k1.sign_as(&issuer.url, "carol-2", "gatewarden-test", 300);
    let mut ws = ws_bearer(gw.addr, &again).await;
    assert_echo(&mut ws, "last good").await;
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_not_trusted() {
    let k1 = signer("k1");
    let issuer = Issuer::start(Served {
        jwks: Some(key_set(&[&k1])),
        names_issuer: Some("https://evil.example".into()),
        ..Served::default()
    })
    .await;
    let gw = start(&issuer, false).await;
    wait_log(&[
        "[auth] key set fetch failed",
        "names issuer",
        "evil.example",
    ])
    .await;
    let token = k1.sign_as(&issuer.url, "mallory", "gatewarden-test", 300);
    assert_eq!(refused(&gw, &token).await, "credential_unavailable");
    assert_eq!(issuer.jwks_hits.load(Ordering::SeqCst), 0);
}

/// A key set over plain HTTP to another host could be swapped by anyone on the path: the
/// config refuses it, naming the key and the file, as it refuses a source with neither a
/// file nor a URL and one with both.
#[test]
fn a_fetched_key_set_comes_over_tls_or_from_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "format = \"jwks\"\njwks_url = \"http://idp.example/keys\"\n",
            "key `credentials.jwks_url`",
            "must be https://",
        ),
        (
            "format = \"jwks\"\nissuer = \"http://10.0.0.5/realms/x\"\n",
            "key `credentials.issuer`",
            "must be https://",
        ),
        (
            "format = \"jwks\"\naudience = \"x\"\n",
            "key `credentials.path`",
            "needs `path`, `jwks_url` or `issuer`",
        ),
        (
            "format = \"jwks\"\npath = \"/k.json\"\njwks_url = \"https://idp.example/keys\"\n",
            "key `credentials.jwks_url`",
            "exclude each other",
        ),
    ];
    for (i, (source, key, why)) in cases.iter().enumerate() {
        let cfg = write_file(
            dir.path(),
            &format!("gw{i}.toml"),
            &format!("[[credentials]]\n{source}"),
        );
        let (code, _, err) = run_check(&["-c", cfg.to_str().unwrap()], &[]);
        assert_eq!(code, 2, "{source}: {err}");
        assert!(err.contains(key) && err.contains(why), "{source}: {err}");
        assert!(
            err.contains(&format!("gw{i}.toml")),
            "{source}: no file named: {err}"
        );
    }
    let ok = write_file(
        dir.path(),
        "ok.toml",
        "[[credentials]]\nformat = \"jwks\"\nissuer = \"https://login.microsoftonline.com/t/v2.0\"\naudience = \"api://gw\"\n",
    );
    let (code, _, err) = run_check(&["-c", ok.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
}

/// `gatewarden doctor` asks the issuer: its discovery document, the key set's keys and
/// algorithms, and this host's clock against the issuer's (past the leeway: a problem).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_asks_the_issuer_for_its_keys_and_its_clock() {
    let k1 = signer("k1");
    let issuer = Issuer::start(Served {
        jwks: Some(key_set(&[&k1])),
        ..Served::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(
        dir.path(),
        "gw.toml",
        &format!(
            "[[credentials]]\nformat = \"jwks\"\nissuer = \"{}\"\n",
            issuer.url
        ),
    );
    let doctor = |home: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gatewarden"))
            .args([
                "doctor",
                "--listen",
                "127.0.0.1:0",
                "-c",
                cfg.to_str().unwrap(),
            ])
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("GATEWARDEN_ADMIN__LISTEN", "")
            .env_remove("GATEWARDEN_CONFIG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    };
    let (_, text) = tokio::task::block_in_place(|| doctor(dir.path()));
    let jwks = format!("{}/jwks", issuer.url);
    assert!(
        text.contains(&format!("issuer {} reachable", issuer.url)),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "key set {jwks}: 1 usable key(s), algorithms RS256, PS256, ES256, EdDSA"
        )),
        "{text}"
    );
    assert!(text.contains("clock within"), "{text}");

    issuer.set(|s| s.clock_ahead = 300);
    let (code, text) = tokio::task::block_in_place(|| doctor(dir.path()));
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("s behind") && text.contains("past the leeway of 30s"),
        "{text}"
    );
}
