//! A tunnel's life after the 101: the first-message phase where one is needed
//! (`first_frame`), then the relay until either side closes, the token is revoked, or
//! gatewarden shuts down; its end counted and logged.

use std::sync::Arc;

use bytes::Bytes;
use tracing::{info, warn};

use crate::auth::{self, Reason};
use crate::config::{DeviceTokens, OnRevoke};
use crate::credentials::{Credential, Presented};
use crate::net::Stream;
use crate::relay::{self, EndedBy};
use crate::ws;

use crate::gate::audit::Who;
use crate::gate::log::{log_closed, Fp};
use crate::gate::Proxy;
use crate::throttle::Failure;

use super::start::{Opened, Tunnel};

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
        // A signed token is not in any file: a reload cannot revoke it, its `exp` ends it.
        let expires = authenticated.and_then(|(_, c)| c.expires).map(|at| {
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        });
        let revocation = match (authenticated, self.auth.on_revoke) {
            (Some((_, c)), _) if c.expires.is_some() => None,
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
            expires,
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
        if outcome.ended_by == Some(EndedBy::TokenExpired) {
            let (presented, credential) = authenticated.expect("expiry needs a token");
            info!(
                conn = %conn,
                remote = %remote,
                reason = %Reason::TokenExpired,
                client = %credential.who(),
                presented = %Fp(Some(presented.fingerprint)),
                "[ws] closing"
            );
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
}
