//! Credential hot reload: every way a file gets replaced, with a live authorized WebSocket
//! that must survive each; rotation grace and stale tokens; keep-last-good; polling;
//! named client tokens; revocation. Every wait is on a log line, never a fixed sleep.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use gatewarden::config::{Config, CredentialFormat, CredentialSource, OnRevoke, Secs, TokenSource};
use gatewarden::Fingerprint;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn fp(token: &str) -> String {
    format!("fp:{}", Fingerprint::of(token.as_bytes()))
}

struct Setup {
    proxy: Running,
    _upstream: TestUpstream,
    root: tempfile::TempDir,
    dir: PathBuf,
    file: PathBuf,
}

/// gatewarden with one credential file at `<tmp>/creds/token` (plain unless changed), with
/// upgrade-time sources only so a rejection is decided at the upgrade.
async fn setup(initial: Option<&str>, tweak: impl FnOnce(&mut Config, &Path)) -> Setup {
    let upstream = start_upstream().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("creds");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("token");
    if let Some(t) = initial {
        std::fs::write(&file, format!("{t}\n")).unwrap();
    }
    let mut config = config_for(upstream.addr, &file);
    config.auth.sources = Some(vec![TokenSource::Header, TokenSource::Query]);
    tweak(&mut config, &file);
    let proxy = serve(config).await;
    Setup {
        proxy,
        _upstream: upstream,
        root,
        dir,
        file,
    }
}

async fn open(addr: std::net::SocketAddr, token: &str) -> WsClient {
    let mut ws = ws_bearer(addr, token).await;
    assert_echo(&mut ws, "hello").await;
    ws
}

/// Connects and expects gatewarden's own 1008 rejection.
async fn refused(addr: std::net::SocketAddr, token: &str) {
    let mut ws = ws_bearer(addr, token).await;
    match next_msg(&mut ws).await {
        Some(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::Policy),
        other => panic!("expected a 1008 rejection, got {other:?}"),
    }
}

async fn applied(file: &Path, token: &str) -> String {
    wait_log(&[
        "[reload] credentials applied",
        &format!("source={}", file.display()),
        &format!("current={}", fp(token)),
    ])
    .await
}

/// The rotation every watching case ends with: the live tunnel survives, the new token works.
async fn after_rotation(s: &Setup, live: &mut WsClient, new: &str) {
    assert_echo(live, "still here after the reload").await;
    let mut fresh = open(s.proxy.addr, new).await;
    assert_echo(&mut fresh, "new token works").await;
}

#[tokio::test]
async fn in_place_rewrite() {
    let (a, b) = (random_token(), random_token());
    let s = setup(Some(&a), |_, _| {}).await;
    let mut live = open(s.proxy.addr, &a).await;
    std::fs::write(&s.file, format!("{b}\n")).unwrap(); // truncate + write, like `echo new > file`
    let line = applied(&s.file, &b).await;
    assert!(line.contains(&format!("previous={}", fp(&a))), "{line}");
    assert!(line.contains("generation=2"), "{line}");
    after_rotation(&s, &mut live, &b).await;
}

#[tokio::test]
async fn temp_file_and_rename() {
    let (a, b) = (random_token(), random_token());
    let s = setup(Some(&a), |_, _| {}).await;
    let mut live = open(s.proxy.addr, &a).await;
    let tmp = s.dir.join(".token.tmp");
    std::fs::write(&tmp, &b).unwrap();
    std::fs::rename(&tmp, &s.file).unwrap();
    applied(&s.file, &b).await;
    after_rotation(&s, &mut live, &b).await;
}

#[tokio::test]
async fn delete_then_create_later() {
    let (a, b) = (random_token(), random_token());
    let s = setup(Some(&a), |_, _| {}).await;
    let mut live = open(s.proxy.addr, &a).await;
    std::fs::remove_file(&s.file).unwrap();
    let line = wait_log(&[
        "[reload] credentials rejected",
        &format!("source={}", s.file.display()),
        "does not exist",
        "keeping generation=1",
    ])
    .await;
    assert!(!line.contains(&a));
    // Keep last good: the old token still opens new connections while the file is gone.
    let mut during = open(s.proxy.addr, &a).await;
    assert_echo(&mut during, "last good kept").await;
    std::fs::write(&s.file, &b).unwrap();
    applied(&s.file, &b).await;
    after_rotation(&s, &mut live, &b).await;
}

