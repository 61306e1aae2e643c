//! The `[ws] unauthorized` line of a refusal that is not the upgrade's token judgement
//! ([`super::Refused`] is that one): a throttled IP, a foreign Origin, a client with no name
//! to give the gateway, a first frame that did not authenticate its client.

use std::net::{IpAddr, SocketAddr};

use tracing::Level;
use uuid::Uuid;

use crate::auth::Reason;
use crate::config::TokenSource;
use crate::credentials::Fingerprint;

use super::{Fp, Gen};

pub(crate) struct Unauthorized<'a> {
    pub(crate) conn: Uuid,
    pub(crate) remote: SocketAddr,
    pub(crate) reason: Reason,
    /// The real client behind a trusted proxy, where it was worked out.
    pub(crate) client_ip: Option<IpAddr>,
    /// The foreign `Origin`.
    pub(crate) origin: Option<&'a str>,
    /// A first frame's token: its fingerprint and the generation it was retired at.
    pub(crate) first_frame: Option<(Option<Fingerprint>, Option<u64>)>,
    pub(crate) detail: Option<&'a str>,
}

impl Unauthorized<'_> {
    /// At `level` (a warning; debug for what a flood repeats).
    pub(crate) fn log(&self, level: Level) {
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    conn = %self.conn,
                    remote = %crate::logging::Peer(self.remote),
                    client_ip = self.client_ip.map(tracing::field::display),
                    reason = %self.reason,
                    origin = self.origin.map(tracing::field::display),
                    presented = self.first_frame.map(|(fp, _)| tracing::field::display(Fp(fp))),
                    generation = self.first_frame.map(|(_, g)| tracing::field::display(Gen(g))),
                    source = self.first_frame.map(|_| tracing::field::display(TokenSource::FirstMessage)),
                    detail = self.detail.map(tracing::field::display),
                    "[ws] unauthorized"
                )
            };
        }
        match level {
            Level::DEBUG | Level::TRACE => line!(debug),
            Level::INFO => line!(info),
            _ => line!(warn),
        }
    }
}
