//! The one admission: every request that needs a token, upgrade or plain, is judged here
//! in the same order — a throttled IP, a foreign `Origin` (upgrades), the token's
//! extraction, the decision — and each refusal is logged, counted and noted against the
//! client's IP on the way out. What the caller gets is [`Admitted`] or a [`Refusal`] for
//! [`super::refuse`] to render; nothing here writes to a socket.

use std::net::{IpAddr, SocketAddr};

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
use crate::throttle::{Block, Failure};
use crate::tls::ClientCert;

use super::audit::Seen;
use super::log::{
    log_connected, log_stale_client, logged_target, Fp, Gen, Refused, SourceName, Unauthorized,
};
use super::Proxy;

/// Which door a request came through: the judgement is the same, the log lines and a few
/// rules (an `Origin` check, a token in the first frame) are the door's.
#[derive(Clone, Copy)]
pub(crate) enum Door<'a> {
    /// A WebSocket upgrade; `conn` names the connection in every line of its life.
    Upgrade { conn: Uuid },
    /// A plain HTTP request under `auth.http = "require"`.
    Plain { method: &'a Method },
}

/// A request let through.
pub(crate) struct Admitted {
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
pub(crate) struct Accepted {
    pub source: TokenSource,
    pub presented: Presented,
    pub credential: Credential,
}

/// What the decision said of a refused token, for the refusal's line.
struct Denied<'a> {
    reason: Reason,
    source: Option<TokenSource>,
    presented: Option<crate::credentials::Fingerprint>,
    generation: Option<u64>,
    /// Why no credential is loaded, when none is.
    detail: Option<&'a str>,
    /// What it was judged against (a known token in the logged path is redacted).
    creds: &'a Credentials,
}

/// A request turned away: why, and when a throttled client may come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub reason: Reason,
    pub retry_after: Option<Duration>,
}

