//! The OpenClaw Control UI as people open it (`http://host:18789/#token=…`, the fragment
//! never sent): in front of OpenClaw its shell loads without a token; every WebSocket and
//! every API stays authenticated.

use crate::common;

use common::openclaw::{self, FakeGateway};
use common::*;
use gatewarden::config::{Config, ControlUiMode, CredentialFormat, CredentialSource};

struct Setup {
    gw: FakeGateway,
    proxy: Running,
    token: String,
    _dir: tempfile::TempDir,
}

/// gatewarden in front of a fake OpenClaw gateway, with the gateway's config as credential.
async fn setup(tweak: impl FnOnce(&mut Config)) -> Setup {
    let token = random_token();
    let gw = openclaw::start(&token).await;
    let dir = tempfile::tempdir().unwrap();
    let oc = write_file(
        dir.path(),
        "openclaw.json",
        &format!("{{ gateway: {{ auth: {{ mode: 'token', token: '{token}' }} }} }}"),
    );
    let mut config = config_for(gw.addr, &oc);
    config.credentials.sources = vec![CredentialSource {
        format: CredentialFormat::Json5,
        ..CredentialSource::plain(oc)
    }];
    tweak(&mut config);
    let proxy = serve(config).await;
    Setup {
        gw,
        proxy,
        token,
        _dir: dir,
    }
}

/// Status of `method path` with `headers`, and the path the gateway saw (if it saw one).
async fn ask(
    s: &Setup,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>) {
    let before = s.gw.requests().len();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", s.proxy.addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = http_request(
        s.proxy.addr,
        req.body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap(),
    )
    .await;
    let seen = s.gw.requests();
    let path = (seen.len() > before).then(|| seen.last().unwrap().0.clone());
    (resp.status().as_u16(), path)
}

const NAV: (&str, &str) = ("sec-fetch-mode", "navigate");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_loads_without_a_token_in_front_of_openclaw() {
    let s = setup(|_| {}).await;
    assert_eq!(ask(&s, "GET", "/", &[NAV]).await, (200, Some("/".into())));
    assert_eq!(ask(&s, "HEAD", "/", &[]).await.0, 200);
    let (status, seen) = ask(&s, "GET", "/assets/index-DsEuFQRE.js", &[]).await;
    assert_eq!(
        (status, seen.as_deref()),
        (200, Some("/assets/index-DsEuFQRE.js"))
    );
    let (status, seen) = ask(&s, "GET", "/favicon.svg?v=2026.9.6", &[]).await;
    assert_eq!(
        (status, seen.as_deref()),
        (200, Some("/favicon.svg?v=2026.9.6"))
    );
    // A reload on one of the UI's routes: the gateway is asked for the page, nothing else.
    let (status, seen) = ask(&s, "GET", "/settings/model-setup?firstRun=1", &[NAV]).await;
    assert_eq!((status, seen.as_deref()), (200, Some("/")));
    // Dot segments are resolved as the upstream resolves them before the list is read.
    let (status, seen) = ask(&s, "GET", "/fonts/../assets/a.css", &[]).await;
    assert_eq!((status, seen.as_deref()), (200, Some("/assets/a.css")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_but_the_shell_stays_authenticated() {
    let s = setup(|_| {}).await;
    for (method, path, headers) in [
        ("POST", "/tools/invoke", &[][..]),
        ("GET", "/control-ui-config.json", &[][..]),
        ("GET", "/__openclaw__/control-ui-config.json", &[][..]),
        ("GET", "/api/sessions", &[NAV][..]),
        ("GET", "/assets/../tools/invoke", &[][..]),
        ("GET", "/assets/%2e%2e/tools/invoke", &[][..]),
        ("GET", "/assetsx/a.js", &[][..]),
        ("POST", "/", &[][..]),
        ("PUT", "/assets/a.js", &[][..]),
        // A script's fetch of a route is not a navigation.
        (
            "GET",
            "/settings",
            &[("sec-fetch-mode", "cors"), ("accept", "text/html")][..],
        ),
        ("GET", "/plugins/x/assets/a.js", &[][..]),
    ] {
        let (status, seen) = ask(&s, method, path, headers).await;
        assert_eq!((status, seen), (401, None), "{method} {path}");
    }
    // A credential on a shell path is judged like any other: a wrong one is refused.
    let (status, seen) = ask(
        &s,
        "GET",
        "/",
        &[("authorization", "Bearer wrong-token-0123456789")],
    )
    .await;
    assert_eq!((status, seen), (401, None));
    assert_eq!(
        ask(&s, "GET", "/?token=wrong-token-0123456789", &[]).await,
        (401, None)
    );
    // The right one on ?token= still becomes the cookie (303), as before.
    let (status, _) = ask(&s, "GET", &format!("/?token={}", s.token), &[]).await;
    assert_eq!(status, 303);
    // And the API with the token passes.
    let bearer = format!("Bearer {}", s.token);
    assert_eq!(
        ask(&s, "POST", "/tools/invoke", &[("authorization", &bearer)])
            .await
            .0,
        200
    );
}

/// A WebSocket on a shell path is not the shell: the gateway's refusal, nothing relayed but
/// its challenge (the OpenClaw first-frame flow), and a wrong token refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_on_shell_paths_still_need_a_token() {
    let s = setup(|_| {}).await;
    let wrong = [("authorization", "Bearer wrong-token-0123456789abcdef")];
    for path in ["/", "/assets/a.js"] {
        let refused = ws_connect(s.proxy.addr, path, &wrong).await;
        if let Ok((mut ws, _)) = refused {
            match next_msg(&mut ws).await {
                Some(tokio_tungstenite::tungstenite::Message::Close(Some(f))) => {
                    assert_eq!(u16::from(f.code), 1008, "{path}");
                }
                other => panic!("{path}: expected a 1008 close, got {other:?}"),
            }
        }
    }
    assert!(s.gw.connects().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_is_private_when_configured_or_not_in_front_of_openclaw() {
    let s = setup(|c| c.auth.control_ui = ControlUiMode::Private).await;
    assert_eq!(ask(&s, "GET", "/", &[NAV]).await, (401, None));
    // A plain token file: not OpenClaw's config, so `auto` keeps the shell private.
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let tf = write_file(dir.path(), "token", &random_token());
    let p = serve(config_for(upstream.addr, &tf)).await;
    let resp = http_request(
        p.addr,
        hyper::Request::get(format!("http://{}/assets/a.js", p.addr))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 401);
}
