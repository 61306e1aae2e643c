//! In-band authentication: the token rides in the client's first WebSocket frame.
//!
//! OpenClaw clients never put the token in the upgrade. They wait for the gateway's
//! `connect.challenge`, then send one `connect` request carrying `params.auth.token`. So the
//! upstream upgrade happens first and the gateway's first frame is relayed to the client at
//! once (a made-up challenge would break device-signed clients). Nothing else crosses before
//! the client's first frame has been read and judged: the client's bytes wait, and so does
//! everything the gateway sends after `auth.first_message_preauth_frames` whole frames.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::auth::{self, Decision, Reason};
use crate::config::{DeviceTokens, TokenSource};
use crate::credentials::{Credential, Credentials, PairedDevices, Presented};
use crate::net::Stream;
use crate::relay::Side;
use crate::ws::{self, FrameTracker};

mod answer;
mod client;
mod close;
mod inject;
mod said;
mod scan;

/// The facts judging needs; the whole document too when the token is to be rewritten (only
/// a rewrite needs it, judging needs two values out of it).
fn read_facts(payload: &[u8], check: &Check<'_>) -> Result<(Facts, Option<Value>), ()> {
    if matches!(check.inject, Some(Injection::Token(_))) {
        let doc = serde_json::from_slice::<Value>(payload).map_err(|_| ())?;
        Ok((Facts::of(&doc, check.pointer), Some(doc)))
    } else {
        Ok((Facts::scan(payload, check.pointer).map_err(|_| ())?, None))
    }
}

/// The role and scopes a `connect` asks for, against what its credential allows.
fn within_scopes(bound: Option<&Credential>, connect: &Connect) -> Result<(), &'static str> {
    let Some(allowed) = bound.and_then(|c| c.allowed.as_deref()) else {
        return Ok(());
    };
    match &connect.ask {
        Some(ask) => allowed
            .permits(ask)
            .map_err(|_| "asks for a role or scope outside its credential's"),
        None => Err("role and scopes unreadable (scopes is no array)"),
    }
}

#[cfg(test)]
mod tests;

pub(crate) use answer::watch as watch_answer;
pub(crate) use client::{ClientInfo, Connect};
use close::close_frame_of;
pub(crate) use close::{pass_close, reject, Rejection};
pub(crate) use inject::Injection;
use inject::Unwritable;
pub use scan::*;

/// Bytes of the gateway's held back before the client is judged; past this the gateway is
/// not read (TCP flow control holds the rest).
const HOLD_MAX: usize = 64 * 1024;

/// What the first frame is checked for.
pub(crate) struct Check<'a> {
    /// Authenticate with the token found in the frame (the `first_message` source).
    pub authenticate: bool,
    /// The gateway's secret to put in the frame (`upstream_auth.inject = "first_message"`
    /// or `"password"`).
    pub inject: Option<Injection<'a>>,
    /// The credential that admitted the client at the upgrade: its roles and scopes bound
    /// what the `connect` may ask for.
    pub admitted: Option<&'a Credential>,
    /// A `connect` with only a device token: refused, or left for the gateway to judge.
    pub device_tokens: DeviceTokens,
    /// Device tokens the gateway issued through gatewarden (with `device_tokens =
    /// "gateway"`).
    pub paired: Option<&'a PairedDevices>,
    pub pointer: &'a str,
    pub max_bytes: usize,
    pub timeout: Duration,
    /// Whole upstream frames relayed before the client has authenticated (only while
    /// `authenticate`; a client authenticated at the upgrade gets everything at once).
    pub preauth_frames: u64,
    /// The upstream accepted `permessage-deflate`: RSV1 on a frame means "compressed".
    pub deflate: Option<ws::Deflate>,
}

/// The client may proceed: these bytes go upstream first, then the relay takes over.
pub(crate) struct Proceed {
    /// The first frame (original bytes, or re-encoded with the injected token) and every
    /// byte the client sent behind it, in order.
    pub to_upstream: Vec<u8>,
    /// State of the gateway→client direction, as far as it was relayed during the phase.
    pub down: FrameTracker,
    /// The gateway's bytes held back during the phase, for the relay to send first.
    pub held: Vec<u8>,
    pub bytes_out: u64,
    /// The matching credential, when the frame authenticated the client.
    pub credential: Option<Credential>,
    pub presented: Option<Presented>,
    /// Accepted within a grace period: (generation, time left).
    pub grace: Option<(u64, Duration)>,
    pub rewritten: bool,
    /// What the `connect` says of its client and asks for (the session's audit).
    pub connect: Connect,
    /// Forwarded for the gateway to judge (a paired device's token, `auth.device_tokens =
    /// "gateway"`): nothing was checked or injected.
    pub by_gateway: bool,
}

