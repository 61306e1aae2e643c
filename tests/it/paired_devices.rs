//! Paired devices across rotations (issue #39), against the fake gateway in its other auth
//! modes: the gateway's password injected beside the client's own signed token, the client
//! named to a gateway in trusted-proxy mode, per-credential scopes, device tokens left for
//! the gateway to judge, and the session's audit lines.

use crate::common;

use common::openclaw::{self, cli_connect, signed_connect, FakeGateway, Mode};
use common::*;
use futures_util::SinkExt;
use gatewarden::config::{Config, CredentialFormat, CredentialSource, DeviceTokens, Inject};
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// The gateway's config in password mode, as JSON5.
fn openclaw_json(password: &str) -> String {
    format!("{{ gateway: {{ auth: {{ mode: 'password', password: \"{password}\" }} }} }}\n")
}

struct Setup {
    gw: FakeGateway,
    proxy: Running,
    password: String,
    /// `name token` lines: `phone` and `laptop`, plus `reader` (scopes: operator.read).
    tokens: Tokens,
    oc: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

struct Tokens {
    phone: String,
    laptop: String,
    reader: String,
}

/// Fake gateway in `mode` + gatewarden with the gateway's `openclaw.json` (named `gateway`,
/// the password at `/gateway/auth/password`) and two lines files of named client tokens.
async fn setup(mode: Mode, tweak: impl FnOnce(&mut Config)) -> Setup {
    let password = random_token();
    let gw = openclaw::start(&password).await;
    gw.set_mode(mode);
    let dir = tempfile::tempdir().unwrap();
    let oc = write_file(dir.path(), "openclaw.json", &openclaw_json(&password));
    let tokens = Tokens {
        phone: random_token(),
        laptop: random_token(),
        reader: random_token(),
    };
    let clients = write_file(
        dir.path(),
        "clients",
        &format!("phone {}\nlaptop {}\n", tokens.phone, tokens.laptop),
    );
    let readers = write_file(
        dir.path(),
        "readers",
        &format!("reader {}\n", tokens.reader),
    );
    let mut config = Config {
        upstream: gw.addr.to_string().parse().unwrap(),
        ..Config::default()
    };
    let lines = |path| CredentialSource {
        format: CredentialFormat::Lines,
        ..CredentialSource::plain(path)
    };
    config.credentials.sources = vec![
        CredentialSource {
            name: Some("gateway".into()),
            format: CredentialFormat::Json5,
            pointer: Some("/gateway/auth/password".into()),
            ..CredentialSource::plain(oc.clone())
        },
        lines(clients),
        CredentialSource {
            scopes: Some(vec!["operator.read".into()]),
            roles: Some(vec!["operator".into()]),
            ..lines(readers)
        },
    ];
    config.auth.sources = Some(vec![
        gatewarden::config::TokenSource::Header,
        gatewarden::config::TokenSource::FirstMessage,
    ]);
    tweak(&mut config);
    let proxy = serve(config).await;
    Setup {
        gw,
        proxy,
        password,
        tokens,
        oc,
        _dir: dir,
    }
}

fn inject_password(c: &mut Config) {
    c.upstream_auth.inject = Inject::Password;
    c.upstream_auth.credential = Some("gateway".into());
}

fn trusted_proxy(c: &mut Config) {
    c.upstream_auth.inject = Inject::TrustedProxy;
}

async fn json(ws: &mut WsClient) -> Value {
    match next_msg(ws).await {
        Some(Message::Text(t)) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// A WebSocket through gatewarden with `headers`, and the gateway's challenge nonce.
async fn open(s: &Setup, headers: &[(&str, &str)]) -> (WsClient, String) {
    let (mut ws, resp) = ws_connect(s.proxy.addr, "/", headers).await.unwrap();
    assert_eq!(resp.status(), 101);
    let challenge = json(&mut ws).await;
    assert_eq!(challenge["event"], "connect.challenge");
    let nonce = challenge["payload"]["nonce"].as_str().unwrap().to_string();
    (ws, nonce)
}

async fn expect_close(ws: &mut WsClient, code: CloseCode, needle: &str) {
    loop {
        match next_msg(ws).await {
            Some(Message::Close(Some(f))) => {
                assert_eq!(f.code, code, "{}", f.reason);
                assert!(f.reason.contains(needle), "{:?} lacks {needle:?}", f.reason);
                return;
            }
            Some(Message::Text(_)) => continue,
            other => panic!("expected close {code}, got {other:?}"),
        }
    }
}

fn with_scopes(connect: &str, scopes: &[&str]) -> String {
    let mut v: Value = serde_json::from_str(connect).unwrap();
    v["params"]["scopes"] = scopes.iter().map(|s| Value::from(*s)).collect();
    v.to_string()
}

#[tokio::test]
async fn password_injection_keeps_device_signatures_across_a_rotation() {
    let s = setup(Mode::Password, inject_password).await;
    // The official CLI's shape (no device) and a device-signed client, each with its own
    // stable gatewarden token in `auth.token`.
    let (mut cli, _) = open(&s, &[]).await;
    cli.send(Message::text(cli_connect("pw-cli", Some(&s.tokens.laptop))))
        .await
        .unwrap();
    assert_eq!(json(&mut cli).await["ok"], true);
    let (mut dev, nonce) = open(&s, &[]).await;
    let signed = signed_connect("pw-dev", &s.tokens.phone, &nonce);
    dev.send(Message::text(signed.clone())).await.unwrap();
    let hello = json(&mut dev).await;
    assert_eq!(
        hello["ok"], true,
        "the device's signature still verifies: {hello}"
    );
    let seen = s.gw.connects();
    // The client's own token and every signed value byte for byte; the password beside.
    let mut expected: Value = serde_json::from_str(&signed).unwrap();
    expected["params"]["auth"]["password"] = Value::from(s.password.clone());
    assert_eq!(seen[1], expected);
    assert_eq!(seen[0]["params"]["auth"]["token"], s.tokens.laptop.as_str());
    wait_log(&[
        "[ws] connected",
        "client=phone",
        "client_id=cli",
        "authenticated_by=gatewarden",
    ])
    .await;

    // The gateway's password rotates; the same clients, same tokens, pass again.
    let new_password = random_token();
    *s.gw.token.lock().unwrap() = new_password.clone();
    let mut changed = s.proxy.creds.subscribe();
    let generation = s.proxy.creds.load().generation;
    write_file(
        s.oc.parent().unwrap(),
        "openclaw.json",
        &openclaw_json(&new_password),
    );
    timeout(changed.wait_for(|g| *g > generation))
        .await
        .unwrap();
    let (mut dev, nonce) = open(&s, &[]).await;
    dev.send(Message::text(signed_connect(
        "pw-dev2",
        &s.tokens.phone,
        &nonce,
    )))
    .await
    .unwrap();
    assert_eq!(json(&mut dev).await["ok"], true);
    assert_eq!(
        s.gw.connects()[2]["params"]["auth"]["password"],
        new_password.as_str()
    );
    let all = logs();
    for secret in [
        &s.password,
        &new_password,
        &s.tokens.phone,
        &s.tokens.laptop,
    ] {
        assert!(!all.contains(secret.as_str()), "a secret reached the log");
    }
}

#[tokio::test]
async fn password_injection_still_refuses_a_wrong_client_token() {
    let s = setup(Mode::Password, inject_password).await;
    let (mut ws, _) = open(&s, &[]).await;
    ws.send(Message::text(cli_connect(
        "pw-bad",
        Some("not-a-client-token"),
    )))
    .await
    .unwrap();
    let res = json(&mut ws).await;
    assert_eq!(res["error"]["details"]["authReason"], "token_mismatch");
    expect_close(&mut ws, CloseCode::Policy, "token mismatch").await;
    assert!(s.gw.connects().is_empty(), "nothing reached the gateway");
}

#[tokio::test]
async fn trusted_proxy_names_the_client_and_strips_client_sent_identity() {
    let s = setup(
        Mode::TrustedProxy {
            user_header: "x-forwarded-user".into(),
        },
        trusted_proxy,
    )
    .await;
    let bearer = format!("Bearer {}", s.tokens.laptop);
    let (mut ws, _) = open(
        &s,
        &[
            ("authorization", &bearer),
            ("x-forwarded-user", "admin"),
            ("x-forwarded-host", "evil.example"),
            ("x-openclaw-scopes", "operator.admin"),
        ],
    )
    .await;
    ws.send(Message::text(cli_connect("tp-1", None)))
        .await
        .unwrap();
    // The gateway attributes only a non-loopback X-Forwarded-For: this client is loopback
    // (the real-gateway script runs one from another address).
    expect_close(&mut ws, CloseCode::Error, "unattributable").await;
    let (_, h) = s.gw.last_request();
    let users: Vec<_> = h.get_all("x-forwarded-user").iter().collect();
    assert_eq!(
        users,
        ["laptop"],
        "only gatewarden's naming reaches the gateway"
    );
    assert_eq!(h.get("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    assert_eq!(
        h.get("x-forwarded-host").unwrap().to_str().unwrap(),
        s.proxy.addr.to_string()
    );
    assert!(
        h.get("x-openclaw-scopes").is_none(),
        "a client-sent cap is not passed on"
    );
    assert!(
        h.get("authorization").is_none(),
        "the client's own token stays with gatewarden"
    );
    drop(ws);

    // A reader's credential bounds its scopes: sent to the gateway as the cap.
    let bearer = format!("Bearer {}", s.tokens.reader);
    let (_ws, _) = ws_connect(s.proxy.addr, "/", &[("authorization", &bearer)])
        .await
        .unwrap();
    let (_, h) = s.gw.last_request();
    assert_eq!(h.get("x-forwarded-user").unwrap(), "reader");
    assert_eq!(h.get("x-openclaw-scopes").unwrap(), "operator.read");
}

#[tokio::test]
async fn trusted_proxy_refuses_a_client_known_only_from_its_first_frame() {
    let s = setup(
        Mode::TrustedProxy {
            user_header: "x-forwarded-user".into(),
        },
        trusted_proxy,
    )
    .await;
    let before = s.gw.requests().len();
    let err = ws_connect(s.proxy.addr, "/first-frame-only", &[]).await;
    // `auth.reject = "close"`: a 101 and a close with the reason.
    match err {
        Ok((mut ws, _)) => expect_close(&mut ws, CloseCode::Policy, "named token").await,
        Err(e) => panic!("expected a close, got {e}"),
    }
    wait_log(&[
        "[ws] unauthorized",
        "reason=identity_required",
        "first frame",
    ])
    .await;
    assert_eq!(s.gw.requests().len(), before, "nothing reached the gateway");
}

#[tokio::test]
async fn a_wider_ask_than_the_credential_allows_is_refused_in_the_gateways_shape() {
    let s = setup(Mode::Password, inject_password).await;
    let (mut ws, nonce) = open(&s, &[]).await;
    let wide = with_scopes(
        &signed_connect("sc-wide", &s.tokens.reader, &nonce),
        &["operator.read", "operator.admin"],
    );
    ws.send(Message::text(wide)).await.unwrap();
    let res = json(&mut ws).await;
    assert_eq!(res["id"], "sc-wide");
    assert_eq!(res["ok"], false);
    assert_eq!(res["error"]["details"]["authReason"], "scope_not_allowed");
    assert_eq!(res["error"]["details"]["code"], "AUTH_SCOPE_NOT_ALLOWED");
    expect_close(&mut ws, CloseCode::Policy, "scope not allowed").await;
    wait_log(&["[ws] unauthorized", "reason=scope_not_allowed"]).await;
    assert!(
        s.gw.connects().is_empty(),
        "the wider ask never reached the gateway"
    );

    // Within its scopes, the same client passes (its signature untouched).
    let (mut ws, nonce) = open(&s, &[]).await;
    let narrow = with_scopes(
        &cli_connect("sc-read", Some(&s.tokens.reader)),
        &["operator.read"],
    );
    let _ = nonce;
    ws.send(Message::text(narrow)).await.unwrap();
    assert_eq!(json(&mut ws).await["ok"], true);
    wait_log(&["[ws] connected", "client=reader", "scopes=operator.read"]).await;
}

#[tokio::test]
async fn a_scoped_credential_at_the_upgrade_is_checked_in_the_first_frame_too() {
    let s = setup(Mode::Token, |_| {}).await;
    *s.gw.token.lock().unwrap() = s.tokens.reader.clone();
    let bearer = format!("Bearer {}", s.tokens.reader);
    let (mut ws, _) = open(&s, &[("authorization", &bearer)]).await;
    let wide = with_scopes(
        &cli_connect("sc-up", Some(&s.tokens.reader)),
        &["operator.write"],
    );
    ws.send(Message::text(wide)).await.unwrap();
    let res = json(&mut ws).await;
    assert_eq!(res["error"]["details"]["authReason"], "scope_not_allowed");
    expect_close(&mut ws, CloseCode::Policy, "scope not allowed").await;
}

#[tokio::test]
async fn device_tokens_are_refused_by_default_and_left_to_the_gateway_when_asked() {
    // Pair first: a device-signed connect gets a device token from the gateway.
    let s = setup(Mode::Token, |c| {
        inject_password(c);
        c.upstream_auth.inject = Inject::FirstMessage;
        c.auth.device_tokens = DeviceTokens::Gateway;
    })
    .await;
    *s.gw.token.lock().unwrap() = s.password.clone();
    let (mut ws, nonce) = open(&s, &[]).await;
    // The gateway's own token: no rewrite needed, the signature stays.
    ws.send(Message::text(signed_connect(
        "dt-pair",
        &s.password,
        &nonce,
    )))
    .await
    .unwrap();
    let hello = json(&mut ws).await;
    let device_token = hello["payload"]["auth"]["deviceToken"]
        .as_str()
        .expect("paired")
        .to_string();
    drop(ws);

    let device_only = |id: &str, token: &str| {
        let mut v: Value = serde_json::from_str(&cli_connect(id, None)).unwrap();
        v["params"]["auth"] = serde_json::json!({ "deviceToken": token });
        v.to_string()
    };
    let (mut ws, _) = open(&s, &[]).await;
    ws.send(Message::text(device_only("dt-ok", &device_token)))
        .await
        .unwrap();
    assert_eq!(json(&mut ws).await["ok"], true, "the gateway judged it");
    let seen = s.gw.connects();
    assert_eq!(
        seen.last().unwrap()["params"]["auth"],
        serde_json::json!({ "deviceToken": device_token }),
        "forwarded untouched: nothing injected"
    );
    wait_log(&["authenticated_by=gateway", "client_id=cli"]).await;
    drop(ws);
    let (mut ws, _) = open(&s, &[]).await;
    ws.send(Message::text(device_only("dt-bad", "dt-guess")))
        .await
        .unwrap();
    expect_close(&mut ws, CloseCode::Policy, "device token mismatch").await;
    drop(ws);
    wait_log(&[
        "[ws] closed",
        "code=1008",
        "by=upstream",
        "authenticated_by=gateway",
    ])
    .await;
    assert!(
        !logs().contains(&device_token),
        "a device token reached the log"
    );
}

#[tokio::test]
async fn device_tokens_are_a_missing_token_without_the_opt_in() {
    let s = setup(Mode::Token, |_| {}).await;
    let (mut ws, _) = open(&s, &[]).await;
    let mut v: Value = serde_json::from_str(&cli_connect("dt-none", None)).unwrap();
    v["params"]["auth"] = serde_json::json!({ "deviceToken": "dt-anything" });
    ws.send(Message::text(v.to_string())).await.unwrap();
    let res = json(&mut ws).await;
    assert_eq!(res["error"]["details"]["authReason"], "token_missing");
    assert!(s.gw.connects().is_empty());
}

#[tokio::test]
async fn the_closed_line_names_the_session() {
    let s = setup(Mode::Password, inject_password).await;
    let (mut ws, _) = open(&s, &[]).await;
    ws.send(Message::text(cli_connect(
        "audit-1",
        Some(&s.tokens.laptop),
    )))
    .await
    .unwrap();
    assert_eq!(json(&mut ws).await["ok"], true);
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
    wait_log(&[
        "[ws] closed",
        "client=laptop",
        "client_id=cli",
        "client_version=2026.9.6",
        "scopes=operator.read,operator.write",
    ])
    .await;
    let (_, metrics) = admin_get(s.proxy.admin.unwrap(), "/metrics").await;
    assert!(
        metrics.contains(
            r#"gatewarden_sessions_total{credential="laptop",authenticated_by="gatewarden"}"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_device_token_issued_through_gatewarden_stands_for_its_pairing_credential() {
    let s = setup(Mode::Password, |c| {
        inject_password(c);
        c.auth.device_tokens = DeviceTokens::Gateway;
    })
    .await;
    // Pairing: the device connects with its gatewarden token and is handed a device token.
    let (mut ws, nonce) = open(&s, &[]).await;
    ws.send(Message::text(signed_connect(
        "pair-1",
        &s.tokens.phone,
        &nonce,
    )))
    .await
    .unwrap();
    let hello = json(&mut ws).await;
    let dt = hello["payload"]["auth"]["deviceToken"]
        .as_str()
        .expect("a device token")
        .to_string();
    wait_log(&[
        "[auth] the gateway gave this client's device a device token",
        "client=phone",
    ])
    .await;
    drop(ws);

    // Later it presents the device token as `auth.token`, as openclaw-node does: forwarded
    // untouched (no password injected), for the gateway to judge.
    let (mut ws, nonce) = open(&s, &[]).await;
    ws.send(Message::text(signed_connect("pair-2", &dt, &nonce)))
        .await
        .unwrap();
    let hello = json(&mut ws).await;
    assert_eq!(hello["ok"], true, "{hello} {:?}", s.gw.connects().last());
    let last = s.gw.connects().last().cloned().unwrap();
    assert_eq!(last["params"]["auth"], serde_json::json!({ "token": dt }));
    wait_log(&["[ws] connected", "client=phone", "authenticated_by=gateway"]).await;
    drop(ws);

    // Not device-signed, the same token is no credential of gatewarden's.
    let (mut ws, _) = open(&s, &[]).await;
    ws.send(Message::text(cli_connect("pair-3", Some(&dt))))
        .await
        .unwrap();
    let res = json(&mut ws).await;
    assert_eq!(res["error"]["details"]["authReason"], "token_mismatch");
    drop(ws);

    // The pairing credential goes: so do its devices' tokens.
    let mut changed = s.proxy.creds.subscribe();
    let generation = s.proxy.creds.load().generation;
    write_file(
        s.oc.parent().unwrap(),
        "clients",
        &format!("laptop {}\n", s.tokens.laptop),
    );
    timeout(changed.wait_for(|g| *g > generation))
        .await
        .unwrap();
    let before = s.gw.connects().len();
    let (mut ws, nonce) = open(&s, &[]).await;
    ws.send(Message::text(signed_connect("pair-4", &dt, &nonce)))
        .await
        .unwrap();
    let res = json(&mut ws).await;
    assert_eq!(res["error"]["details"]["authReason"], "token_mismatch");
    assert_eq!(s.gw.connects().len(), before, "the gateway was not asked");
    assert!(!logs().contains(&dt), "a device token reached the log");
}

#[tokio::test]
async fn device_tokens_the_gateway_refuses_count_against_the_client_ip() {
    let s = setup(Mode::Token, |c| {
        c.auth.device_tokens = DeviceTokens::Gateway;
        c.auth.max_failures = 2;
    })
    .await;
    for i in 0..2 {
        let (mut ws, _) = open(&s, &[]).await;
        let mut v: Value = serde_json::from_str(&cli_connect(&format!("g{i}"), None)).unwrap();
        v["params"]["auth"] = serde_json::json!({ "deviceToken": format!("guess-{i}") });
        v["params"]["client"]["id"] = "throttle-test".into();
        ws.send(Message::text(v.to_string())).await.unwrap();
        expect_close(&mut ws, CloseCode::Policy, "device token mismatch").await;
        drop(ws);
        wait_logs(
            &["[ws] closed", "by=upstream", "authenticated_by=gateway"],
            i + 1,
        )
        .await;
    }
    // The second refusal by the gateway blocked the IP (waited on its line: the block
    // itself lasts 2 s, too short to assert on a loaded machine).
    wait_log(&["[auth] throttling", "failures=2", "strike=1"]).await;
}
