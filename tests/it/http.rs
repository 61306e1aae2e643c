//! Plain HTTP through gatewarden: auth, streaming both ways, hop-by-hop headers, the
//! `?token=` → cookie redirect, upstream failures, and what the logs may never contain.

use crate::common;

use bytes::Bytes;
use common::*;
use gatewarden::config::HttpAuthMode;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Request;
use rand::RngCore;
use tokio_tungstenite::tungstenite::Message;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn get_is_proxied_with_end_to_end_headers_only() {
    let h = start().await;
    let req = Request::builder()
        .uri("/hello?x=1")
        .header("host", "gateway.example")
        .header("authorization", bearer(&h.token))
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-end-to-end", "passes")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = http_request(h.addr, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "plain");
    assert!(
        resp.headers().get("keep-alive").is_none(),
        "response hop-by-hop header removed"
    );
    assert_eq!(body_bytes(resp).await, "upstream saw GET /hello?x=1\n");
    let seen = h.upstream.last();
    assert_eq!(seen.headers["host"], "gateway.example", "Host preserved");
    assert_eq!(seen.headers["x-end-to-end"], "passes");
    assert!(
        seen.headers.get("x-hop").is_none(),
        "header named by Connection removed"
    );
    assert!(seen.headers.get("proxy-authorization").is_none());
    for forwarded in ["x-forwarded-for", "x-real-ip", "forwarded"] {
        assert!(
            seen.headers.get(forwarded).is_none(),
            "{forwarded} not added"
        );
    }
}

#[tokio::test]
async fn unauthenticated_get_is_401_and_never_reaches_upstream() {
    let h = start().await;
    let resp = http_request(h.addr, get(h.addr, "/private")).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(body_bytes(resp).await, "unauthorized: token_missing\n");
    let mut wrong = get(h.addr, "/private");
    wrong
        .headers_mut()
        .insert("authorization", bearer("nope").parse().unwrap());
    let resp = http_request(h.addr, wrong).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(body_bytes(resp).await, "unauthorized: token_mismatch\n");
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test]
async fn public_paths_and_pass_mode_need_no_token() {
    let h = start_with(|c| c.auth.public_paths = vec!["/assets/".into(), "/healthz".into()]).await;
    let resp = http_request(h.addr, get(h.addr, "/assets/app.js")).await;
    assert_eq!(resp.status(), 200);
    let resp = http_request(h.addr, get(h.addr, "/healthz")).await;
    assert_eq!(resp.status(), 200);
    let resp = http_request(h.addr, get(h.addr, "/private")).await;
    assert_eq!(resp.status(), 401);

    let h = start_with(|c| c.auth.http = HttpAuthMode::Pass).await;
    let resp = http_request(h.addr, get(h.addr, "/anything")).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn eight_mib_post_streams_both_ways() {
    // The request body is sent in 1 MiB chunks, and each chunk's echo must come back before
    // the next is sent: a proxy that buffered either body whole would stall here.
    let h = start().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    let rx =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let req = Request::builder()
        .method("POST")
        .uri("/echo")
        .header("host", "x")
        .header("authorization", bearer(&h.token))
        .body(StreamBody::new(rx))
        .unwrap();
    let mut sent = Vec::new();
    let mut chunk = vec![0u8; 1 << 20];
    rand::thread_rng().fill_bytes(&mut chunk);
    sent.extend_from_slice(&chunk);
    tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.unwrap();
    let resp = http_request(h.addr, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "echo");
    let mut body = resp.into_body();
    let mut received = Vec::new();
    for i in 1..=8 {
        while received.len() < i << 20 {
            let frame = timeout(body.frame())
                .await
                .expect("body continues")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                received.extend_from_slice(&data);
            }
        }
        if i < 8 {
            let mut chunk = vec![0u8; 1 << 20];
            rand::thread_rng().fill_bytes(&mut chunk);
            sent.extend_from_slice(&chunk);
            tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.unwrap();
        }
    }
    drop(tx);
    while let Some(frame) = timeout(body.frame()).await {
        if let Ok(data) = frame.unwrap().into_data() {
            received.extend_from_slice(&data);
        }
    }
    assert_eq!(received.len(), 8 << 20);
    assert!(received == sent, "8 MiB body changed in transit");
}