#[allow(clippy::large_enum_variant)] // one per tunnel, returned once and taken apart at once: no box
pub(crate) enum Outcome {
    Proceed(Proceed),
    Reject(Rejection),
    /// One side went away before the first frame was judged.
    Gone {
        side: crate::relay::Side,
        bytes_out: u64,
    },
    /// The client's first frame is a close (typically answering the gateway's own close of
    /// a silent socket): not an authentication attempt; [`pass_close`] completes it.
    ClientClosed {
        frame: Vec<u8>,
        down: FrameTracker,
        bytes_out: u64,
    },
}

/// Relays gateway→client while reading the client's first frame, then judges it.
pub(crate) async fn run(
    client: &mut Stream,
    upstream: &mut Stream,
    from_client: Bytes,
    from_upstream: Bytes,
    creds: &Credentials,
    check: &Check<'_>,
) -> Outcome {
    let mut phase = Phase {
        // The gateway's bytes pass to the client up to the end of its `limit`th frame;
        // what follows is held, and the gateway is not read again, until the client is
        // judged.
        limit: if check.authenticate {
            check.preauth_frames
        } else {
            u64::MAX
        },
        down: FrameTracker::default(),
        bytes_out: 0,
        held: Vec::new(),
        held_frames: FrameTracker::default(),
        upstream_closed: false,
    };
    let first = match phase
        .read_first(client, upstream, from_client, from_upstream, check)
        .await
    {
        Ok(first) => first,
        Err(outcome) => return outcome,
    };
    phase.judge(first, creds, check)
}

/// The phase's state while the client's first frame is awaited.
struct Phase {
    /// Gateway frames passed to the client before it is judged.
    limit: u64,
    /// The gateway→client direction, as far as it was relayed.
    down: FrameTracker,
    bytes_out: u64,
    /// The gateway's bytes held back until the client is judged.
    held: Vec<u8>,
    /// Follows the held bytes for one thing: the gateway closing before the client is
    /// judged (the OpenClaw gateway closes a silent socket), whose close frame is passed on.
    held_frames: FrameTracker,
    upstream_closed: bool,
}

/// The client's first message, read whole.
struct First {
    /// Everything the client sent so far: the first frame, and what came behind it.
    buf: Vec<u8>,
    /// The first frame's length in `buf`.
    frame_len: usize,
    /// Its payload, unmasked (and inflated).
    payload: Vec<u8>,
}

impl Phase {
    fn reject(self, reason: Reason, detail: &'static str) -> Outcome {
        self.refuse(reason, detail, None, None, None, None)
    }

    /// A first message the gateway's secret cannot be written into.
    fn unwritable(
        self,
        u: Unwritable,
        id: Option<Value>,
        presented: Option<&Presented>,
        payload: &[u8],
    ) -> Outcome {
        match u {
            Unwritable::DeviceSigned => self.refuse(
                Reason::TokenRewriteRefused,
                "device signature covers the token",
                id,
                presented,
                None,
                Some(payload),
            ),
            Unwritable::NoPointer => self.reject(
                Reason::FirstMessageInvalid,
                "the gateway's secret has no place in this message",
            ),
        }
    }

    /// `payload`: the first message, when it was read as one (its client is named in logs).
    fn refuse(
        self,
        reason: Reason,
        detail: &'static str,
        id: Option<Value>,
        presented: Option<&Presented>,
        generation: Option<u64>,
        payload: Option<&[u8]>,
    ) -> Outcome {
        Outcome::Reject(Rejection {
            reason,
            detail,
            id,
            presented: presented.map(|p| p.fingerprint),
            key: presented.map_or(0, Presented::key),
            generation,
            client: payload.and_then(ClientInfo::of),
            down: self.down,
        })
    }

    fn gone(&self, side: Side) -> Outcome {
        Outcome::Gone {
            side,
            bytes_out: self.bytes_out,
        }
    }

