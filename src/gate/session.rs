//! A tunnel's life after the 101: the first-message phase (an in-band token, or the
//! gateway's token injected into the client's first frame), then the relay until either
//! side closes, the token is revoked, or gatewarden shuts down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use tokio_util::either::Either;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::auth::{self, Reason};
use crate::config::{DeviceTokens, Inject, OnRevoke, TokenSource};
use crate::credentials::{self, Credential, Presented, Secret};
use crate::first_message;
use crate::net::Stream;
use crate::relay::{self, EndedBy};
use crate::ws;

use super::audit::Seen;
use super::audit::Who;
use super::log::{log_closed, log_connected, Fp, Gen};
use super::Proxy;
use crate::throttle::Failure;

/// Where [`Proxy::handle`] leaves what an upgrade still has to do once the client's side
/// has switched protocols, for the connection's own task to run: one task per connection
/// instead of a second one per tunnel (a spawn is an aligned allocation and a few copies of
/// the whole future, on every handshake).
#[derive(Default)]
pub struct Handoff(std::sync::Mutex<Option<Pending>>);

impl Handoff {
    pub(super) fn put(&self, pending: Pending) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(pending);
    }

    /// The upgrade's remaining work, when the request was answered with a 101.
    pub fn take(&self) -> Option<Pending> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// An answered upgrade's second half.
pub struct Pending {
    pub(super) proxy: Arc<Proxy>,
    /// hyper's side of the client connection; `None` when the listener read the request
    /// itself and holds the socket (or once [`Pending::upgraded`] took it).
    pub(super) on_client: Option<OnUpgrade>,
    pub(super) then: Then,
}

#[allow(clippy::large_enum_variant)] // one per handshake, never moved around: no box
pub(super) enum Then {
    /// Relay to the upstream, after the first-message phase where configured.
    Tunnel {
        upstream: Stream,
        from_upstream: Bytes,
        tunnel: Tunnel,
    },
    /// `auth.reject = "close"`: a close frame with the refusal's code and reason.
    Close(Reason),
}

impl Pending {
    /// hyper's upgraded client connection, once hyper has let go of it; `None` (logged) when
    /// the upgrade failed on the client's side after the 101.
    pub async fn upgraded(&mut self) -> Option<(Stream, Bytes)> {
        match self.on_client.take()?.await {
            Ok(up) => Some(Stream::from_upgraded(up)),
            Err(e) => {
                if let Then::Tunnel { tunnel, .. } = &self.then {
                    warn!(conn = %tunnel.conn, cause = %e, "[ws] upgrade failed after 101");
                }
                None
            }
        }
    }

    /// The tunnel, or the close frame, over the client's socket (and the bytes the client
    /// sent behind its request head). A plain fn: an async one would keep this `Pending`
    /// beside the tunnel future it moves into, for the tunnel's whole life.
    // Always inlined: with two callers (a connection's task, an HTTP/2 stream's) LLVM stopped
    // inlining it, and the tunnel future it returns was then built and copied once more per
    // handshake (callgrind: +500 instructions of memcpy).
    #[inline(always)]
    pub fn run(
        self,
        (mut client, from_client): (Stream, Bytes),
    ) -> impl std::future::Future<Output = ()> {
        match self.then {
            Then::Tunnel {
                upstream,
                from_upstream,
                tunnel,
            } => Either::Left(self.proxy.tunnel(
                (client, from_client),
                (upstream, from_upstream),
                tunnel,
            )),
            Then::Close(reason) => Either::Right(async move {
                let frame = ws::close_frame(reason.close_code(), reason.close_text());
                ws::close_gracefully(&mut client, &frame).await;
            }),
        }
    }
}

/// What a tunnel's relay starts from once the first-message phase (if any) is over.
pub(super) struct Opened {
    /// The client's bytes so far (its first frame, rewritten where configured).
    pub(super) to_upstream: Vec<u8>,
    /// The gateway's bytes not yet relayed.
    pub(super) from_upstream: Bytes,
    pub(super) down: ws::FrameTracker,
    /// Bytes already relayed to the client.
    pub(super) prior_out: u64,
}