impl Proxy {
    /// Judges a request. Logging, metrics and the throttle's bookkeeping are done here, once
    /// for both doors; the caller renders a refusal (see [`super::refuse`]).
    pub(crate) fn admit(
        &self,
        parts: &Parts,
        remote: SocketAddr,
        cert: Option<&ClientCert>,
        door: Door<'_>,
    ) -> Result<Admitted, Refusal> {
        let upgrade = matches!(door, Door::Upgrade { .. });
        // Cheap refusals first: a throttled IP, then a foreign Origin.
        let ip = self.client_ip(remote, &parts.headers);
        self.not_throttled(remote, ip, door)?;
        if let Door::Upgrade { conn } = door {
            self.origin_checked(parts, remote, ip, conn)?;
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
                key,
            } => {
                let denied = Denied {
                    reason,
                    source,
                    presented,
                    generation,
                    detail: admitted.creds.unloaded(),
                    creds: &admitted.creds,
                };
                Err(self.denied(door, parts, remote, ip, key, &denied))
            }
            Decision::Allow {
                source,
                credential,
                grace,
                presented,
            } => {
                self.log_accepted(door, remote, source, &credential, grace);
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

    /// A client IP still blocked by the throttle is turned away before anything else.
    fn not_throttled(&self, remote: SocketAddr, ip: IpAddr, door: Door<'_>) -> Result<(), Refusal> {
        let Some(left) = self.throttle.blocked(ip) else {
            return Ok(());
        };
        match door {
            Door::Upgrade { conn } => Unauthorized {
                conn,
                remote,
                reason: Reason::RateLimited,
                client_ip: Some(ip),
                origin: None,
                first_frame: None,
                detail: None,
            }
            .log(tracing::Level::DEBUG),
            Door::Plain { .. } => {
                debug!(remote = %remote, client_ip = %ip, reason = %Reason::RateLimited, "[http] unauthorized")
            }
        }
        self.metrics
            .auth_failure(Reason::RateLimited.as_str(), "none");
        Err(Refusal {
            reason: Reason::RateLimited,
            retry_after: Some(left),
        })
    }

    /// An upgrade from a page of a foreign origin is refused (cross-site WebSocket hijacking).
    fn origin_checked(
        &self,
        parts: &Parts,
        remote: SocketAddr,
        ip: IpAddr,
        conn: Uuid,
    ) -> Result<(), Refusal> {
        if auth::origin_allowed(&self.auth, &parts.headers) {
            return Ok(());
        }
        let origin = parts.headers.get(ORIGIN).and_then(|o| o.to_str().ok());
        Unauthorized {
            conn,
            remote,
            reason: Reason::OriginNotAllowed,
            client_ip: None,
            origin: Some(origin.unwrap_or("-")),
            first_frame: None,
            detail: None,
        }
        .log(tracing::Level::WARN);
        let seen = Seen {
            key: ORIGIN_KEY,
            ..Seen::default()
        };
        Err(self
            .refused(Reason::OriginNotAllowed, None, ip, remote, &seen)
            .0)
    }

    /// A token the decision refused: noted against the IP, counted, and logged.
    fn denied(
        &self,
        door: Door<'_>,
        parts: &Parts,
        remote: SocketAddr,
        ip: IpAddr,
        key: u64,
        denied: &Denied<'_>,
    ) -> Refusal {
        let seen = Seen {
            key,
            generation: denied.creds.generation,
            presented: denied.presented,
            retired: denied.generation,
            client: None,
            nothing_loaded: denied.creds.unloaded().is_some(),
        };
        let (refusal, repeat) = self.refused(denied.reason, denied.source, ip, remote, &seen);
        self.log_denied(door, parts, remote, denied, repeat);
        refusal
    }

    /// The refusal's line, in its door's shape; debug only for a `repeat`.
    fn log_denied(
        &self,
        door: Door<'_>,
        parts: &Parts,
        remote: SocketAddr,
        d: &Denied<'_>,
        repeat: bool,
    ) {
        match door {
            Door::Upgrade { conn } => Refused {
                conn,
                remote,
                reason: d.reason,
                presented: d.presented,
                generation: d.generation,
                source: d.source,
                uri: &parts.uri,
                creds: d.creds,
                detail: d.detail,
            }
            .log(repeat),
            Door::Plain { method } => {
                macro_rules! line {
                    ($level:ident) => {
                        tracing::$level!(
                            remote = %remote,
                            method = %method,
                            path = %logged_target(&parts.uri, d.creds),
                            reason = %d.reason,
                            presented = %Fp(d.presented),
                            generation = %Gen(d.generation),
                            source = %SourceName(d.source),
                            detail = d.detail.map(tracing::field::display),
                            "[http] unauthorized"
                        )
                    };
                }
                match repeat {
                    false => line!(warn),
                    true => line!(debug),
                }
            }
        }
    }

    /// The acceptance's line and count; a token accepted only within the grace period is a
    /// warning, so the operator sees which clients still hold old tokens.
    fn log_accepted(
        &self,
        door: Door<'_>,
        remote: SocketAddr,
        source: TokenSource,
        credential: &Credential,
        grace: Option<(u64, Duration)>,
    ) {
        match door {
            Door::Upgrade { conn } => {
                log_connected(&self.metrics, conn, remote, source, credential, grace, None)
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
    }

    /// A refusal's bookkeeping, for [`Proxy::admit`] and for a first frame that fails:
    /// counted by reason and source, and judged by the throttle: a guess (counted against the
    /// IP) or a repeat of a token the IP was refused for already (not counted; reported once
    /// per window as a stale client). The `bool` says it was a repeat: its own refusal line
    /// is then left out.
    pub(crate) fn refused(
        &self,
        reason: Reason,
        source: Option<TokenSource>,
        ip: std::net::IpAddr,
        remote: SocketAddr,
        seen: &Seen<'_>,
    ) -> (Refusal, bool) {
        let source_name = source.map_or("none", TokenSource::as_str);
        self.metrics.auth_failure(reason.as_str(), source_name);
        if seen.nothing_loaded || !reason.is_guess() {
            // No token can pass (or not yet): not the client's doing, so neither a guess
            // nor a repeat (every refusal says why, in its detail).
            let refusal = Refusal {
                reason,
                retry_after: None,
            };
            return (refusal, false);
        }
        let repeat = match self.throttle.failure(ip, seen.key, seen.generation) {
            Failure::Counted(block) => {
                if let Some(block) = block {
                    self.log_block(ip, remote, block);
                }
                false
            }
            Failure::Repeat { repeats, report } => {
                self.metrics.auth_repeated(reason.as_str());
                if report {
                    log_stale_client(remote, ip, reason, source, seen, repeats);
                }
                true
            }
        };
        (
            Refusal {
                reason,
                retry_after: None,
            },
            repeat,
        )
    }

    /// Whether a connection from `peer` must open with a PROXY protocol header.
    pub(crate) fn expects_proxy_header(&self, peer: std::net::IpAddr) -> bool {
        self.proxy_protocol && self.is_trusted(peer.to_canonical())
    }

    pub(crate) fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The real client IP: the peer, or — when the peer is a trusted proxy — the rightmost
    /// `X-Forwarded-For` entry that is not itself a trusted proxy.
    pub(crate) fn client_ip(&self, remote: SocketAddr, headers: &HeaderMap) -> std::net::IpAddr {
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

    /// The refusal that starts a block is logged (the attempts refused during it are not: a
    /// flood must not become a log flood).
    pub(crate) fn log_block(&self, ip: std::net::IpAddr, remote: SocketAddr, block: Block) {
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

/// The repeat key of a refusal for a foreign Origin (no token judged).
const ORIGIN_KEY: u64 = u64::MAX;

/// The admission without sockets: a request head in, a verdict out, the throttle's and the
/// metrics' bookkeeping observable.
#[cfg(test)]
mod tests {
    use std::path::Path;

    use ::http::Request;

    use super::*;
    use crate::config::{Config, Secs};
    use crate::credentials::CredentialStore;
    use crate::metrics::Metrics;
    use crate::upstream::UpstreamClient;

    const TOKEN: &[u8] = b"s3cret-token";

    fn gate(config: Config, sources: &[TokenSource]) -> Proxy {
        let creds = crate::credentials::Credentials::new(
            1,
            vec![Credential::new(TOKEN, Path::new("/run/token").into())],
        );
        let upstream = UpstreamClient::new(
            "127.0.0.1:9".parse().unwrap(),
            Duration::from_secs(1),
            None,
            false,
            None,
        )
        .unwrap();
        Proxy::new(
            &config,
            sources.to_vec(),
            Arc::new(CredentialStore::new(creds)),
            Arc::new(upstream),
            Arc::new(Metrics::new()),
            false,
            tokio_util::sync::CancellationToken::new(),
        )
    }

    fn head(headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::get("/ws?x=1");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const PEER: &str = "198.51.100.7:50000";

    fn upgrade() -> Door<'static> {
        Door::Upgrade {
            conn: Uuid::from_u128(1),
        }
    }

    fn refusal(r: Result<Admitted, Refusal>) -> Refusal {
        match r {
            Ok(_) => panic!("admitted"),
            Err(r) => r,
        }
    }

    #[test]
    fn a_good_token_is_admitted_a_wrong_one_is_a_mismatch_and_none_is_missing() {
        let g = gate(Config::default(), &[TokenSource::Header]);
        let ok = g
            .admit(
                &head(&[("authorization", "Bearer s3cret-token")]),
                PEER.parse().unwrap(),
                None,
                upgrade(),
            )
            .unwrap_or_else(|r| panic!("refused: {r:?}"));
        let by = ok.by.expect("accepted by a token");
        assert_eq!(by.source, TokenSource::Header);
        assert!(!ok.in_band);
        let wrong = head(&[("authorization", "Bearer nope")]);
        let r = refusal(g.admit(&wrong, PEER.parse().unwrap(), None, upgrade()));
        assert_eq!(r.reason, Reason::TokenMismatch);
        assert_eq!(r.retry_after, None);
        let r = refusal(g.admit(&head(&[]), PEER.parse().unwrap(), None, upgrade()));
        assert_eq!(r.reason, Reason::TokenMissing);
    }

    #[test]
    fn both_doors_count_failures_and_the_throttle_then_refuses_with_a_time_to_come_back() {
        let mut config = Config::default();
        config.auth.max_failures = 2;
        config.auth.failure_window = Secs(Duration::from_secs(60));
        let g = gate(config, &[TokenSource::Header]);
        // Two different guesses (the same token again would be a repeat, not a guess).
        let wrong = head(&[("authorization", "Bearer nope")]);
        let other = head(&[("authorization", "Bearer nope-2")]);
        let get = ::http::Method::GET;
        let plain = Door::Plain { method: &get };
        let peer = PEER.parse().unwrap();
        assert_eq!(
            refusal(g.admit(&wrong, peer, None, plain)).reason,
            Reason::TokenMismatch
        );
        assert_eq!(
            refusal(g.admit(&other, peer, None, upgrade())).reason,
            Reason::TokenMismatch
        );
        // Blocked now, even with the right token, at either door.
        let right = head(&[("authorization", "Bearer s3cret-token")]);
        for door in [plain, upgrade()] {
            let r = refusal(g.admit(&right, peer, None, door));
            assert_eq!(r.reason, Reason::RateLimited);
            assert!(r.retry_after.is_some_and(|d| d > Duration::ZERO));
        }
        // Another client is not affected.
        assert!(g
            .admit(&right, "198.51.100.8:1".parse().unwrap(), None, plain)
            .is_ok());
    }

    #[test]
    fn a_foreign_origin_is_refused_at_the_upgrade_door_only() {
        let mut config = Config::default();
        config.auth.allowed_origins = vec!["https://app.example.com".into()];
        let g = gate(config, &[TokenSource::Header]);
        let req = head(&[
            ("authorization", "Bearer s3cret-token"),
            ("origin", "https://evil.example.net"),
        ]);
        let peer = PEER.parse().unwrap();
        let r = refusal(g.admit(&req, peer, None, upgrade()));
        assert_eq!(r.reason, Reason::OriginNotAllowed);
        let get = ::http::Method::GET;
        assert!(g
            .admit(&req, peer, None, Door::Plain { method: &get })
            .is_ok());
    }

    #[test]
    fn an_upgrade_without_a_token_waits_for_its_first_frame_when_that_is_a_source() {
        let g = gate(
            Config::default(),
            &[TokenSource::Header, TokenSource::FirstMessage],
        );
        let peer = PEER.parse().unwrap();
        let a = g
            .admit(&head(&[]), peer, None, upgrade())
            .unwrap_or_else(|r| panic!("refused: {r:?}"));
        assert!(a.in_band && a.by.is_none());
        // A plain request has no first frame: no token is no token.
        let get = ::http::Method::GET;
        let r = refusal(g.admit(&head(&[]), peer, None, Door::Plain { method: &get }));
        assert_eq!(r.reason, Reason::TokenMissing);
        // A wrong upgrade-time token is judged at once, not deferred.
        let wrong = head(&[("authorization", "Bearer nope")]);
        assert_eq!(
            refusal(g.admit(&wrong, peer, None, upgrade())).reason,
            Reason::TokenMismatch
        );
    }
}
