//! WebSocket upgrades through gatewarden: every token source, both rejection modes, and the
//! splice's transparency (sizes, counts, control frames, close codes).

use crate::common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use gatewarden::config::{RejectMode, Secs};
use gatewarden::Fingerprint;
use rand::RngCore;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

#[tokio::test]
async fn bearer_header_is_accepted() {
    let h = start().await;
    let auth = format!("Bearer {}", h.token);
    let (mut ws, resp) = ws_connect(h.addr, "/ws", &[("authorization", &auth)])
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    assert_echo(&mut ws, "hello via header").await;
    // The client's own header is forwarded as sent (no upstream_auth injection by default).
    assert_eq!(h.upstream.last().headers["authorization"], auth.as_str());
}

#[tokio::test]
async fn query_parameter_is_accepted() {
    let h = start().await;
    let (mut ws, _) = ws_connect(h.addr, &format!("/ws?a=1&token={}", h.token), &[])
        .await
        .unwrap();
    assert_echo(&mut ws, "hello via query").await;
    let seen = h.upstream.last();
    assert!(
        seen.uri.starts_with("/ws?a=1&token="),
        "path and query forwarded: {}",
        seen.uri
    );
}

#[tokio::test]
async fn cookie_is_accepted() {
    let h = start().await;
    let cookie = format!("theme=dark; gatewarden_token={}", h.token);
    let (mut ws, _) = ws_connect(h.addr, "/ws", &[("cookie", &cookie)])
        .await
        .unwrap();
    assert_echo(&mut ws, "hello via cookie").await;
}

#[tokio::test]
async fn subprotocol_entry_is_accepted_and_stripped_upstream() {
    let h = start().await;
    // No space after the comma: tungstenite 0.24 splits the offered list without trimming.
    let protocols = format!("bearer.{},chat", h.token);
    let (mut ws, resp) = ws_connect(h.addr, "/ws", &[("sec-websocket-protocol", &protocols)])
        .await
        .unwrap();
    // The upstream's own choice comes back untouched.
    assert_eq!(resp.headers()["sec-websocket-protocol"], "chat");
    assert_echo(&mut ws, "hello via subprotocol").await;
    let seen = h.upstream.last();
    let forwarded: Vec<_> = seen
        .headers
        .get_all("sec-websocket-protocol")
        .iter()
        .collect();
    assert_eq!(
        forwarded,
        vec!["chat"],
        "token entry removed, the rest kept"
    );
}

#[tokio::test]
async fn disabled_source_is_ignored() {
    let h =
        start_with(|c| c.auth.sources = Some(vec![gatewarden::config::TokenSource::Header])).await;
    let (mut ws, _) = ws_connect(h.addr, &format!("/ws?token={}", h.token), &[])
        .await
        .unwrap();
    let Some(Message::Close(Some(frame))) = next_msg(&mut ws).await else {
        panic!("expected close")
    };
    assert_eq!(frame.code, CloseCode::Policy);
    assert!(frame.reason.contains("token missing"), "{}", frame.reason);
}

#[tokio::test]
async fn mismatch_closes_1008_with_gateway_text_and_upstream_never_contacted() {
    let h = start().await;
    let wrong = random_token();
    let (mut ws, resp) = ws_connect(
        h.addr,
        "/ws",
        &[("authorization", &format!("Bearer {wrong}"))],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 101, "answered by gatewarden itself");
    let Some(Message::Close(Some(frame))) = next_msg(&mut ws).await else {
        panic!("expected a close frame")
    };
    assert_eq!(frame.code, CloseCode::Policy);
    assert_eq!(
        frame.reason,
        "unauthorized: gateway token mismatch (provide gateway auth token)"
    );
    assert_eq!(
        h.upstream.count(),
        0,
        "the upstream never saw the rejected client"
    );
    let fp = Fingerprint::of(wrong.as_bytes()).to_string();
    let line = wait_log(&[
        "[ws] unauthorized",
        "reason=token_mismatch",
        &format!("presented=fp:{fp}"),
    ])
    .await;
    assert!(line.contains("remote=127.0.0.1:"), "{line}");
    assert!(line.contains("conn="), "{line}");
}

/// The upgrade-time sources only: without `first_message`, a missing token is decided at
/// the upgrade.
fn upgrade_time_sources(c: &mut gatewarden::Config) {
    use gatewarden::config::TokenSource::*;
    c.auth.sources = Some(vec![Header, Query, Cookie, Subprotocol]);
}