/// How a tunnel starts once both upgrades completed.
pub(super) struct Tunnel {
    pub(super) conn: Uuid,
    pub(super) started: Instant,
    pub(super) remote: SocketAddr,
    /// The real client IP (throttling).
    pub(super) ip: std::net::IpAddr,
    /// The connection-limit slot, held for the tunnel's lifetime.
    pub(super) slot: Option<Arc<crate::limits::ConnSlot>>,
    /// Over HTTP/2: the stream, counted open on its connection for the tunnel's lifetime.
    pub(super) stream: Option<crate::h2_streams::StreamHold>,
    /// The client presented no upgrade-time token: its first frame must authenticate it.
    pub(super) in_band: bool,
    /// The gateway accepted `permessage-deflate` for this connection.
    pub(super) deflate: Option<ws::Deflate>,
    /// Put this (the gateway's) token into the client's first frame.
    pub(super) inject: Option<Secret>,
    /// The token that authenticated the client at the upgrade, for revocation checks.
    pub(super) authenticated: Option<(credentials::Presented, Credential)>,
}

impl Proxy {
    /// Runs one upgraded connection: the in-band phase when needed, then the relay.
    pub(super) async fn tunnel(
        self: Arc<Self>,
        (mut client, from_client): (Stream, Bytes),
        (mut upstream, from_upstream): (Stream, Bytes),
        mut t: Tunnel,
    ) {
        let slot = t.slot.take();
        let conn = t.conn;
        let started = t.started;
        let mut authenticated = t.authenticated.clone();
        let mut who = Who::of_credential(authenticated.as_ref().map(|(_, c)| c));
        // Boxed: the phase is short, and its state (the frame being read, the outcome)
        // would otherwise weigh on every idle tunnel for its whole life.
        let scoped = t
            .authenticated
            .as_ref()
            .is_some_and(|(_, c)| c.allowed.is_some());
        let pairing = self.auth.device_tokens == DeviceTokens::Gateway;
        let opened = if t.in_band || t.inject.is_some() || scoped || pairing {
            Box::pin(self.first_message_phase(
                &mut client,
                &mut upstream,
                (from_client, from_upstream),
                &t,
                &mut authenticated,
                &mut who,
            ))
            .await
        } else {
            Some(Opened {
                to_upstream: from_client.to_vec(),
                from_upstream,
                down: ws::FrameTracker::default(),
                prior_out: 0,
            })
        };
        let Some(Opened {
            to_upstream,
            from_upstream,
            down,
            prior_out,
        }) = opened
        else {
            return;
        };
        self.metrics.connections_active.inc();
        let controls = self.controls(authenticated.as_ref());
        let mut outcome = relay::relay(
            client,
            upstream,
            &to_upstream,
            &from_upstream,
            down,
            controls,
        )
        .await;
        outcome.bytes_out += prior_out;
        self.metrics.connections_active.dec();
        // Released before the log line, so "[ws] closed" means the slot is free again.
        drop(slot);
        self.relay_ended(&outcome, &t, authenticated.as_ref(), &who);
        log_closed(conn, t.remote, started, &outcome, &who);
    }

    /// What, besides the two peers, may end this tunnel's relay.
    fn controls(&self, authenticated: Option<&(Presented, Credential)>) -> relay::Controls {
        let revocation = match (authenticated, self.auth.on_revoke) {
            (Some((presented, _)), OnRevoke::Close) => {
                let store = self.creds.clone();
                let presented = presented.clone();
                Some(relay::Revocation {
                    changed: store.subscribe(),
                    still_valid: Box::new(move || auth::still_valid(&presented, &store.load())),
                })
            }
            _ => None,
        };
        relay::Controls {
            zero_copy: self.splice.zero_copy,
            worker_loop: self
                .splice
                .worker_loop
                .then_some(self.splice.worker_loop_after),
            revocation,
            shutdown: Some(self.cut.clone()),
            idle_timeout: self.splice.idle_timeout(),
            max_lifetime: self.splice.max_lifetime(),
        }
    }