/// Lays out a Kubernetes Secret volume: `token -> ..data/token`, `..data -> ..<timestamp>`.
fn k8s_publish(dir: &Path, stamp: &str, token: &str) {
    let target = dir.join(stamp);
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("token"), token).unwrap();
    let tmp_link = dir.join("..data_tmp");
    std::os::unix::fs::symlink(stamp, &tmp_link).unwrap();
    // The atomic swap the kubelet does.
    std::fs::rename(&tmp_link, dir.join("..data")).unwrap();
}

#[tokio::test]
async fn kubernetes_data_symlink_swap() {
    let (a, b) = (random_token(), random_token());
    let s = setup(None, |_, _| {}).await;
    // Build the projected-volume layout before the file is valid: first publication.
    k8s_publish(&s.dir, "..2026_11_27_10_00_00.1", &a);
    std::os::unix::fs::symlink("..data/token", &s.file).unwrap();
    applied(&s.file, &a).await;
    let mut live = open(s.proxy.addr, &a).await;
    k8s_publish(&s.dir, "..2026_11_27_10_05_00.2", &b);
    std::fs::remove_dir_all(s.dir.join("..2026_11_27_10_00_00.1")).unwrap();
    applied(&s.file, &b).await;
    after_rotation(&s, &mut live, &b).await;
}

#[tokio::test]
async fn file_missing_at_start_appears_later() {
    let (other, b) = (random_token(), random_token());
    let extra = tempfile::tempdir().unwrap();
    let other_file = write_file(extra.path(), "other", &other);
    let s = setup(None, |c, _| {
        c.credentials
            .sources
            .push(CredentialSource::plain(&other_file))
    })
    .await;
    wait_log(&[
        "[reload] credentials rejected",
        &format!("source={}", s.file.display()),
        "keeping generation=0",
    ])
    .await;
    // Another source's client is connected throughout.
    let mut live = open(s.proxy.addr, &other).await;
    refused(s.proxy.addr, &b).await;
    std::fs::write(&s.file, &b).unwrap();
    let line = applied(&s.file, &b).await;
    assert!(
        line.contains("generation=2") && line.contains("previous=-"),
        "{line}"
    );
    after_rotation(&s, &mut live, &b).await;
}

#[tokio::test]
async fn parent_directory_removed_and_recreated() {
    let (a, b) = (random_token(), random_token());
    let s = setup(Some(&a), |_, _| {}).await;
    let mut live = open(s.proxy.addr, &a).await;
    // A recreated Docker volume: the whole directory goes away and comes back.
    std::fs::remove_dir_all(&s.dir).unwrap();
    wait_log(&[
        "[reload] credentials rejected",
        &format!("source={}", s.file.display()),
        "does not exist",
    ])
    .await;
    std::fs::create_dir(&s.dir).unwrap();
    std::fs::write(&s.file, &b).unwrap();
    applied(&s.file, &b).await;
    after_rotation(&s, &mut live, &b).await;
    // The new directory is watched too: a further rotation is seen.
    let c = random_token();
    std::fs::write(&s.file, &c).unwrap();
    applied(&s.file, &c).await;
    drop(s.root);
}

