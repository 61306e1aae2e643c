//! Valid tokens, held as an immutable snapshot that is swapped atomically.
//!
//! The connection path only ever does `store.load()` (a lock-free `ArcSwap` read), so a
//! reload can never stall a handshake. Tokens are kept only as SHA-256 digests: comparing
//! fixed-size digests in constant time leaks neither content nor length, and a digest in
//! memory is useless to anyone who dumps it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{CredentialFormat, CredentialSource};

/// First 8 hex digits of a token's SHA-256: enough to tell tokens apart in logs, useless to
/// an attacker.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 4]);

impl Fingerprint {
    pub fn of(token: &[u8]) -> Fingerprint {
        Fingerprint::from_digest(&digest(token))
    }

    fn from_digest(d: &[u8; 32]) -> Fingerprint {
        Fingerprint([d[0], d[1], d[2], d[3]])
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fp:{self}")
    }
}

pub fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// A token gatewarden must be able to present itself (the gateway's, for injection).
/// Its `Debug` shows only the fingerprint, so it cannot leak through a log or a panic.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({:?})", Fingerprint::of(self.0.as_bytes()))
    }
}

/// One valid token.
#[derive(Clone)]
pub struct Credential {
    digest: [u8; 32],
    pub fingerprint: Fingerprint,
    /// The file it was read from.
    pub source: Arc<Path>,
    pub name: Option<Arc<str>>,
    /// Kept only for the credential named by `upstream_auth.credential`.
    pub secret: Option<Secret>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("fingerprint", &self.fingerprint)
            .field("source", &self.source)
            .field("name", &self.name)
            .finish()
    }
}

impl Credential {
    pub fn new(token: &[u8], source: Arc<Path>) -> Credential {
        let digest = digest(token);
        Credential {
            digest,
            fingerprint: Fingerprint::from_digest(&digest),
            source,
            name: None,
            secret: None,
        }
    }

    /// Whether `presented` is this credential's token (constant time).
    pub fn matches(&self, presented: &Presented) -> bool {
        self.digest.ct_eq(&presented.digest).into()
    }
}

/// A token as presented by a client, hashed once at the edge.
pub struct Presented {
    digest: [u8; 32],
    pub fingerprint: Fingerprint,
}

impl Presented {
    pub fn new(token: &[u8]) -> Presented {
        let digest = digest(token);
        Presented {
            digest,
            fingerprint: Fingerprint::from_digest(&digest),
        }
    }

    /// Whether two presented tokens are the same (constant time).
    pub fn digest_eq(&self, other: &Presented) -> bool {
        self.digest.ct_eq(&other.digest).into()
    }
}

/// An immutable set of valid tokens.
#[derive(Debug, Default)]
pub struct Credentials {
    pub generation: u64,
    entries: Vec<Credential>,
}

impl Credentials {
    pub fn new(generation: u64, entries: Vec<Credential>) -> Credentials {
        Credentials {
            generation,
            entries,
        }
    }

    pub fn entries(&self) -> &[Credential] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn by_name(&self, name: &str) -> Option<&Credential> {
        self.entries
            .iter()
            .find(|c| c.name.as_deref() == Some(name))
    }

    /// Compares against every entry without an early exit, so timing does not reveal which
    /// (or whether an early) entry matched.
    pub fn check(&self, presented: &Presented) -> Option<&Credential> {
        let mut found = None;
        for entry in &self.entries {
            if entry.matches(presented) && found.is_none() {
                found = Some(entry);
            }
        }
        found
    }
}

/// The current snapshot; swapped whole by loaders, read lock-free by connections.
pub struct CredentialStore {
    current: ArcSwap<Credentials>,
}

impl CredentialStore {
    pub fn new(initial: Credentials) -> CredentialStore {
        CredentialStore {
            current: ArcSwap::from_pointee(initial),
        }
    }

    pub fn load(&self) -> Arc<Credentials> {
        self.current.load_full()
    }

    pub fn store(&self, next: Credentials) {
        self.current.store(Arc::new(next));
    }
}

/// Why a credential file could not be used. Never carries file contents.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("credential file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("credential file {path} cannot be read: {source}")]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("credential file {path} is empty")]
    Empty { path: PathBuf },
    #[error("credential file {path} is not valid UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("credential file {path} is not valid JSON5: {what}")]
    Json5 { path: PathBuf, what: String },
    #[error("credential file {path} has no token at {pointer}: {hint}")]
    TokenAbsent {
        path: PathBuf,
        pointer: String,
        hint: &'static str,
    },
    #[error("credential file {path}: the value at {pointer} is not a non-empty string")]
    TokenNotString { path: PathBuf, pointer: String },
    #[error("cannot create token file {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("upstream_auth.credential names `{name}`, but no credential has that name")]
    UnknownUpstream { name: String },
    #[error("no credential configured and no home directory to create {what} in; set XDG_CONFIG_HOME or HOME, or pass --token-file")]
    NoHome { what: &'static str },
}

