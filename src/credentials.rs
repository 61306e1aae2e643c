//! Valid tokens, held as an immutable snapshot that is swapped atomically.
//!
//! The connection path only ever does `store.load()` (a lock-free `ArcSwap` read), so a
//! reload can never stall a handshake. Tokens are kept only as SHA-256 digests: comparing
//! fixed-size digests in constant time leaks neither content nor length, and a digest in
//! memory is useless to anyone who dumps it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

impl Fingerprint {
    /// `fp:` and the 8 hex digits, as connection log lines show it; on the stack.
    pub fn tagged(&self) -> [u8; 11] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = *b"fp:00000000";
        for (i, b) in self.0.iter().enumerate() {
            out[3 + 2 * i] = HEX[(b >> 4) as usize];
            out[3 + 2 * i + 1] = HEX[(b & 0xf) as usize];
        }
        out
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written on every connection's log line: one write, no per-byte formatting.
        let tagged = self.tagged();
        f.write_str(std::str::from_utf8(&tagged[3..]).expect("hex digits are ASCII"))
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
    /// The client's name, for entries of a `lines` file.
    pub client: Option<Arc<str>>,
    /// Kept only for the credential named by `upstream_auth.credential`.
    pub secret: Option<Secret>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("fingerprint", &self.fingerprint)
            .field("source", &self.source)
            .field("name", &self.name)
            .field("client", &self.client)
            .finish()
    }
}

impl Credential {
    pub fn new(token: &[u8], source: Arc<Path>) -> Credential {
        Credential::from_digest(digest(token), source)
    }

    /// An entry known only by its SHA-256 (`name sha256:<hex>` lines).
    pub fn from_digest(digest: [u8; 32], source: Arc<Path>) -> Credential {
        Credential {
            digest,
            fingerprint: Fingerprint::from_digest(&digest),
            source,
            name: None,
            client: None,
            secret: None,
        }
    }

    /// Who this credential stands for in logs: the client name, else the credential's name.
    pub fn who(&self) -> &str {
        self.client
            .as_deref()
            .or(self.name.as_deref())
            .unwrap_or("-")
    }

    /// Same token and same identity: a reload that yields only these changed nothing.
    fn same(&self, other: &Credential) -> bool {
        self.digest == other.digest && self.client == other.client && self.name == other.name
    }

    /// Whether `presented` is this credential's token (constant time).
    pub fn matches(&self, presented: &Presented) -> bool {
        self.digest.ct_eq(&presented.digest).into()
    }
}

/// A token as presented by a client, hashed once at the edge.
#[derive(Clone)]
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

/// A token that is no longer current: valid until `until` (the grace period), then only
/// recognised, so a client still holding it is told `token_stale` rather than a bare mismatch.
#[derive(Debug, Clone)]
pub struct Retired {
    pub credential: Credential,
    /// The last generation in which this token was current.
    pub generation: u64,
    pub until: Instant,
}

/// What a presented token is, against one snapshot.
#[derive(Debug)]
pub enum Verdict<'a> {
    Current(&'a Credential),
    /// Rotated away, but still inside the grace period.
    Grace {
        credential: &'a Credential,
        generation: u64,
        left: Duration,
    },
    /// Rotated away and past its grace period.
    Stale {
        generation: u64,
    },
    Unknown,
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Presented({:?})", self.fingerprint)
    }
}

/// An immutable set of valid tokens: swapped whole, never changed in place.
#[derive(Debug, Default)]
pub struct Credentials {
    pub generation: u64,
    entries: Vec<Credential>,
    /// Each source's tokens from before its last change: valid until their grace ends.
    retired: Vec<Retired>,
    /// Every older token (digest → the last generation it was current), so a client still
    /// holding one is told `token_stale`. Shared between snapshots: it changes only on a
    /// rotation.
    stale: Arc<std::collections::HashMap<[u8; 32], u64>>,
    /// While no token is loaded at all: why (each source's last error), so a refusal can
    /// say "cannot read …: permission denied" instead of a bare mismatch.
    unloaded: Option<Arc<str>>,
}

/// How many stale tokens are remembered for `token_stale` diagnosis (40 bytes each); past
/// it the oldest are forgotten (then reported as `token_mismatch`).
const STALE_MAX: usize = 100_000;

