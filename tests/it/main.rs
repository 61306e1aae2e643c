//! The integration suite: one crate, one binary (each file a module), so the crate under
//! test is linked once. Tests start the real server or binary on port 0 and talk to it over
//! real sockets; `common` is the harness.

// A test crate has no public interface: `pub` in `common` is for its sibling modules.
#![allow(unreachable_pub)]
// libc calls the tests make to set up what they test (a FIFO, TCP_INFO, the user).
#![allow(unsafe_code)]

mod binary;
mod bodies;
mod common;
mod control_ui;
mod docs;
mod doctor;
mod h2_hold;
mod hardening;
mod http;
mod http2;
mod jwt;
mod jwt_fetched;
mod layout;
mod leaks;
mod lifecycle;
mod log_flood;
mod malformed;
mod openclaw;
mod ops;
mod ownership;
mod paired_devices;
mod reload;
mod resets;
mod security;
mod stale_clients;
mod tls;
mod transparency;
mod websocket;
mod workers;
