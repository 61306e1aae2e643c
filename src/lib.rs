//! gatewarden: an authentication sidecar for WebSocket gateways.
//!
//! A connection flows through the modules in this order:
//! [`server`] (accept, [`tls`]) → [`http1::fast_head`] (a first request that is a
//! WebSocket upgrade) or hyper (HTTP/1.1) → [`session`] (the upgrade, the tunnel's life, a
//! plain request proxied), which asks [`gate`] for the judgement (admission, refusal, the
//! upstream's headers) → [`upstream`] (the gateway) → [`first_message`] (in-band token in
//! the first frame) → [`relay`] (byte relay, with [`ws`] tracking frames).
//! [`net`] (sockets, streams, socket options) is the ground floor under all of them;
//! [`config`], [`credentials`] (with its [`credentials::watcher`]), [`metrics`], [`admin`]
//! (health, readiness, metrics endpoints) and [`logging`] sit beside them.
//!
//! The module map is for developers: `cargo doc --no-deps --document-private-items`.

// Built with `--document-private-items` (in .ci/run, warnings denied): the crate's docs are
// the map of its private modules, so public items may link to them.
#![allow(rustdoc::private_intra_doc_links)]

// Ground floor: what every stage stands on.
pub mod config;
mod credentials;
mod error_text;
mod fetch;
mod files;
mod h2_streams;
mod metrics;
mod net;
mod path;
mod redact;
mod ws;
// The stages of a connection, in order, and what they consult.
mod auth;
mod first_message;
mod gate;
mod http1;
mod limits;
mod proxy_protocol;
mod reason;
mod relay;
mod server;
mod session;
mod throttle;
mod tls;
mod upstream;
// Asking the gateway what it is and whether it takes our secret (doctor, start-up).
mod gateway_probe;
// Beside them: operating the proxy.
mod admin;
mod cli;
mod doctor;
mod logging;
mod signals;

pub use cli::main;
pub use config::Config;
pub use credentials::{generate_token, hash_line, CredentialStore, Fingerprint};
pub use server::{Server, StartError};

/// The parsers that read what a client sends, for the fuzz targets in `fuzz/`: the same
/// functions the proxy runs, not copies.
#[doc(hidden)]
pub mod fuzz {
    pub use crate::credentials::{parse_source, CredentialError};
    pub use crate::first_message::{is_device_signed, parse, set_pointer, token_at, Facts, Parsed};
    pub use crate::http1::fast_head::parse_upgrade;
    /// Token extraction, redaction and stripping.
    pub mod auth {
        pub use crate::auth::*;
    }
    /// What a logged request target keeps.
    pub mod redact {
        pub use crate::redact::*;
    }
    /// The WebSocket frame codec and handshake checks.
    pub mod ws {
        pub use crate::ws::*;
    }
}

/// Pieces the integration tests drive directly: the relay over real sockets, the WebSocket
/// codec as a client speaks it, and the log capture. Not an interface.
#[doc(hidden)]
pub mod testing {
    pub use crate::fuzz::ws;
    pub use crate::logging::{capture_direct, TextFormat};
    pub use crate::net::Stream;
    pub use crate::relay::{relay, Controls, Side};
}