impl Credentials {
    pub fn new(generation: u64, entries: Vec<Credential>) -> Credentials {
        Credentials {
            generation,
            entries,
            retired: Vec::new(),
            stale: Arc::default(),
            unloaded: None,
        }
    }

    pub fn entries(&self) -> &[Credential] {
        &self.entries
    }

    /// Why no credential is loaded (`None` while any is): the refusal's `detail`.
    pub fn unloaded(&self) -> Option<&str> {
        self.unloaded.as_deref()
    }

    pub fn retired(&self) -> &[Retired] {
        &self.retired
    }

    /// Tokens older than the previous ones, newest first: (fingerprint, the last generation
    /// each was current).
    pub fn stale(&self) -> Vec<(Fingerprint, u64)> {
        let mut v: Vec<_> = self
            .stale
            .iter()
            .map(|(d, g)| (Fingerprint::from_digest(d), *g))
            .collect();
        v.sort_unstable_by_key(|&(_, g)| std::cmp::Reverse(g));
        v
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn by_name(&self, name: &str) -> Option<&Credential> {
        self.entries
            .iter()
            .find(|c| c.name.as_deref() == Some(name))
    }

    /// The current entry matching `presented`, if any. Compares against every entry without an
    /// early exit, so timing does not reveal which (or whether an early) entry matched.
    pub fn check(&self, presented: &Presented) -> Option<&Credential> {
        let mut found = None;
        for entry in &self.entries {
            if entry.matches(presented) && found.is_none() {
                found = Some(entry);
            }
        }
        found
    }

    /// Current, within grace, stale or unknown. `now` is passed in so callers decide the clock.
    pub fn verify(&self, presented: &Presented, now: Instant) -> Verdict<'_> {
        if let Some(c) = self.check(presented) {
            return Verdict::Current(c);
        }
        let mut found: Option<&Retired> = None;
        for r in &self.retired {
            if r.credential.matches(presented) && found.is_none() {
                found = Some(r);
            }
        }
        match found {
            Some(r) if r.until > now => Verdict::Grace {
                credential: &r.credential,
                generation: r.generation,
                left: r.until - now,
            },
            Some(r) => Verdict::Stale {
                generation: r.generation,
            },
            // A map lookup: a stale token is no secret any more, and timing says nothing
            // about a current one.
            None => match self.stale.get(&presented.digest) {
                Some(&generation) => Verdict::Stale { generation },
                None => Verdict::Unknown,
            },
        }
    }

    /// The earliest grace period still running, for the revocation timer.
    pub fn next_grace_end(&self, now: Instant) -> Option<Instant> {
        self.retired
            .iter()
            .map(|r| r.until)
            .filter(|&u| u > now)
            .min()
    }
}

/// The current snapshot; swapped whole by the reloader, read lock-free by connections.
pub struct CredentialStore {
    current: ArcSwap<Credentials>,
    /// Bumped on every swap and every grace expiry: live connections re-check their token.
    changed: tokio::sync::watch::Sender<u64>,
}

impl CredentialStore {
    pub fn new(initial: Credentials) -> CredentialStore {
        CredentialStore {
            current: ArcSwap::from_pointee(initial),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    pub fn load(&self) -> Arc<Credentials> {
        self.current.load_full()
    }

    pub fn store(&self, next: Credentials) {
        self.current.store(Arc::new(next));
        self.notify();
    }

    /// Tells live connections to re-check their tokens (a grace period ended).
    pub fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Why a credential file could not be used. Never carries file contents.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Missing, unreadable, not a regular file, too large.
    #[error("credential file {path} {why}")]
    File {
        path: PathBuf,
        why: crate::files::FileError,
    },
    #[error("credential file {path} is empty")]
    Empty { path: PathBuf },
    #[error(
        "credential file {path} line {line} {why}; a plain token file holds one token on one line (keeping the last good token)"
    )]
    Plain {
        path: PathBuf,
        line: usize,
        why: &'static str,
    },
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
    #[error(
        "credential file {path}: client name `{name}` appears twice (lines {first} and {second})"
    )]
    DuplicateName {
        path: PathBuf,
        name: String,
        first: usize,
        second: usize,
    },
    #[error("credential file {path} has no valid entry")]
    NoEntries { path: PathBuf },
    #[error("cannot create token file {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("upstream_auth.credential names `{name}`, but no credential has that name")]
    UnknownUpstream { name: String },
    #[error("no credential configured and no home directory to create {what} in; set XDG_CONFIG_HOME or HOME, or pass --token-file")]
    NoHome { what: &'static str },
}

