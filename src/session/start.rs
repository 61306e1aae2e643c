//! How a tunnel starts: what the upgrade settled for it, and what its relay starts from
//! once the first-message phase (if any) is over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use uuid::Uuid;

use crate::credentials::{self, Credential, Secret};
use crate::ws;

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
