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

/// One valid token.
#[derive(Clone)]
pub struct Credential {
    digest: [u8; 32],
    pub fingerprint: Fingerprint,
    /// The file it was read from.
    pub source: Arc<Path>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("fingerprint", &self.fingerprint)
            .field("source", &self.source)
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
        }
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

    /// Compares against every entry without an early exit, so timing does not reveal which
    /// (or whether an early) entry matched.
    pub fn check(&self, presented: &Presented) -> Option<&Credential> {
        let mut found = None;
        for entry in &self.entries {
            let eq: bool = entry.digest.ct_eq(&presented.digest).into();
            if eq && found.is_none() {
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
    #[error("cannot create token file {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("no credential configured and no home directory to create {what} in; set XDG_CONFIG_HOME or HOME, or pass --token-file")]
    NoHome { what: &'static str },
}

/// Reads one credential source into its tokens.
pub fn read_source(src: &CredentialSource) -> Result<Vec<Credential>, CredentialError> {
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
    let origin: Arc<Path> = Arc::from(path.as_path());
    match src.format {
        CredentialFormat::Plain => {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| CredentialError::NotUtf8 { path: path.clone() })?;
            let token = text.trim();
            if token.is_empty() {
                return Err(CredentialError::Empty { path: path.clone() });
            }
            Ok(vec![Credential::new(token.as_bytes(), origin)])
        }
    }
}

/// Reads every source; any failure fails the whole load, so a partial set never goes live.
pub fn load_all(
    sources: &[CredentialSource],
    generation: u64,
) -> Result<Credentials, CredentialError> {
    let mut entries = Vec::new();
    for src in sources {
        entries.extend(read_source(src)?);
    }
    Ok(Credentials::new(generation, entries))
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
