//! `gatewarden doctor`: each situation is built in a temp dir and diagnosed by the binary.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

struct Out {
    code: i32,
    text: String,
}

/// Runs `gatewarden doctor` with HOME isolated and no OpenClaw variables.
fn doctor(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatewarden"));
    cmd.arg("doctor");
    if !args.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    cmd.args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env_remove("OPENCLAW_HOME")
        .env_remove("OPENCLAW_STATE_DIR")
        .env_remove("OPENCLAW_CONFIG_PATH")
        .env_remove("GATEWARDEN_CONFIG")
        .env("GATEWARDEN_ADMIN__LISTEN", "")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn openclaw(dir: &Path, token: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    let auth = token.map(|t| format!("token: '{t}'")).unwrap_or_default();
    std::fs::write(
        dir.join("openclaw.json"),
        format!("{{ gateway: {{ port: 18790, auth: {{ mode: 'token', {auth} }} }} }}"),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("openclaw.json"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
}

/// doctor asks the gateway: a `connect` with the token gatewarden would present, accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_setup_exits_0() {
    let home = tempfile::tempdir().unwrap();
    let t = random_token();
    let gw = openclaw::start(&t).await;
    openclaw(&home.path().join(".openclaw"), Some(&t));
    let out = tokio::task::block_in_place(|| {
        doctor(home.path(), &["--upstream", &gw.addr.to_string()], &[])
    });
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(out.text.contains("using OpenClaw's config"), "{}", out.text);
    assert!(
        out.text.contains("accepts the token gatewarden presents"),
        "{}",
        out.text
    );
    let probe = &gw.connects()[0];
    assert_eq!(probe["params"]["client"]["id"], "openclaw-probe");
    assert_eq!(probe["params"]["scopes"], serde_json::json!([]));
    assert!(!out.text.contains(&t), "no token in the output");
}

/// The gateway runs with another token than its config holds (a runtime-only token, another
/// profile on the port, a config changed without a restart): the config alone looks fine,
/// only the gateway can say, and doctor says what it answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_the_gateways_own_answer_to_a_mismatched_token() {
    let home = tempfile::tempdir().unwrap();
    let configured = random_token();
    let running = random_token();
    let gw = openclaw::start(&running).await;
    openclaw(&home.path().join(".openclaw"), Some(&configured));
    let out = tokio::task::block_in_place(|| {
        doctor(home.path(), &["--upstream", &gw.addr.to_string()], &[])
    });
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(
        out.text.contains("refuses the token gatewarden presents")
            && out.text.contains("token_mismatch")
            && out.text.contains(&format!(
                "fp:{}",
                gatewarden::Fingerprint::of(configured.as_bytes())
            )),
        "{}",
        out.text
    );
    assert!(out.text.contains("runtime-only token"), "{}", out.text);
    assert!(!out.text.contains(&configured) && !out.text.contains(&running));
}

/// A WebSocket upstream that does not speak first is not an OpenClaw gateway: said so,
/// not reported as a gateway refusing tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_does_not_send_a_challenge_is_not_called_openclaw() {
    let up = start_upstream().await;
    let home = tempfile::tempdir().unwrap();
    let tf = write_file(home.path(), "token", &random_token());
    let out = tokio::task::block_in_place(|| {
        doctor(
            home.path(),
            &[
                "--upstream",
                &up.addr.to_string(),
                "--token-file",
                tf.to_str().unwrap(),
            ],
            &[],
        )
    });
    assert!(
        out.text.contains("is not an OpenClaw gateway"),
        "{}",
        out.text
    );
}

/// doctor run beside a running gatewarden does not call its own listen port taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listen_port_held_by_the_running_gatewarden_is_not_a_conflict() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let tf = write_file(dir.path(), "token", &random_token());
    let p = serve(config_for(upstream.addr, &tf)).await;
    let args = [
        "--token-file",
        tf.to_str().unwrap(),
        "--admin-listen",
        &p.admin.unwrap().to_string(),
        "--listen",
        &p.addr.to_string(),
    ];
    let out = tokio::task::block_in_place(|| doctor(dir.path(), &args, &[]));
    assert!(
        out.text.contains(&format!(
            "listen {} is held by the running gatewarden",
            p.addr
        )),
        "{}",
        out.text
    );
}

#[test]
fn gateway_without_a_persisted_token_is_a_problem() {
    let home = tempfile::tempdir().unwrap();
    openclaw(&home.path().join(".openclaw"), None);
    let out = doctor(home.path(), &[], &[]);
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(
        out.text.contains("problem") && out.text.contains("runtime-only token"),
        "{}",
        out.text
    );
    assert!(
        out.text.contains("openclaw config set gateway.auth.token"),
        "{}",
        out.text
    );
}

#[test]
fn recently_changed_and_group_readable_files_are_warnings() {
    let home = tempfile::tempdir().unwrap();
    let tf = write_file(home.path(), "token", &random_token());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = doctor(home.path(), &["--token-file", tf.to_str().unwrap()], &[]);
    assert!(
        out.text.contains("readable by group/others (mode 644)"),
        "{}",
        out.text
    );
    assert!(out.text.contains("chmod 600"), "{}", out.text);
    assert!(
        out.text.contains("(a restart or rotation?)"),
        "{}",
        out.text
    );
}