#[tokio::test]
async fn rotation_grace_accepts_the_old_token_then_calls_it_stale() {
    let (a, b) = (random_token(), random_token());
    let s = setup(Some(&a), |c, _| c.auth.grace = Secs(Duration::from_secs(2))).await;
    std::fs::write(&s.file, &b).unwrap();
    applied(&s.file, &b).await;
    // Within grace: accepted, with a warning naming the old generation.
    let mut old = open(s.proxy.addr, &a).await;
    let line = wait_log(&[
        "[ws] accepted stale token",
        &format!("presented={}", fp(&a)),
    ])
    .await;
    assert!(
        line.contains("generation=1") && line.contains("grace_left="),
        "{line}"
    );
    // After grace: refused, and the log says why — a token from before the rotation.
    wait_log(&[
        "[reload] grace period over",
        &format!("previous={}", fp(&a)),
    ])
    .await;
    refused(s.proxy.addr, &a).await;
    let line = wait_log(&[
        "[ws] unauthorized",
        "reason=token_stale",
        &format!("presented={}", fp(&a)),
    ])
    .await;
    assert!(line.contains("generation=1"), "{line}");
    // on_revoke = keep (default): the connection opened within grace is not touched.
    assert_echo(&mut old, "kept").await;
}

/// Grace covers the previous token only: after A→B→C→D within a second, C (generation n-1)
/// is accepted with a warning, while A and B — rotated away twice or more, as a leaked token
/// is — are refused as `token_stale` although the grace period has not run out. Enough
/// older rotations to pass the old 64-entry history still say `token_stale`, not a bare
/// mismatch.
#[tokio::test]
async fn grace_covers_only_the_previous_token() {
    let tokens: Vec<String> = (0..4).map(|_| random_token()).collect();
    let s = setup(Some(&tokens[0]), |_, _| {}).await;
    for t in &tokens[1..] {
        let tmp = s.dir.join(".rotating");
        std::fs::write(&tmp, t).unwrap();
        std::fs::rename(&tmp, &s.file).unwrap();
        applied(&s.file, t).await;
    }
    let (a, b, c, d) = (&tokens[0], &tokens[1], &tokens[2], &tokens[3]);
    let mut current = open(s.proxy.addr, d).await;
    assert_echo(&mut current, "current").await;
    let mut previous = open(s.proxy.addr, c).await;
    assert_echo(&mut previous, "previous, within grace").await;
    wait_log(&["[ws] accepted stale token", &format!("presented={}", fp(c))]).await;
    for (t, generation) in [(a, 1), (b, 2)] {
        refused(s.proxy.addr, t).await;
        let line = wait_log(&["reason=token_stale", &format!("presented={}", fp(t))]).await;
        assert!(line.contains(&format!("generation={generation}")), "{line}");
    }
    // Seventy more rotations: the first tokens are still known as stale.
    for _ in 0..70 {
        let t = random_token();
        let tmp = s.dir.join(".rotating");
        std::fs::write(&tmp, &t).unwrap();
        std::fs::rename(&tmp, &s.file).unwrap();
        applied(&s.file, &t).await;
    }
    // Presented in the query this time, to tell this refusal's line from the first one's.
    let (mut ws, _) = ws_connect(s.proxy.addr, &format!("/ws?token={a}"), &[])
        .await
        .unwrap();
    assert!(matches!(
        next_msg(&mut ws).await,
        Some(Message::Close(Some(_)))
    ));
    wait_log(&[
        "reason=token_stale",
        &format!("presented={}", fp(a)),
        "source=query",
    ])
    .await;
}

#[tokio::test]
async fn grace_zero_makes_the_old_token_stale_at_once() {
    let (a, b) = (random_token(), random_token());
    let s = setup(Some(&a), |c, _| c.auth.grace = Secs(Duration::ZERO)).await;
    std::fs::write(&s.file, &b).unwrap();
    applied(&s.file, &b).await;
    refused(s.proxy.addr, &a).await;
    wait_log(&["reason=token_stale", &format!("presented={}", fp(&a))]).await;
}

