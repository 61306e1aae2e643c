//! Finding the token a client presents and deciding whether it is valid, in three parts:
//! `sources` (one rule per token source: how it is found, what the forwarded request loses
//! of it), `kinds` (each kind of credential verifies what a source found, behind one
//! seam) and `origin` (the `Origin` policy of upgrades).
//!
//! Reason names are the product's log vocabulary (the OpenClaw gateway's own `authReason`
//! values), so `grep reason=token_mismatch` works the same in front of and behind gatewarden.

use http::request::Parts;

use crate::config::{AuthConfig, TokenSource};
use std::time::Instant;

use crate::tls::ClientCert;

pub use crate::reason::Reason;

use crate::credentials::{Credentials, Presented, Verdict};

/// Looks for a token in `sources` (the effective ones, in order) that are read at upgrade
/// time, each by its rule (`sources::RULES`). `websocket` enables the subprotocol source,
/// which only exists on upgrades; `cert` is the connection's verified client certificate
/// (mTLS), for the `client_cert` source.
pub fn extract(
    cfg: &AuthConfig,
    sources: &[TokenSource],
    parts: &Parts,
    websocket: bool,
    cert: Option<&ClientCert>,
) -> Option<Found> {
    sources.iter().find_map(|&source| {
        if source == TokenSource::ClientCert {
            return cert.map(|c| Found {
                token: Vec::new(),
                source,
                cert: Some(c.clone()),
                ambiguous: false,
            });
        }
        let (token, ambiguous) = rule(source).extract(cfg, parts, websocket)?;
        Some(Found {
            token,
            source,
            cert: None,
            ambiguous,
        })
    })
}

/// Decides on an extracted token (or its absence): the kind of credential it is judges it
/// (see [`kinds`]).
pub fn decide(found: Option<&Found>, creds: &Credentials) -> Decision {
    match found {
        Some(f) => Kind::of(f, creds).verify(f, creds),
        None => Decision::Deny {
            reason: match creds.unloaded() {
                Some(_) => Reason::CredentialUnavailable,
                None => Reason::TokenMissing,
            },
            source: None,
            presented: None,
            generation: None,
            key: 0,
        },
    }
}

/// Whether a live connection's token is still good (current or within grace).
pub fn still_valid(presented: &Presented, creds: &Credentials) -> bool {
    matches!(
        creds.verify(presented, Instant::now()),
        Verdict::Current(_) | Verdict::Grace { .. }
    )
}

mod kinds;
mod origin;
mod sources;
#[cfg(test)]
mod tests;

use kinds::Kind;
pub use kinds::{judge, judge_presented, Decision, Found};
pub use origin::origin_allowed;
pub use sources::{
    cookies_without, query_value, query_without, strip_token_subprotocols, subprotocols,
};
pub(crate) use sources::{rule, Strip};