/// Reads one credential source into its tokens. `keep_secret` keeps the token itself (for
/// presenting it upstream), not only its digest.
pub fn read_source(
    src: &CredentialSource,
    keep_secret: bool,
) -> Result<Vec<Credential>, CredentialError> {
    let path = &src.path;
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            CredentialError::Missing { path: path.clone() }
        } else {
            CredentialError::Unreadable {
                path: path.clone(),
                source: e,
            }
        }
    })?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| CredentialError::NotUtf8 { path: path.clone() })?;
    if text.trim().is_empty() {
        return Err(CredentialError::Empty { path: path.clone() });
    }
    let token = match src.format {
        CredentialFormat::Plain => text.trim().to_string(),
        CredentialFormat::Json5 => json5_token(path, text, src.json_pointer())?,
    };
    let mut c = Credential::new(token.as_bytes(), Arc::from(path.as_path()));
    c.name = src.name.as_deref().map(Arc::from);
    if keep_secret {
        c.secret = Some(Secret(Arc::from(token)));
    }
    Ok(vec![c])
}

/// The string at `pointer` in a JSON5 document. Errors say where, never what: a parse error
/// message must not quote the line that holds the token.
fn json5_token(path: &Path, text: &str, pointer: &str) -> Result<String, CredentialError> {
    let doc: serde_json::Value = json5::from_str(text).map_err(|e| {
        let what = e
            .code()
            .map_or_else(|| "invalid document".to_string(), |c| c.to_string());
        let at = e
            .position()
            .map(|p| format!(" at line {} column {}", p.line + 1, p.column + 1))
            .unwrap_or_default();
        CredentialError::Json5 {
            path: path.to_path_buf(),
            what: format!("{what}{at}"),
        }
    })?;
    match doc.pointer(pointer) {
        Some(serde_json::Value::String(t)) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        None | Some(serde_json::Value::Null) => Err(CredentialError::TokenAbsent {
            path: path.to_path_buf(),
            pointer: pointer.to_string(),
            hint: "without a persisted token the OpenClaw gateway makes a runtime-only token at \
                   each start that no proxy can read; persist one in gateway.auth.token \
                   (openclaw config set gateway.auth.token <token>)",
        }),
        Some(_) => Err(CredentialError::TokenNotString {
            path: path.to_path_buf(),
            pointer: pointer.to_string(),
        }),
    }
}

/// Reads every source; any failure fails the whole load, so a partial set never goes live.
/// The credential named `upstream` keeps its token for injection.
pub fn load_all(
    sources: &[CredentialSource],
    upstream: Option<&str>,
    generation: u64,
) -> Result<Credentials, CredentialError> {
    let mut entries = Vec::new();
    for src in sources {
        let keep = upstream.is_some() && src.name.as_deref() == upstream;
        entries.extend(read_source(src, keep)?);
    }
    Ok(Credentials::new(generation, entries))
}

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
    if let Some(found) = openclaw_candidates().into_iter().find(|p| p.is_file()) {
        let src = CredentialSource {
            name: Some(DISCOVERED_OPENCLAW.into()),
            path: found.clone(),
            format: CredentialFormat::Json5,
            pointer: None,
        };
        return Ok((vec![src], Origin::OpenClaw(found)));
    }
    let path = default_token_path()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_first_8_hex_of_sha256() {
        // sha256("abc") = ba7816bf...
        assert_eq!(Fingerprint::of(b"abc").to_string(), "ba7816bf");
    }

    #[test]
    fn check_finds_any_entry() {
        let src: Arc<Path> = Arc::from(Path::new("/x"));
        let creds = Credentials::new(
            1,
            vec![
                Credential::new(b"one", src.clone()),
                Credential::new(b"two", src),
            ],
        );
        assert!(creds.check(&Presented::new(b"two")).is_some());
        assert!(creds.check(&Presented::new(b"one")).is_some());
        assert!(creds.check(&Presented::new(b"three")).is_none());
        assert!(creds.check(&Presented::new(b"")).is_none());
    }

    #[test]
    fn json5_token_at_pointer() {
        let doc =
            "{\n  // the gateway's own file\n  gateway: { auth: { token: 'abc123', }, },\n}\n";
        assert_eq!(
            json5_token(Path::new("f"), doc, "/gateway/auth/token").unwrap(),
            "abc123"
        );
        let err = json5_token(Path::new("f"), "{gateway: {}}", "/gateway/auth/token").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/gateway/auth/token") && msg.contains("runtime-only"),
            "{msg}"
        );
        // A parse error names the place, never the text around it.
        let err = json5_token(
            Path::new("f"),
            "{gateway: {auth: {token: 'SECRETVALUE' oops}}}",
            "/x",
        )
        .unwrap_err()
        .to_string();
        assert!(
            !err.contains("SECRETVALUE") && err.contains("line 1"),
            "{err}"
        );
    }

    #[test]
    fn secret_debug_shows_only_a_fingerprint() {
        let s = Secret(Arc::from("hunter2"));
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2") && d.starts_with("Secret(fp:"), "{d}");
    }

    #[test]
    fn generated_tokens_are_distinct_base64url() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