#[tokio::test]
async fn missing_closes_1008_with_gateway_text() {
    let h = start_with(upgrade_time_sources).await;
    let (mut ws, _) = ws_connect(h.addr, "/ws", &[]).await.unwrap();
    let Some(Message::Close(Some(frame))) = next_msg(&mut ws).await else {
        panic!("expected a close frame")
    };
    assert_eq!(frame.code, CloseCode::Policy);
    assert_eq!(
        frame.reason,
        "unauthorized: gateway token missing (provide gateway auth token)"
    );
    // The client answers the close and the socket ends.
    assert!(timeout(ws.next()).await.is_none());
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test]
async fn close_rejection_selects_a_non_token_subprotocol() {
    let h = start().await;
    let (mut ws, resp) = ws_connect(
        h.addr,
        "/ws",
        &[("sec-websocket-protocol", "bearer.wrong,chat")],
    )
    .await
    .unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "chat");
    let Some(Message::Close(Some(frame))) = next_msg(&mut ws).await else {
        panic!("expected close")
    };
    assert_eq!(frame.code, CloseCode::Policy);
}

#[tokio::test]
async fn http_reject_mode_answers_401() {
    let h = start_with(|c| {
        upgrade_time_sources(c);
        c.auth.reject = RejectMode::Http;
    })
    .await;
    for headers in [vec![], vec![("authorization", "Bearer nope")]] {
        match ws_connect(h.addr, "/ws", &headers).await {
            Err(WsError::Http(resp)) => {
                assert_eq!(resp.status(), 401);
                assert_eq!(resp.headers()["www-authenticate"], "Bearer");
                let body = String::from_utf8(resp.body().clone().unwrap()).unwrap();
                let want = if headers.is_empty() {
                    "token_missing"
                } else {
                    "token_mismatch"
                };
                assert!(body.contains(want), "{body}");
            }
            other => panic!("expected 401, got {other:?}"),
        }
    }
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test]
async fn large_binary_message_round_trips_byte_exact() {
    let h = start().await;
    let (mut ws, _) = ws_connect(
        h.addr,
        "/ws",
        &[("authorization", &format!("Bearer {}", h.token))],
    )
    .await
    .unwrap();
    let mut payload = vec![0u8; 1 << 20];
    rand::thread_rng().fill_bytes(&mut payload);
    ws.send(Message::binary(payload.clone())).await.unwrap();
    match next_msg(&mut ws).await {
        Some(Message::Binary(back)) => assert!(back == payload, "1 MiB payload changed in transit"),
        other => panic!("expected binary, got {other:?}"),
    }
}

#[tokio::test]
async fn thousand_small_messages_in_order() {
    let h = start().await;
    let (ws, _) = ws_connect(
        h.addr,
        "/ws",
        &[("authorization", &format!("Bearer {}", h.token))],
    )
    .await
    .unwrap();
    let (mut tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        for i in 0..1000 {
            tx.send(Message::text(format!("message {i}")))
                .await
                .unwrap();
        }
        tx
    });
    for i in 0..1000 {
        let msg = timeout(rx.next()).await.unwrap().unwrap();
        assert_eq!(msg, Message::text(format!("message {i}")));
    }
    let _tx = sender.await.unwrap();
}

#[tokio::test]
async fn ping_gets_upstream_pong() {
    let h = start().await;
    let (mut ws, _) = ws_connect(
        h.addr,
        "/ws",
        &[("authorization", &format!("Bearer {}", h.token))],
    )
    .await
    .unwrap();
    ws.send(Message::Ping(b"are you there".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut ws).await,
        Some(Message::Pong(b"are you there".to_vec()))
    );
}

#[tokio::test]
async fn upstream_close_code_reaches_client_and_is_logged() {
    let h = start().await;
    let (mut ws, _) = ws_connect(
        h.addr,
        "/ws",
        &[("authorization", &format!("Bearer {}", h.token))],
    )
    .await
    .unwrap();
    ws.send(Message::text("close-4001")).await.unwrap();
    let Some(Message::Close(Some(frame))) = next_msg(&mut ws).await else {
        panic!("expected close")
    };
    assert_eq!(frame.code, CloseCode::Library(4001));
    assert_eq!(frame.reason, "gateway auth changed");
    assert!(timeout(ws.next()).await.is_none());
    let line = wait_log(&["[ws] closed", "code=4001"]).await;
    assert!(line.contains("reason=\"gateway auth changed\""), "{line}");
    assert!(line.contains("by=upstream"), "{line}");
    assert!(line.contains("bytes_in="), "{line}");
    assert!(line.contains("duration_ms="), "{line}");
}

