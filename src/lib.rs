//! gatewarden: an authentication sidecar for WebSocket gateways.
//!
//! A connection flows through the modules in this order:
//! [`server`] (accept, [`tls`]) → [`http1::fast_head`] (a first request that is a
//! WebSocket upgrade) or hyper (HTTP/1.1) → [`gate`] (admission, refusal, the upstream's
//! headers) → [`upstream`] (the gateway) → [`first_message`] (in-band token in the first
//! frame) → [`splice`] (byte relay, with [`ws`] tracking frames).
//! [`net`] (sockets, streams, socket options) is the ground floor under all of them;
//! [`config`], [`credentials`] (with its [`watcher`]), [`metrics`], [`admin`] (health,
//! readiness, metrics endpoints) and [`logging`] sit beside them.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod doctor;
pub mod files;
pub mod first_message;
pub mod gate;
pub mod http1;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod path;
pub mod proxy_protocol;
pub mod relay;
pub mod server;
pub mod signals;
pub mod throttle;
pub mod tls;
pub mod upstream;
pub mod ws;

pub use config::Config;
pub use server::{Server, StartError};

/// Binds and serves until `shutdown` resolves — what the binary runs.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    Server::bind(config).await?.run(shutdown).await;
    Ok(())
}
