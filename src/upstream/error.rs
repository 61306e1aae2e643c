//! Why the upstream could not be used, with a reason name for logs and metrics.

use std::io;
use std::time::Duration;

use crate::error_text::chain;

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