#[tokio::test]
async fn broken_files_keep_the_last_good_credentials() {
    let a = random_token();
    let s = setup(Some(&a), |_, _| {}).await;
    let mut live = open(s.proxy.addr, &a).await;
    std::fs::write(&s.file, "   \n").unwrap();
    wait_log(&[
        "[reload] credentials rejected",
        &format!("source={}", s.file.display()),
        "is empty",
        "keeping generation=1",
    ])
    .await;
    let mut ws = open(s.proxy.addr, &a).await;
    assert_echo(&mut ws, "empty file ignored").await;
    std::fs::write(&s.file, [0xff, 0xfe, 0x00]).unwrap();
    wait_log(&[
        "[reload] credentials rejected",
        &format!("source={}", s.file.display()),
        "not valid UTF-8",
    ])
    .await;
    let mut ws = open(s.proxy.addr, &a).await;
    assert_echo(&mut ws, "garbage ignored").await;
    assert_echo(&mut live, "live one untouched").await;
}

#[tokio::test]
async fn broken_json5_keeps_the_last_good_credentials() {
    let a = random_token();
    let s = setup(None, |c, file| {
        c.credentials.sources = vec![CredentialSource {
            format: CredentialFormat::Json5,
            ..CredentialSource::plain(file)
        }]
    })
    .await;
    std::fs::write(
        &s.file,
        format!("{{ gateway: {{ auth: {{ token: '{a}' }} }} }}"),
    )
    .unwrap();
    applied(&s.file, &a).await;
    std::fs::write(&s.file, "{ gateway: { auth: { token: 'half-writ").unwrap();
    let line = wait_log(&["[reload] credentials rejected", "not valid JSON5"]).await;
    assert!(
        !line.contains("half-writ"),
        "parse errors never quote the file: {line}"
    );
    std::fs::write(&s.file, "{ gateway: { auth: {} } }").unwrap();
    wait_log(&[
        "[reload] credentials rejected",
        "no token at /gateway/auth/token",
    ])
    .await;
    let mut ws = open(s.proxy.addr, &a).await;
    assert_echo(&mut ws, "still the last good").await;
}

#[tokio::test]
async fn hundred_rapid_rewrites_end_with_the_last_one() {
    let first = random_token();
    let s = setup(Some(&first), |_, _| {}).await;
    let mut live = open(s.proxy.addr, &first).await;
    let tokens: Vec<String> = (0..100).map(|_| random_token()).collect();
    for (i, t) in tokens.iter().enumerate() {
        if i % 2 == 0 {
            std::fs::write(&s.file, t).unwrap();
        } else {
            let tmp = s.dir.join(format!(".tmp{i}"));
            std::fs::write(&tmp, t).unwrap();
            std::fs::rename(&tmp, &s.file).unwrap();
        }
    }
    let last = tokens.last().unwrap();
    applied(&s.file, last).await;
    let current: Vec<String> = s
        .proxy
        .creds
        .load()
        .entries()
        .iter()
        .map(|c| c.fingerprint.to_string())
        .collect();
    assert_eq!(
        current,
        vec![Fingerprint::of(last.as_bytes()).to_string()],
        "exactly the last content is current"
    );
    let mut ws = open(s.proxy.addr, last).await;
    assert_echo(&mut ws, "last wins").await;
    assert_echo(&mut live, "survived 100 rewrites").await;
}

#[tokio::test]
async fn polling_without_inotify_applies_changes_and_ignores_touches() {
    let (a, b) = (random_token(), random_token());
    let s = setup(Some(&a), |c, _| {
        c.credentials.watch = false;
        c.credentials.poll_interval = Secs(Duration::from_millis(100));
    })
    .await;
    let mut live = open(s.proxy.addr, &a).await;
    std::fs::write(&s.file, &b).unwrap();
    let line = applied(&s.file, &b).await;
    assert!(line.contains("generation=2"), "{line}");
    after_rotation(&s, &mut live, &b).await;
    // Same content, new mtime and inode: the poll notices, and applies nothing.
    let tmp = s.dir.join(".same");
    std::fs::write(&tmp, &b).unwrap();
    std::fs::rename(&tmp, &s.file).unwrap();
    wait_log(&[
        "[reload] poll saw a change",
        &format!("source={}", s.file.display()),
        "result=unchanged",
    ])
    .await;
    let c = random_token();
    std::fs::write(&s.file, &c).unwrap();
    let line = applied(&s.file, &c).await;
    assert!(
        line.contains("generation=3"),
        "the touch was not re-applied: {line}"
    );
}