#[tokio::test]
async fn query_token_redirects_once_and_sets_the_cookie() {
    let h = start().await;
    let resp = http_request(
        h.addr,
        get(h.addr, &format!("/dash?x=1&token={}&y=2", h.token)),
    )
    .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/dash?x=1&y=2");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert_eq!(
        cookie,
        format!(
            "gatewarden_token={}; Path=/; HttpOnly; SameSite=Strict",
            h.token
        )
    );
    assert_eq!(
        h.upstream.count(),
        0,
        "the token URL never reaches the upstream"
    );
    // The browser follows the redirect with its new cookie.
    let mut next = get(h.addr, "/dash?x=1&y=2");
    let pair = cookie.split(';').next().unwrap();
    next.headers_mut().insert("cookie", pair.parse().unwrap());
    let resp = http_request(h.addr, next).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(body_bytes(resp).await, "upstream saw GET /dash?x=1&y=2\n");
}

#[tokio::test]
async fn upstream_down_gives_502_and_logs_the_cause() {
    let dead = dead_addr().await;
    let h = start_with(|c| c.upstream = dead.to_string().parse().unwrap()).await;
    let mut req = get(h.addr, "/x");
    req.headers_mut()
        .insert("authorization", bearer(&h.token).parse().unwrap());
    let resp = http_request(h.addr, req).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(
        body_bytes(resp).await,
        "bad gateway: upstream unavailable\n"
    );
    let line = wait_log(&[
        "[http] upstream unavailable",
        "reason=upstream_connect_failed",
        &dead.to_string(),
    ])
    .await;
    assert!(
        line.to_lowercase().contains("refused"),
        "cause in the log: {line}"
    );
}

#[tokio::test]
async fn tokens_never_appear_in_logs() {
    let h = start().await;
    let wrong = random_token();
    // Every way a token can arrive, valid and not.
    for token in [&h.token, &wrong] {
        let _ = http_request(h.addr, get(h.addr, &format!("/p?token={token}"))).await;
        let mut r = get(h.addr, "/p");
        r.headers_mut()
            .insert("authorization", bearer(token).parse().unwrap());
        let _ = http_request(h.addr, r).await;
        let mut r = get(h.addr, "/p");
        r.headers_mut().insert(
            "cookie",
            format!("gatewarden_token={token}").parse().unwrap(),
        );
        let _ = http_request(h.addr, r).await;
        for (path, headers) in [
            (format!("/ws?token={token}"), vec![]),
            (
                "/ws".to_string(),
                vec![("authorization".to_string(), bearer(token))],
            ),
            (
                "/ws".to_string(),
                vec![(
                    "sec-websocket-protocol".to_string(),
                    format!("bearer.{token},chat"),
                )],
            ),
        ] {
            let hdrs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if let Ok((mut ws, _)) = ws_connect(h.addr, &path, &hdrs).await {
                let _ = futures_util::SinkExt::send(&mut ws, Message::text("hi")).await;
                let _ = next_msg(&mut ws).await;
                let _ = ws.close(None).await;
            }
        }
    }
    let fp_wrong = gatewarden::Fingerprint::of(wrong.as_bytes()).to_string();
    wait_log(&[
        "[http] unauthorized",
        &format!("presented=fp:{fp_wrong}"),
        "path=/p?token=REDACTED",
    ])
    .await;
    wait_log(&[
        "[ws] unauthorized",
        &format!("presented=fp:{fp_wrong}"),
        "source=subprotocol",
    ])
    .await;
    let all = logs();
    assert!(!all.contains(&h.token), "valid token leaked into logs");
    assert!(!all.contains(&wrong), "presented token leaked into logs");
}
