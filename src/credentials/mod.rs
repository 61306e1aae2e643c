//! Valid tokens, held as an immutable snapshot that is swapped atomically.
//!
//! The connection path only ever does `store.load()` (a lock-free `ArcSwap` read), so a
//! reload can never stall a handshake. Tokens are kept only as SHA-256 digests: comparing
//! fixed-size digests in constant time leaks neither content nor length, and a digest in
//! memory is useless to anyone who dumps it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

mod allowed;
mod devices;
mod discover;
mod jwks;
mod reloader;
mod remote;
mod sources;
pub(crate) mod watcher;

pub(crate) use allowed::{Allowed, Ask};
pub(crate) use devices::PairedDevices;
pub use discover::*;
pub(crate) use jwks::looks_like_jwt;
pub(crate) use jwks::{JwtKeys, DEFAULT_LEEWAY};
pub(crate) use reloader::*;
pub(crate) use remote::{discover, discovery_url, parse_fetched, RemoteKeySet};
pub use sources::*;

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

pub(crate) fn digest(token: &[u8]) -> [u8; 32] {
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
    /// The roles and scopes its clients may ask for (`None`: any).
    pub allowed: Option<Arc<Allowed>>,
    /// When it stops being valid by itself (a signed token's `exp`); `None`: when it is
    /// rotated away or revoked.
    pub expires: Option<std::time::SystemTime>,
    /// For a `jwks` source's entry: the keys that sign the JWTs it accepts.
    pub(crate) jwt: Option<Arc<JwtKeys>>,
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
            allowed: None,
            expires: None,
            jwt: None,
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
        self.digest == other.digest
            && self.client == other.client
            && self.name == other.name
            && self.allowed == other.allowed
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

    /// 64 bits of the digest: tells one refused token from another (the throttle's repeats).
    pub fn key(&self) -> u64 {
        u64::from_be_bytes(self.digest[..8].try_into().expect("8 bytes"))
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
    /// The `jwks` sources fetched from a URL: their keys change without a new snapshot.
    remote: Arc<[Arc<RemoteKeySet>]>,
}

/// How many stale tokens are remembered for `token_stale` diagnosis (40 bytes each); past
/// it the oldest are forgotten (then reported as `token_mismatch`).
pub(super) const STALE_MAX: usize = 100_000;

impl Credentials {
    pub fn new(generation: u64, entries: Vec<Credential>) -> Credentials {
        Credentials {
            generation,
            entries,
            retired: Vec::new(),
            stale: Arc::default(),
            unloaded: None,
            remote: Arc::default(),
        }
    }

    pub fn entries(&self) -> &[Credential] {
        &self.entries
    }

    /// The key sets of the `jwks` sources, in order: the files', then the fetched ones
    /// (those fetched at least once).
    pub(crate) fn jwt_keys(&self) -> impl Iterator<Item = Arc<JwtKeys>> + '_ {
        let files = self.entries.iter().filter_map(|c| c.jwt.clone());
        files.chain(self.remote.iter().filter_map(|r| r.keys()))
    }

    /// Whether any `jwks` source is configured, fetched yet or not.
    pub(crate) fn takes_jwts(&self) -> bool {
        !self.remote.is_empty() || self.entries.iter().any(|c| c.jwt.is_some())
    }

    /// The `jwks` sources fetched from a URL.
    pub(crate) fn remote(&self) -> &[Arc<RemoteKeySet>] {
        &self.remote
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

    /// Whether `token` is one this snapshot knows, current or retired: a secret that must
    /// not appear in a log line.
    pub fn knows(&self, token: &[u8]) -> bool {
        !matches!(
            self.verify(&Presented::new(token), Instant::now()),
            Verdict::Unknown
        )
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

#[cfg(test)]
mod tests {
    use super::sources::{dotenv_token, json5_token};
    use super::*;
    use crate::config::CredentialSource;

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
    fn a_json5_config_given_as_a_plain_token_file_is_named_as_such() {
        let src = CredentialSource::plain("/home/me/.openclaw/openclaw.json");
        let text = "{\n  // OpenClaw\n  gateway: { auth: { mode: 'token', token: 's3cret-token-abcdef' } },\n}\n";
        let e = parse_source(&src, text.as_bytes(), false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("is a JSON5 config (OpenClaw's openclaw.json)")
                && e.contains("format = \"json5\"")
                && e.contains("/gateway/auth/token"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        // Not JSON5 at all: the line-by-line reason stays.
        let e = parse_source(&src, b"{not-json\nx\n", false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("second non-empty line"), "{e}");
    }

    #[test]
    fn a_placeholder_is_not_a_token() {
        let plain = CredentialSource::plain("/run/t");
        let e = parse_source(&plain, b"REPLACE-ME\n", false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("placeholder `REPLACE-ME`"), "{e}");
        let json = CredentialSource {
            format: crate::config::CredentialFormat::Json5,
            ..CredentialSource::plain("/etc/openclaw/openclaw.json")
        };
        let doc = br#"{ "gateway": { "auth": { "mode": "token", "token": "REPLACE-ME" } } }"#;
        let e = parse_source(&json, doc, false).err().unwrap().to_string();
        assert!(e.contains("placeholder"), "{e}");
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
