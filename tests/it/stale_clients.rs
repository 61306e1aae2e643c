//! A stale client is not an attacker: one that keeps presenting the same retired or wrong
//! token from an address every client shares never locks the others out, and is named once
//! per window; many distinct wrong tokens from one address are still throttled.

use crate::common;

use std::time::Duration;

use common::openclaw::{self, cli_connect};
use common::*;
use futures_util::SinkExt;
use gatewarden::config::{
    Config, CredentialFormat, CredentialSource, RejectMode, Secs, TokenSource,
};
use tokio_tungstenite::tungstenite::Message;

fn fp(token: &str) -> String {
    gatewarden::Fingerprint::of(token.as_bytes()).to_string()
}

/// An upgrade with `token` in the header: its status (reject mode `http`).
async fn upgrade_status(h: &Harness, token: &str) -> u16 {
    match ws_connect(
        h.addr,
        "/ws",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

fn tweak(c: &mut Config) {
    c.auth.reject = RejectMode::Http;
    c.auth.max_failures = 10;
    c.auth.grace = Secs(Duration::ZERO);
    c.auth.sources = Some(vec![TokenSource::Header]);
}

#[tokio::test]
async fn a_stale_client_retrying_never_locks_out_a_good_client_on_its_address() {
    let mut h = start_with(tweak).await;
    let old = h.token.clone();
    let new = random_token();
    std::fs::write(&h.token_file, &new).unwrap();
    wait_log(&[
        "[reload] credentials applied",
        &format!("current=fp:{}", fp(&new)),
    ])
    .await;
    h.token = new.clone();
    for _ in 0..50 {
        assert_eq!(upgrade_status(&h, &old).await, 401);
    }
    // The good client on the same address (127.0.0.1) gets in at once.
    let mut ws = ws_bearer(h.addr, &new).await;
    assert_echo(&mut ws, "not locked out").await;
    // The stale client was named once, with the generation its token was retired at.
    let stale = wait_log(&["[auth] stale client", &format!("presented=fp:{}", fp(&old))]).await;
    assert!(stale.contains("reason=token_stale"), "{stale}");
    assert!(
        stale.contains("retired at generation 1; restart or update that client"),
        "{stale}"
    );
    let lines = logs()
        .lines()
        .filter(|l| l.contains("[auth] stale client") && l.contains(&fp(&old)))
        .count();
    assert_eq!(lines, 1, "once per fingerprint and window");
    // Its first refusal is a warning of its own; the 49 repeats are debug lines only.
    let refusals = |level: &str| {
        logs()
            .lines()
            .filter(|l| l.contains(&format!("{level} [ws] unauthorized")) && l.contains(&fp(&old)))
            .count()
    };
    assert_eq!((refusals("WARN"), refusals("DEBUG")), (1, 49));
    // This server never throttled anyone; the repeats were counted as such.
    let (_, metrics) = admin_get(h.admin.unwrap(), "/metrics").await;
    assert!(!metrics.contains("rate_limited"), "{metrics}");
    assert!(
        metrics.contains("gatewarden_auth_repeated_total{reason=\"token_stale\"} 49"),
        "{metrics}"
    );
}

#[tokio::test]
async fn distinct_wrong_tokens_from_one_address_are_still_throttled() {
    let h = start_with(tweak).await;
    let mut statuses = Vec::new();
    let mut sent = std::collections::HashSet::new();
    for _ in 0..200 {
        let token = random_token();
        statuses.push(upgrade_status(&h, &token).await);
        sent.insert(format!("presented=fp:{}", fp(&token)));
    }
    assert!(statuses.contains(&429), "never throttled: {statuses:?}");
    // Blocked: no token is even looked at, the right one included.
    assert_eq!(upgrade_status(&h, &h.token).await, 429);
    wait_log(&["[auth] throttling", "failures=10"]).await;
    // 10 were judged before the first block; the blocks that followed judged few more. (The
    // log is the whole suite's: this test's lines are those of its own tokens.)
    let judged = logs()
        .lines()
        .filter(|l| l.contains("[ws] unauthorized") && l.contains("reason=token_mismatch"))
        .filter(|l| l.split(' ').any(|field| sent.contains(field)))
        .count();
    assert!(judged <= 40, "{judged} tokens judged of 200");
}

/// In front of OpenClaw the token comes in the first frame, and so does who the client is.
#[tokio::test]
async fn a_stale_openclaw_client_is_named_from_its_connect() {
    let gateway_token = random_token();
    let gw = openclaw::start(&gateway_token).await;
    let dir = tempfile::tempdir().unwrap();
    let clients = write_file(dir.path(), "client-token", &random_token());
    let mut config = Config {
        upstream: gw.addr.to_string().parse().unwrap(),
        ..Config::default()
    };
    config.credentials.sources = vec![
        CredentialSource {
            name: Some("gateway".into()),
            path: write_file(
                dir.path(),
                "openclaw.json",
                &format!(r#"{{"gateway":{{"auth":{{"token":"{gateway_token}"}}}}}}"#),
            ),
            format: CredentialFormat::Json5,
            ..CredentialSource::plain("")
        },
        CredentialSource::plain(clients),
    ];
    config.auth.max_failures = 3;
    let proxy = serve(config).await;
    let wrong = random_token();
    for i in 0..8 {
        let (mut ws, _) = ws_connect(proxy.addr, "/", &[]).await.unwrap();
        let _challenge = next_msg(&mut ws).await;
        ws.send(Message::text(cli_connect(&format!("c{i}"), Some(&wrong))))
            .await
            .unwrap();
        // The gateway's shape: an error response, then close 1008.
        while let Some(m) = next_msg(&mut ws).await {
            if m.is_close() {
                break;
            }
        }
    }
    let line = wait_log(&[
        "[auth] stale client",
        &format!("presented=fp:{}", fp(&wrong)),
    ])
    .await;
    for shown in [
        "client.id=cli",
        "client.mode=cli",
        "client.version=2026.9.6",
        "reason=token_mismatch",
        "client cli 2026.9.6 keeps presenting token",
    ] {
        assert!(line.contains(shown), "no {shown:?} in {line}");
    }
    // Eight tries with one token, max_failures 3: never throttled.
    let (_, metrics) = admin_get(proxy.admin.unwrap(), "/metrics").await;
    assert!(!metrics.contains("rate_limited"), "{metrics}");
}

/// gatewarden in front of the fake gateway, credentials read from its `openclaw.json`, plus
/// client tokens of gatewarden's own; `inject` set as given.
async fn behind_openclaw(
    inject: gatewarden::config::Inject,
) -> (
    Running,
    openclaw::FakeGateway,
    std::path::PathBuf,
    String,
    String,
    tempfile::TempDir,
) {
    let gateway_token = random_token();
    let gw = openclaw::start(&gateway_token).await;
    let dir = tempfile::tempdir().unwrap();
    let client_token = random_token();
    let oc = write_file(
        dir.path(),
        "openclaw.json",
        &format!(r#"{{"gateway":{{"auth":{{"token":"{gateway_token}"}}}}}}"#),
    );
    let mut config = Config {
        upstream: gw.addr.to_string().parse().unwrap(),
        ..Config::default()
    };
    config.credentials.sources = vec![
        CredentialSource {
            name: Some("gateway".into()),
            path: oc.clone(),
            format: CredentialFormat::Json5,
            ..CredentialSource::plain("")
        },
        CredentialSource::plain(write_file(dir.path(), "clients", &client_token)),
    ];
    config.upstream_auth.inject = inject;
    if inject != gatewarden::config::Inject::None {
        config.upstream_auth.credential = Some("gateway".into());
    }
    (
        serve(config).await,
        gw,
        oc,
        gateway_token,
        client_token,
        dir,
    )
}

/// Connects like the CLI with `token`: the close code and reason it ends with.
async fn cli_with(addr: std::net::SocketAddr, token: &str) -> (u16, String) {
    let (mut ws, _) = ws_connect(addr, "/", &[]).await.unwrap();
    let _challenge = next_msg(&mut ws).await;
    ws.send(Message::text(cli_connect("1", Some(token))))
        .await
        .unwrap();
    loop {
        match next_msg(&mut ws).await {
            Some(Message::Close(Some(f))) => return (f.code.into(), f.reason.to_string()),
            Some(Message::Text(t)) if t.contains("hello-ok") => return (0, "hello-ok".into()),
            Some(_) => {}
            None => return (1006, String::new()),
        }
    }
}

async fn rotate_gateway(gw: &openclaw::FakeGateway, oc: &std::path::Path) -> String {
    let new = random_token();
    *gw.token.lock().unwrap() = new.clone();
    let tmp = oc.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!(r#"{{"gateway":{{"auth":{{"token":"{new}"}}}}}}"#),
    )
    .unwrap();
    std::fs::rename(&tmp, oc).unwrap();
    wait_log(&[
        "[reload] credentials applied",
        &format!("current=fp:{}", fp(&new)),
    ])
    .await;
    new
}

/// Pass-through: the gateway's own token is forwarded as the client sent it, and after a
/// rotation the gateway knows only the new one. So there is no grace for it: gatewarden
/// refuses the old token itself (`token_stale`), and its connect never reaches the gateway.
#[tokio::test]
async fn without_injection_a_retired_gateway_token_gets_no_grace() {
    let (proxy, gw, oc, old, _, _dir) = behind_openclaw(gatewarden::config::Inject::None).await;
    assert_eq!(cli_with(proxy.addr, &old).await.1, "hello-ok");
    let new = rotate_gateway(&gw, &oc).await;
    let before = gw.connects().len();
    let (code, reason) = cli_with(proxy.addr, &old).await;
    assert_eq!(code, 1008, "{reason}");
    wait_log(&[
        "[ws] unauthorized",
        "reason=token_stale",
        &format!("presented=fp:{}", fp(&old)),
    ])
    .await;
    assert_eq!(
        gw.connects().len(),
        before,
        "the old token reached the gateway"
    );
    wait_log(&[
        "[reload] credentials applied",
        "grace=none (the gateway's own token",
    ])
    .await;
    assert_eq!(cli_with(proxy.addr, &new).await.1, "hello-ok");
}

/// With injection the gateway always gets its current token: grace is kept, for the
/// gateway's old token and for gatewarden's own client tokens alike.
#[tokio::test]
async fn with_injection_a_retired_token_is_accepted_within_grace() {
    let (proxy, gw, oc, old, client, _dir) =
        behind_openclaw(gatewarden::config::Inject::FirstMessage).await;
    let new = rotate_gateway(&gw, &oc).await;
    assert_eq!(cli_with(proxy.addr, &old).await.1, "hello-ok");
    wait_log(&[
        "[ws] accepted stale token",
        &format!("presented=fp:{}", fp(&old)),
    ])
    .await;
    let last = gw.connects().last().cloned().unwrap();
    assert_eq!(last["params"]["auth"]["token"], new.as_str());
    assert_eq!(cli_with(proxy.addr, &client).await.1, "hello-ok");
}
