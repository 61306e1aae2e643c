//! The one admission: every request that needs a token, upgrade or plain, is judged here
//! in the same order — a throttled IP, a foreign `Origin` (upgrades), the token's
//! extraction, the decision — and each refusal is logged, counted and noted against the
//! client's IP on the way out. What the caller gets is [`Admitted`] or a [`Refusal`] for
//! [`super::refuse`] to render; nothing here writes to a socket.

use std::net::SocketAddr;

use ::http::HeaderMap;
use tracing::warn;

use std::sync::Arc;
use std::time::Duration;

use ::http::header::ORIGIN;
use ::http::request::Parts;
use ::http::Method;
use tracing::debug;
use uuid::Uuid;

use crate::auth::{self, Decision, Found, Reason};
use crate::config::TokenSource;
use crate::credentials::{Credential, Credentials, Presented};
use crate::tls::ClientCert;

use super::log::{log_connected, Fp, Gen, Refused, SourceName};
use super::Proxy;

/// Which door a request came through: the judgement is the same, the log lines and a few
/// rules (an `Origin` check, a token in the first frame) are the door's.
#[derive(Clone, Copy)]
pub(super) enum Door<'a> {
    /// A WebSocket upgrade; `conn` names the connection in every line of its life.
    Upgrade { conn: Uuid },
    /// A plain HTTP request under `auth.http = "require"`.
    Plain { method: &'a Method },
}

/// A request let through.
pub(super) struct Admitted {
    /// The real client IP (throttling, forwarded headers).
    pub ip: std::net::IpAddr,
    /// The token the request carried, and where.
    pub found: Option<Found>,
    /// The credentials it was judged against: the gateway's own token comes from the same
    /// snapshot.
    pub creds: Arc<Credentials>,
    /// The upgrade carried no token and `first_message` is a source: the first frame will
    /// decide (nothing was judged yet).
    pub in_band: bool,
    /// What accepted it, when something did.
    pub by: Option<Accepted>,
}

/// The token and credential that accepted a request.
pub(super) struct Accepted {
    pub source: TokenSource,
    pub presented: Presented,
    pub credential: Credential,
}

/// A request turned away: why, and when a throttled client may come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refusal {
    pub reason: Reason,
    pub retry_after: Option<Duration>,
}