    /// Reads until the client's first frame is whole, passing the gateway's frames on
    /// (up to `limit`) meanwhile. `Err` is the phase's end without a message to judge.
    async fn read_first(
        &mut self,
        client: &mut Stream,
        upstream: &mut Stream,
        from_client: Bytes,
        from_upstream: Bytes,
        check: &Check<'_>,
    ) -> Result<First, Outcome> {
        let deadline = Instant::now() + check.timeout;
        let mut buf: Vec<u8> = from_client.to_vec();
        // Small: it lives as long as the client takes to send its first frame (up to
        // auth.first_message_timeout), and the gateway says little before that.
        let mut relay_buf = from_upstream.to_vec();
        relay_buf.reserve(8 * 1024);
        loop {
            if !relay_buf.is_empty() {
                self.pass_down(client, &relay_buf).await?;
                relay_buf.clear();
            }
            match parse(&buf, check.max_bytes, check.deflate) {
                Parsed::Incomplete => {}
                Parsed::TooLarge => {
                    return Err(self.take().reject(
                        Reason::FirstMessageTooLarge,
                        "first frame larger than auth.first_message_max_bytes",
                    ))
                }
                Parsed::Invalid(detail) => {
                    return Err(self.take().reject(Reason::FirstMessageInvalid, detail))
                }
                Parsed::ProtocolError(detail) => {
                    return Err(self.take().reject(Reason::ProtocolError, detail))
                }
                Parsed::Close { len } => {
                    let this = self.take();
                    return Err(Outcome::ClientClosed {
                        frame: buf[..len].to_vec(),
                        down: this.down,
                        bytes_out: this.bytes_out,
                    });
                }
                // The gateway has closed: nobody is left to answer this message.
                Parsed::Message { .. } if self.upstream_closed => {
                    return Err(self.gone(Side::Upstream))
                }
                Parsed::Message { len, payload } => {
                    return Ok(First {
                        buf,
                        frame_len: len,
                        payload,
                    })
                }
            }
            buf.reserve(4096);
            let reading = !self.upstream_closed && self.held.len() < HOLD_MAX;
            tokio::select! {
                r = client.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => return Err(self.gone(Side::Client)),
                    Ok(_) => {}
                },
                // read_buf: into spare capacity, nothing to zero first.
                r = upstream.read_buf(&mut relay_buf), if reading => match r {
                    Ok(0) | Err(_) => return Err(self.gone(Side::Upstream)),
                    Ok(_) => {}
                },
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(self.take().reject(Reason::FirstMessageTimeout, "no first frame in time"));
                }
            }
        }
    }

    /// The phase's state, moved out for an outcome that ends it.
    fn take(&mut self) -> Phase {
        std::mem::replace(
            self,
            Phase {
                limit: 0,
                down: FrameTracker::default(),
                bytes_out: 0,
                held: Vec::new(),
                held_frames: FrameTracker::default(),
                upstream_closed: true,
            },
        )
    }

    /// The gateway's bytes: passed to the client up to the `limit`th frame, held after it;
    /// a close frame among the held ones is passed on at once.
    async fn pass_down(&mut self, client: &mut Stream, bytes: &[u8]) -> Result<(), Outcome> {
        let n = self.down.observe_frames(bytes, self.limit);
        let (pass, hold) = bytes.split_at(n);
        self.held_frames.observe(hold);
        self.held.extend_from_slice(hold);
        if client.write_all(pass).await.is_err() {
            return Err(self.gone(Side::Client));
        }
        self.bytes_out += n as u64;
        if let (Some(close), false) = (self.held_frames.close(), self.upstream_closed) {
            self.upstream_closed = true;
            let frame = close_frame_of(close);
            self.down.observe(&frame);
            if client.write_all(&frame).await.is_err() {
                return Err(self.gone(Side::Client));
            }
            self.bytes_out += frame.len() as u64;
        }
        Ok(())
    }

    /// Judges the first message: its token (when it must authenticate the client), the
    /// role and scopes it asks for (when its credential bounds them), then the gateway's
    /// secret put in (when configured).
    fn judge(self, first: First, creds: &Credentials, check: &Check<'_>) -> Outcome {
        let Ok((facts, doc)) = read_facts(&first.payload, check) else {
            return self.reject(Reason::FirstMessageInvalid, "first message is not JSON");
        };
        let Facts { id, token, said } = facts;
        let connect = Connect::from_said(said);
        if token.is_none()
            && connect.device_token.is_some()
            && check.authenticate
            && check.device_tokens == DeviceTokens::Gateway
        {
            return self.for_the_gateway(first, connect);
        }
        let presented = token.as_deref().map(|t| Presented::new(t.as_bytes()));
        let verdict = verify(token.as_deref(), presented.as_ref(), creds, check);
        if let Err((Reason::TokenMismatch | Reason::TokenStale, ..)) = verdict {
            if let Some(c) = paired_device(presented.as_ref(), &connect, creds, check) {
                let mut connect = connect;
                // The device token rides in `auth.token`: its key tells refusals apart.
                connect.device_token = presented.as_ref().map(Presented::key);
                return self.paired_device(first, connect, c, id);
            }
        }
        let (credential, grace) = match verdict {
            Ok(accepted) => accepted,
            Err((reason, detail, generation)) => {
                let payload = Some(&first.payload[..]);
                return self.refuse(reason, detail, id, presented.as_ref(), generation, payload);
            }
        };
        let bound = credential.as_ref().or(check.admitted);
        if let Err(detail) = within_scopes(bound, &connect) {
            let payload = Some(&first.payload[..]);
            return self.refuse(
                Reason::ScopeNotAllowed,
                detail,
                id,
                presented.as_ref(),
                None,
                payload,
            );
        }
        let First {
            buf,
            frame_len,
            payload,
        } = first;
        let (mut to_upstream, rewritten) = match inject::rewrite(
            check.inject,
            &payload,
            doc,
            presented.as_ref(),
            check.pointer,
        ) {
            Ok(Some(frame)) => (frame, true),
            Ok(None) => (buf[..frame_len].to_vec(), false),
            Err(u) => return self.unwritable(u, id, presented.as_ref(), &payload),
        };
        to_upstream.extend_from_slice(&buf[frame_len..]);
        Outcome::Proceed(Proceed {
            to_upstream,
            down: self.down,
            held: self.held,
            bytes_out: self.bytes_out,
            credential,
            presented,
            grace,
            rewritten,
            connect,
            by_gateway: false,
        })
    }

    /// A device-signed `connect` whose `auth.token` is a device token the gateway issued
    /// through gatewarden: its pairing credential's scopes apply; then forwarded as it came
    /// for the gateway to judge the device token.
    fn paired_device(
        self,
        first: First,
        connect: Connect,
        credential: Credential,
        id: Option<Value>,
    ) -> Outcome {
        if let Some(allowed) = credential.allowed.as_deref() {
            if connect
                .ask
                .as_ref()
                .is_none_or(|a| allowed.permits(a).is_err())
            {
                let detail = "asks for a role or scope outside its credential's";
                let payload = first.payload.clone();
                return self.refuse(
                    Reason::ScopeNotAllowed,
                    detail,
                    id,
                    None,
                    None,
                    Some(&payload),
                );
            }
        }
        let mut p = self.for_the_gateway(first, connect);
        if let Outcome::Proceed(p) = &mut p {
            p.credential = Some(credential);
        }
        p
    }

    /// A paired device's `connect` (a device token, no shared token) under
    /// `auth.device_tokens = "gateway"`: forwarded as it came, nothing injected (an injected
    /// secret would let it in whatever its device token is worth).
    fn for_the_gateway(self, first: First, connect: Connect) -> Outcome {
        Outcome::Proceed(Proceed {
            to_upstream: first.buf,
            down: self.down,
            held: self.held,
            bytes_out: self.bytes_out,
            credential: None,
            presented: None,
            grace: None,
            rewritten: false,
            connect,
            by_gateway: true,
        })
    }
}

