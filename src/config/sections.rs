//! The other sections: TLS, the relay, TCP, limits, admin, timeouts, shutdown, logs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::Secs;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. With `key`, the listener speaks TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// PEM CA certificates: when set, clients must present a certificate it signed (mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// A connection must complete its TLS handshake within this time.
    pub handshake_timeout: Secs,
    /// Application protocols offered in the handshake (ALPN), most preferred first: `h2`
    /// (HTTP/2, with WebSockets over it as RFC 8441 says) and `http/1.1`. A client that
    /// offers none speaks HTTP/1.1.
    pub alpn: Vec<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            client_ca: None,
            handshake_timeout: Secs(Duration::from_secs(10)),
            alpn: vec!["h2".into(), "http/1.1".into()],
        }
    }
}

/// HTTP/2 connections (TLS listeners offering `h2`): how many streams one connection may
/// carry and how much each may have in flight, so one client's connection is bounded and
/// one slow stream cannot stall its neighbours.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Config {
    /// Streams (requests and WebSocket tunnels) open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Bytes a client may send on one stream before gatewarden has passed them on (the
    /// stream's flow-control window).
    pub stream_window_bytes: u32,
    /// Bytes a client may send on all its streams together before gatewarden has passed
    /// them on. Larger than one stream's window, so a stream whose gateway side is slow
    /// cannot use up the connection's window.
    pub connection_window_bytes: u32,
    /// Ping an HTTP/2 connection that has been quiet this long, and close it when the ping
    /// is not answered within the same time; 0 = no pings.
    pub keepalive_interval: Secs,
    /// Close a connection that has had no open stream for this long (GOAWAY); 0 = never.
    /// A connection on which nothing passed the gate yet is closed after
    /// `timeouts.header_read` instead.
    pub idle_timeout: Secs,
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            max_concurrent_streams: 128,
            stream_window_bytes: 256 * 1024,
            connection_window_bytes: 4 * 1024 * 1024,
            keepalive_interval: Secs(Duration::from_secs(60)),
            idle_timeout: Secs(Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpliceConfig {
    /// End a tunnel after this long without a byte either way (close 1001); 0 = off.
    pub idle_timeout: Secs,
    /// End every tunnel after this long (close 1001), so clients re-authenticate; 0 = off.
    pub max_lifetime: Secs,
    /// Move large WebSocket payloads socket → pipe → socket with splice(2) (Linux, plain
    /// TCP both sides), never through user space; frame headers are still read to track
    /// frames. Off: every byte is copied through a pooled buffer (portable).
    pub zero_copy: bool,
    /// Relay tunnels between two plain sockets in each worker thread's own loop: one task
    /// wake-up per batch of socket events, instead of a task wake-up per message. Off:
    /// every tunnel's own task moves its bytes (as TLS tunnels always are).
    pub worker_loop: bool,
    /// Frames (both ways) a tunnel carries in its own task before it moves to the worker
    /// loop: for a short tunnel the move (allocations, a hand-over between tasks) costs more
    /// than it saves. 0: at once.
    pub worker_loop_after: u64,
}

impl Default for SpliceConfig {
    fn default() -> Self {
        SpliceConfig {
            idle_timeout: Secs::default(),
            max_lifetime: Secs::default(),
            zero_copy: false,
            worker_loop: true,
            worker_loop_after: 16,
        }
    }
}

/// TCP options gatewarden sets on its sockets (Linux; elsewhere the system's defaults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Save the ACKs the kernel would send on its own for what gatewarden answers at once,
    /// as HAProxy's `tcp-smart-accept` and `tcp-smart-connect` do: `TCP_QUICKACK` off on the
    /// listener (accepted sockets inherit it, so the ACK of an upgrade request rides on the
    /// 101 or the 401) and on each upstream socket until the upgrade request is out (the
    /// handshake's last ACK rides on it). Where the peer has more to send before we answer
    /// (a head in pieces; the gateway's 101, often followed by a first frame) quick ACKs are
    /// turned back on, so a peer with Nagle's algorithm on does not wait the kernel's 40 ms
    /// delayed-ACK time for us during the handshake. A tunnel's ACKs are the kernel's own
    /// choice either way (which makes a client that writes each message in pieces with
    /// Nagle on wait 40 ms per message, with or without this option). Off: the kernel's
    /// own choice throughout.
    pub delayed_ack: bool,
    /// TCP keepalive on client sockets and on upstream sockets off loopback: probes after
    /// this long without a segment, so a peer that vanished ends its tunnel (see
    /// `net::sockopt::keepalive`). 0 turns it off.
    pub keepalive: Secs,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            delayed_ack: true,
            keepalive: Secs(std::time::Duration::from_secs(60)),
        }
    }
}

impl TcpConfig {
    /// `tcp.keepalive`, `None` when off.
    pub fn keepalive_idle(&self) -> Option<std::time::Duration> {
        (!self.keepalive.0.is_zero()).then_some(self.keepalive.0)
    }
}

impl SpliceConfig {
    pub fn idle_timeout(&self) -> Option<Duration> {
        Some(self.idle_timeout.0).filter(|d| !d.is_zero())
    }

    pub fn max_lifetime(&self) -> Option<Duration> {
        Some(self.max_lifetime.0).filter(|d| !d.is_zero())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open connections (including WebSocket tunnels) at once; 0 = unlimited.
    pub max_connections: usize,
    /// Open connections from one client IP at once; 0 = unlimited.
    pub max_connections_per_ip: usize,
    /// Request header lines per request (431 beyond).
    pub max_headers: usize,
    /// Bytes of request line + headers (431 beyond); at least 8192.
    pub max_header_bytes: usize,
    /// Bytes of the request line (method, target, version) alone (414 beyond): a query
    /// string is where junk and oversized tokens arrive.
    pub max_request_line: usize,
    /// Plain HTTP requests in flight to the upstream at once, over all connections; more
    /// are answered 503 at once (not queued); 0 = unlimited.
    pub max_http_requests: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 10_000,
            max_connections_per_ip: 256,
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            max_request_line: 8 * 1024,
            max_http_requests: 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `ip:port` for /healthz, /readyz, /metrics; empty disables the admin listener.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9187".into(),
        }
    }
}

impl AdminConfig {
    pub fn addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTlsConfig {
    /// PEM CA certificates to verify the upstream with, instead of the public web PKI roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Accept any upstream certificate. Only for tests and emergencies; logged loudly.
    pub insecure: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// A client must finish sending request headers within this time.
    pub header_read: Secs,
    /// Connecting to the upstream (TCP) must succeed within this time.
    pub upstream_connect: Secs,
    /// A proxied plain HTTP request's response head must arrive within this time after the
    /// request was sent (504 otherwise). The body then streams for as long as it takes.
    pub upstream_response: Secs,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: Secs(Duration::from_secs(10)),
            upstream_connect: Secs(Duration::from_secs(5)),
            upstream_response: Secs(Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long open connections may keep going after SIGTERM/SIGINT.
    pub drain: Secs,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain: Secs(Duration::from_secs(30)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `gatewarden=debug`, ...); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}
