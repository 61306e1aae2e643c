//! The kinds of credential, each behind the same seam: a kind verifies what a token source
//! found and returns who it is (a [`Credential`]: its name, the scopes it allows, when it
//! expires) or why not (a [`Reason`]), as a [`Decision`]. The admission (`Proxy::admit`)
//! asks [`Kind::of`] and does not know the kinds apart.
//!
//! - `Digest`: the token's SHA-256 against the loaded tokens (current, in grace, stale);
//! - `ClientCertificate`: a certificate rustls verified against `tls.client_ca`;
//! - `Jwt`: a signed token (RFC 7519) against the key sets of the `jwks` sources.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::config::TokenSource;
use crate::credentials::{
    looks_like_jwt, Credential, Credentials, Fingerprint, Presented, Verdict,
};

use std::fmt;
use std::time::Duration;

use crate::reason::Reason;
use crate::tls::ClientCert;

/// A token found in a request, with where it was found.
pub struct Found {
    pub token: Vec<u8>,
    pub source: TokenSource,
    /// For the `client_cert` source: the verified certificate instead of a token.
    pub cert: Option<ClientCert>,
    /// The same source also carried a different token.
    pub ambiguous: bool,
}

impl fmt::Debug for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Found")
            .field("source", &self.source)
            .field("fingerprint", &Fingerprint::of(&self.token))
            .finish()
    }
}

/// The outcome of checking a token.
#[derive(Debug)]
pub enum Decision {
    Allow {
        source: TokenSource,
        credential: Credential,
        /// Accepted only because of the grace period: (generation, time left).
        grace: Option<(u64, Duration)>,
        /// For re-checking a live connection after a reload.
        presented: Presented,
    },
    Deny {
        reason: Reason,
        source: Option<TokenSource>,
        presented: Option<Fingerprint>,
        /// For `token_stale`: the last generation in which the token was valid.
        generation: Option<u64>,
        /// Tells this token from another (`Presented::key`; 0 without a token).
        key: u64,
    },
}

/// What kind of credential a found token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Digest,
    ClientCertificate,
    Jwt,
}

impl Kind {
    /// A JWT's shape is looked at first (a prefix), the key sets only for such a token.
    pub(crate) fn of(found: &Found, creds: &Credentials) -> Kind {
        if found.cert.is_some() {
            Kind::ClientCertificate
        } else if looks_like_jwt(&found.token) && creds.takes_jwts() {
            Kind::Jwt
        } else {
            Kind::Digest
        }
    }

    pub(crate) fn verify(self, found: &Found, creds: &Credentials) -> Decision {
        match (self, &found.cert) {
            (Kind::ClientCertificate, Some(cert)) => client_certificate(cert),
            (Kind::Jwt, _) if !found.ambiguous => jwt(found, creds),
            _ => digest(found, creds),
        }
    }
}

/// rustls verified the certificate against `tls.client_ca` during the handshake: it is
/// the client's name, and nothing reloadable (no credential file to be missing).
fn client_certificate(cert: &crate::tls::ClientCert) -> Decision {
    let digest = crate::credentials::digest(&cert.der);
    let mut credential = Credential::from_digest(digest, Arc::from(Path::new("tls.client_ca")));
    credential.client = Some(cert.name.clone());
    Decision::Allow {
        source: TokenSource::ClientCert,
        credential,
        grace: None,
        presented: Presented::new(&cert.der),
    }
}

/// A JWT against each key set in turn; the first that accepts it names the client. The
/// refusal is the first set's reason (one set is the usual case); with no set loaded yet
/// (a fetched one before its first fetch), `credential_unavailable`.
fn jwt(found: &Found, creds: &Credentials) -> Decision {
    let presented = Presented::new(&found.token);
    let mut refused = None;
    let mut sets = 0;
    if let Ok(token) = std::str::from_utf8(&found.token) {
        for keys in creds.jwt_keys() {
            sets += 1;
            match keys.verify(token) {
                Ok(credential) => {
                    return Decision::Allow {
                        source: found.source,
                        credential,
                        grace: None,
                        presented,
                    }
                }
                Err(reason) => {
                    refused.get_or_insert(reason);
                }
            }
        }
    }
    let none_loaded = sets == 0 && std::str::from_utf8(&found.token).is_ok();
    Decision::Deny {
        reason: match refused {
            Some(reason) => reason,
            None if none_loaded => Reason::CredentialUnavailable,
            None => Reason::JwtMalformed,
        },
        source: Some(found.source),
        presented: Some(presented.fingerprint),
        generation: None,
        key: presented.key(),
    }
}

/// A token against the loaded ones: none loaded, two different tokens in one source, or
/// the verdict of the snapshot.
fn digest(found: &Found, creds: &Credentials) -> Decision {
    let deny = |reason, key| Decision::Deny {
        reason,
        source: Some(found.source),
        presented: Some(Fingerprint::of(&found.token)),
        generation: None,
        key,
    };
    if creds.unloaded().is_some() {
        return deny(Reason::CredentialUnavailable, 0);
    }
    if found.ambiguous {
        return deny(Reason::TokenAmbiguous, Presented::new(&found.token).key());
    }
    judge(&found.token, found.source, creds)
}

/// Judges one presented token against a snapshot: current, within grace, stale or unknown.
pub fn judge(token: &[u8], source: TokenSource, creds: &Credentials) -> Decision {
    judge_presented(Presented::new(token), source, creds)
}

/// [`judge`] for a token already hashed (the first-message path hashes it for its log).
pub fn judge_presented(presented: Presented, source: TokenSource, creds: &Credentials) -> Decision {
    let deny = |reason, generation| Decision::Deny {
        reason,
        source: Some(source),
        presented: Some(presented.fingerprint),
        generation,
        key: presented.key(),
    };
    if creds.unloaded().is_some() {
        return deny(Reason::CredentialUnavailable, None);
    }
    match creds.verify(&presented, Instant::now()) {
        Verdict::Current(c) => Decision::Allow {
            source,
            credential: c.clone(),
            grace: None,
            presented,
        },
        Verdict::Grace {
            credential,
            generation,
            left,
        } => Decision::Allow {
            source,
            credential: credential.clone(),
            grace: Some((generation, left)),
            presented,
        },
        Verdict::Stale { generation } => deny(Reason::TokenStale, Some(generation)),
        Verdict::Unknown => deny(Reason::TokenMismatch, None),
    }
}
