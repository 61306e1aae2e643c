//! Reading one credential source: a file that is checked before it is read (no FIFOs,
//! devices or huge files), then parsed by its format (plain token, hash lines, OpenClaw
//! JSON5, dotenv).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{CredentialFormat, CredentialSource};

use super::{digest, Allowed, Credential, Secret};

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
    #[error(
        "credential file {path} is a JSON5 config{what}, not a plain token file: give it format = \"json5\" (the token at {pointer}), e.g. [[credentials]] path = \"{path}\" format = \"json5\""
    )]
    LooksLikeJson5 {
        path: PathBuf,
        /// ` (OpenClaw's openclaw.json)` when it has a `gateway` section.
        what: &'static str,
        pointer: &'static str,
    },
    #[error(
        "credential file {path} holds the placeholder `{placeholder}`, not a token: put a real one in (`gatewarden token generate`, or `openssl rand -hex 24`); until then every client is refused"
    )]
    Placeholder {
        path: PathBuf,
        placeholder: &'static str,
    },
    /// A `jwks` source that is no usable key set (the last good keys stay).
    #[error("key set {path} {why} (keeping the last good keys)")]
    Jwks { path: PathBuf, why: String },
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
pub(crate) fn read_source(
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
    let allowed = Allowed::new(src.roles.as_deref(), src.scopes.as_deref());
    if src.format == CredentialFormat::Jwks {
        let (entry, warnings) = super::jwks::parse(src, text, &origin)?;
        return Ok(Loaded {
            entries: vec![entry],
            warnings,
        });
    }
    if src.format == CredentialFormat::Lines {
        let (mut entries, warnings) = parse_lines(path, text, &origin)?;
        for e in &mut entries {
            e.name.clone_from(&name);
            e.allowed.clone_from(&allowed);
        }
        return Ok(Loaded { entries, warnings });
    }
    let token = match src.format {
        CredentialFormat::Json5 => json5_token(path, text, src.json_pointer())?,
        CredentialFormat::Dotenv => dotenv_token(path, text, src.env_key())?,
        _ => plain_token(path, text)
            .map_err(|e| json5_instead(path, text).unwrap_or(e))?
            .to_string(),
    };
    if let Some(placeholder) = placeholder(&token) {
        return Err(CredentialError::Placeholder {
            path: path.clone(),
            placeholder,
        });
    }
    let mut c = Credential::new(token.as_bytes(), origin);
    c.name = name;
    c.allowed = allowed;
    if keep_secret {
        c.secret = Some(Secret(Arc::from(token)));
    }
    Ok(Loaded {
        entries: vec![c],
        warnings: Vec::new(),
    })
}

/// Recipes ship these where the token goes; started as they are, the token is public.
const PLACEHOLDERS: &[&str] = &[
    "REPLACE-ME",
    "REPLACE_ME",
    "CHANGE-ME",
    "CHANGEME",
    "<token>",
];

fn placeholder(token: &str) -> Option<&'static str> {
    PLACEHOLDERS
        .iter()
        .find(|p| token.eq_ignore_ascii_case(p))
        .copied()
}

/// A `plain` file that is really a JSON5 object (`--token-file ~/.openclaw/openclaw.json`):
/// said as such, with the format that reads it, instead of "line 2 is a second line".
fn json5_instead(path: &Path, text: &str) -> Option<CredentialError> {
    let start = text.trim_start();
    if !(start.starts_with('{') || start.starts_with("//") || start.starts_with("/*")) {
        return None;
    }
    let doc: serde_json::Value = json5::from_str(text).ok()?;
    let openclaw = doc.get("gateway").is_some_and(|g| g.is_object());
    Some(CredentialError::LooksLikeJson5 {
        path: path.to_path_buf(),
        what: if openclaw {
            " (OpenClaw's openclaw.json)"
        } else {
            ""
        },
        pointer: crate::config::OPENCLAW_TOKEN_POINTER,
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
pub(super) fn parse_lines(
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
pub(super) fn json5_token(
    path: &Path,
    text: &str,
    pointer: &str,
) -> Result<String, CredentialError> {
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
pub(super) fn dotenv_token(path: &Path, text: &str, key: &str) -> Result<String, CredentialError> {
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