#[tokio::test]
async fn client_close_code_is_logged() {
    let h = start().await;
    let (mut ws, _) = ws_connect(
        h.addr,
        "/ws",
        &[("authorization", &format!("Bearer {}", h.token))],
    )
    .await
    .unwrap();
    assert_echo(&mut ws, "x").await;
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::Library(4333),
        reason: "client leaving".into(),
    }))
    .await
    .unwrap();
    let line = wait_log(&["[ws] closed", "code=4333"]).await;
    assert!(line.contains("by=client"), "{line}");
}

#[tokio::test]
async fn upstream_refusal_is_returned_as_is() {
    let h = start().await;
    match ws_connect(
        h.addr,
        "/refuse",
        &[("authorization", &format!("Bearer {}", h.token))],
    )
    .await
    {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), 403);
            assert_eq!(resp.headers()["x-upstream"], "refused");
            assert_eq!(resp.body().as_deref(), Some(&b"upstream says no\n"[..]));
        }
        other => panic!("expected the upstream's 403, got {other:?}"),
    }
}

#[tokio::test]
async fn upstream_down_gives_502() {
    let dead = dead_addr().await;
    let h = start_with(|c| c.upstream = dead.to_string().parse().unwrap()).await;
    match ws_connect(
        h.addr,
        "/ws",
        &[("authorization", &format!("Bearer {}", h.token))],
    )
    .await
    {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 502),
        other => panic!("expected 502, got {other:?}"),
    }
    wait_log(&[
        "[ws] upstream unavailable",
        "reason=upstream_connect_failed",
        &dead.to_string(),
    ])
    .await;
}

/// An opening handshake on a raw socket, with `padding` bytes of an extra header.
fn raw_upgrade(token: &str, padding: usize) -> Vec<u8> {
    format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         X-Padding: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
        "p".repeat(padding)
    )
    .into_bytes()
}

