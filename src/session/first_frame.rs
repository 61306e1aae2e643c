//! The first-message phase of a tunnel: the client's first frame read (the gateway's bytes
//! relayed meanwhile) and judged, the gateway's credential put in where configured, and the
//! gateway's answer watched where a device may be paired.

use bytes::Bytes;
use tracing::debug;

use crate::auth::Reason;
use crate::config::{DeviceTokens, Inject, TokenSource};
use crate::credentials::{self, Credential};
use crate::first_message;
use crate::gate::audit::{Seen, Who};
use crate::gate::log::{log_closed, log_closed_early, log_connected, Unauthorized};
use crate::gate::Proxy;
use crate::net::Stream;

use super::start::{Opened, Tunnel};

impl Proxy {
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
        let check = self.first_frame_check(t);
        let creds = self.creds.load();
        // The drain's end cuts a tunnel still waiting for its first frame.
        let outcome = tokio::select! {
            o = first_message::run(client, upstream, from_client, from_upstream, &creds, &check) => o,
            _ = self.cut.cancelled() => {
                log_closed_early((conn, t.remote, started), "gatewarden shut down after drain", "-", 0, who);
                return None;
            }
        };
        match outcome {
            first_message::Outcome::Proceed(p) => {
                let (opened, pairs) = self.proceeded(p, t, authenticated, who);
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
                self.refused_in_band(&r, t, &creds);
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
                log_closed_early(
                    (conn, t.remote, started),
                    "went away before its first message",
                    side.as_str(),
                    bytes_out,
                    who,
                );
                None
            }
        }
    }

    /// What the first frame is read for, as the tunnel and the config say.
    fn first_frame_check<'a>(&'a self, t: &'a Tunnel) -> first_message::Check<'a> {
        let inject = t
            .inject
            .as_ref()
            .map(|secret| match self.upstream_auth.inject {
                Inject::Password => first_message::Injection::Password(secret),
                _ => first_message::Injection::Token(secret),
            });
        first_message::Check {
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
        }
    }

    /// A first frame that lets its client through: who it is recorded, its admission logged
    /// and counted; the relay's start, and the credential whose device may be paired.
    fn proceeded(
        &self,
        p: first_message::Proceed,
        t: &Tunnel,
        authenticated: &mut Option<(credentials::Presented, Credential)>,
        who: &mut Who,
    ) -> (Opened, Option<Credential>) {
        let conn = t.conn;
        who.saw(&p.connect);
        if p.by_gateway {
            self.for_the_gateway(t, &p, who);
        }
        let signed = p.connect.signed;
        let pairs = match (&p.credential, &*authenticated) {
            _ if p.by_gateway || !signed || self.auth.device_tokens != DeviceTokens::Gateway => {
                None
            }
            (Some(c), _) | (None, Some((_, c))) => Some(c.clone()),
            (None, None) => None,
        };
        if let (Some(c), Some(presented), false) = (p.credential, p.presented, p.by_gateway) {
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
        (opened, pairs)
    }

    /// A first frame that did not authenticate its client: counted against its IP, logged.
    fn refused_in_band(
        &self,
        r: &first_message::Rejection,
        t: &Tunnel,
        creds: &crate::credentials::Credentials,
    ) {
        let conn = t.conn;
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
        let detail = match (r.reason, creds.unloaded()) {
            // While no credential is loaded, a mismatch says why: not the client's fault.
            (Reason::CredentialUnavailable, Some(why)) => why,
            _ => r.detail,
        };
        Unauthorized {
            conn,
            remote: t.remote,
            reason: r.reason,
            client_ip: None,
            origin: None,
            first_frame: Some((r.presented, r.generation)),
            detail: Some(detail),
        }
        // A repeat is only debug: the stale client's own line says it once per window.
        .log(match repeat {
            false => tracing::Level::WARN,
            true => tracing::Level::DEBUG,
        });
    }
}
