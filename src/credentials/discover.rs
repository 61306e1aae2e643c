//! Where tokens are found when the config names none: the OpenClaw gateway's own file,
//! else a token gatewarden generates once and keeps.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::{CredentialFormat, CredentialSource};

use super::CredentialError;

/// Where OpenClaw itself looks for its config, in its own order of precedence:
/// `$OPENCLAW_CONFIG_PATH`, `$OPENCLAW_STATE_DIR/openclaw.json`,
/// `$OPENCLAW_HOME/.openclaw/openclaw.json` (or `~/.openclaw/openclaw.json`).
pub fn openclaw_candidates() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut c = Vec::new();
    if let Some(p) = env("OPENCLAW_CONFIG_PATH") {
        c.push(p);
    }
    if let Some(d) = env("OPENCLAW_STATE_DIR") {
        c.push(d.join("openclaw.json"));
    }
    if let Some(home) = env("OPENCLAW_HOME").or_else(|| env("HOME")) {
        c.push(home.join(".openclaw").join("openclaw.json"));
    }
    c
}

/// The OpenClaw config gatewarden uses when no credential is configured: the first
/// candidate that is a file — or that exists but cannot be looked at (a 0700 state
/// directory of another user's): skipping it would silently fall back to gatewarden's own
/// token and hide the real problem, which the first read then reports.
pub fn discover_openclaw() -> Option<PathBuf> {
    openclaw_candidates()
        .into_iter()
        .find(|p| match std::fs::metadata(p) {
            Ok(m) => m.is_file(),
            Err(e) => e.kind() == std::io::ErrorKind::PermissionDenied,
        })
        .map(|p| crate::config::absolute(&p))
}

/// Name given to the discovered OpenClaw credential (usable in `upstream_auth.credential`).
pub const DISCOVERED_OPENCLAW: &str = "openclaw";

/// How the effective credential sources were chosen.
#[derive(Debug)]
pub enum Origin {
    Configured,
    /// No credential configured; OpenClaw's own config file was found.
    OpenClaw(PathBuf),
    /// No credential configured and no OpenClaw config: gatewarden's own token file.
    Generated {
        path: PathBuf,
        created: bool,
    },
}

/// The configured sources, or (when none) OpenClaw's config file, or (when none exists)
/// gatewarden's generated token file, created if needed.
pub fn resolve_sources(
    configured: &[CredentialSource],
) -> Result<(Vec<CredentialSource>, Origin), CredentialError> {
    if !configured.is_empty() {
        return Ok((configured.to_vec(), Origin::Configured));
    }
    if let Some(found) = discover_openclaw() {
        let src = CredentialSource {
            name: Some(DISCOVERED_OPENCLAW.into()),
            path: found.clone(),
            format: CredentialFormat::Json5,
            pointer: None,
            key: None,
        };
        return Ok((vec![src], Origin::OpenClaw(found)));
    }
    let path = crate::config::absolute(&default_token_path()?);
    let created = ensure_token_file(&path)?;
    Ok((
        vec![CredentialSource::plain(path.clone())],
        Origin::Generated { path, created },
    ))
}

/// Where the embedded default keeps its generated token.
pub fn default_token_path() -> Result<PathBuf, CredentialError> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })
        .ok_or(CredentialError::NoHome {
            what: "gatewarden/token",
        })?;
    Ok(base.join("gatewarden").join("token"))
}

/// A fresh random token: 32 bytes from the OS CSPRNG, base64url without padding.
pub fn generate_token() -> String {
    use base64::Engine;
    let mut raw = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// Makes sure the generated token file exists (mode 0600, directory 0700), keeping an
/// existing one so the token survives restarts. Returns whether it was created now.
pub fn ensure_token_file(path: &Path) -> Result<bool, CredentialError> {
    use std::io::Write;
    let create_err = |source| CredentialError::Create {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir).map_err(create_err)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            let token = generate_token();
            f.write_all(token.as_bytes())
                .and_then(|_| f.write_all(b"\n"))
                .and_then(|_| f.sync_all())
                .map_err(create_err)?;
            Ok(true)
        }
        // Another instance won the race; its file is as good as ours.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(create_err(e)),
    }
}
