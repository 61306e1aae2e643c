//! `[credentials]` and each `[[credentials]]` entry: where tokens are read from, in which
//! format.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::Secs;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsConfig {
    /// Empty means: OpenClaw's own config if found, else gatewarden's generated token file.
    pub sources: Vec<CredentialSource>,
    /// Watch the files' directories with inotify.
    pub watch: bool,
    /// Also compare size/mtime/inode/content this often, for filesystems where inotify events
    /// never arrive (network filesystems, some Docker Desktop bind mounts). 0 disables.
    pub poll_interval: Secs,
    /// Largest credential or TLS file read; a larger one is refused (the last good stays).
    pub max_file_bytes: u64,
    /// A fetched key set is fetched again for a token naming a key it lacks, but no sooner
    /// than this after its last fetch (nor sooner than this for the server's `max-age`).
    pub jwks_refetch_min: Secs,
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        CredentialsConfig {
            sources: Vec::new(),
            watch: true,
            poll_interval: Secs(Duration::from_secs(5)),
            max_file_bytes: crate::files::DEFAULT_MAX_BYTES,
            jwks_refetch_min: Secs(Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CredentialSource {
    /// Names the credential for `upstream_auth.credential` and in logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The file; empty for a `jwks` key set fetched from `jwks_url` or the `issuer`.
    #[serde(default, skip_serializing_if = "is_empty_path")]
    pub path: PathBuf,
    #[serde(default)]
    pub format: CredentialFormat,
    /// For `json5`: RFC 6901 pointer to the token (default `/gateway/auth/token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// For `dotenv`: the variable holding the token (default `OPENCLAW_GATEWAY_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The scopes a `connect` with one of this file's tokens may ask for (unset: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// The roles a `connect` with one of this file's tokens may ask for (unset: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// `jwks`: the `iss` a token must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `jwks`: the key set's URL, fetched and cached instead of a file (`https://`, or
    /// `http://` to loopback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// `jwks`: an `aud` a token must carry (one of its values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// `jwks`: the claim that names the client (default `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_claim: Option<String>,
    /// `jwks`: claims a token must carry, not empty (e.g. `groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_claims: Option<Vec<String>>,
    /// `jwks`: the signature algorithms accepted (default and ceiling: RS256, PS256,
    /// ES256, EdDSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// `jwks`: clock skew allowed on `exp` and `nbf` (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<Secs>,
}

fn is_empty_path(p: &std::path::Path) -> bool {
    p.as_os_str().is_empty()
}

impl CredentialSource {
    /// A `jwks` source without a file: its keys come from `jwks_url`, or from the
    /// `issuer`'s discovery document.
    pub fn is_remote(&self) -> bool {
        self.format == CredentialFormat::Jwks
            && self.path.as_os_str().is_empty()
            && (self.jwks_url.is_some() || self.issuer.is_some())
    }

    /// Where its tokens come from, for messages: the file, or the URL.
    pub fn location(&self) -> String {
        match (&self.jwks_url, &self.issuer) {
            _ if !self.path.as_os_str().is_empty() => self.path.display().to_string(),
            (Some(url), _) => url.clone(),
            (None, Some(issuer)) => issuer.clone(),
            (None, None) => String::new(),
        }
    }

    pub fn plain(path: impl Into<PathBuf>) -> CredentialSource {
        CredentialSource {
            name: None,
            path: path.into(),
            format: CredentialFormat::Plain,
            pointer: None,
            key: None,
            scopes: None,
            roles: None,
            issuer: None,
            jwks_url: None,
            audience: None,
            name_claim: None,
            required_claims: None,
            algorithms: None,
            leeway: None,
        }
    }

    /// Whether this is the OpenClaw gateway's own secret: its config (JSON5 with the token at
    /// `gateway.auth.token`, or the password at `gateway.auth.password`) or the `.env` that
    /// gives it `OPENCLAW_GATEWAY_TOKEN`.
    pub fn is_openclaw_config(&self) -> bool {
        match self.format {
            CredentialFormat::Json5 => {
                let p = self.json_pointer();
                p == OPENCLAW_TOKEN_POINTER || p == OPENCLAW_PASSWORD_POINTER
            }
            CredentialFormat::Dotenv => self.env_key() == OPENCLAW_TOKEN_ENV,
            _ => false,
        }
    }

    /// The variable in effect for a `dotenv` source.
    pub fn env_key(&self) -> &str {
        self.key.as_deref().unwrap_or(OPENCLAW_TOKEN_ENV)
    }

    /// The JSON pointer in effect for a `json5` source.
    pub fn json_pointer(&self) -> &str {
        self.pointer.as_deref().unwrap_or(OPENCLAW_TOKEN_POINTER)
    }
}

/// The environment variable OpenClaw compose setups give the gateway its token in.
pub const OPENCLAW_TOKEN_ENV: &str = "OPENCLAW_GATEWAY_TOKEN";

/// Where the OpenClaw gateway keeps its token inside `openclaw.json`.
pub const OPENCLAW_TOKEN_POINTER: &str = "/gateway/auth/token";

/// Where the OpenClaw gateway keeps its password (`gateway.auth.mode = "password"`).
pub const OPENCLAW_PASSWORD_POINTER: &str = "/gateway/auth/password";

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CredentialFormat {
    /// The whole file is one token; surrounding whitespace is trimmed.
    #[default]
    Plain,
    /// A JSON5 document (the OpenClaw gateway's `openclaw.json`); the token is at `pointer`.
    Json5,
    /// Named client tokens: `name token` or `name sha256:<64 hex>` per line, `#` comments.
    Lines,
    /// A `.env` file (`KEY=value` lines, as docker compose reads them); the token is the
    /// value of `key`.
    Dotenv,
    /// A JSON Web Key Set (RFC 7517): the public keys that sign the JWTs clients present
    /// (RFC 7519), checked against `issuer`, `audience` and the other `jwks` keys.
    Jwks,
}

impl CredentialFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialFormat::Plain => "plain",
            CredentialFormat::Json5 => "json5",
            CredentialFormat::Lines => "lines",
            CredentialFormat::Dotenv => "dotenv",
            CredentialFormat::Jwks => "jwks",
        }
    }
}