/// A source's tokens, and notes about lines that were skipped.
pub struct Loaded {
    pub entries: Vec<Credential>,
    /// Problems that did not stop the load (a malformed line of a `lines` file).
    pub warnings: Vec<String>,
}

/// Reads one credential source (a regular file of at most `max_bytes`) into its tokens.
/// `keep_secret` keeps the token itself (for presenting it upstream), not only its digest.
pub fn read_source(
    src: &CredentialSource,
    keep_secret: bool,
    max_bytes: u64,
) -> Result<Loaded, CredentialError> {
    let bytes =
        crate::files::read_limited(&src.path, max_bytes).map_err(|why| CredentialError::File {
            path: src.path.clone(),
            why,
        })?;
    parse_source(src, &bytes, keep_secret)
}

/// Parses a credential file's contents as `src` describes. Pure (no I/O), so the parsers can
/// be fuzzed: any bytes give tokens or an error naming the file, never a panic.
pub fn parse_source(
    src: &CredentialSource,
    bytes: &[u8],
    keep_secret: bool,
) -> Result<Loaded, CredentialError> {
    let path = &src.path;
    // Editors on Windows start a UTF-8 file with a byte-order mark; it is not the token's.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text =
        std::str::from_utf8(bytes).map_err(|_| CredentialError::NotUtf8 { path: path.clone() })?;
    if text.trim().is_empty() {
        return Err(CredentialError::Empty { path: path.clone() });
    }
    let origin: Arc<Path> = Arc::from(path.as_path());
    let name = src.name.as_deref().map(Arc::from);
    if src.format == CredentialFormat::Lines {
        let (mut entries, warnings) = parse_lines(path, text, &origin)?;
        for e in &mut entries {
            e.name.clone_from(&name);
        }
        return Ok(Loaded { entries, warnings });
    }
    let token = match src.format {
        CredentialFormat::Json5 => json5_token(path, text, src.json_pointer())?,
        CredentialFormat::Dotenv => dotenv_token(path, text, src.env_key())?,
        _ => plain_token(path, text)?.to_string(),
    };
    let mut c = Credential::new(token.as_bytes(), origin);
    c.name = name;
    if keep_secret {
        c.secret = Some(Secret(Arc::from(token)));
    }
    Ok(Loaded {
        entries: vec![c],
        warnings: Vec::new(),
    })
}

/// The one token of a `plain` file: its only non-empty line, trimmed. A NUL, whitespace
/// inside the token or a second non-empty line means the file is not what it should be (a
/// paste gone wrong, two tokens, a binary file); applied as it is, the token would match
/// no client and every client would be refused once the grace period ends, so it is
/// refused instead and the last good token stays.
fn plain_token<'a>(path: &Path, text: &'a str) -> Result<&'a str, CredentialError> {
    let bad = |line: usize, why: &'static str| CredentialError::Plain {
        path: path.to_path_buf(),
        line,
        why,
    };
    let mut token: Option<(usize, &str)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if raw.contains('\0') {
            return Err(bad(i + 1, "holds a NUL byte"));
        }
        if line.is_empty() {
            continue;
        }
        if token.is_some() {
            return Err(bad(i + 1, "is a second non-empty line"));
        }
        if line.contains(char::is_whitespace) {
            return Err(bad(i + 1, "has whitespace inside the token"));
        }
        token = Some((i + 1, line));
    }
    token.map(|(_, t)| t).ok_or_else(|| CredentialError::Empty {
        path: path.to_path_buf(),
    })
}

