//! The built `gatewarden` binary: flags, `check`, the embedded default, signals.

use crate::common;

use std::process::{Command, Stdio};

use common::binary::{run_check, Proc, BIN};
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_with_flags_proxies_and_exits_0_on_sigterm() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let mut p = Proc::gatewarden(&format!("http://{}", upstream.addr))
        .token_file(tf.to_str().unwrap())
        .spawn();
    let addr = p.listening_addr();
    let mut ws = ws_bearer(addr, &token).await;
    ws.send(Message::text("through the binary")).await.unwrap();
    assert_eq!(
        next_msg(&mut ws).await,
        Some(Message::text("through the binary"))
    );
    ws.close(None).await.unwrap();
    while next_msg(&mut ws).await.is_some() {}
    tokio::task::block_in_place(|| p.wait_line("[ws] closed"));
    p.signal("TERM");
    let status = tokio::task::block_in_place(|| p.wait_exit());
    assert_eq!(status.code(), Some(0), "stderr:\n{}", p.rest());
    let all = p.rest();
    assert!(!all.contains(&token), "token in the binary's logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_has_stable_fields() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let mut p = Proc::gatewarden(&upstream.addr.to_string())
        .token_file(tf.to_str().unwrap())
        .args(&["--log-format", "json"])
        .spawn();
    let addr = p.listening_addr();
    let (mut ws, _) = ws_connect(addr, "/ws", &[("authorization", "Bearer wrong")])
        .await
        .unwrap();
    let _ = next_msg(&mut ws).await;
    let line = tokio::task::block_in_place(|| p.wait_line("[ws] unauthorized"));
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(v["message"], "[ws] unauthorized");
    assert_eq!(v["reason"], "token_mismatch");
    assert!(v["presented"].as_str().unwrap().starts_with("fp:"));
    assert!(v["conn"].is_string() && v["remote"].is_string());

    // The per-connection lines (written by hand in the text format) keep their fields.
    let mut ws = ws_bearer(addr, &token).await;
    ws.close(None).await.unwrap();
    while next_msg(&mut ws).await.is_some() {}
    let line = tokio::task::block_in_place(|| p.wait_line("[ws] connected"));
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(v["source"], "header", "{line}");
    assert!(
        v["presented"].as_str().unwrap().starts_with("fp:"),
        "{line}"
    );
    assert_eq!(v["credential"], tf.to_str().unwrap(), "{line}");
    let line = tokio::task::block_in_place(|| p.wait_line("[ws] closed"));
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(v["code"], 1005, "{line}");
    assert_eq!(v["by"], "client", "{line}");
    assert!(v["bytes_in"].as_u64().unwrap() > 0, "{line}");
    // Values are data, not the text format's notation: an empty close reason is "", not
    // "\"\"", and "none" is null, not "-".
    assert_eq!(v["reason"], "", "{line}");
    let line = p
        .seen()
        .iter()
        .find(|l| l.contains("[ws] unauthorized"))
        .unwrap()
        .clone();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["generation"], serde_json::Value::Null, "{line}");
    for line in p.seen() {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        for (k, value) in v.as_object().unwrap() {
            if let Some(s) = value.as_str() {
                assert!(s != "-", "{k} is \"-\" instead of null: {line}");
                assert!(
                    !(s.len() >= 2 && s.starts_with('"') && s.ends_with('"')),
                    "{k} keeps the text format's quotes: {line}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_generates_a_private_token_file() {
    let home = tempfile::tempdir().unwrap();
    let upstream = start_upstream().await;
    let mut p = Proc::gatewarden(&upstream.addr.to_string())
        .envs(&[
            ("XDG_CONFIG_HOME", home.path().to_str().unwrap()),
            ("HOME", home.path().to_str().unwrap()),
            ("GATEWARDEN_SHUTDOWN__DRAIN", "1s"),
        ])
        .spawn();
    let line = p.wait_line("generated a token file");
    let path = home.path().join("gatewarden").join("token");
    assert!(line.contains(&path.display().to_string()), "{line}");
    let token = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert_eq!(token.len(), 43, "32 random bytes, base64url");
    let fp = gatewarden::Fingerprint::of(token.as_bytes()).to_string();
    let line = p.wait_line("[auth] credential loaded");
    assert!(line.contains(&format!("fingerprint={fp}")), "{line}");
    assert!(line.contains(&path.display().to_string()), "{line}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let addr = p.listening_addr();
    let (mut ws, _) = ws_connect(addr, &format!("/ws?token={token}"), &[])
        .await
        .unwrap();
    assert_echo(&mut ws, "default").await;
    // The tunnel is still open: SIGINT drains for 1 s, cuts it, and still exits 0.
    p.signal("INT");
    let status = tokio::task::block_in_place(|| p.wait_exit());
    assert_eq!(status.code(), Some(0));
    let all = p.rest();
    assert!(!all.contains(&token));

    // A restart reuses the same token file instead of minting a new token.
    let mut p = Proc::gatewarden(&upstream.addr.to_string())
        .envs(&[
            ("XDG_CONFIG_HOME", home.path().to_str().unwrap()),
            ("HOME", home.path().to_str().unwrap()),
        ])
        .spawn();
    p.wait_line("using the generated token file");
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token);
}

#[test]
fn check_names_the_bad_key_value_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(dir.path(), "gw.toml", "[auth]\nreject = \"bogus\"\n");
    let (code, _, err) = run_check(&["-c", cfg.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("auth.reject"), "{err}");
    assert!(err.contains("bogus"), "{err}");
    assert!(err.contains(cfg.to_str().unwrap()), "{err}");

    let cfg = write_file(dir.path(), "gw2.toml", "listen = \"nowhere\"\n");
    let (code, _, err) = run_check(&["-c", cfg.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("`listen`") && err.contains("nowhere"), "{err}");

    let cfg = write_file(dir.path(), "gw3.toml", "[auth]\nrejetc = \"http\"\n");
    let (code, _, err) = run_check(&["-c", cfg.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("rejetc"), "typo'd key named: {err}");
}

/// Error texts read as sentences: no nested backticks, the known values listed plainly, and
/// a near miss gets a "did you mean". An unknown key in a file stays an error.
#[test]
fn config_errors_read_cleanly_and_suggest_near_misses() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(dir.path(), "gw.toml", "[auth]\nrejetc = \"http\"\n");
    let (code, _, err) = run_check(&["-c", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown key `auth.rejetc`; did you mean `auth.reject`?"),
        "{err}"
    );
    assert!(!err.contains("``"), "nested backticks: {err}");
    let cfg = write_file(dir.path(), "gw2.toml", "[auth]\nxyzzy = 1\n");
    let (code, _, err) = run_check(&["-c", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown key `auth.xyzzy`; known keys here: sources, query_param,"),
        "{err}"
    );
    let (code, _, err) = run_check(&[], &[("GATEWARDEN_AUTH__REJECT", "clsoe")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "key `auth.reject`: unknown value `clsoe`; expected one of: close, http (did you mean `close`?) (from environment variable GATEWARDEN_AUTH__REJECT)"
        ),
        "{err}"
    );
    assert!(!err.contains("``"), "nested backticks: {err}");
}

/// HTTP/2's settings are checked at load like the others: the key, the value, why, and
/// where the value came from.
#[test]
fn bad_alpn_and_http2_windows_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_file(dir.path(), "gw.toml", "[tls]\nalpn = [\"h3\"]\n");
    let (code, _, err) = run_check(&["-c", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("key `tls.alpn`") && err.contains("\"h3\"") && err.contains("gw.toml"),
        "{err}"
    );
    let cfg = write_file(
        dir.path(),
        "gw2.toml",
        "[http2]\nstream_window_bytes = 1048576\nconnection_window_bytes = 65535\n",
    );
    let (code, _, err) = run_check(&["-c", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("key `http2.connection_window_bytes`: value `65535` must be at least http2.stream_window_bytes")
            && err.contains("gw2.toml"),
        "{err}"
    );
    let (code, _, err) = run_check(&[], &[("GATEWARDEN_HTTP2__MAX_CONCURRENT_STREAMS", "0")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("key `http2.max_concurrent_streams`: value `0` must be at least 1")
            && err.contains("GATEWARDEN_HTTP2__MAX_CONCURRENT_STREAMS"),
        "{err}"
    );
}

/// Kubernetes injects `<SERVICE>_*` variables for every Service; with a Service named
/// `gatewarden` they start with GATEWARDEN_. They are ignored with one warning naming them
/// (a near miss gets a suggestion), and gatewarden serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_service_link_variables_are_ignored_with_one_warning() {
    let k8s: &[(&str, &str)] = &[
        ("GATEWARDEN_PORT", "tcp://10.0.0.1:18789"),
        ("GATEWARDEN_PORT_18789_TCP", "tcp://10.0.0.1:18789"),
        ("GATEWARDEN_PORT_18789_TCP_ADDR", "10.0.0.1"),
        ("GATEWARDEN_PORT_18789_TCP_PORT", "18789"),
        ("GATEWARDEN_PORT_18789_TCP_PROTO", "tcp"),
        ("GATEWARDEN_SERVICE_HOST", "10.0.0.1"),
        ("GATEWARDEN_SERVICE_PORT", "18789"),
        ("GATEWARDEN_LOG_LEVEL", "debug"),
    ];
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let (code, out, err) = run_check(&["--token-file", tf.to_str().unwrap()], k8s);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[auth]"), "{out}");
    assert_eq!(
        err.matches("ignoring environment variables").count(),
        1,
        "{err}"
    );
    for (name, _) in k8s {
        assert!(err.contains(name), "{name} not named: {err}");
    }
    assert!(
        err.contains("GATEWARDEN_LOG_LEVEL (did you mean GATEWARDEN_LOG__LEVEL?)"),
        "{err}"
    );

    let mut p = Proc::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.addr.to_string(),
            "--token-file",
            tf.to_str().unwrap(),
        ],
        k8s,
    );
    let line =
        tokio::task::block_in_place(|| p.wait_line("[config] ignoring environment variables"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("variables=GATEWARDEN_LOG_LEVEL,GATEWARDEN_PORT,")
            && line.contains("did_you_mean=GATEWARDEN_LOG__LEVEL"),
        "{line}"
    );
    let addr = p.listening_addr();
    let mut ws = ws_bearer(addr, &token).await;
    assert_echo(&mut ws, "k8s").await;
}

#[test]
fn check_names_the_environment_variable() {
    let (code, _, err) = run_check(&[], &[("GATEWARDEN_AUTH__REJECT", "sometimes")]);
    assert_ne!(code, 0);
    assert!(err.contains("GATEWARDEN_AUTH__REJECT"), "{err}");
    assert!(err.contains("sometimes"), "{err}");
    let (code, _, err) = run_check(&["--upstream", "ftp://x:1"], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("command-line flag") && err.contains("ftp://x:1"),
        "{err}"
    );
}

#[test]
fn check_prints_the_effective_config_with_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let cfg = write_file(
        dir.path(),
        "gw.toml",
        &format!(
            "listen = \"127.0.0.1:1111\"\nupstream = \"127.0.0.1:2222\"\n[auth]\nreject = \"http\"\n\
             [[credentials]]\npath = \"{}\"\n",
            tf.display()
        ),
    );
    let (code, out, err) = run_check(
        &["-c", cfg.to_str().unwrap(), "--listen", "127.0.0.1:3333"],
        &[
            ("GATEWARDEN_UPSTREAM", "127.0.0.1:4444"),
            ("GATEWARDEN_LOG__LEVEL", "debug"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("listen = \"127.0.0.1:3333\""),
        "flag beats file:\n{out}"
    );
    assert!(
        out.contains("upstream = \"http://127.0.0.1:4444\""),
        "env beats file:\n{out}"
    );
    assert!(
        out.contains("reject = \"http\""),
        "file beats default:\n{out}"
    );
    assert!(out.contains("level = \"debug\""), "{out}");
    // A plain token file is not OpenClaw's config: no in-band token, and check says why.
    assert!(
        out.contains("# token sources: header, query, cookie, subprotocol (default; first_message is off because no credential is the OpenClaw gateway's config"),
        "{out}"
    );
    let fp = gatewarden::Fingerprint::of(token.as_bytes()).to_string();
    assert!(out.contains(&format!("fp:{fp}")), "{out}");
    assert!(!out.contains(&token) && !err.contains(&token));

    // A missing credential file is reported, by name, with a non-zero exit.
    std::fs::remove_file(&tf).unwrap();
    let (code, _, err) = run_check(&["-c", cfg.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains(tf.to_str().unwrap()) && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn bad_config_stops_the_proxy_at_start_up() {
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", ""])
        .env("GATEWARDEN_TIMEOUTS__HEADER_READ", "soon")
        .env_remove("GATEWARDEN_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GATEWARDEN_TIMEOUTS__HEADER_READ") && err.contains("soon"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_config_is_discovered_in_openclaws_own_order() {
    let gw_token = random_token();
    let gw = common::openclaw::start(&gw_token).await;
    let home = tempfile::tempdir().unwrap();
    let doc = |t: &str| {
        format!("{{\n  // written by openclaw\n  gateway: {{ auth: {{ token: '{t}', }}, }},\n}}\n")
    };
    // ~/.openclaw/openclaw.json holds a different (dev) token; $OPENCLAW_STATE_DIR wins.
    std::fs::create_dir_all(home.path().join(".openclaw")).unwrap();
    write_file(
        &home.path().join(".openclaw"),
        "openclaw.json",
        &doc("home-token"),
    );
    let state = tempfile::tempdir().unwrap();
    let state_file = write_file(state.path(), "openclaw.json", &doc(&gw_token));
    let mut p = Proc::gatewarden(&gw.addr.to_string())
        .envs(&[
            ("HOME", home.path().to_str().unwrap()),
            ("XDG_CONFIG_HOME", home.path().to_str().unwrap()),
            ("OPENCLAW_STATE_DIR", state.path().to_str().unwrap()),
        ])
        .spawn();
    let line = tokio::task::block_in_place(|| p.wait_line("using the OpenClaw gateway's config"));
    assert!(line.contains(&state_file.display().to_string()), "{line}");
    assert!(line.contains("pointer=/gateway/auth/token"), "{line}");
    let addr = p.listening_addr();
    // A real-shaped OpenClaw client: no token in the upgrade, token in the connect frame.
    let (mut ws, _) = ws_connect(addr, "/", &[]).await.unwrap();
    let _challenge = next_msg(&mut ws).await.unwrap();
    ws.send(Message::text(common::openclaw::cli_connect(
        "1",
        Some(&gw_token),
    )))
    .await
    .unwrap();
    match next_msg(&mut ws).await {
        Some(Message::Text(t)) => assert!(t.contains("hello-ok"), "{t}"),
        other => panic!("{other:?}"),
    }
    // No generated token file was created: the gateway's own file is the credential.
    assert!(!home.path().join("gatewarden").exists());

    // $OPENCLAW_CONFIG_PATH beats the state dir; $OPENCLAW_HOME replaces ~.
    let (code, out, err) = run_check(
        &[],
        &[
            ("HOME", "/nonexistent"),
            ("OPENCLAW_HOME", home.path().to_str().unwrap()),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            &home
                .path()
                .join(".openclaw/openclaw.json")
                .display()
                .to_string()
        ),
        "{out}"
    );
    // In front of OpenClaw the token rides in the first frame: first_message is on.
    assert!(
        out.contains("# token sources: header, query, cookie, subprotocol, first_message (default; first_message is on because"),
        "{out}"
    );
    let (_, out, _) = run_check(
        &[],
        &[
            ("OPENCLAW_HOME", home.path().to_str().unwrap()),
            ("GATEWARDEN_AUTH__SOURCES", "[header]"),
        ],
    );
    assert!(
        out.contains("# token sources: header (auth.sources is set)"),
        "{out}"
    );
    let explicit = write_file(state.path(), "explicit.json", &doc("explicit"));
    let (_, out, _) = run_check(
        &[],
        &[
            ("OPENCLAW_CONFIG_PATH", explicit.to_str().unwrap()),
            ("OPENCLAW_STATE_DIR", state.path().to_str().unwrap()),
        ],
    );
    assert!(out.contains(explicit.to_str().unwrap()), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_config_without_a_token_is_explained_and_picked_up_once_persisted() {
    let gw_token = random_token();
    let gw = common::openclaw::start(&gw_token).await;
    let state = tempfile::tempdir().unwrap();
    let file = write_file(
        state.path(),
        "openclaw.json",
        "{ gateway: { port: 18790, auth: { mode: 'token' } } }",
    );
    let mut p = Proc::gatewarden(&gw.addr.to_string())
        .envs(&[("OPENCLAW_STATE_DIR", state.path().to_str().unwrap())])
        .spawn();
    let line = tokio::task::block_in_place(|| p.wait_line("[reload] credentials rejected"));
    assert!(line.contains(file.to_str().unwrap()), "{line}");
    assert!(line.contains("/gateway/auth/token"), "{line}");
    assert!(line.contains("runtime-only token"), "{line}");
    tokio::task::block_in_place(|| p.wait_line("no valid credential yet"));
    let addr = p.listening_addr();
    // Nobody gets in meanwhile.
    let (mut ws, _) = ws_connect(addr, "/", &[]).await.unwrap();
    let _challenge = next_msg(&mut ws).await;
    ws.send(Message::text(common::openclaw::cli_connect(
        "1",
        Some(&gw_token),
    )))
    .await
    .unwrap();
    let Some(Message::Text(res)) = next_msg(&mut ws).await else {
        panic!("expected error res")
    };
    // The gateway's shape and words, with the reason why: nothing is loaded yet.
    assert!(res.contains("gateway token mismatch"), "{res}");
    assert!(
        res.contains(r#""authReason":"credential_unavailable""#),
        "{res}"
    );
    // The operator persists the token the way OpenClaw does (temp file + rename): picked up.
    let tmp = write_file(
        state.path(),
        "openclaw.json.tmp",
        &format!("{{\"gateway\":{{\"auth\":{{\"token\":\"{gw_token}\"}}}}}}"),
    );
    std::fs::rename(&tmp, &file).unwrap();
    tokio::task::block_in_place(|| p.wait_line("[reload] credentials applied"));
    let (mut ws, _) = ws_connect(addr, "/", &[]).await.unwrap();
    let _challenge = next_msg(&mut ws).await;
    ws.send(Message::text(common::openclaw::cli_connect(
        "2",
        Some(&gw_token),
    )))
    .await
    .unwrap();
    let Some(Message::Text(res)) = next_msg(&mut ws).await else {
        panic!("expected hello")
    };
    assert!(res.contains("hello-ok"), "{res}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_forces_a_reread() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (random_token(), random_token());
    let tf = write_file(dir.path(), "token", &a);
    let mut p = Proc::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.addr.to_string(),
            "--token-file",
            tf.to_str().unwrap(),
        ],
        // Neither inotify nor polling: only SIGHUP can notice the change.
        &[
            ("GATEWARDEN_CREDENTIALS__WATCH", "false"),
            ("GATEWARDEN_CREDENTIALS__POLL_INTERVAL", "0"),
        ],
    );
    let addr = p.listening_addr();
    std::fs::write(&tf, &b).unwrap();
    p.signal("HUP");
    tokio::task::block_in_place(|| p.wait_line("[reload] SIGHUP: re-reading"));
    let line = tokio::task::block_in_place(|| p.wait_line("[reload] credentials applied"));
    let fp = gatewarden::Fingerprint::of(b.as_bytes()).to_string();
    assert!(line.contains(&format!("current=fp:{fp}")), "{line}");
    let line = tokio::task::block_in_place(|| p.wait_line("[reload] SIGHUP result"));
    assert!(line.contains("result=applied"), "{line}");
    let mut ws = ws_bearer(addr, &b).await;
    assert_echo(&mut ws, "after hup").await;
    // A second SIGHUP with nothing changed reports it.
    p.signal("HUP");
    let line = tokio::task::block_in_place(|| p.wait_line("[reload] SIGHUP result"));
    assert!(line.contains("result=unchanged"), "{line}");
}

/// Relative credential paths are resolved against the working directory at start: the
/// start-up log names the absolute file, and a rename rotation is applied by inotify — the
/// poll is an hour away here, so only the watch can notice it within the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_credential_paths_are_watched_like_absolute_ones() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    std::fs::create_dir(dir.join("rot")).unwrap();
    let (a, b, c, d) = (
        random_token(),
        random_token(),
        random_token(),
        random_token(),
    );
    write_file(&dir, "tok", &a);
    write_file(&dir.join("rot"), "tok", &b);
    let mut p = Proc::spawn_in(
        Some(&dir),
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.addr.to_string(),
            "--token-file",
            "rot/tok",
            "--token-file",
            "tok",
        ],
        &[("GATEWARDEN_CREDENTIALS__POLL_INTERVAL", "1h")],
    );
    let fp = |t: &str| gatewarden::Fingerprint::of(t.as_bytes()).to_string();
    for file in ["rot/tok", "tok"] {
        let line = tokio::task::block_in_place(|| p.wait_line("[auth] credential loaded"));
        let abs = dir.join(file);
        assert!(
            line.contains(&format!("path={}", abs.display())),
            "{file} not logged as {}: {line}",
            abs.display()
        );
    }
    let addr = p.listening_addr();
    for (file, token) in [("rot/tok", &c), ("tok", &d)] {
        let tmp = dir.join(".rotating");
        std::fs::write(&tmp, token).unwrap();
        std::fs::rename(&tmp, dir.join(file)).unwrap();
        let line = tokio::task::block_in_place(|| p.wait_line("[reload] credentials applied"));
        assert!(
            line.contains(&format!("current=fp:{}", fp(token))),
            "{line}"
        );
        assert!(
            line.contains(&format!("source={}", dir.join(file).display())),
            "{line}"
        );
        let mut ws = ws_bearer(addr, token).await;
        assert_echo(&mut ws, "rotated").await;
    }
}

/// A stand-in admin listener that answers 200 and records the paths it was asked for.
async fn fake_admin() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = head.split(' ').nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push(path);
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        }
    });
    (addr, seen)
}

fn health(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("health")
        .args(args)
        .env_remove("GATEWARDEN_CONFIG")
        .env_remove("GATEWARDEN_ADMIN__LISTEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `gatewarden health` probes the admin listener the proxy would use: from the config file
/// (the image's HEALTHCHECK), the environment and the flag, in the proxy's precedence; a
/// wildcard address is probed on loopback; `--ready` asks /readyz; a disabled admin
/// listener is said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_the_configured_admin_listener() {
    let (file_addr, file_seen) = fake_admin().await;
    let (env_addr, env_seen) = fake_admin().await;
    let (flag_addr, flag_seen) = fake_admin().await;
    let dir = tempfile::tempdir().unwrap();
    let wildcard = format!("0.0.0.0:{}", file_addr.port());
    let cfg = write_file(
        dir.path(),
        "gw.toml",
        &format!("[admin]\nlisten = \"{wildcard}\"\n"),
    );
    let cfg = cfg.to_str().unwrap();
    let run = |args: Vec<String>, env: Vec<(String, String)>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            health(&args, &env)
        })
    };
    let (code, out) = run(vec!["-c".into(), cfg.into()], vec![]).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(*file_seen.lock().unwrap(), ["/healthz"]);
    let (code, out) = run(
        vec!["--ready".into()],
        vec![("GATEWARDEN_CONFIG".into(), cfg.into())],
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(*file_seen.lock().unwrap(), ["/healthz", "/readyz"]);
    let (code, out) = run(
        vec!["-c".into(), cfg.into()],
        vec![("GATEWARDEN_ADMIN__LISTEN".into(), env_addr.to_string())],
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(*env_seen.lock().unwrap(), ["/healthz"]);
    let (code, out) = run(
        vec![
            "-c".into(),
            cfg.into(),
            "--admin-listen".into(),
            flag_addr.to_string(),
        ],
        vec![("GATEWARDEN_ADMIN__LISTEN".into(), env_addr.to_string())],
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(*flag_seen.lock().unwrap(), ["/healthz"]);
    let (code, out) = run(vec!["--admin-listen".into(), String::new()], vec![])
        .await
        .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the admin listener is disabled"), "{out}");
}

/// A port already taken: the error says which listener could not start and which setting
/// moves it, so the admin port in use (a second instance, another exporter) is not read as
/// the proxy's own port.
#[test]
fn a_busy_port_names_the_listener_and_its_setting() {
    let dir = tempfile::tempdir().unwrap();
    let tf = write_file(dir.path(), "token", &random_token());
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().to_string();
    let mut admin = Proc::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            tf.to_str().unwrap(),
            "--admin-listen",
            &port,
        ],
        &[],
    );
    assert!(!admin.wait_exit().success());
    let err = admin.rest();
    assert!(
        err.contains(&format!("cannot start the admin listener on {port}"))
            && err.contains("--admin-listen"),
        "{err}"
    );
    let mut proxy = Proc::spawn(
        &["--listen", &port, "--token-file", tf.to_str().unwrap()],
        &[],
    );
    assert!(!proxy.wait_exit().success());
    let err = proxy.rest();
    assert!(
        err.contains(&format!("cannot listen on {port} for clients"))
            && err.contains("--listen)")
            && !err.contains("admin"),
        "{err}"
    );
}

/// `format = "dotenv"`: the gateway's token as docker compose setups keep it in `.env`
/// (`OPENCLAW_GATEWAY_TOKEN=…`), watched like any file; being OpenClaw's token, it turns the
/// in-band source on by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotenv_credentials_are_read_and_rotated() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (random_token(), random_token());
    let env = write_file(
        dir.path(),
        ".env",
        &format!("# compose variables\nOPENCLAW_IMAGE=x\nOPENCLAW_GATEWAY_TOKEN='{a}'\n"),
    );
    let cfg = write_file(
        dir.path(),
        "gw.toml",
        &format!(
            "[[credentials]]\npath = \"{}\"\nformat = \"dotenv\"\n",
            env.display()
        ),
    );
    let (code, out, err) = run_check(&["-c", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("first_message"), "{out}");
    let mut p = Proc::spawn(
        &[
            "-c",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.addr.to_string(),
        ],
        &[],
    );
    let fp = |t: &str| gatewarden::Fingerprint::of(t.as_bytes()).to_string();
    let line = tokio::task::block_in_place(|| p.wait_line("[auth] credential loaded"));
    assert!(
        line.contains("format=dotenv")
            && line.contains("pointer=OPENCLAW_GATEWAY_TOKEN")
            && line.contains(&fp(&a)),
        "{line}"
    );
    let addr = p.listening_addr();
    let tmp = dir.path().join(".env.new");
    std::fs::write(&tmp, format!("OPENCLAW_GATEWAY_TOKEN={b}\n")).unwrap();
    std::fs::rename(&tmp, &env).unwrap();
    let line = tokio::task::block_in_place(|| p.wait_line("[reload] credentials applied"));
    assert!(line.contains(&format!("current=fp:{}", fp(&b))), "{line}");
    let mut ws = ws_bearer(addr, &b).await;
    assert_echo(&mut ws, "dotenv").await;
}

#[test]
fn token_hash_and_generate() {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(["token", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let a = Command::new(BIN)
        .args(["token", "generate"])
        .output()
        .unwrap();
    let b = Command::new(BIN)
        .args(["token", "generate"])
        .output()
        .unwrap();
    let (a, b) = (
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout),
    );
    assert_eq!(a.trim().len(), 43);
    assert_ne!(a, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once_during_the_drain() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let token = random_token();
    let tf = write_file(dir.path(), "token", &token);
    let mut p = Proc::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.addr.to_string(),
            "--token-file",
            tf.to_str().unwrap(),
        ],
        // A drain far longer than the test's wait: only the second signal can end it in time.
        &[("GATEWARDEN_SHUTDOWN__DRAIN", "10m")],
    );
    let addr = p.listening_addr();
    let mut ws = ws_bearer(addr, &token).await;
    assert_echo(&mut ws, "open").await;
    p.signal("TERM");
    tokio::task::block_in_place(|| p.wait_line("[shutdown] stopped accepting"));
    // Still draining: the tunnel works.
    assert_echo(&mut ws, "draining").await;
    p.signal("TERM");
    let status = tokio::task::block_in_place(|| p.wait_exit());
    assert_eq!(status.code(), Some(130));
    assert!(p.rest().contains("second signal"));
}

/// OpenClaw's state directory is named, its config is not there yet (gatewarden started
/// first, or a fresh volume): no token is invented. gatewarden waits, refuses clients with a
/// reason that says why, is not ready, and adopts the config when the gateway writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_config_that_appears_after_start_is_adopted_without_a_restart() {
    let gw_token = random_token();
    let gw = common::openclaw::start(&gw_token).await;
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join("state");
    let mut p = Proc::gatewarden(&gw.addr.to_string())
        .args(&["--admin-listen", "127.0.0.1:0"])
        .envs(&[
            ("OPENCLAW_STATE_DIR", state.to_str().unwrap()),
            ("HOME", home.path().to_str().unwrap()),
            ("XDG_CONFIG_HOME", home.path().join("xdg").to_str().unwrap()),
        ])
        .spawn();
    let line = tokio::task::block_in_place(|| p.wait_line("[auth] no credential configured"));
    assert!(line.contains("waiting for it"), "{line}");
    assert!(
        line.contains(&state.join("openclaw.json").display().to_string()),
        "{line}"
    );
    let admin_line = tokio::task::block_in_place(|| p.wait_line("[admin] listening"));
    let admin: std::net::SocketAddr = admin_line
        .split("addr=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let addr = p.listening_addr();
    assert!(
        !home.path().join("xdg/gatewarden/token").exists(),
        "a token was invented"
    );
    assert_eq!(admin_get(admin, "/readyz").await.0, 503);
    let refused = |id: &'static str| {
        let gw_token = gw_token.clone();
        async move {
            let (mut ws, _) = ws_connect(addr, "/", &[]).await.unwrap();
            let _challenge = next_msg(&mut ws).await;
            ws.send(Message::text(common::openclaw::cli_connect(
                id,
                Some(&gw_token),
            )))
            .await
            .unwrap();
            match next_msg(&mut ws).await {
                Some(Message::Text(res)) => res.to_string(),
                other => panic!("{other:?}"),
            }
        }
    };
    let res = refused("1").await;
    assert!(
        res.contains(r#""authReason":"credential_unavailable""#),
        "{res}"
    );
    // The gateway starts on the fresh state directory and writes its config (temp + rename).
    std::fs::create_dir_all(&state).unwrap();
    let tmp = write_file(
        &state,
        "openclaw.json.tmp",
        &format!("{{\"gateway\":{{\"auth\":{{\"token\":\"{gw_token}\"}}}}}}"),
    );
    std::fs::rename(&tmp, state.join("openclaw.json")).unwrap();
    tokio::task::block_in_place(|| p.wait_line("[auth] credential adopted"));
    let res = refused("2").await;
    assert!(res.contains("hello-ok"), "{res}");
    assert_eq!(admin_get(admin, "/readyz").await.0, 200);
}

/// No credential configured and no OpenClaw state here, so gatewarden generates its own
/// token; but the upstream, started after gatewarden, turns out to be an OpenClaw gateway
/// (it speaks first, connect.challenge): said at once, not found out client by client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openclaw_gateway_behind_a_generated_token_is_named_when_it_appears() {
    let spot = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw_addr = spot.local_addr().unwrap();
    drop(spot);
    let home = tempfile::tempdir().unwrap();
    let mut p = Proc::gatewarden(&gw_addr.to_string())
        .envs(&[
            ("HOME", home.path().to_str().unwrap()),
            ("XDG_CONFIG_HOME", home.path().join("xdg").to_str().unwrap()),
        ])
        .spawn();
    let line = tokio::task::block_in_place(|| p.wait_line("[auth] no credential configured"));
    assert!(line.contains("generated a token file"), "{line}");
    p.listening_addr();
    let listener = tokio::net::TcpListener::bind(gw_addr).await.unwrap();
    let _gw = common::openclaw::start_on(
        listener,
        &random_token(),
        std::time::Duration::from_secs(15),
    );
    let line = tokio::task::block_in_place(|| p.wait_line("[auth] the upstream is"));
    assert!(
        line.contains("is an OpenClaw gateway") && line.contains("a token it generated itself"),
        "{line}"
    );
}

/// The same with a plain WebSocket upstream: the generated token is gatewarden's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_upstream_behind_a_generated_token_is_not_called_openclaw() {
    let upstream = start_upstream().await;
    let home = tempfile::tempdir().unwrap();
    let mut p = Proc::gatewarden(&upstream.addr.to_string())
        .envs(&[
            ("HOME", home.path().to_str().unwrap()),
            ("XDG_CONFIG_HOME", home.path().join("xdg").to_str().unwrap()),
        ])
        .spawn();
    let line = tokio::task::block_in_place(|| p.wait_line("[auth] the upstream is"));
    assert!(line.contains("is not an OpenClaw gateway"), "{line}");
}

/// OPENCLAW_STATE_DIR names the gateway's state, still empty; `~/.openclaw` holds another
/// gateway's config (another profile). OpenClaw would use the named one, so gatewarden waits
/// for it instead of mirroring the other gateway's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_state_directory_is_waited_for_not_swapped_for_the_one_in_home() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".openclaw")).unwrap();
    write_file(
        &home.path().join(".openclaw"),
        "openclaw.json",
        &format!(
            "{{ gateway: {{ auth: {{ token: '{}' }} }} }}",
            random_token()
        ),
    );
    let state = home.path().join("named-state");
    let mut p = Proc::spawn(
        &["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"],
        &[
            ("OPENCLAW_STATE_DIR", state.to_str().unwrap()),
            ("HOME", home.path().to_str().unwrap()),
            ("XDG_CONFIG_HOME", home.path().join("xdg").to_str().unwrap()),
        ],
    );
    let line = tokio::task::block_in_place(|| p.wait_line("[auth] no credential configured"));
    assert!(
        line.contains("waiting for it")
            && line.contains(&state.join("openclaw.json").display().to_string()),
        "{line}"
    );
}

/// Each subcommand takes only the flags it uses (`token --help` used to list `--tls-cert`);
/// the proxy's flags still count before a subcommand that reads the whole config.
#[test]
fn each_subcommand_lists_only_the_flags_it_uses() {
    let help = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let token = help(&["token", "--help"]);
    assert!(
        !token.contains("--tls-cert") && !token.contains("--listen"),
        "{token}"
    );
    let health = help(&["health", "--help"]);
    assert!(
        health.contains("--ready") && health.contains("--admin-listen"),
        "{health}"
    );
    assert!(
        !health.contains("--upstream") && !health.contains("--tls-key"),
        "{health}"
    );
    let doctor = help(&["doctor", "--help"]);
    assert!(
        doctor.contains("--upstream") && doctor.contains("--token-file"),
        "{doctor}"
    );
    let out = Command::new(BIN)
        .args(["token", "generate", "--tls-cert", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Before the subcommand: still read.
    let dir = tempfile::tempdir().unwrap();
    let tf = write_file(dir.path(), "token", &random_token());
    let out = Command::new(BIN)
        .args(["--token-file", tf.to_str().unwrap(), "check"])
        .env("GATEWARDEN_ADMIN__LISTEN", "")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&tf.display().to_string()), "{text}");
}
