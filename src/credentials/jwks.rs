//! A `jwks` credential source: a JSON Web Key Set (RFC 7517) whose keys sign the JWTs
//! clients present, with the rules a token must meet (`issuer`, `audience`, the name claim,
//! required claims, the algorithms, the leeway). Read and reloaded like any credential
//! file: the snapshot holds it as one entry that no presented token can match (its digest
//! is keyed with a secret of this process), carrying the keys.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::CredentialSource;
use crate::reason::Reason;

use super::{Allowed, Credential, CredentialError};

/// The algorithms a key set may accept, and the default: asymmetric only, so a public key
/// can never be used as an HMAC secret (the HS/RS confusion), and never `none`.
pub(crate) const ALGORITHMS: [(&str, Algorithm); 4] = [
    ("RS256", Algorithm::RS256),
    ("PS256", Algorithm::PS256),
    ("ES256", Algorithm::ES256),
    ("EdDSA", Algorithm::EdDSA),
];

pub(crate) const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// One verification key of the set.
struct Key {
    kid: Option<String>,
    decoding: DecodingKey,
    /// The algorithms the key's type can verify (RSA: RS256 and PS256).
    algorithms: Vec<Algorithm>,
}

/// A loaded key set and its rules.
pub(crate) struct JwtKeys {
    keys: Vec<Key>,
    validation: Validation,
    name_claim: String,
    required: Vec<String>,
    allowed: Option<Arc<Allowed>>,
    source: Arc<Path>,
    /// A fetched set's task: woken when a token names a key the set lacks (a rotation at
    /// the issuer). It bounds how often that refetches.
    refetch: Option<Arc<tokio::sync::Notify>>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("keys", &self.keys.len())
            .field("source", &self.source)
            .finish()
    }
}

/// Whether a presented token has a JWT's shape (three base64url parts, a JSON header).
pub(crate) fn looks_like_jwt(token: &[u8]) -> bool {
    token.starts_with(b"eyJ") && token.iter().filter(|&&b| b == b'.').count() == 2
}

/// A per-process secret that keys the entry's digest: the key set is public, so a digest
/// of it alone would be a token anyone could compute.
fn entry_digest(text: &str) -> [u8; 32] {
    static SALT: OnceLock<String> = OnceLock::new();
    let salt = SALT.get_or_init(super::generate_token);
    super::digest(format!("{salt}\0jwks\0{text}").as_bytes())
}

/// Parses a JWKS file into the one entry that carries its keys; keys gatewarden cannot
/// use (symmetric `oct` keys, unknown types) are reported as warnings.
pub(crate) fn parse(
    src: &CredentialSource,
    text: &str,
    origin: &Arc<Path>,
) -> Result<(Credential, Vec<String>), CredentialError> {
    let (jwt, warnings) = key_set(src, text, origin)?;
    let mut entry = Credential::from_digest(entry_digest(text), origin.clone());
    entry.name = src.name.as_deref().map(Arc::from);
    entry.jwt = Some(Arc::new(jwt));
    Ok((entry, warnings))
}

/// A JWKS document's usable keys under `src`'s rules, and warnings for the keys left out.
pub(crate) fn key_set(
    src: &CredentialSource,
    text: &str,
    origin: &Arc<Path>,
) -> Result<(JwtKeys, Vec<String>), CredentialError> {
    let bad = |why: String| CredentialError::Jwks {
        path: src.path.clone(),
        why,
    };
    let set: JwkSet = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "not a JSON Web Key Set (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let allow = algorithms(src, &src.path)?;
    let mut warnings = Vec::new();
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let algorithms: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::PS256],
            AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256],
            AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
            AlgorithmParameters::OctetKey(_) => {
                warnings.push(format!("key {i}: a symmetric (oct) key is never used"));
                continue;
            }
            _ => {
                warnings.push(format!("key {i}: a key type gatewarden does not know"));
                continue;
            }
        };
        let algorithms: Vec<Algorithm> = algorithms
            .into_iter()
            .filter(|a| allow.contains(a))
            .collect();
        match DecodingKey::from_jwk(jwk) {
            Ok(decoding) if !algorithms.is_empty() => keys.push(Key {
                kid: jwk.common.key_id.clone(),
                decoding,
                algorithms,
            }),
            Ok(_) => warnings.push(format!("key {i}: its type fits none of `algorithms`")),
            Err(e) => warnings.push(format!("key {i}: unusable ({e})")),
        }
    }
    if keys.is_empty() {
        return Err(bad(format!(
            "no usable key ({} in the set)",
            set.keys.len()
        )));
    }
    let mut validation = Validation::new(allow[0]);
    validation.algorithms = allow;
    validation.leeway = src.leeway.map_or(DEFAULT_LEEWAY, |l| l.0).as_secs();
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    match &src.issuer {
        Some(iss) => validation.set_issuer(&[iss]),
        None => validation.iss = None,
    }
    match &src.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    let jwt = JwtKeys {
        keys,
        validation,
        name_claim: src.name_claim.clone().unwrap_or_else(|| "sub".into()),
        required: src.required_claims.clone().unwrap_or_default(),
        allowed: Allowed::new(src.roles.as_deref(), src.scopes.as_deref()),
        source: origin.clone(),
        refetch: None,
    };
    Ok((jwt, warnings))
}