/// `name token` or `name sha256:<64 hex>` per line; `#` comments and blank lines ignored. A
/// malformed line is reported by number and skipped; a duplicate name fails the file, since
/// which token that client holds would be ambiguous.
fn parse_lines(
    path: &Path,
    text: &str,
    origin: &Arc<Path>,
) -> Result<(Vec<Credential>, Vec<String>), CredentialError> {
    let mut entries: Vec<Credential> = Vec::new();
    let mut lines_of: Vec<usize> = Vec::new();
    let mut warnings = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
            warnings.push(format!(
                "line {n}: expected `name token` or `name sha256:<64 hex>`"
            ));
            continue;
        };
        if let Some(at) = entries
            .iter()
            .position(|e| e.client.as_deref() == Some(name))
        {
            return Err(CredentialError::DuplicateName {
                path: path.to_path_buf(),
                name: name.to_string(),
                first: lines_of[at],
                second: n,
            });
        }
        let mut c = match token.strip_prefix("sha256:") {
            Some(hex) => match parse_hex32(hex) {
                Some(d) => Credential::from_digest(d, origin.clone()),
                None => {
                    warnings.push(format!("line {n}: sha256: needs exactly 64 hex digits"));
                    continue;
                }
            },
            None => Credential::new(token.as_bytes(), origin.clone()),
        };
        c.client = Some(Arc::from(name));
        entries.push(c);
        lines_of.push(n);
    }
    if entries.is_empty() {
        return Err(CredentialError::NoEntries {
            path: path.to_path_buf(),
        });
    }
    Ok((entries, warnings))
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `sha256:<64 hex>` of a token, the form a `lines` file accepts instead of the token.
pub fn hash_line(token: &[u8]) -> String {
    let d = digest(token);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
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

/// The value of `key` in a `.env` file, read as docker compose reads it: `KEY=value` lines,
/// an optional `export `, `#` comments, single-quoted values taken literally, double-quoted
/// ones with `\"`/`\\` escapes, unquoted ones up to a ` #` comment; the last assignment wins.
fn dotenv_token(path: &Path, text: &str, key: &str) -> Result<String, CredentialError> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if line.starts_with('#') || k.trim_end() != key {
            continue;
        }
        let v = v.trim_start();
        let value = if let Some(rest) = v.strip_prefix('\'') {
            rest.split_once('\'').map_or(rest, |(q, _)| q).to_string()
        } else if let Some(rest) = v.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => out.push('\n'),
                        Some(c) => out.push(c),
                        None => break,
                    },
                    c => out.push(c),
                }
            }
            out
        } else {
            v.split(" #").next().unwrap_or("").trim_end().to_string()
        };
        found = Some(value);
    }
    match found {
        Some(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => Err(CredentialError::TokenAbsent {
            path: path.to_path_buf(),
            pointer: key.to_string(),
            hint: "the file sets no non-empty value for this variable",
        }),
    }
}

/// What one reload of one source did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Applied { generation: u64 },
    Unchanged,
    Rejected,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Applied { .. } => "applied",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Rejected => "rejected",
        }
    }
}

