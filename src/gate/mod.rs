//! The gate: the judgement of what a client's request must pass before anything reaches
//! the gateway. No sockets here: a request head in, a verdict out (`crate::session` does
//! what the verdict says).
//! - [`Proxy`]: the state both read, and the head's limits ([`Proxy::check_head`]);
//! - `admit`: the one admission (throttle, Origin, token, decision), logged and counted;
//! - `identity`: who the gateway is told the client is (trusted-proxy injection);
//! - `plain`: a plain request's judgement (answered here, public, or admitted);
//! - `refuse`: a refusal rendered as an HTTP status or a 101 and a close frame;
//! - `headers`: the one policy for what the upstream is told;
//! - `audit`, `log`: who a client is, and the lines of a connection's life.

use std::net::SocketAddr;
use std::sync::Arc;

use ::http::header::{HeaderValue, CONNECTION, HOST};
use ::http::{Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::{AuthConfig, TokenSource, UpstreamAuthConfig, UpstreamOrigin};
use crate::credentials::CredentialStore;
use crate::http1::respond::{text, Body};
use crate::metrics::Metrics;
use crate::throttle::Throttle;
use crate::upstream::UpstreamClient;

pub(crate) mod admit;
pub(crate) mod audit;
pub(crate) mod control_ui;
pub(crate) mod headers;
mod identity;
pub(crate) mod log;
pub(crate) mod plain;
pub(crate) mod refuse;

/// What `OPTIONS *` and a refused `CONNECT` list as allowed.
pub(crate) const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Everything a request needs. Each worker thread has its own copy (shared parts behind
/// `Arc`s), so the reference counts and cancellation tokens a connection touches stay in
/// its own core's cache.
#[derive(Clone)]
pub(crate) struct Proxy {
    pub auth: AuthConfig,
    /// The token sources in effect (`auth.sources`, or the default for the credentials).
    pub sources: Vec<TokenSource>,
    pub upstream_auth: UpstreamAuthConfig,
    /// `upstream_auth.header` when `upstream_auth.inject = "header"`.
    pub inject_header: Option<::http::HeaderName>,
    /// Device tokens the gateway issued through gatewarden (`auth.device_tokens =
    /// "gateway"`); shared by every worker's copy.
    pub paired: Arc<crate::credentials::PairedDevices>,
    /// `upstream_auth.user_header` when `upstream_auth.inject = "trusted_proxy"`.
    pub user_header: Option<::http::HeaderName>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `listen_proxy_protocol`: trusted peers open with a PROXY protocol header.
    pub proxy_protocol: bool,
    pub creds: Arc<CredentialStore>,
    pub upstream: Arc<UpstreamClient>,
    /// Whether clients reach us over TLS (decides the cookie's `Secure` flag).
    pub tls: bool,
    /// Tracks upgraded tunnels, which outlive the HTTP connection they came from.
    pub tasks: TaskTracker,
    /// Cancelled when the drain time is over (the server's `Shutdown::cut`): tunnels still
    /// open are closed.
    pub cut: CancellationToken,
    pub metrics: Arc<Metrics>,
    pub throttle: Arc<Throttle>,
    pub splice: crate::config::SpliceConfig,
    pub forwarded_headers: bool,
    pub upstream_origin: UpstreamOrigin,
    /// `limits.max_header_bytes`, checked exactly on the parsed head (hyper's buffer limit
    /// is only approximate).
    pub max_header_bytes: usize,
    /// `limits.max_headers`: hyper enforces it on HTTP/1.1 heads; HTTP/2's are counted here.
    pub max_headers: usize,
    /// `limits.max_request_line`.
    pub max_request_line: usize,
    /// `timeouts.upstream_response`: the deadline for a proxied request's response head.
    pub upstream_response: std::time::Duration,
    /// The Control UI's shell, when it is served without a token.
    pub(crate) control_ui: Option<Arc<control_ui::ControlUi>>,
    /// `limits.max_http_requests`: one permit per plain request in flight upstream.
    pub(crate) http_permits: Arc<tokio::sync::Semaphore>,
}

/// Bytes of the request line as received (give or take separators).
fn request_line_len<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    req.method().as_str().len()
        + uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3)
        + 12
}