/// `algorithms` as configured, each one of [`ALGORITHMS`].
fn algorithms(src: &CredentialSource, path: &Path) -> Result<Vec<Algorithm>, CredentialError> {
    let Some(names) = &src.algorithms else {
        return Ok(ALGORITHMS.iter().map(|(_, a)| *a).collect());
    };
    let mut out = Vec::new();
    for name in names {
        let Some((_, a)) = ALGORITHMS.iter().find(|(n, _)| n == name) else {
            return Err(CredentialError::Jwks {
                path: PathBuf::from(path),
                why: format!(
                    "algorithm {name:?} is not allowed (allowed: RS256, PS256, ES256, EdDSA)"
                ),
            });
        };
        out.push(*a);
    }
    if out.is_empty() {
        return Err(CredentialError::Jwks {
            path: PathBuf::from(path),
            why: "`algorithms` is empty".into(),
        });
    }
    Ok(out)
}

impl JwtKeys {
    /// Verifies a JWT: its algorithm, the key its `kid` names, the signature, `iss`, `aud`,
    /// `exp`, `nbf`, the name claim and the required claims. The credential it returns is
    /// named by the name claim and expires with the token.
    pub(crate) fn verify(&self, token: &str) -> Result<Credential, Reason> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Reason::JwtMalformed)?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(Reason::JwtBadAlgorithm);
        }
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .filter(|k| header.kid.is_none() || k.kid == header.kid)
            .peekable();
        if candidates.peek().is_none() {
            if let Some(refetch) = &self.refetch {
                refetch.notify_one();
            }
            return Err(Reason::JwtUnknownKey);
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let mut last = Reason::JwtBadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Value>(token, &key.decoding, &validation) {
                Ok(data) => return self.identity(token, &data.claims),
                Err(e) => {
                    last = reason_of(e.kind());
                    if last != Reason::JwtBadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn identity(&self, token: &str, claims: &Value) -> Result<Credential, Reason> {
        let present = |name: &str| match claims.get(name) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        if !self.required.iter().all(|c| present(c)) {
            return Err(Reason::JwtMissingClaim);
        }
        let name = match claims.get(&self.name_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(Reason::JwtMissingClaim),
        };
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(Reason::JwtMissingClaim)?;
        let mut c = Credential::new(token.as_bytes(), self.source.clone());
        c.client = Some(Arc::from(name.as_str()));
        c.allowed.clone_from(&self.allowed);
        c.expires = Some(UNIX_EPOCH + Duration::from_secs(exp));
        Ok(c)
    }

    /// A fetched set: a token naming an unknown key wakes `refetch`.
    pub(crate) fn with_refetch(mut self, refetch: Arc<tokio::sync::Notify>) -> JwtKeys {
        self.refetch = Some(refetch);
        self
    }

    /// The key ids of the set, in order (a change of keys is a change of these, in practice).
    pub(crate) fn kids(&self) -> Vec<Option<&str>> {
        self.keys.iter().map(|k| k.kid.as_deref()).collect()
    }

    /// Keys in the set, and the algorithms accepted (for `doctor` and the reload line).
    pub(crate) fn summary(&self) -> (usize, Vec<&'static str>) {
        let names = ALGORITHMS
            .iter()
            .filter(|(_, a)| self.validation.algorithms.contains(a))
            .map(|(n, _)| *n)
            .collect();
        (self.keys.len(), names)
    }
}

/// The reason name of a failed verification.
fn reason_of(kind: &ErrorKind) -> Reason {
    match kind {
        ErrorKind::ExpiredSignature => Reason::JwtExpired,
        ErrorKind::ImmatureSignature => Reason::JwtNotYetValid,
        ErrorKind::InvalidSignature => Reason::JwtBadSignature,
        ErrorKind::InvalidIssuer => Reason::JwtWrongIssuer,
        ErrorKind::InvalidAudience => Reason::JwtWrongAudience,
        ErrorKind::MissingRequiredClaim(_) => Reason::JwtMissingClaim,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Reason::JwtBadAlgorithm,
        _ => Reason::JwtMalformed,
    }
}

/// Seconds since the epoch, for tests that make tokens.
#[cfg(test)]
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[cfg(test)]
#[path = "jwks_tests.rs"]
mod tests;