/// Owns the credential sources: re-reads them, keeps the last good tokens of each, retires
/// rotated tokens into their grace period, and swaps complete snapshots into the store.
/// Only the watcher task calls it; connections only ever read the store.
pub struct Reloader {
    sources: Vec<CredentialSource>,
    upstream: Option<String>,
    grace: Duration,
    /// `credentials.max_file_bytes`.
    max_file_bytes: u64,
    store: Arc<CredentialStore>,
    state: Mutex<ReloadState>,
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

struct ReloadState {
    generation: u64,
    /// Last good tokens per source (`None`: never loaded).
    current: Vec<Option<Vec<Credential>>>,
    /// Per source, its tokens from before its last change (generation n-1): the only ones
    /// a grace period covers.
    previous: Vec<Vec<Retired>>,
    /// Older tokens, for `token_stale`.
    stale: Arc<std::collections::HashMap<[u8; 32], u64>>,
    changed_at: Instant,
    /// Per source, why its last read failed (`None`: it succeeded, or was not read yet).
    failing: Vec<Option<String>>,
}

fn fps(entries: &[Credential]) -> String {
    if entries.is_empty() {
        return "-".into();
    }
    entries
        .iter()
        .map(|c| format!("fp:{}", c.fingerprint))
        .collect::<Vec<_>>()
        .join(",")
}

impl Reloader {
    pub fn new(
        sources: Vec<CredentialSource>,
        upstream: Option<String>,
        grace: Duration,
    ) -> Reloader {
        let n = sources.len();
        Reloader {
            sources,
            upstream,
            grace,
            max_file_bytes: crate::files::DEFAULT_MAX_BYTES,
            store: Arc::new(CredentialStore::new(Credentials::default())),
            state: Mutex::new(ReloadState {
                generation: 0,
                current: vec![None; n],
                previous: vec![Vec::new(); n],
                stale: Arc::default(),
                changed_at: Instant::now(),
                failing: vec![None; n],
            }),
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// Files larger than this are refused (the last good tokens stay).
    pub fn with_max_file_bytes(mut self, max: u64) -> Reloader {
        self.max_file_bytes = max;
        self
    }

    /// Reload results are counted here once set.
    pub fn set_metrics(&self, m: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(m);
    }

    /// When the credentials last changed (or when loading started).
    pub fn changed_at(&self) -> Instant {
        self.state.lock().unwrap().changed_at
    }

    pub fn store(&self) -> Arc<CredentialStore> {
        self.store.clone()
    }

    pub fn sources(&self) -> &[CredentialSource] {
        &self.sources
    }

    fn keep_secret(&self, src: &CredentialSource) -> bool {
        self.upstream.is_some() && src.name.as_deref() == self.upstream.as_deref()
    }

    fn read(&self, idx: usize) -> Result<Vec<Credential>, CredentialError> {
        let src = &self.sources[idx];
        let loaded = read_source(src, self.keep_secret(src), self.max_file_bytes)?;
        for w in &loaded.warnings {
            tracing::warn!(
                "[reload] {}: {w} (skipped; the rest of the file is used)",
                src.path.display()
            );
        }
        Ok(loaded.entries)
    }

    /// First load: every source is tried; one that fails is logged and retried on its next
    /// change, and the proxy starts anyway (a gateway may create its file after we start).
    pub fn load_initial(&self) -> usize {
        let mut st = self.state.lock().unwrap();
        let mut ok = 0;
        for idx in 0..self.sources.len() {
            match self.read(idx) {
                Ok(entries) => {
                    st.current[idx] = Some(entries);
                    ok += 1;
                }
                Err(e) => {
                    tracing::warn!(
                        "[reload] credentials rejected source={} cause={e} keeping generation=0",
                        self.sources[idx].path.display()
                    );
                    st.failing[idx] = Some(e.to_string());
                }
            }
        }
        if ok > 0 {
            st.generation = 1;
        }
        self.publish(&st);
        ok
    }

    /// Re-reads one source and applies it if it changed; a broken file keeps the last good.
    pub fn reload(&self, idx: usize) -> ReloadResult {
        let r = self.reload_inner(idx);
        if let Some(m) = self.metrics.get() {
            m.reload(r.as_str());
        }
        r
    }

    fn reload_inner(&self, idx: usize) -> ReloadResult {
        let mut st = self.state.lock().unwrap();
        let path = self.sources[idx].path.display();
        let entries = match self.read(idx) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(
                    "[reload] credentials rejected source={path} cause={e} keeping generation={}",
                    st.generation
                );
                let why = Some(e.to_string());
                if st.failing[idx] != why {
                    st.failing[idx] = why;
                    // Only the reason changes, and only while nothing is loaded.
                    if self.store.load().entries.is_empty() {
                        self.publish(&st);
                    }
                }
                return ReloadResult::Rejected;
            }
        };
        st.failing[idx] = None;
        let old = st.current[idx].take().unwrap_or_default();
        let unchanged = old.len() == entries.len()
            && entries.iter().all(|n| old.iter().any(|o| o.same(n)))
            && st.generation > 0;
        if unchanged {
            st.current[idx] = Some(old);
            return ReloadResult::Unchanged;
        }
        let now = Instant::now();
        let previous: Vec<Credential> = old
            .iter()
            .filter(|o| !entries.iter().any(|n| n.digest == o.digest))
            .cloned()
            .collect();
        // Only the tokens this change replaced get a grace period; the ones an earlier
        // change replaced (generation n-2 and older) are stale from now on, even if their
        // grace had not run out: a token rotated twice in a hurry is one that leaked.
        let last_current = st.generation;
        let older = std::mem::replace(
            &mut st.previous[idx],
            previous
                .iter()
                .map(|credential| Retired {
                    credential: credential.clone(),
                    generation: last_current,
                    until: now + self.grace,
                })
                .collect(),
        );
        if !older.is_empty() {
            let stale = Arc::make_mut(&mut st.stale);
            for r in older {
                stale.insert(r.credential.digest, r.generation);
            }
            if stale.len() > STALE_MAX {
                let mut by_age: Vec<u64> = stale.values().copied().collect();
                by_age.sort_unstable();
                let cut = by_age[stale.len() - STALE_MAX];
                stale.retain(|_, g| *g >= cut);
            }
        }
        st.generation += 1;
        st.changed_at = now;
        let generation = st.generation;
        let current = fps(&entries);
        st.current[idx] = Some(entries);
        // Swapped in before it is logged: whoever reads "applied" (an operator, a test)
        // finds the new tokens in force, even with the reload on another thread.
        self.publish(&st);
        tracing::info!(
            generation,
            source = %path,
            current = %current,
            previous = %fps(&previous),
            "[reload] credentials applied"
        );
        ReloadResult::Applied { generation }
    }

