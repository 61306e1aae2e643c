//! Operations: the admin listener's health, readiness and metrics, and `gatewarden health`.

use crate::common;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn health_and_readiness() {
    let p = start_with(|_| {}).await;
    let admin = p.admin.expect("admin listener on");
    let (status, body) = admin_get(admin, "/healthz").await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"ok":true,"status":"live"}"#)
    );
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true);
    assert_eq!(v["checks"]["upstream"], "ok");
    // The admin endpoints are not on the proxy port.
    let resp = http_request(p.addr, get(p.addr, "/metrics")).await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn readiness_names_the_failing_check() {
    let dead = dead_addr().await;
    let p = start_with(|c| c.upstream = dead.to_string().parse().unwrap()).await;
    let (status, body) = admin_get(p.admin.unwrap(), "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    assert_eq!(v["checks"]["credentials"], "ok");
    assert!(
        v["checks"]["upstream"]
            .as_str()
            .unwrap()
            .contains(&dead.to_string()),
        "{body}"
    );

    let p = start_with(|_| {}).await;
    let missing = p.dir.path().join("never");
    drop(p);
    let p = start_with(|c| {
        c.credentials.sources = vec![gatewarden::config::CredentialSource::plain(&missing)]
    })
    .await;
    let (status, body) = admin_get(p.admin.unwrap(), "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("no valid credential"), "{body}");
}

#[tokio::test]
async fn metrics_count_what_happened_with_bounded_labels() {
    let p = start_with(|_| {}).await;
    let token = p.token.clone();
    let admin = p.admin.unwrap();
    let wrong = random_token();
    let mut ws = ws_bearer(p.addr, &wrong).await;
    let _ = next_msg(&mut ws).await;
    let mut ws = ws_bearer(p.addr, &token).await;
    assert_echo(&mut ws, "count me").await;
    let (_, text) = admin_get(admin, "/metrics").await;
    for needle in [
        r#"gatewarden_auth_failures_total{reason="token_mismatch",source="header"} 1"#,
        r#"gatewarden_auth_success_total{source="header",client="-"} 1"#,
        "gatewarden_connections_active 1",
        "gatewarden_credentials_generation 1",
        r#"gatewarden_build_info{version=""#,
        "gatewarden_handshake_seconds_count 1",
        "gatewarden_upstream_connect_seconds_bucket",
        "gatewarden_tls_cert_not_after_seconds 0",
        "gatewarden_credentials_seconds_since_reload",
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }
    ws.close(None).await.unwrap();
    while next_msg(&mut ws).await.is_some() {}
    wait_log(&["[ws] closed", "by=client"]).await;
    let (_, text) = admin_get(admin, "/metrics").await;
    assert!(text.contains("gatewarden_connections_active 0"), "{text}");
    assert!(
        text.contains(r#"gatewarden_connections_closed_total{outcome="normal"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gatewarden_spliced_bytes_total{direction="client_to_upstream"}"#),
        "{text}"
    );
    assert!(
        !text.contains(&token) && !text.contains(&wrong) && !text.contains("127.0.0.1"),
        "no token or IP in labels"
    );
}

#[tokio::test]
async fn readiness_fails_while_draining() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let config = config_for(upstream.addr, &tf);
    let server = gatewarden::Server::bind(config).await.unwrap();
    let (addr, admin) = (server.local_addr(), server.admin_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let mut ws = ws_bearer(addr, &token).await;
    ws.send(Message::text("x")).await.unwrap();
    let _ = next_msg(&mut ws).await;
    stop.send(()).unwrap();
    wait_log(&[
        "[shutdown] stopped accepting",
        &format!("addr={addr} active="),
    ])
    .await;
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"), "{body}");
    assert_eq!(
        admin_get(admin, "/healthz").await.0,
        200,
        "still live while draining"
    );
    ws.close(None).await.unwrap();
    while next_msg(&mut ws).await.is_some() {}
    timeout(done).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_command_exit_codes() {
    let p = start_with(|_| {}).await;
    let url = format!("http://{}/healthz", p.admin.unwrap());
    let ok = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_gatewarden"))
            .args(["health", "--url", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dead = format!("http://{}/healthz", dead_addr().await);
    let bad = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_gatewarden"))
            .args(["health", "--url", &dead])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unhealthy"));
}