fn lines_source(c: &mut Config, file: &Path) {
    c.credentials.sources = vec![CredentialSource {
        name: Some("clients".into()),
        format: CredentialFormat::Lines,
        ..CredentialSource::plain(file)
    }];
}

#[tokio::test]
async fn named_client_tokens_plain_and_hashed() {
    let (alice, bob) = (random_token(), random_token());
    let bob_hash = gatewarden::hash_line(bob.as_bytes());
    let s = setup(None, lines_source).await;
    std::fs::write(
        &s.file,
        format!("# clients\n\nalice {alice}\nthis line is malformed\nbob {bob_hash}\n"),
    )
    .unwrap();
    wait_log(&["[reload]", "line 4", "skipped"]).await;
    applied(&s.file, &alice).await;
    let _a = open(s.proxy.addr, &alice).await;
    wait_log(&["[ws] connected", "client=alice"]).await;
    let _b = open(s.proxy.addr, &bob).await;
    wait_log(&[
        "[ws] connected",
        "client=bob",
        &format!("presented={}", fp(&bob)),
    ])
    .await;
    // A duplicate name fails the whole file; the last good set stays.
    std::fs::write(&s.file, format!("alice {alice}\nalice {bob}\n")).unwrap();
    wait_log(&[
        "[reload] credentials rejected",
        "`alice` appears twice (lines 1 and 2)",
    ])
    .await;
    let _b2 = open(s.proxy.addr, &bob).await;
}

#[tokio::test]
async fn revocation_closes_only_the_revoked_clients_connections() {
    revocation_closes_only_the_revoked(true).await
}

/// The same with the tunnels relayed by their own tasks instead of the worker loop.
#[tokio::test]
async fn revocation_closes_tunnels_relayed_by_their_own_task() {
    revocation_closes_only_the_revoked(false).await
}

async fn revocation_closes_only_the_revoked(worker_loop: bool) {
    let (alice, bob) = (random_token(), random_token());
    let s = setup(None, |c, f| {
        lines_source(c, f);
        c.auth.on_revoke = OnRevoke::Close;
        c.auth.grace = Secs(Duration::ZERO);
        c.splice.worker_loop = worker_loop;
    })
    .await;
    std::fs::write(&s.file, format!("alice {alice}\nbob {bob}\n")).unwrap();
    applied(&s.file, &alice).await;
    let mut a = open(s.proxy.addr, &alice).await;
    let mut b = open(s.proxy.addr, &bob).await;
    // Alice is removed from the file.
    std::fs::write(&s.file, format!("bob {bob}\n")).unwrap();
    match next_msg(&mut a).await {
        Some(Message::Close(Some(f))) => {
            assert_eq!(f.code, CloseCode::Policy);
            assert_eq!(f.reason, "token revoked");
        }
        other => panic!("alice expected close 1008, got {other:?}"),
    }
    wait_log(&["[ws] revoked", "reason=token_revoked", "client=alice"]).await;
    wait_log(&["[ws] closed", "code=1008", "by=gatewarden"]).await;
    assert_echo(&mut b, "bob is untouched").await;
}

#[tokio::test]
async fn revocation_waits_for_the_grace_period() {
    let (a, b) = (random_token(), random_token());
    let s = setup(Some(&a), |c, _| {
        c.auth.on_revoke = OnRevoke::Close;
        c.auth.grace = Secs(Duration::from_millis(500));
    })
    .await;
    let mut live = open(s.proxy.addr, &a).await;
    std::fs::write(&s.file, &b).unwrap();
    applied(&s.file, &b).await;
    // Still usable inside the grace period...
    assert_echo(&mut live, "inside grace").await;
    // ...then closed when it ends.
    match next_msg(&mut live).await {
        Some(Message::Close(Some(f))) => assert_eq!(f.reason, "token revoked"),
        other => panic!("expected revocation after grace, got {other:?}"),
    }
}