    pub fn reload_all(&self) -> Vec<ReloadResult> {
        (0..self.sources.len()).map(|i| self.reload(i)).collect()
    }

    /// Builds the snapshot from the last good tokens of every source and swaps it in.
    fn publish(&self, st: &ReloadState) {
        let entries: Vec<Credential> = st.current.iter().flatten().flatten().cloned().collect();
        // A token that is current again (a rotation back) is neither in grace nor stale.
        let retired: Vec<Retired> = st
            .previous
            .iter()
            .flatten()
            .filter(|r| !entries.iter().any(|c| c.digest == r.credential.digest))
            .cloned()
            .collect();
        let mut stale = st.stale.clone();
        if entries.iter().any(|c| stale.contains_key(&c.digest)) {
            Arc::make_mut(&mut stale).retain(|d, _| !entries.iter().any(|c| c.digest == *d));
        }
        let unloaded = entries.is_empty().then(|| {
            let why: Vec<&str> = st.failing.iter().flatten().map(String::as_str).collect();
            let why = if why.is_empty() {
                "no credential file holds a token yet".to_string()
            } else {
                why.join("; ")
            };
            Arc::from(format!("no credential loaded: {why}"))
        });
        self.store.store(Credentials {
            generation: st.generation,
            entries,
            retired,
            stale,
            unloaded,
        });
    }