impl Proxy {
    /// Judges a request. Logging, metrics and the throttle's bookkeeping are done here, once
    /// for both doors; the caller renders a refusal (see [`super::refuse`]).
    pub(super) fn admit(
        &self,
        parts: &Parts,
        remote: SocketAddr,
        cert: Option<&ClientCert>,
        door: Door<'_>,
    ) -> Result<Admitted, Refusal> {
        let upgrade = matches!(door, Door::Upgrade { .. });
        // Cheap refusals first: a throttled IP, then a foreign Origin.
        let ip = self.client_ip(remote, &parts.headers);
        if let Some(left) = self.throttle.blocked(ip) {
            match door {
                Door::Upgrade { conn } => {
                    debug!(conn = %conn, remote = %remote, client_ip = %ip, reason = %Reason::RateLimited, "[ws] unauthorized")
                }
                Door::Plain { .. } => {
                    debug!(remote = %remote, client_ip = %ip, reason = %Reason::RateLimited, "[http] unauthorized")
                }
            }
            self.metrics
                .auth_failure(Reason::RateLimited.as_str(), "none");
            return Err(Refusal {
                reason: Reason::RateLimited,
                retry_after: Some(left),
            });
        }
        if let Door::Upgrade { conn } = door {
            if !auth::origin_allowed(&self.auth, &parts.headers) {
                warn!(
                    conn = %conn,
                    remote = %remote,
                    reason = %Reason::OriginNotAllowed,
                    origin = %parts.headers.get(ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("-"),
                    "[ws] unauthorized"
                );
                return Err(self.refused(Reason::OriginNotAllowed, None, ip, remote));
            }
        }
        let found = auth::extract(&self.auth, &self.sources, parts, upgrade, cert);
        let creds = self.creds.load();
        // No upgrade-time token: with `first_message` enabled the first frame decides.
        let in_band =
            upgrade && found.is_none() && self.sources.contains(&TokenSource::FirstMessage);
        let mut admitted = Admitted {
            ip,
            found,
            creds,
            in_band,
            by: None,
        };
        if in_band {
            return Ok(admitted);
        }
        match auth::decide(admitted.found.as_ref(), &admitted.creds) {
            Decision::Deny {
                reason,
                source,
                presented,
                generation,
            } => {
                let detail = admitted.creds.unloaded();
                match door {
                    Door::Upgrade { conn } => Refused {
                        conn,
                        remote,
                        reason,
                        presented,
                        generation,
                        source,
                        uri: &parts.uri,
                        query_param: &self.auth.query_param,
                        detail,
                    }
                    .log(),
                    Door::Plain { method } => warn!(
                        remote = %remote,
                        method = %method,
                        path = %auth::redact_uri(&parts.uri, &self.auth.query_param),
                        reason = %reason,
                        presented = %Fp(presented),
                        generation = %Gen(generation),
                        source = %SourceName(source),
                        detail = detail.map(tracing::field::display),
                        "[http] unauthorized"
                    ),
                }
                Err(self.refused(reason, source, ip, remote))
            }
            Decision::Allow {
                source,
                credential,
                grace,
                presented,
            } => {
                match door {
                    Door::Upgrade { conn } => {
                        log_connected(&self.metrics, conn, remote, source, &credential, grace)
                    }
                    Door::Plain { .. } => {
                        self.metrics.auth_success(source.as_str(), credential.who());
                        if let Some((generation, left)) = grace {
                            self.metrics.stale_accepted.inc();
                            warn!(
                                remote = %remote,
                                presented = %Fp(Some(credential.fingerprint)),
                                generation,
                                grace_left = %format!("{}s", left.as_secs()),
                                client = %credential.who(),
                                "[http] accepted stale token"
                            );
                        }
                    }
                }
                self.throttle.success(ip);
                admitted.by = Some(Accepted {
                    source,
                    presented,
                    credential,
                });
                Ok(admitted)
            }
        }
    }

    /// A refusal's bookkeeping, for [`Proxy::admit`] and for a first frame that fails:
    /// counted by reason and source, and a failure against the IP.
    pub(super) fn refused(
        &self,
        reason: Reason,
        source: Option<TokenSource>,
        ip: std::net::IpAddr,
        remote: SocketAddr,
    ) -> Refusal {
        self.metrics
            .auth_failure(reason.as_str(), source.map_or("none", TokenSource::as_str));
        self.note_failure(ip, remote);
        Refusal {
            reason,
            retry_after: None,
        }
    }

    /// Whether a connection from `peer` must open with a PROXY protocol header.
    pub fn expects_proxy_header(&self, peer: std::net::IpAddr) -> bool {
        self.proxy_protocol && self.is_trusted(peer.to_canonical())
    }

    pub(super) fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The real client IP: the peer, or — when the peer is a trusted proxy — the rightmost
    /// `X-Forwarded-For` entry that is not itself a trusted proxy.
    pub(super) fn client_ip(&self, remote: SocketAddr, headers: &HeaderMap) -> std::net::IpAddr {
        let peer = remote.ip().to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops: Vec<std::net::IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|h| h.trim().parse().ok())
            .collect();
        hops.into_iter()
            .rev()
            .find(|ip| !self.is_trusted(*ip))
            .unwrap_or(peer)
    }

    /// Counts a failed attempt; logs once when the IP starts being refused.
    /// Counts a failed attempt; the one that starts a block is logged (the attempts refused
    /// during it are not: a flood must not become a log flood).
    fn note_failure(&self, ip: std::net::IpAddr, remote: SocketAddr) {
        if let Some(block) = self.throttle.failure(ip) {
            warn!(
                remote = %remote,
                client_ip = %ip,
                failures = block.failures,
                window = %humantime::format_duration(self.auth.failure_window.0),
                blocked_for = %humantime::format_duration(block.blocked_for),
                strike = block.strike,
                "[auth] throttling"
            );
        }
    }
}
