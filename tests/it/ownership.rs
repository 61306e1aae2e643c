//! A gateway's files owned by another user, as deployed: OpenClaw runs as uid 1000 and keeps
//! `openclaw.json` mode 0600 in a state directory it keeps 0700; gatewarden runs as another
//! uid. Root reads everything, so these tests run gatewarden as an unprivileged uid (via
//! `setpriv`) and check that every place that explains a refusal says "cannot read:
//! permission denied", who gatewarden runs as and who owns the file — never "does not
//! exist" or a bare token mismatch.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::binary::{as_user, can_switch_users, Proc};
use common::*;

/// The gateway's uid (OpenClaw's `node` user) and gatewarden's (distroless `nonroot`).
const GATEWAY_UID: u32 = 1000;
const OTHER_UID: u32 = 65532;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
}

/// A temp dir others can enter, holding `state/openclaw.json` as OpenClaw leaves it:
/// owned by the gateway's uid, file 0600, and the state directory `state_mode`.
fn gateway_state(token: &str, state_mode: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let file = write_file(
        &state,
        "openclaw.json",
        &format!(r#"{{"gateway":{{"auth":{{"mode":"token","token":"{token}"}}}}}}"#),
    );
    chmod(&file, 0o600);
    chown(&file, GATEWAY_UID);
    chmod(&state, state_mode);
    chown(&state, GATEWAY_UID);
    (dir, file)
}

fn doctor_as(uid: u32, file: &Path, home: &Path) -> (i32, String) {
    let out = as_user(uid, uid)
        .arg("doctor")
        .args(["--listen", "127.0.0.1:0"])
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("OPENCLAW_CONFIG_PATH", file)
        .env_remove("OPENCLAW_HOME")
        .env_remove("OPENCLAW_STATE_DIR")
        .env_remove("GATEWARDEN_CONFIG")
        .env("GATEWARDEN_ADMIN__LISTEN", "")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `doctor` as another uid: a 0600 file of the gateway's, and the same file inside a 0700
/// state directory, are "cannot be read: permission denied" with both uids and the mode,
/// and the fix — not "does not exist … create it".
#[test]
fn doctor_says_permission_denied_with_both_uids_not_missing() {
    if !can_switch_users() {
        eprintln!("skipped: needs root and setpriv to run gatewarden as another uid");
        return;
    }
    let token = random_token();
    let (dir, file) = gateway_state(&token, 0o755);
    let (code, out) = doctor_as(OTHER_UID, &file, dir.path());
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "{} cannot be read: permission denied (gatewarden runs as uid {OTHER_UID}, the file is owned by uid {GATEWAY_UID} mode 0600); run gatewarden as uid {GATEWAY_UID}",
            file.display()
        )),
        "{out}"
    );
    assert!(!out.contains("does not exist"), "{out}");

    let (dir, file) = gateway_state(&token, 0o700);
    let (code, out) = doctor_as(OTHER_UID, &file, dir.path());
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "{} cannot be read: permission denied (gatewarden runs as uid {OTHER_UID}, its directory {} is owned by uid {GATEWAY_UID} mode 0700 and may not be entered); run gatewarden as uid {GATEWAY_UID}",
            file.display(),
            file.parent().unwrap().display()
        )),
        "{out}"
    );
    assert!(!out.contains("does not exist"), "{out}");
    // As the gateway's own uid, the same file is read.
    let (code, out) = doctor_as(GATEWAY_UID, &file, dir.path());
    assert!(out.contains("fingerprint fp:"), "{code}: {out}");
}

/// The running proxy as another uid: the start-up log says why no credential is loaded,
/// every refusal's `detail` says it too (the client's token was never the problem), and
/// once the operator makes the file readable the poll picks it up and clients pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_credential_is_explained_at_start_and_in_each_refusal() {
    if !can_switch_users() {
        eprintln!("skipped: needs root and setpriv to run gatewarden as another uid");
        return;
    }
    let upstream = start_upstream().await;
    let token = random_token();
    let (_dir, file) = gateway_state(&token, 0o700);
    let cfg = format!(
        "[[credentials]]\npath = \"{}\"\nformat = \"json5\"\n",
        file.display()
    );
    let cfg_dir = tempfile::tempdir().unwrap();
    chmod(cfg_dir.path(), 0o755);
    let cfg_file = write_file(cfg_dir.path(), "gatewarden.toml", &cfg);
    chmod(&cfg_file, 0o644);
    let mut p = Proc::spawn_as(
        OTHER_UID,
        OTHER_UID,
        &[
            "-c",
            cfg_file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.addr.to_string(),
        ],
        &[("GATEWARDEN_CREDENTIALS__POLL_INTERVAL", "200ms")],
    );
    let denied = format!(
        "cannot be read: permission denied (gatewarden runs as uid {OTHER_UID}, its directory {} is owned by uid {GATEWAY_UID} mode 0700 and may not be entered)",
        file.parent().unwrap().display()
    );
    let line = tokio::task::block_in_place(|| p.wait_line("[reload] credentials rejected"));
    assert!(line.contains(&denied), "{line}");
    let line = tokio::task::block_in_place(|| p.wait_line("[auth] no valid credential yet"));
    assert!(
        line.contains("why=no credential loaded: credential file") && line.contains(&denied),
        "{line}"
    );
    let addr = p.listening_addr();

    // Refused — with the real reason in the log, for a header token and an HTTP request.
    let refused = ws_connect(
        addr,
        "/ws",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    if let Ok((mut ws, _)) = refused {
        let _ = next_msg(&mut ws).await;
    }
    let line = tokio::task::block_in_place(|| p.wait_line("[ws] unauthorized"));
    assert!(line.contains("reason=credential_unavailable"), "{line}");
    assert!(
        line.contains("detail=no credential loaded: credential file") && line.contains(&denied),
        "{line}"
    );
    let resp = http_request(
        addr,
        hyper::Request::get(format!("http://{addr}/api"))
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 503);
    let line = tokio::task::block_in_place(|| p.wait_line("[http] unauthorized"));
    assert!(line.contains(&denied), "{line}");

    // The operator fixes it (here: lets others in); the poll applies it.
    chmod(file.parent().unwrap(), 0o755);
    chmod(&file, 0o644);
    tokio::task::block_in_place(|| p.wait_line("[reload] credentials applied"));
    let mut ws = ws_bearer(addr, &token).await;
    futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::text("ok"))
        .await
        .unwrap();
    assert_eq!(
        next_msg(&mut ws).await,
        Some(tokio_tungstenite::tungstenite::Message::text("ok"))
    );
}