    /// The relay's end, counted; gatewarden's own reasons for ending it are logged.
    fn relay_ended(
        &self,
        outcome: &relay::Outcome,
        t: &Tunnel,
        authenticated: Option<&(Presented, Credential)>,
        who: &Who,
    ) {
        let (conn, remote) = (t.conn, t.remote);
        if let Some(why @ (EndedBy::IdleTimeout | EndedBy::MaxLifetime)) = outcome.ended_by {
            info!(conn = %conn, remote = %remote, reason = %why, "[ws] closing");
        }
        if outcome.ended_by == Some(EndedBy::TokenRevoked) {
            let (presented, credential) = authenticated.expect("revocation needs a token");
            warn!(
                conn = %conn,
                reason = %Reason::TokenRevoked,
                client = %credential.who(),
                presented = %Fp(Some(presented.fingerprint)),
                "[ws] revoked"
            );
        }
        self.metrics.spliced(outcome.bytes_in, outcome.bytes_out);
        if let Some((crate::relay::Side::Upstream, c)) = &outcome.close {
            let code = c.code.unwrap_or(1005);
            if code == 1008 {
                self.metrics.upstream_refusals.inc();
            }
            self.metrics.sessions.gateway_closed(who.client(), code);
            if let (true, 1008, Some(key)) = (who.by_gateway, code, who.device_token) {
                // The gateway refused a device token gatewarden let through unjudged: a
                // failed attempt of this IP, as if gatewarden had refused it.
                if let Failure::Counted(Some(block)) =
                    self.throttle
                        .failure(t.ip, key, self.creds.load().generation)
                {
                    self.log_block(t.ip, remote, block);
                }
            }
        }
        if outcome.in_loop {
            self.metrics.worker_loop_tunnels.inc();
        }
        self.metrics
            .closed(match (outcome.ended_by, &outcome.close) {
                (Some(EndedBy::TokenRevoked), _) => "revoked",
                (Some(EndedBy::Shutdown), _) => "drained",
                (Some(why), _) => why.as_str(),
                (None, Some(_)) => "normal",
                (None, None) => "abnormal",
            });
    }