#[test]
fn dev_and_prod_profiles_with_different_tokens() {
    let home = tempfile::tempdir().unwrap();
    let (prod, dev) = (random_token(), random_token());
    openclaw(&home.path().join(".openclaw"), Some(&prod));
    openclaw(&home.path().join(".openclaw-dev"), Some(&dev));
    let out = doctor(home.path(), &[], &[]);
    assert!(
        out.text
            .contains("dev and prod OpenClaw profiles have different tokens"),
        "{}",
        out.text
    );
    assert!(
        out.text.contains("gatewarden reads prod (~/.openclaw)"),
        "{}",
        out.text
    );
    // The dev token is recognised for what it is — and never printed.
    let out = doctor(home.path(), &["--token", &dev], &[]);
    assert!(
        out.text
            .contains("is the token of the other profile: dev (~/.openclaw-dev)"),
        "{}",
        out.text
    );
    assert!(!out.text.contains(&dev) && !out.text.contains(&prod));
    let out = doctor(home.path(), &["--token", &prod], &[]);
    assert!(out.text.contains("is the current token of"), "{}", out.text);
    let out = doctor(home.path(), &["--token", "something-else"], &[]);
    assert!(out.text.contains("is unknown"), "{}", out.text);
}

#[test]
fn named_client_token_is_identified() {
    let home = tempfile::tempdir().unwrap();
    let alice = random_token();
    let f = write_file(
        home.path(),
        "clients",
        &format!("alice {}\n", gatewarden::hash_line(alice.as_bytes())),
    );
    let cfg = write_file(
        home.path(),
        "gw.toml",
        &format!(
            "[[credentials]]\npath = \"{}\"\nformat = \"lines\"\n",
            f.display()
        ),
    );
    let out = doctor(
        home.path(),
        &["-c", cfg.to_str().unwrap(), "--token", &alice],
        &[],
    );
    assert!(out.text.contains("(named client alice)"), "{}", out.text);
}

#[test]
fn credential_file_on_the_containers_writable_layer() {
    let home = tempfile::tempdir().unwrap();
    let t = random_token();
    openclaw(&home.path().join(".openclaw"), Some(&t));
    let overlay = write_file(
        home.path(),
        "mountinfo",
        "22 1 0:21 / / rw,relatime - overlay overlay rw\n",
    );
    let out = doctor(
        home.path(),
        &["--mountinfo", overlay.to_str().unwrap()],
        &[],
    );
    assert!(
        out.text.contains("on the container's writable layer"),
        "{}",
        out.text
    );
    assert!(
        out.text.contains("docker compose down && up"),
        "{}",
        out.text
    );
    let vol = write_file(
        home.path(),
        "mountinfo2",
        &format!(
            "22 1 0:21 / / rw - overlay overlay rw\n40 22 8:1 /v {} rw - ext4 /dev/sda1 rw\n",
            std::fs::canonicalize(home.path().join(".openclaw"))
                .unwrap()
                .display()
        ),
    );
    let out = doctor(home.path(), &["--mountinfo", vol.to_str().unwrap()], &[]);
    assert!(!out.text.contains("writable layer"), "{}", out.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_token_and_churn_from_the_running_instance() {
    let upstream = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens: Vec<String> = (0..4).map(|_| random_token()).collect();
    let tf = write_file(dir.path(), "token", &tokens[0]);
    let config = config_for(upstream.addr, &tf);
    let p = serve(config).await;
    let admin = p.admin.unwrap().to_string();
    for (i, t) in tokens.iter().enumerate().skip(1) {
        std::fs::write(&tf, t).unwrap();
        wait_log(&[
            "[reload] credentials applied",
            &format!("generation={}", i + 1),
            &format!("source={}", tf.display()),
        ])
        .await;
    }
    let args = [
        "--token-file",
        tf.to_str().unwrap(),
        "--admin-listen",
        &admin,
        "--token",
        &tokens[1],
    ];
    let out = tokio::task::block_in_place(|| doctor(dir.path(), &args, &[]));
    assert!(
        out.text.contains("is stale: valid until generation 2"),
        "{}",
        out.text
    );
    assert!(
        out.text.contains("credential generation 4")
            && out.text.contains("the token keeps changing"),
        "{}",
        out.text
    );
    assert!(
        !tokens.iter().any(|t| out.text.contains(t.as_str())),
        "no token in the output"
    );
}

#[test]
fn a_token_starting_with_a_hyphen_is_accepted() {
    let home = tempfile::tempdir().unwrap();
    let token = "-starts-with-a-hyphen_0123456789abcdefghijk";
    let tf = write_file(home.path(), "token", token);
    let out = doctor(
        home.path(),
        &["--token-file", tf.to_str().unwrap(), "--token", token],
        &[],
    );
    assert!(out.text.contains("is the current token of"), "{}", out.text);
    assert!(!out.text.contains(token));
}
