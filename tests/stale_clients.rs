//! A stale client is not an attacker: one that keeps presenting the same retired or wrong
//! token from an address every client shares never locks the others out, and is named once
//! per window; many distinct wrong tokens from one address are still throttled.

mod common;

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
    for _ in 0..200 {
        statuses.push(upgrade_status(&h, &random_token()).await);
    }
    assert!(statuses.contains(&429), "never throttled: {statuses:?}");
    // Blocked: no token is even looked at, the right one included.
    assert_eq!(upgrade_status(&h, &h.token).await, 429);
    wait_log(&["[auth] throttling", "failures=10"]).await;
    // 10 were judged before the first block; the blocks that followed judged few more.
    let judged = logs()
        .lines()
        .filter(|l| l.contains("[ws] unauthorized") && l.contains("reason=token_mismatch"))
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
            pointer: None,
            key: None,
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
