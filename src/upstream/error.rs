//! Why the upstream could not be used, with a reason name for logs and metrics.

use std::io;
use std::time::Duration;

/// Why the upstream could not be used. Shown in logs, never to clients in detail.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("connect to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("connect to {addr} failed: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls { addr: String, source: io::Error },
    #[error("reading from {addr} failed: {source}")]
    Io { addr: String, source: io::Error },
    #[error("upstream {addr} answered badly: {what}")]
    Protocol { addr: String, what: String },
    #[error("upstream {addr}: {}", chain(.source))]
    Pooled {
        addr: String,
        source: hyper_util::client::legacy::Error,
    },
}

impl UpstreamError {
    /// The log's `reason=` for a 502.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            UpstreamError::ConnectTimeout { .. } => "upstream_connect_timeout",
            UpstreamError::Connect { .. } => "upstream_connect_failed",
            UpstreamError::Tls { .. } => "upstream_tls_failed",
            UpstreamError::Io { .. } | UpstreamError::Protocol { .. } => "upstream_bad_answer",
            UpstreamError::Pooled { source, .. } if source.is_connect() => {
                "upstream_connect_failed"
            }
            UpstreamError::Pooled { .. } => "upstream_bad_answer",
        }
    }
}

/// An error and its causes on one line: the client error's own text is only "client error
/// (Connect)", the useful part ("Connection refused") is in the chain.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