    /// Checks that `upstream_auth.credential` names a loaded credential.
    pub fn check_upstream(&self) -> Result<(), CredentialError> {
        match &self.upstream {
            Some(name)
                if self.store.load().by_name(name).is_none()
                    && !self.sources.iter().any(|s| s.name.as_deref() == Some(name)) =>
            {
                Err(CredentialError::UnknownUpstream { name: name.clone() })
            }
            _ => Ok(()),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_first_8_hex_of_sha256() {
        // sha256("abc") = ba7816bf...
        assert_eq!(Fingerprint::of(b"abc").to_string(), "ba7816bf");
    }

    /// A BOM is dropped; a NUL, whitespace inside the token or a second line fail the file
    /// by line number (the file's text never appears in the error).
    #[test]
    fn plain_files_hold_one_token_on_one_line() {
        let src = CredentialSource::plain("/run/t");
        let token =
            |bytes: &[u8]| parse_source(&src, bytes, false).map(|l| l.entries[0].fingerprint);
        let want = Fingerprint::of(b"s3cret-token");
        for ok in [
            &b"s3cret-token"[..],
            b"  s3cret-token \n",
            b"\n\ns3cret-token\r\n\n",
            b"\xEF\xBB\xBFs3cret-token\n",
        ] {
            assert_eq!(token(ok).unwrap(), want, "{ok:?}");
        }
        for (bad, line, why) in [
            (&b"s3cret\0token"[..], 1, "NUL"),
            (b"\ns3cret-token\nother\n", 3, "second non-empty line"),
            (b"s3cret token\n", 1, "whitespace inside"),
            (b"s3cret\ttoken", 1, "whitespace inside"),
        ] {
            let e = token(bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("line {line} ")) && e.contains(why),
                "{e}"
            );
            assert!(!e.contains("s3cret"), "{e}");
        }
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
    fn dotenv_values_are_read_as_compose_reads_them() {
        let t = |text: &str| dotenv_token(Path::new(".env"), text, "OPENCLAW_GATEWAY_TOKEN");
        assert_eq!(t("OPENCLAW_GATEWAY_TOKEN=abc\n").unwrap(), "abc");
        assert_eq!(
            t("# comment\nOTHER=x\nexport OPENCLAW_GATEWAY_TOKEN = 'a b#c' # note\n").unwrap(),
            "a b#c"
        );
        assert_eq!(t("OPENCLAW_GATEWAY_TOKEN=\"q\\\"x\"\n").unwrap(), "q\"x");
        assert_eq!(
            t("OPENCLAW_GATEWAY_TOKEN=v1 # old\nOPENCLAW_GATEWAY_TOKEN=v2\n").unwrap(),
            "v2"
        );
        assert!(matches!(
            t("OPENCLAW_GATEWAY_TOKEN_OLD=x\n#OPENCLAW_GATEWAY_TOKEN=y\n"),
            Err(CredentialError::TokenAbsent { .. })
        ));
        assert!(t("OPENCLAW_GATEWAY_TOKEN=\n").is_err());
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

#[cfg(test)]
mod reload_tests {
    use super::*;

    fn write(p: &Path, s: &str) {
        std::fs::write(p, s).unwrap();
    }

    #[test]
    fn rotation_retires_into_grace_and_unchanged_is_not_reapplied() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        write(&f, "one");
        let r = Reloader::new(
            vec![CredentialSource::plain(&f)],
            None,
            Duration::from_secs(60),
        );
        assert_eq!(r.load_initial(), 1);
        assert_eq!(r.store().load().generation, 1);
        assert_eq!(r.reload(0), ReloadResult::Unchanged);
        write(&f, "two");
        assert_eq!(r.reload(0), ReloadResult::Applied { generation: 2 });
        let snap = r.store().load();
        assert_eq!(snap.retired().len(), 1);
        let now = Instant::now();
        assert!(snap.next_grace_end(now).is_some());
        match snap.verify(&Presented::new(b"one"), now) {
            Verdict::Grace { generation, .. } => assert_eq!(generation, 1),
            other => panic!("{other:?}"),
        }
        match snap.verify(&Presented::new(b"one"), now + Duration::from_secs(61)) {
            Verdict::Stale { generation } => assert_eq!(generation, 1),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            snap.verify(&Presented::new(b"two"), now),
            Verdict::Current(_)
        ));
        assert!(matches!(
            snap.verify(&Presented::new(b"zzz"), now),
            Verdict::Unknown
        ));
        // A broken file keeps the last good set.
        write(&f, "");
        assert_eq!(r.reload(0), ReloadResult::Rejected);
        assert!(r.store().load().check(&Presented::new(b"two")).is_some());
    }

    #[test]
    fn lines_format() {
        let origin: Arc<Path> = Arc::from(Path::new("/c"));
        let text = format!(
            "# team\n\nalice a-token\nbroken\nbob {}\ncarol sha256:xyz\n",
            hash_line(b"b-token")
        );
        let (entries, warnings) = parse_lines(Path::new("/c"), &text, &origin).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].starts_with("line 4:") && warnings[1].starts_with("line 6:"));
        let creds = Credentials::new(1, entries);
        assert_eq!(
            creds.check(&Presented::new(b"a-token")).unwrap().who(),
            "alice"
        );
        assert_eq!(
            creds.check(&Presented::new(b"b-token")).unwrap().who(),
            "bob"
        );
        let err = parse_lines(Path::new("/c"), "x 1\ny 2\nx 3\n", &origin).unwrap_err();
        assert!(err.to_string().contains("lines 1 and 3"), "{err}");
        assert!(parse_lines(Path::new("/c"), "# nothing\n", &origin).is_err());
    }
}