/// A masked text frame.
fn masked_text(text: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x81, 0x80 | text.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads one HTTP answer (head and `content-length` body) off a raw socket; returns the
/// head and whatever came after the body.
async fn read_answer(s: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end + 4]).to_string();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |n| n.trim().parse().unwrap());
            if got.len() >= end + 4 + len {
                return (head, got[end + 4 + len..].to_vec());
            }
        }
        let n = timeout(s.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

/// Reads until `want` bytes arrived behind what `read_answer` left.
async fn read_more(s: &mut tokio::net::TcpStream, mut got: Vec<u8>, want: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    while got.len() < want {
        let n = timeout(s.read(&mut buf)).await.unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[tokio::test]
async fn frame_sent_with_the_handshake_is_not_lost() {
    // A client that writes its first frame right behind the request head, before the 101:
    // it arrives in the same read as the head; the splice must still deliver it. Small
    // heads are read and answered by the listener itself; a head longer than its first read
    // (8 KiB) is finished by hyper, with the bytes already read put back in front.
    use tokio::io::AsyncWriteExt;
    let h = start().await;
    for padding in [0, 9 * 1024] {
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let mut bytes = raw_upgrade(&h.token, padding);
        bytes.extend(masked_text(b"early"));
        s.write_all(&bytes).await.unwrap();
        let (head, rest) = read_answer(&mut s).await;
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\ndate: "), "{head}");
        let rest = read_more(&mut s, rest, 7).await;
        assert_eq!(&rest[..7], &[0x81, 5, b'e', b'a', b'r', b'l', b'y']);
    }
}

#[tokio::test]
async fn headers_named_in_connection_do_not_reach_the_upstream() {
    // RFC 9110 §7.6.1: `Connection` names more hop-by-hop headers, in any of its values;
    // both the listener's fast path and hyper's (a head past the first read) drop them.
    use tokio::io::AsyncWriteExt;
    let h = start().await;
    for padding in [0, 9 * 1024] {
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let head = format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n\
             Connection: X-Hop-A , x-hop-b\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Hop-A: a\r\nX-Hop-B: b\r\n\
             Keep-Alive: timeout=5\r\nX-Kept: yes\r\nX-Padding: {}\r\n\
             Authorization: Bearer {}\r\n\r\n",
            "p".repeat(padding),
            h.token
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let (answer, _) = read_answer(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 101 "), "{answer}");
        let seen = h.upstream.last().headers;
        // Names only: the values hold the token.
        let names: Vec<_> = seen.keys().map(|k| k.as_str()).collect();
        for gone in ["x-hop-a", "x-hop-b", "keep-alive"] {
            assert!(
                seen.get(gone).is_none(),
                "{gone} reached the upstream: {names:?}"
            );
        }
        assert_eq!(seen["x-kept"], "yes");
        assert_eq!(seen.get_all("connection").iter().count(), 1, "{names:?}");
        assert!(seen["connection"]
            .as_bytes()
            .eq_ignore_ascii_case(b"upgrade"));
    }
}

#[tokio::test]
async fn a_refused_upgrade_keeps_the_connection_for_the_next_request() {
    // HTTP keep-alive after a 401: the same socket then retries, refused again, then
    // upgrades with the right token (all read by the listener); then the same with a plain
    // request and with a retry pipelined behind the refused head (both for hyper).
    use tokio::io::AsyncWriteExt;
    let h = start_with(|c| c.auth.reject = RejectMode::Http).await;
    let refused = |head: &str| {
        assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-length: 29\r\n"), "{head}");
    };
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(&raw_upgrade("wrong", 0)).await.unwrap();
        let (head, rest) = read_answer(&mut s).await;
        refused(&head);
        assert!(rest.is_empty());
    }
    let mut bytes = raw_upgrade(&h.token, 0);
    bytes.extend(masked_text(b"again"));
    s.write_all(&bytes).await.unwrap();
    let (head, rest) = read_answer(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let rest = read_more(&mut s, rest, 7).await;
    assert_eq!(&rest[..7], &[0x81, 5, b'a', b'g', b'a', b'i', b'n']);
    assert_eq!(h.upstream.count(), 1);

    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&raw_upgrade("wrong", 0)).await.unwrap();
    refused(&read_answer(&mut s).await.0);
    let plain = format!(
        "GET /plain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        h.token
    );
    s.write_all(plain.as_bytes()).await.unwrap();
    let (head, _) = read_answer(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(h.upstream.last().uri, "/plain");

    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let mut bytes = raw_upgrade("wrong", 0);
    bytes.extend(raw_upgrade(&h.token, 0));
    s.write_all(&bytes).await.unwrap();
    let (head, rest) = read_answer(&mut s).await;
    refused(&head);
    let rest = read_more(&mut s, rest, 12).await;
    assert!(
        rest.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(h.upstream.count(), 3);
}

#[tokio::test]
async fn a_refused_connection_left_idle_ends_at_the_header_timeout() {
    // Keep-alive after a refusal waits for the next request no longer than a new
    // connection waits for its first one.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = start_with(|c| {
        c.auth.reject = RejectMode::Http;
        c.timeouts.header_read = Secs(Duration::from_millis(300));
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&raw_upgrade("wrong", 0)).await.unwrap();
    let (head, rest) = read_answer(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    assert!(rest.is_empty());
    let mut buf = [0u8; 64];
    assert_eq!(timeout(s.read(&mut buf)).await.unwrap(), 0, "closed");
    wait_log(&["[http] request refused", "reason=header_timeout"]).await;
}

#[tokio::test]
async fn an_upgrade_after_a_plain_request_on_the_same_connection_works() {
    use tokio::io::AsyncWriteExt;
    let h = start().await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(
        format!(
            "GET /plain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            h.token
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (head, _) = read_answer(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let mut bytes = raw_upgrade(&h.token, 0);
    bytes.extend(masked_text(b"later"));
    s.write_all(&bytes).await.unwrap();
    let (head, rest) = read_answer(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let rest = read_more(&mut s, rest, 7).await;
    assert_eq!(&rest[..7], &[0x81, 5, b'l', b'a', b't', b'e', b'r']);
}

#[tokio::test]
async fn upstream_switching_to_another_protocol_gives_502() {
    let h = start().await;
    match ws_connect(
        h.addr,
        "/h2c",
        &[("authorization", &format!("Bearer {}", h.token))],
    )
    .await
    {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 502),
        other => panic!("expected 502, got {other:?}"),
    }
}

#[tokio::test]
async fn any_token_of_several_files_is_valid() {
    let second = random_token();
    let dir = tempfile::tempdir().unwrap();
    let second_file = write_file(dir.path(), "second", &format!("{second}\n"));
    let h = start_with(|c| {
        c.credentials
            .sources
            .push(gatewarden::config::CredentialSource::plain(&second_file))
    })
    .await;
    for token in [&h.token, &second] {
        let mut ws = ws_bearer(h.addr, token).await;
        assert_echo(&mut ws, "either works").await;
    }
    let line = wait_log(&[
        "[ws] connected",
        &format!("credential={}", second_file.display()),
    ])
    .await;
    let fp = Fingerprint::of(second.as_bytes()).to_string();
    assert!(line.contains(&format!("presented=fp:{fp}")), "{line}");
}

/// A raw upstream answering every connection with `answer`, then closing (or, with `hold`,
/// keeping the connection open until the peer closes it).
async fn raw_upstream(answer: &'static [u8], hold: bool) -> std::net::SocketAddr {
    let gateway = common::fake_gateway::FakeGateway::raw(answer);
    let gateway = if hold { gateway.holding() } else { gateway };
    gateway.start().await.addr
}

#[tokio::test]
async fn upstream_refusals_with_chunked_or_close_delimited_bodies_are_returned() {
    for (answer, body) in [
        (
            &b"HTTP/1.1 401 Unauthorized\r\ntransfer-encoding: chunked\r\nx-upstream: chunked\r\n\r\n4\r\nno, \r\nb\r\nnot you\n;-)\r\n0\r\n\r\n"[..],
            &b"no, not you\n;-)"[..],
        ),
        (
            &b"HTTP/1.1 403 Forbidden\r\nconnection: close\r\nx-upstream: eof\r\n\r\nclosed body"[..],
            &b"closed body"[..],
        ),
        // No body by definition, and the connection stays open: must not wait for an EOF.
        (
            &b"HTTP/1.1 304 Not Modified\r\nx-upstream: none\r\n\r\n"[..],
            &b""[..],
        ),
    ] {
        let up = raw_upstream(answer, answer.starts_with(b"HTTP/1.1 304")).await;
        let h = start_with(|c| c.upstream = up.to_string().parse().unwrap()).await;
        let auth = format!("Bearer {}", h.token);
        match ws_connect(h.addr, "/ws", &[("authorization", &auth)]).await {
            Err(WsError::Http(resp)) => {
                assert!(
                    [401, 403, 304].contains(&resp.status().as_u16()),
                    "{:?} {:?}",
                    resp.status(),
                    resp.body()
                );
                assert!(resp.headers().contains_key("x-upstream"));
                assert_eq!(resp.body().as_deref(), Some(body));
            }
            other => panic!("expected the upstream's refusal, got {other:?}"),
        }
    }
}

/// A listener whose accept queue is full, and the connections that fill it: the kernel
/// drops further SYNs while it stays so.
async fn full_listener() -> (tokio::net::TcpListener, Vec<tokio::net::TcpStream>) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..3 {
        let c = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(300), c).await {
            fillers.push(s);
        }
    }
    (listener, fillers)
}

#[tokio::test]
async fn upstream_connect_timeout_gives_502_with_its_reason() {
    // Never drained: a connect to it hangs until the connect timeout.
    let (listener, _fillers) = full_listener().await;
    let addr = listener.local_addr().unwrap();
    let h = start_with(|c| {
        c.upstream = addr.to_string().parse().unwrap();
        c.timeouts.upstream_connect = Secs(Duration::from_millis(300));
    })
    .await;
    let auth = format!("Bearer {}", h.token);
    match ws_connect(h.addr, "/ws", &[("authorization", &auth)]).await {
        Err(WsError::Http(resp)) => assert_eq!(resp.status(), 502),
        other => panic!("expected 502, got {other:?}"),
    }
    wait_log(&[
        "[ws] upstream unavailable",
        "reason=upstream_connect_timeout",
        &addr.to_string(),
    ])
    .await;
    drop(listener);
}

/// The kernel's count of SYNs dropped because a listener's accept queue was full.
fn listen_drops() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "ListenDrops")
        .unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// Reads an upstream request head (and whatever came with it).
async fn upstream_head(up: &mut tokio::net::TcpStream) -> Vec<u8> {
    let (mut head, rest) = common::raw::read_head(up)
        .await
        .expect("the upstream connection closed before a whole head");
    head.extend_from_slice(&rest);
    head
}

/// The upstream answers 101; the client must see it.
async fn switch_protocols(up: &mut tokio::net::TcpStream, client: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    up.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    )
    .await
    .unwrap();
    let (answer, _) = read_answer(client).await;
    assert!(answer.starts_with("HTTP/1.1 101 "), "{answer}");
}

#[tokio::test]
async fn an_upstream_that_accepts_late_still_gets_the_upgrade() {
    // On loopback the upgrade request goes out with the connect; here it cannot: the
    // upstream's accept queue is full, so gatewarden's SYN is dropped. Once the kernel has
    // counted a drop the queue is drained, the SYN's retransmission connects, and the
    // request must go out then, whole.
    use tokio::io::AsyncWriteExt;
    let (listener, fillers) = full_listener().await;
    let addr = listener.local_addr().unwrap();
    let h = start_with(|c| {
        c.upstream = addr.to_string().parse().unwrap();
        c.timeouts.upstream_connect = Secs(Duration::from_secs(20));
    })
    .await;
    let drops = listen_drops();
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&raw_upgrade(&h.token, 0)).await.unwrap();
    timeout(async {
        while listen_drops() == drops {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    drop(timeout(listener.accept()).await.unwrap());
    drop(fillers);
    let (mut up, _) = timeout(listener.accept()).await.unwrap();
    let head = upstream_head(&mut up).await;
    assert!(head.starts_with(b"GET /ws HTTP/1.1\r\n"));
    switch_protocols(&mut up, &mut s).await;
}

/// Segments a socket has received, SYN included (the kernel's `tcpi_segs_in`).
#[cfg(target_os = "linux")]
fn segments_in(s: &tokio::net::TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_segs_in
}

/// `tcp.delayed_ack`: the upstream connection's handshake ends with the upgrade request
/// carrying the last ACK (SYN, then ACK + request: two segments at the upstream), instead of
/// an ACK of its own (three). Off, the kernel's quick ACK is back.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_upgrade_request_carries_the_handshake_ack() {
    use tokio::io::AsyncWriteExt;
    for (delayed_ack, expected) in [(true, 2), (false, 3)] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let h = start_with(|c| {
            c.upstream = addr.to_string().parse().unwrap();
            c.tcp.delayed_ack = delayed_ack;
        })
        .await;
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        s.write_all(&raw_upgrade(&h.token, 0)).await.unwrap();
        let (mut up, _) = timeout(listener.accept()).await.unwrap();
        upstream_head(&mut up).await;
        assert_eq!(
            segments_in(&up),
            expected,
            "segments before the request was whole, delayed_ack = {delayed_ack}"
        );
        switch_protocols(&mut up, &mut s).await;
    }
}

/// Both ends of a loopback TCP connection.
async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let near = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (far, _) = listener.accept().await.unwrap();
    (near, far)
}

/// The client closes, the gateway answers with its close frame and FIN together: the
/// client then gets the answer and our FIN in one segment (after the kernel's ACK of its
/// own close frame: two segments in all, three when the FIN goes alone).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_answering_close_frame_leaves_with_the_fin() {
    use gatewarden::testing::Stream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, proxy_client) = tcp_pair().await;
    let (proxy_upstream, mut upstream) = tcp_pair().await;
    let relay = tokio::spawn(gatewarden::testing::relay(
        Stream::Tcp(proxy_client),
        Stream::Tcp(proxy_upstream),
        &[],
        &[],
        gatewarden::testing::ws::FrameTracker::default(),
        gatewarden::testing::Controls {
            revocation: None,
            shutdown: None,
            idle_timeout: None,
            max_lifetime: None,
            expires: None,
            zero_copy: false,
            worker_loop: None,
        },
    ));
    let before = segments_in(&client);
    let close = gatewarden::testing::ws::close_frame_masked(1000, "", Some([1, 2, 3, 4]));
    client.write_all(&close).await.unwrap();
    let mut got = vec![0; close.len()];
    upstream.read_exact(&mut got).await.unwrap();
    assert_eq!(got, close);
    // Held back by MSG_MORE, the answer leaves with the FIN of the shutdown: one segment.
    let answer = gatewarden::testing::ws::close_frame(1000, "");
    rustix::net::send(&upstream, &answer, rustix::net::SendFlags::MORE).unwrap();
    upstream.shutdown().await.unwrap();
    let mut seen = Vec::new();
    client.read_to_end(&mut seen).await.unwrap();
    assert_eq!(seen, answer);
    let outcome = relay.await.unwrap();
    assert_eq!(
        outcome.close.map(|(side, _)| side),
        Some(gatewarden::testing::Side::Client)
    );
    assert_eq!(segments_in(&client) - before, 2, "the FIN went alone");
}

/// `splice.worker_loop_after`: a tunnel that carries that many frames moves from its own
/// task to its worker's loop mid-session, every byte intact and the close code still
/// seen; a short tunnel never moves. The counter says which happened.
#[tokio::test]
async fn busy_tunnels_move_to_the_worker_loop_short_ones_stay() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let mut config = config_for(upstream.addr, &tf);
    config.splice.worker_loop_after = 16;
    let p = serve(config).await;
    let admin = p.admin.unwrap();
    let auth = format!("Bearer {token}");
    let metric_after = |closed: u32| async move {
        let needle = format!(r#"gatewarden_connections_closed_total{{outcome="normal"}} {closed}"#);
        loop {
            let (_, text) = admin_get(admin, "/metrics").await;
            if text.contains(&needle) {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };

    let (mut ws, _) = ws_connect(p.addr, "/ws", &[("authorization", &auth)])
        .await
        .unwrap();
    for i in 0..3 {
        assert_echo(&mut ws, &format!("short {i}")).await;
    }
    ws.close(None).await.unwrap();
    while next_msg(&mut ws).await.is_some() {}
    let text = timeout(metric_after(1)).await;
    assert!(
        text.contains("gatewarden_worker_loop_tunnels_total 0"),
        "{text}"
    );

    let (mut ws, _) = ws_connect(p.addr, "/ws", &[("authorization", &auth)])
        .await
        .unwrap();
    for i in 0..60usize {
        // Small and large (several reads, a full send buffer) messages, text and binary.
        let len = [5, 100, 70_000, 1 << 20][i % 4];
        let mut data = vec![0u8; len];
        rand::thread_rng().fill_bytes(&mut data);
        let msg = if i % 2 == 0 {
            Message::binary(data)
        } else {
            Message::text(format!("{i}:{}", "x".repeat(len)))
        };
        ws.send(msg.clone()).await.unwrap();
        assert!(
            next_msg(&mut ws).await == Some(msg),
            "message {i} came back changed"
        );
    }
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::Library(4321),
        reason: "done".into(),
    }))
    .await
    .unwrap();
    match next_msg(&mut ws).await {
        Some(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 4321),
        other => panic!("expected the echoed close 4321, got {other:?}"),
    }
    while next_msg(&mut ws).await.is_some() {}
    let text = timeout(metric_after(2)).await;
    assert!(
        text.contains("gatewarden_worker_loop_tunnels_total 1"),
        "{text}"
    );
    wait_log(&["[ws] closed", "code=4321", "by=client"]).await;
}

/// A session the gateway itself refuses (1008 from upstream) is counted: the refusals
/// gatewarden did not catch, which the monitoring rules alert on.
#[tokio::test]
async fn an_upstream_1008_is_counted_as_an_upstream_refusal() {
    let h = start().await;
    let (mut ws, _) = ws_connect(
        h.addr,
        "/ws",
        &[("authorization", &format!("Bearer {}", h.token))],
    )
    .await
    .unwrap();
    ws.send(Message::text("close-1008")).await.unwrap();
    let Some(Message::Close(Some(frame))) = next_msg(&mut ws).await else {
        panic!("expected close")
    };
    assert_eq!(frame.code, CloseCode::Policy);
    assert!(timeout(ws.next()).await.is_none());
    wait_log(&["[ws] closed", "code=1008", "by=upstream"]).await;
    let (_, text) = admin_get(h.server.admin.unwrap(), "/metrics").await;
    assert!(
        text.contains("gatewarden_upstream_refusals_total 1"),
        "{text}"
    );
}
