//! Who the gateway is told the client is, with `upstream_auth.inject = "trusted_proxy"`: a
//! named credential or a client certificate's subject, or the refusal of a client that has
//! no name to give.

use std::net::SocketAddr;

use uuid::Uuid;

use crate::config::Inject;

use super::admit::{Accepted, Refusal};
use super::log::Unauthorized;
use super::Proxy;

impl Proxy {
    /// With `upstream_auth.inject = "trusted_proxy"`: the client's name (a named credential,
    /// else the client certificate's subject) and its credential's scopes, or why it has
    /// none. `Ok(None)` in every other mode.
    pub(crate) fn identity(
        &self,
        found: Option<&crate::auth::Found>,
        by: Option<&Accepted>,
        in_band: bool,
    ) -> Result<Option<(String, Option<String>)>, &'static str> {
        if self.upstream_auth.inject != Inject::TrustedProxy {
            return Ok(None);
        }
        if in_band {
            return Err("upstream_auth.inject = \"trusted_proxy\" names the client on the upgrade, and this client's token comes only in its first frame, after it");
        }
        let scopes = by
            .and_then(|a| a.credential.allowed.as_deref())
            .and_then(|a| a.scopes_header());
        if let Some(name) = by.map(|a| a.credential.who()).filter(|n| *n != "-") {
            return Ok(Some((name.to_string(), scopes)));
        }
        match found.and_then(|f| f.cert.as_ref()) {
            Some(cert) => Ok(Some((cert.name.to_string(), scopes))),
            None => Err("the credential that accepted the client has no name (give its [[credentials]] entry a name, or use a lines file)"),
        }
    }

    /// The refusal of a client the gateway cannot be told the name of: logged and counted,
    /// not held against its IP (it is a client set up for another mode, not a guess).
    pub(crate) fn unnamed(
        &self,
        conn: Uuid,
        remote: SocketAddr,
        ip: std::net::IpAddr,
        detail: &'static str,
    ) -> Refusal {
        let reason = crate::auth::Reason::IdentityRequired;
        Unauthorized {
            conn,
            remote,
            reason,
            client_ip: Some(ip),
            origin: None,
            first_frame: None,
            detail: Some(detail),
        }
        .log(tracing::Level::WARN);
        self.metrics.auth_failure(reason.as_str(), "none");
        Refusal {
            reason,
            retry_after: None,
        }
    }
}
