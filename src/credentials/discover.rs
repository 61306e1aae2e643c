//! Where tokens are found when the config names none: the OpenClaw gateway's own file,
//! else a token gatewarden generates once and keeps.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::{CredentialFormat, CredentialSource};

use super::CredentialError;

/// The one config OpenClaw itself would use: `$OPENCLAW_CONFIG_PATH`, else
/// `$OPENCLAW_STATE_DIR/openclaw.json`, else `$OPENCLAW_HOME/.openclaw/openclaw.json` (or
/// `~/.openclaw/openclaw.json`). The first that is *set* decides, there or not: a state
/// directory named but still empty is waited for, never swapped for the one in `~`, which
/// belongs to another gateway (the other profile is exactly the mismatch users hit).
pub(crate) fn openclaw_config_path() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("OPENCLAW_CONFIG_PATH")
        .or_else(|| env("OPENCLAW_STATE_DIR").map(|d| d.join("openclaw.json")))
        .or_else(|| {
            let home = env("OPENCLAW_HOME").or_else(|| env("HOME"))?;
            Some(home.join(".openclaw").join("openclaw.json"))
        })
}

/// The OpenClaw config gatewarden uses when no credential is configured, when it is there:
/// a file — or a path that exists but cannot be looked at (a 0700 state directory of
/// another user's): treating it as absent would silently fall back to gatewarden's own
/// token and hide the real problem, which the first read then reports.
pub(crate) fn discover_openclaw() -> Option<PathBuf> {
    openclaw_config_path()
        .filter(|p| match std::fs::metadata(p) {
            Ok(m) => m.is_file(),
            Err(e) => e.kind() == std::io::ErrorKind::PermissionDenied,
        })
        .map(|p| crate::config::absolute(&p))
}

/// Name given to the discovered OpenClaw credential (usable in `upstream_auth.credential`).
pub(crate) const DISCOVERED_OPENCLAW: &str = "openclaw";

/// Whether this machine names an OpenClaw gateway's state even though its config is not
/// there (yet): one of OpenClaw's own environment variables is set, or `~/.openclaw` exists.
/// Then the gateway is expected to write its config (a gateway that starts after
/// gatewarden, a fresh volume), and gatewarden waits for it rather than invent a token.
pub(crate) fn openclaw_expected() -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    if [
        "OPENCLAW_CONFIG_PATH",
        "OPENCLAW_STATE_DIR",
        "OPENCLAW_HOME",
    ]
    .iter()
    .any(|k| set(k))
    {
        return true;
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .is_some_and(|h| PathBuf::from(h).join(".openclaw").is_dir())
}

/// Where the credentials come from when the config names none, decided without touching
/// the disk beyond looking (the proxy, `check` and `doctor` all decide it this way).
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    Configured,
    /// No credential configured; OpenClaw's own config file was found.
    OpenClaw(PathBuf),
    /// No credential configured and OpenClaw's config not there yet, though OpenClaw is
    /// expected ([`openclaw_expected`]): its path is watched until it appears.
    AwaitingOpenClaw(PathBuf),
    /// No credential configured and no OpenClaw here: gatewarden's own token file.
    Generated {
        path: PathBuf,
        /// Made just now (only [`resolve_sources`] makes it).
        created: bool,
    },
}

impl Origin {
    /// The sources this origin reads (the configured ones for `Configured`).
    pub(crate) fn sources(&self, configured: &[CredentialSource]) -> Vec<CredentialSource> {
        let openclaw = |path: &Path| CredentialSource {
            name: Some(DISCOVERED_OPENCLAW.into()),
            path: path.to_path_buf(),
            format: CredentialFormat::Json5,
            ..CredentialSource::plain(path)
        };
        match self {
            Origin::Configured => configured.to_vec(),
            Origin::OpenClaw(p) | Origin::AwaitingOpenClaw(p) => vec![openclaw(p)],
            Origin::Generated { path, .. } => vec![CredentialSource::plain(path.clone())],
        }
    }
}

/// The origin of the credentials, without creating anything.
pub(crate) fn plan(configured: &[CredentialSource]) -> Result<Origin, CredentialError> {
    if !configured.is_empty() {
        return Ok(Origin::Configured);
    }
    if let Some(found) = discover_openclaw() {
        return Ok(Origin::OpenClaw(found));
    }
    if openclaw_expected() {
        if let Some(path) = openclaw_config_path() {
            return Ok(Origin::AwaitingOpenClaw(crate::config::absolute(&path)));
        }
    }
    Ok(Origin::Generated {
        path: crate::config::absolute(&default_token_path()?),
        created: false,
    })
}

/// The configured sources, or (when none) OpenClaw's config file (found, or expected), or
/// gatewarden's generated token file, created if needed.
pub(crate) fn resolve_sources(
    configured: &[CredentialSource],
) -> Result<(Vec<CredentialSource>, Origin), CredentialError> {
    let mut origin = plan(configured)?;
    if let Origin::Generated { path, created } = &mut origin {
        *created = ensure_token_file(path)?;
    }
    Ok((origin.sources(configured), origin))
}

/// Where the embedded default keeps its generated token.
pub(crate) fn default_token_path() -> Result<PathBuf, CredentialError> {
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
pub(crate) fn ensure_token_file(path: &Path) -> Result<bool, CredentialError> {
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