/// Bytes of the request line and headers as received (give or take separators).
fn head_size<B>(req: &Request<B>) -> usize {
    let line = request_line_len(req);
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

impl Proxy {
    /// The gate as `config` sets it up. `sources` are the token sources in effect (see
    /// `AuthConfig::effective_sources`); `cut` is the shutdown phase that closes tunnels.
    pub(crate) fn new(
        config: &crate::config::Config,
        sources: Vec<TokenSource>,
        creds: Arc<CredentialStore>,
        upstream: Arc<UpstreamClient>,
        metrics: Arc<Metrics>,
        tls: bool,
        cut: CancellationToken,
    ) -> Proxy {
        Proxy {
            sources,
            throttle: Arc::new(Throttle::new(
                config.auth.max_failures,
                config.auth.failure_window.0,
                config.auth.max_backoff.0,
            )),
            upstream_origin: config.upstream_origin,
            splice: config.splice.clone(),
            forwarded_headers: config.forwarded_headers,
            max_header_bytes: config.limits.max_header_bytes,
            max_headers: config.limits.max_headers,
            max_request_line: config.limits.max_request_line,
            upstream_response: config.timeouts.upstream_response.0,
            metrics,
            upstream,
            auth: config.auth.clone(),
            upstream_auth: config.upstream_auth.clone(),
            inject_header: config.upstream_auth.header_name(),
            user_header: config.upstream_auth.user_header_name(),
            trusted_proxies: config.trusted_proxies.clone(),
            proxy_protocol: config.listen_proxy_protocol,
            creds,
            tls,
            tasks: TaskTracker::new(),
            cut,
            control_ui: None,
            http_permits: Arc::new(tokio::sync::Semaphore::new(
                match config.limits.max_http_requests {
                    0 => tokio::sync::Semaphore::MAX_PERMITS,
                    n => n,
                },
            )),
            paired: Arc::default(),
        }
    }

    /// Serves the OpenClaw Control UI's shell without a token (see `control_ui`).
    pub(crate) fn with_control_ui(mut self, public: bool) -> Proxy {
        self.control_ui =
            public.then(|| Arc::new(control_ui::ControlUi::new(&self.auth.control_ui_routes)));
        self
    }

    /// The size limits on a request head, answered 431 / 414, and a head whose target
    /// server is ambiguous (two `Host` headers, RFC 9112 §3.2), answered 400.
    pub(crate) fn check_head<B>(
        &self,
        req: &Request<B>,
        remote: SocketAddr,
    ) -> Option<Response<Body>> {
        let mut hosts = req.headers().get_all(HOST).iter();
        if hosts.next().is_some() && hosts.next().is_some() {
            self.metrics.refused("duplicate_host");
            info!(remote = %remote, reason = %"duplicate_host", "[http] request refused");
            let mut resp = text(
                StatusCode::BAD_REQUEST,
                "bad request: more than one Host header\n",
            );
            // Which server the client meant is unknown: nothing else of its is read.
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return Some(resp);
        }
        let head = head_size(req);
        if head > self.max_header_bytes {
            self.metrics.refused("header_too_large");
            info!(remote = %remote, reason = %"header_too_large", bytes = head, "[http] request refused");
            return Some(text(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request header fields too large\n",
            ));
        }
        let line = request_line_len(req);
        if line > self.max_request_line {
            self.metrics.refused("request_line_too_long");
            info!(remote = %remote, reason = %"request_line_too_long", bytes = line, "[http] request refused");
            return Some(text(StatusCode::URI_TOO_LONG, "request line too long\n"));
        }
        None
    }
}
