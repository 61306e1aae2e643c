//! OpenClaw's dev and prod profiles on this machine, and which credential a presented token
//! is: current, stale (a previous generation), the other profile's, or unknown.

use std::path::{Path, PathBuf};

use crate::config::{CredentialFormat, CredentialSource};
use crate::credentials::{self, Credential, Fingerprint, Presented};

use super::{Level, Report};

/// The OpenClaw profiles on this machine: (label, openclaw.json path).
fn profile_files() -> Vec<(String, PathBuf)> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut out = Vec::new();
    if let Some(home) = env("OPENCLAW_HOME").or_else(|| env("HOME")) {
        out.push((
            "prod (~/.openclaw)".to_string(),
            home.join(".openclaw/openclaw.json"),
        ));
        out.push((
            "dev (~/.openclaw-dev)".to_string(),
            home.join(".openclaw-dev/openclaw.json"),
        ));
    }
    if let Some(d) = env("OPENCLAW_STATE_DIR") {
        out.push(("$OPENCLAW_STATE_DIR".to_string(), d.join("openclaw.json")));
    }
    out.retain(|(_, p)| p.is_file());
    out
}

fn profile_token(p: &Path) -> Option<Credential> {
    let src = CredentialSource {
        name: None,
        path: p.to_path_buf(),
        format: CredentialFormat::Json5,
        ..CredentialSource::plain(p)
    };
    credentials::read_source(&src, false, crate::files::DEFAULT_MAX_BYTES)
        .ok()?
        .entries
        .into_iter()
        .next()
}

pub(super) fn profiles(sources: &[CredentialSource], r: &mut Report) {
    let found: Vec<(String, PathBuf, Credential)> = profile_files()
        .into_iter()
        .filter_map(|(l, p)| profile_token(&p).map(|c| (l, p, c)))
        .collect();
    if found.len() < 2 {
        return;
    }
    let distinct = found
        .iter()
        .any(|(_, _, c)| c.fingerprint != found[0].2.fingerprint);
    if !distinct {
        return;
    }
    let read: Vec<String> = found
        .iter()
        .filter(|(_, p, _)| sources.iter().any(|s| &s.path == p))
        .map(|(l, _, _)| l.clone())
        .collect();
    let list: Vec<String> = found
        .iter()
        .map(|(l, p, c)| format!("{l} {} fp:{}", p.display(), c.fingerprint))
        .collect();
    r.add(
        Level::Warning,
        format!(
            "dev and prod OpenClaw profiles have different tokens: {}; gatewarden reads {}",
            list.join(", "),
            if read.is_empty() { "neither".to_string() } else { read.join(", ") }
        ),
        Some("a client configured for one profile fails against the other with token_mismatch; point gatewarden and the clients at the same profile"),
    );
}

pub(super) fn identify(
    token: &str,
    loaded: &[(CredentialSource, Vec<Credential>)],
    running: Option<&serde_json::Value>,
    sources: &[CredentialSource],
    r: &mut Report,
) {
    let presented = Presented::new(token.as_bytes());
    let fp = Fingerprint::of(token.as_bytes()).to_string();
    for (src, entries) in loaded {
        for c in entries {
            if c.matches(&presented) {
                let who = c
                    .client
                    .as_deref()
                    .map(|n| format!(" (named client {n})"))
                    .unwrap_or_default();
                r.add(
                    Level::Ok,
                    format!(
                        "token fp:{fp} is the current token of {}{who}",
                        src.path.display()
                    ),
                    None,
                );
                return;
            }
        }
    }
    if let Some(retired) = running.and_then(|v| v["retired"].as_array()) {
        if let Some(rt) = retired.iter().find(|e| e["fingerprint"] == fp.as_str()) {
            r.add(
                Level::Problem,
                format!(
                    "token fp:{fp} is stale: valid until generation {} (grace left {}s)",
                    rt["generation"], rt["grace_left_s"]
                ),
                Some("the client kept a token from before a restart or rotation; give it the current token"),
            );
            return;
        }
    }
    for (label, p) in profile_files() {
        if sources.iter().any(|s| s.path == p) {
            continue;
        }
        if profile_token(&p).is_some_and(|c| c.matches(&presented)) {
            r.add(
                Level::Problem,
                format!(
                    "token fp:{fp} is the token of the other profile: {label} {}",
                    p.display()
                ),
                Some("the client is configured for the other OpenClaw profile (dev vs prod)"),
            );
            return;
        }
    }
    r.add(
        Level::Problem,
        format!("token fp:{fp} is unknown: no credential, previous generation or profile has it"),
        Some("the client holds a token from elsewhere (a recreated volume, a regenerated runtime-only token?)"),
    );
}