    /// The in-band part of a tunnel's start: the client's first frame is read (the gateway's
    /// bytes relayed meanwhile) and judged, the gateway's token put in where configured.
    /// `None` when the tunnel ended here (refused, closed, gone; all logged).
    pub(super) async fn first_message_phase(
        &self,
        client: &mut Stream,
        upstream: &mut Stream,
        (from_client, from_upstream): (Bytes, Bytes),
        t: &Tunnel,
        authenticated: &mut Option<(credentials::Presented, Credential)>,
        who: &mut Who,
    ) -> Option<Opened> {
        let (conn, started) = (t.conn, t.started);
        let inject = t
            .inject
            .as_ref()
            .map(|secret| match self.upstream_auth.inject {
                Inject::Password => first_message::Injection::Password(secret),
                _ => first_message::Injection::Token(secret),
            });
        let check = first_message::Check {
            authenticate: t.in_band,
            inject,
            admitted: t.authenticated.as_ref().map(|(_, c)| c),
            device_tokens: self.auth.device_tokens,
            paired: (self.auth.device_tokens == DeviceTokens::Gateway).then_some(&*self.paired),
            pointer: &self.auth.first_message_pointer,
            max_bytes: self.auth.first_message_max_bytes,
            timeout: self.auth.first_message_timeout.0,
            preauth_frames: self.auth.first_message_preauth_frames,
            deflate: t.deflate,
        };
        let creds = self.creds.load();
        // The drain's end cuts a tunnel still waiting for its first frame.
        let outcome = tokio::select! {
            o = first_message::run(client, upstream, from_client, from_upstream, &creds, &check) => o,
            _ = self.cut.cancelled() => {
                info!(
                    conn = %conn,
                    code = 1006,
                    reason = ?"gatewarden shut down after drain",
                    duration_ms = started.elapsed().as_millis() as u64,
                    "[ws] closed"
                );
                return None;
            }
        };
        match outcome {
            first_message::Outcome::Proceed(p) => {
                who.saw(&p.connect);
                if p.by_gateway {
                    self.for_the_gateway(t, &p, who);
                }
                let signed = p.connect.signed;
                let pairs = match (&p.credential, &*authenticated) {
                    _ if p.by_gateway
                        || !signed
                        || self.auth.device_tokens != DeviceTokens::Gateway =>
                    {
                        None
                    }
                    (Some(c), _) | (None, Some((_, c))) => Some(c.clone()),
                    (None, None) => None,
                };
                if let (Some(c), Some(presented), false) = (p.credential, p.presented, p.by_gateway)
                {
                    who.client = Some(c.who().to_string());
                    log_connected(
                        &self.metrics,
                        conn,
                        t.remote,
                        TokenSource::FirstMessage,
                        &c,
                        p.grace,
                        Some(who),
                    );
                    self.throttle.success(t.ip);
                    if let Some(stream) = &t.stream {
                        stream.admitted();
                    }
                    *authenticated = Some((presented, c));
                }
                if p.rewritten {
                    debug!(conn = %conn, "[ws] gateway token injected into the first frame");
                }
                let opened = Opened {
                    to_upstream: p.to_upstream,
                    from_upstream: Bytes::from(p.held),
                    down: p.down,
                    prior_out: p.bytes_out,
                };
                // A device-signed client gatewarden authenticated: the gateway's answer is
                // watched for the device token it may hand the device.
                match pairs {
                    Some(c) => {
                        self.learn_device_token(client, upstream, opened, &c, t)
                            .await
                    }
                    None => Some(opened),
                }
            }
            first_message::Outcome::Reject(r) => {
                let seen = Seen {
                    key: r.key,
                    generation: creds.generation,
                    presented: r.presented,
                    retired: r.generation,
                    client: r.client.as_ref(),
                    nothing_loaded: creds.unloaded().is_some(),
                };
                let source = Some(TokenSource::FirstMessage);
                let (_, repeat) = self.refused(r.reason, source, t.ip, t.remote, &seen);
                log_in_band_refusal(conn, t.remote, &r, creds.unloaded(), repeat);
                first_message::reject(client, upstream, &r).await;
                None
            }
            first_message::Outcome::ClientClosed {
                frame,
                down,
                bytes_out,
            } => {
                let outcome = first_message::pass_close(
                    client, upstream, &frame, down, bytes_out, !t.in_band,
                )
                .await;
                log_closed(conn, t.remote, started, &outcome, who);
                None
            }
            first_message::Outcome::Gone { side, bytes_out } => {
                info!(
                    conn = %conn,
                    code = 1006,
                    reason = ?"went away before its first message",
                    by = %side.as_str(),
                    duration_ms = started.elapsed().as_millis() as u64,
                    bytes_in = 0,
                    bytes_out = bytes_out,
                    "[ws] closed"
                );
                None
            }
        }
    }
}

/// The `[ws] unauthorized` line of a first frame that did not authenticate its client. While
/// no credential is loaded, a mismatch says why instead: it is not the client's fault. Only
/// debug for a `repeat` (the stale client's own line says it once per window).
fn log_in_band_refusal(
    conn: Uuid,
    remote: SocketAddr,
    r: &first_message::Rejection,
    unloaded: Option<&str>,
    repeat: bool,
) {
    let detail = match (r.reason, unloaded) {
        (Reason::CredentialUnavailable, Some(why)) => why,
        _ => r.detail,
    };
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                conn = %conn,
                remote = %remote,
                reason = %r.reason,
                presented = %Fp(r.presented),
                generation = %Gen(r.generation),
                source = %TokenSource::FirstMessage,
                detail = %detail,
                "[ws] unauthorized"
            )
        };
    }
    match repeat {
        false => line!(warn),
        true => line!(debug),
    }
}