/// The pairing credential of a device token the gateway issued through gatewarden, when
/// the connect is device-signed (the gateway takes `auth.token` as a device token then).
fn paired_device(
    presented: Option<&Presented>,
    connect: &Connect,
    creds: &Credentials,
    check: &Check<'_>,
) -> Option<Credential> {
    let store = check.paired.filter(|_| connect.signed)?;
    store.paired(presented?, creds)
}

/// The first message's token against the credentials, when it must authenticate the
/// client: the credential that matched (and the grace it was accepted within), or why not.
#[allow(clippy::type_complexity)] // one caller, the shapes named at it
fn verify(
    token: Option<&str>,
    presented: Option<&Presented>,
    creds: &Credentials,
    check: &Check<'_>,
) -> Result<(Option<Credential>, Option<(u64, Duration)>), (Reason, &'static str, Option<u64>)> {
    if !check.authenticate {
        return Ok((None, None));
    }
    if creds.unloaded().is_some() {
        return Err((Reason::CredentialUnavailable, "no credential loaded", None));
    }
    let Some(p) = presented else {
        return Err((Reason::TokenMissing, "no token at the pointer", None));
    };
    // A signed token is judged by its kind, as at the upgrade.
    let decision = match token.filter(|t| crate::credentials::looks_like_jwt(t.as_bytes())) {
        Some(t) => auth::decide(
            Some(&auth::Found {
                token: t.as_bytes().to_vec(),
                source: TokenSource::FirstMessage,
                cert: None,
                ambiguous: false,
            }),
            creds,
        ),
        // Hashed once: the digest is the costly part of a check.
        None => auth::judge_presented(p.clone(), TokenSource::FirstMessage, creds),
    };
    match decision {
        Decision::Allow {
            credential, grace, ..
        } => Ok((Some(credential), grace)),
        Decision::Deny {
            reason, generation, ..
        } => Err((reason, "token matches no current credential", generation)),
    }
}
