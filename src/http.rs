//! One HTTP request from a client: authenticate it, then either proxy it as plain HTTP or
//! complete a WebSocket upgrade and hand both streams to the splice.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ::http::header::{
    HeaderName, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE, COOKIE, HOST, LOCATION,
    ORIGIN, RETRY_AFTER, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SET_COOKIE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, WWW_AUTHENTICATE,
};
use ::http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::auth::{self, Decision, Reason};
use crate::config::{
    AuthConfig, HttpAuthMode, Inject, OnRevoke, RejectMode, TokenSource, UpstreamAuthConfig,
    UpstreamOrigin,
};
use crate::credentials::{self, Credential, CredentialStore, Credentials, Fingerprint, Secret};
use crate::first_message;
use crate::metrics::Metrics;
use crate::splice::{self, EndedBy, Stream};
use crate::throttle::Throttle;
use crate::tls::ClientCert;
use crate::upstream::UpstreamClient;
use crate::ws;

pub type Body = BoxBody<Bytes, hyper::Error>;

/// What `OPTIONS *` and a refused `CONNECT` list as allowed.
const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Everything a request needs. Each worker thread has its own copy (shared parts behind
/// `Arc`s), so the reference counts and cancellation tokens a connection touches stay in
/// its own core's cache.
#[derive(Clone)]
pub struct Proxy {
    pub auth: AuthConfig,
    /// The token sources in effect (`auth.sources`, or the default for the credentials).
    pub sources: Vec<TokenSource>,
    pub upstream_auth: UpstreamAuthConfig,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `listen_proxy_protocol`: trusted peers open with a PROXY protocol header.
    pub proxy_protocol: bool,
    pub creds: Arc<CredentialStore>,
    pub upstream: Arc<UpstreamClient>,
    /// Whether clients reach us over TLS (decides the cookie's `Secure` flag).
    pub tls: bool,
    /// Tracks upgraded tunnels, which outlive the HTTP connection they came from.
    pub tasks: TaskTracker,
    /// Cancelled when the drain time is over: tunnels still open are closed.
    pub hard_stop: CancellationToken,
    pub metrics: Arc<Metrics>,
    pub throttle: Arc<Throttle>,
    pub splice: crate::config::SpliceConfig,
    pub forwarded_headers: bool,
    pub upstream_origin: UpstreamOrigin,
    /// `limits.max_header_bytes`, checked exactly on the parsed head (hyper's buffer limit
    /// is only approximate).
    pub max_header_bytes: usize,
    /// `limits.max_request_line`.
    pub max_request_line: usize,
    /// `timeouts.upstream_response`: the deadline for a proxied request's response head.
    pub upstream_response: std::time::Duration,
}

/// `fp:xxxxxxxx`, or `-` when no token was presented.
struct Fp(Option<Fingerprint>);

impl std::fmt::Display for Fp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(fp) => {
                f.write_str("fp:")?;
                fp.fmt(f)
            }
            None => f.write_str("-"),
        }
    }
}

/// A path as `Path::display` shows it, without the lossy-UTF-8 scan for the usual UTF-8 path.
struct PathText<'a>(&'a std::path::Path);

impl std::fmt::Display for PathText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.to_str() {
            Some(s) => f.write_str(s),
            None => self.0.display().fmt(f),
        }
    }
}

/// A value's `Display`, or `-` (no allocation for the common "nothing" case).
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// A generation number, or `-`.
struct Gen(Option<u64>);

impl std::fmt::Display for Gen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(g) => write!(f, "{g}"),
            None => f.write_str("-"),
        }
    }
}

/// Logs an accepted WebSocket client; a token accepted only thanks to the grace period is a
/// warning, so the operator sees which clients still hold old tokens.
fn log_connected(
    metrics: &Metrics,
    conn: Uuid,
    remote: SocketAddr,
    source: TokenSource,
    credential: &Credential,
    grace: Option<(u64, std::time::Duration)>,
) {
    metrics.auth_success(source.as_str(), credential.who());
    let presented = Fp(Some(credential.fingerprint));
    if let Some((generation, left)) = grace {
        metrics.stale_accepted.inc();
        warn!(
            conn = %conn,
            presented = %presented,
            generation,
            grace_left = %format!("{}s", left.as_secs()),
            client = %credential.who(),
            "[ws] accepted stale token"
        );
    }
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let direct = crate::logging::line(tracing::Level::INFO, "[ws] connected", |l| {
        l.text(
            "conn",
            conn.hyphenated().encode_lower(&mut Uuid::encode_buffer()),
        );
        l.peer("remote", remote);
        l.text("source", source.as_str());
        let fp = credential.fingerprint.tagged();
        l.text("presented", std::str::from_utf8(&fp).unwrap_or("-"));
        l.text("client", credential.who());
        match credential.source.to_str() {
            Some(path) => l.text("credential", path),
            None => l.display("credential", &credential.source.display()),
        }
    });
    if !direct {
        info!(
            conn = %conn,
            remote = %crate::logging::Peer(remote),
            source = %source,
            presented = %presented,
            client = %credential.who(),
            credential = %PathText(&credential.source),
            "[ws] connected"
        );
    }
}

/// The `[ws] unauthorized` line of an upgrade refused for its token (the usual refusal).
/// Written by hand like [`log_connected`]'s: through tracing's formatter it cost ~4.8k
/// instructions, 14 % of a whole refusal (callgrind), a quarter of that in core's
/// `SocketAddr` formatting.
struct Refused<'a> {
    conn: Uuid,
    remote: SocketAddr,
    reason: Reason,
    presented: Option<Fingerprint>,
    generation: Option<u64>,
    source: Option<TokenSource>,
    uri: &'a ::http::Uri,
    /// The token's query parameter, shown as `REDACTED` in the logged path.
    query_param: &'a str,
    /// Why no credential is loaded, when none is: the mismatch is not the client's fault.
    detail: Option<&'a str>,
}

impl Refused<'_> {
    fn log(&self) {
        if !tracing::enabled!(tracing::Level::WARN) {
            return;
        }
        // Only now: the redacted path is a new string, wasted when the line is filtered out.
        let path = self.path();
        if !crate::logging::line(tracing::Level::WARN, "[ws] unauthorized", |l| {
            self.fields(l, &path)
        }) {
            self.event(&path);
        }
    }

    fn path(&self) -> String {
        auth::redact_uri(self.uri, self.query_param)
    }

    fn fields(&self, l: &mut crate::logging::Line, path: &str) {
        l.text(
            "conn",
            self.conn
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer()),
        );
        l.peer("remote", self.remote);
        l.text("reason", self.reason.as_str());
        let fp = self.presented.map(|f| f.tagged());
        l.text(
            "presented",
            fp.as_ref()
                .map_or("-", |t| std::str::from_utf8(t).unwrap_or("-")),
        );
        match self.generation {
            Some(g) => l.u64("generation", g),
            None => l.text("generation", "-"),
        }
        l.text("source", self.source.map_or("-", TokenSource::as_str));
        l.text("path", path);
        if let Some(d) = self.detail {
            l.text("detail", d);
        }
    }

    /// The same line through tracing (JSON logs, or no direct writer installed).
    fn event(&self, path: &str) {
        warn!(
            conn = %self.conn,
            remote = %crate::logging::Peer(self.remote),
            reason = %self.reason,
            presented = %Fp(self.presented),
            generation = %Gen(self.generation),
            source = %SourceName(self.source),
            path = %path,
            // Absent unless set: an `Option` field records only its `Some`.
            detail = self.detail.map(tracing::field::display),
            "[ws] unauthorized"
        );
    }
}

struct SourceName(Option<TokenSource>);

impl std::fmt::Display for SourceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.map_or("-", TokenSource::as_str))
    }
}

/// Where [`Proxy::handle`] leaves what an upgrade still has to do once the client's side
/// has switched protocols, for the connection's own task to run: one task per connection
/// instead of a second one per tunnel (a spawn is an aligned allocation and a few copies of
/// the whole future, on every handshake).
#[derive(Default)]
pub struct Handoff(std::sync::Mutex<Option<Pending>>);

impl Handoff {
    fn put(&self, pending: Pending) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(pending);
    }

    /// The upgrade's remaining work, when the request was answered with a 101.
    pub fn take(&self) -> Option<Pending> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// An answered upgrade's second half.
pub struct Pending {
    proxy: Arc<Proxy>,
    /// hyper's side of the client connection; `None` when the listener read the request
    /// itself and holds the socket (or once [`Pending::upgraded`] took it).
    on_client: Option<OnUpgrade>,
    then: Then,
}

#[allow(clippy::large_enum_variant)] // one per handshake, never moved around: no box
enum Then {
    /// Relay to the upstream, after the first-message phase where configured.
    Tunnel {
        upstream: Stream,
        from_upstream: Bytes,
        tunnel: Tunnel,
    },
    /// `auth.reject = "close"`: a close frame with the refusal's code and reason.
    Close(Reason),
}

impl Pending {
    /// hyper's upgraded client connection, once hyper has let go of it; `None` (logged) when
    /// the upgrade failed on the client's side after the 101.
    pub async fn upgraded(&mut self) -> Option<(Stream, Bytes)> {
        match self.on_client.take()?.await {
            Ok(up) => Some(Stream::from_upgraded(up)),
            Err(e) => {
                if let Then::Tunnel { tunnel, .. } = &self.then {
                    warn!(conn = %tunnel.conn, cause = %e, "[ws] upgrade failed after 101");
                }
                None
            }
        }
    }

    /// The tunnel, or the close frame, over the client's socket (and the bytes the client
    /// sent behind its request head). A plain fn: an async one would keep this `Pending`
    /// beside the tunnel future it moves into, for the tunnel's whole life.
    pub fn run(
        self,
        (mut client, from_client): (Stream, Bytes),
    ) -> impl std::future::Future<Output = ()> {
        match self.then {
            Then::Tunnel {
                upstream,
                from_upstream,
                tunnel,
            } => Either::Left(self.proxy.tunnel(
                (client, from_client),
                (upstream, from_upstream),
                tunnel,
            )),
            Then::Close(reason) => Either::Right(async move {
                let frame = ws::close_frame(reason.close_code(), reason.close_text());
                ws::close_gracefully(&mut client, &frame).await;
            }),
        }
    }
}

/// What a tunnel's relay starts from once the first-message phase (if any) is over.
struct Opened {
    /// The client's bytes so far (its first frame, rewritten where configured).
    to_upstream: Vec<u8>,
    /// The gateway's bytes not yet relayed.
    from_upstream: Bytes,
    down: ws::FrameTracker,
    /// Bytes already relayed to the client.
    prior_out: u64,
}

/// How a tunnel starts once both upgrades completed.
struct Tunnel {
    conn: Uuid,
    started: Instant,
    remote: SocketAddr,
    /// The real client IP (throttling).
    ip: std::net::IpAddr,
    /// The connection-limit slot, held for the tunnel's lifetime.
    slot: Option<Arc<crate::limits::ConnSlot>>,
    /// The client presented no upgrade-time token: its first frame must authenticate it.
    in_band: bool,
    /// The gateway accepted `permessage-deflate` for this connection.
    deflate: Option<ws::Deflate>,
    /// Put this (the gateway's) token into the client's first frame.
    inject: Option<Secret>,
    /// The token that authenticated the client at the upgrade, for revocation checks.
    authenticated: Option<(credentials::Presented, Credential)>,
}

impl Proxy {
    /// `cert` is the client's verified certificate when the connection is mTLS. What an
    /// answered upgrade still has to do is left in `handoff` for the connection's task.
    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        remote: SocketAddr,
        cert: Option<Arc<ClientCert>>,
        handoff: Arc<Handoff>,
    ) -> Result<Response<Body>, Infallible> {
        if let Some(refused) = self.check_head(&req, remote) {
            return Ok(refused);
        }
        if ws::header_has_token(req.headers(), UPGRADE, "websocket") {
            if let Err(bad) = ws::check_upgrade_request(&req) {
                info!(remote = %remote, reason = %"bad_upgrade", detail = %bad, "[ws] request refused");
                return Ok(bad_upgrade(bad));
            }
            let on_client = hyper::upgrade::on(&mut req);
            let (parts, _body) = req.into_parts();
            Ok(self
                .websocket(parts, Some(on_client), remote, cert.as_deref(), &handoff)
                .await)
        } else {
            Ok(self.plain(req, remote, cert.as_deref()).await)
        }
    }

    /// A WebSocket upgrade request the listener read itself (see `head`): the same checks
    /// and answer as through [`Proxy::handle`]; the caller writes the answer and, after a
    /// 101, runs what is left in `handoff` over the socket it holds.
    pub async fn handle_upgrade(
        self: Arc<Self>,
        req: Request<()>,
        remote: SocketAddr,
        cert: Option<&ClientCert>,
        handoff: &Handoff,
    ) -> Response<Body> {
        if let Some(refused) = self.check_head(&req, remote) {
            return refused;
        }
        if let Err(bad) = ws::check_upgrade_request(&req) {
            info!(remote = %remote, reason = %"bad_upgrade", detail = %bad, "[ws] request refused");
            return bad_upgrade(bad);
        }
        let (parts, ()) = req.into_parts();
        self.websocket(parts, None, remote, cert, handoff).await
    }

    /// The size limits on a request head, answered 431 / 414, and a head whose target
    /// server is ambiguous (two `Host` headers, RFC 9112 §3.2), answered 400.
    fn check_head<B>(&self, req: &Request<B>, remote: SocketAddr) -> Option<Response<Body>> {
        let mut hosts = req.headers().get_all(HOST).iter();
        if hosts.next().is_some() && hosts.next().is_some() {
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
            info!(remote = %remote, reason = %"header_too_large", bytes = head, "[http] request refused");
            return Some(text(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request header fields too large\n",
            ));
        }
        let line = request_line_len(req);
        if line > self.max_request_line {
            info!(remote = %remote, reason = %"request_line_too_long", bytes = line, "[http] request refused");
            return Some(text(StatusCode::URI_TOO_LONG, "request line too long\n"));
        }
        None
    }

    /// `on_client` is hyper's side of the client connection (`None`: the listener's).
    async fn websocket(
        self: Arc<Self>,
        parts: ::http::request::Parts,
        on_client: Option<OnUpgrade>,
        remote: SocketAddr,
        cert: Option<&ClientCert>,
        handoff: &Handoff,
    ) -> Response<Body> {
        let started = Instant::now();
        let conn = Uuid::new_v4();
        let key = parts
            .headers
            .get(SEC_WEBSOCKET_KEY)
            .cloned()
            .expect("checked by ws::check_upgrade_request");
        let slot = parts
            .extensions
            .get::<Arc<crate::limits::ConnSlot>>()
            .cloned();
        // Cheap refusals first: a throttled IP, then a foreign Origin.
        let ip = self.client_ip(remote, &parts.headers);
        if let Some(left) = self.throttle.blocked(ip) {
            debug!(conn = %conn, remote = %remote, client_ip = %ip, reason = %Reason::RateLimited, "[ws] unauthorized");
            self.metrics
                .auth_failure(Reason::RateLimited.as_str(), "none");
            return self.refuse(
                Reason::RateLimited,
                Some(left),
                on_client,
                handoff,
                &key,
                &parts.headers,
            );
        }
        if !auth::origin_allowed(&self.auth, &parts.headers) {
            warn!(
                conn = %conn,
                remote = %remote,
                reason = %Reason::OriginNotAllowed,
                origin = %parts.headers.get(ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("-"),
                "[ws] unauthorized"
            );
            self.metrics
                .auth_failure(Reason::OriginNotAllowed.as_str(), "none");
            self.note_failure(ip, remote);
            return self.refuse(
                Reason::OriginNotAllowed,
                None,
                on_client,
                handoff,
                &key,
                &parts.headers,
            );
        }
        let found = auth::extract(&self.auth, &self.sources, &parts, true, cert);
        let creds = self.creds.load();
        // No upgrade-time token: with `first_message` enabled the first frame decides.
        let in_band = found.is_none() && self.sources.contains(&TokenSource::FirstMessage);
        let mut authenticated = None;
        if !in_band {
            match auth::decide(found.as_ref(), &creds) {
                Decision::Deny {
                    reason,
                    source,
                    presented,
                    generation,
                } => {
                    Refused {
                        conn,
                        remote,
                        reason,
                        presented,
                        generation,
                        source,
                        uri: &parts.uri,
                        query_param: &self.auth.query_param,
                        detail: creds.unloaded(),
                    }
                    .log();
                    self.metrics
                        .auth_failure(reason.as_str(), source.map_or("none", TokenSource::as_str));
                    self.note_failure(ip, remote);
                    return self.refuse(reason, None, on_client, handoff, &key, &parts.headers);
                }
                Decision::Allow {
                    source,
                    credential,
                    grace,
                    presented,
                } => {
                    log_connected(&self.metrics, conn, remote, source, &credential, grace);
                    self.throttle.success(ip);
                    // A client certificate is not a reloadable credential: nothing to revoke.
                    if source != TokenSource::ClientCert {
                        authenticated = Some((presented, credential));
                    }
                }
            }
        }
        let gateway = self.gateway_token(&creds);
        if self.upstream_auth.inject != Inject::None && gateway.is_none() {
            warn!(conn = %conn, "[ws] upstream_auth credential has no token loaded");
            return text(
                StatusCode::BAD_GATEWAY,
                "bad gateway: no gateway credential\n",
            );
        }
        let inject_header = (self.upstream_auth.inject == Inject::Header)
            .then_some(gateway.as_ref())
            .flatten();
        let upstream_head =
            self.upstream_upgrade_head(&parts, remote, found.as_ref(), inject_header);
        let dialed = Instant::now();
        let answer = match self.upstream.upgrade(&upstream_head).await {
            Ok(r) => {
                self.metrics
                    .upstream_connect_seconds
                    .observe(dialed.elapsed().as_secs_f64());
                r
            }
            Err(e) => {
                self.metrics.upstream_connect_errors.inc();
                warn!(conn = %conn, remote = %remote, reason = %e.reason(), cause = %e, "[ws] upstream unavailable");
                return text(
                    StatusCode::BAD_GATEWAY,
                    "bad gateway: upstream unavailable\n",
                );
            }
        };
        if answer.status != StatusCode::SWITCHING_PROTOCOLS {
            info!(
                conn = %conn,
                remote = %remote,
                status = answer.status.as_u16(),
                "[ws] upstream refused upgrade"
            );
            let mut resp = Response::new(
                Full::new(answer.body)
                    .map_err(|never| match never {})
                    .boxed(),
            );
            *resp.status_mut() = answer.status;
            *resp.headers_mut() = answer.headers;
            strip_hop_by_hop(resp.headers_mut());
            return resp;
        }
        if !ws::header_has_token(&answer.headers, UPGRADE, "websocket") {
            warn!(conn = %conn, remote = %remote, "[ws] upstream answered 101 without Upgrade: websocket");
            return text(
                StatusCode::BAD_GATEWAY,
                "bad gateway: upstream switched to another protocol\n",
            );
        }
        let deflate = ws::Deflate::negotiated(&answer.headers);
        let mut client_resp = Response::new(empty());
        *client_resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *client_resp.headers_mut() = answer.headers;
        let tunnel = Tunnel {
            conn,
            started,
            remote,
            ip,
            slot,
            in_band,
            deflate,
            inject: gateway.filter(|_| self.upstream_auth.inject == Inject::FirstMessage),
            authenticated,
        };
        self.metrics
            .handshake_seconds
            .observe(started.elapsed().as_secs_f64());
        handoff.put(Pending {
            proxy: self,
            on_client,
            then: Then::Tunnel {
                upstream: answer.stream,
                from_upstream: answer.rest,
                tunnel,
            },
        });
        client_resp
    }

    /// Runs one upgraded connection: the in-band phase when needed, then the relay.
    async fn tunnel(
        self: Arc<Self>,
        (mut client, from_client): (Stream, Bytes),
        (mut upstream, from_upstream): (Stream, Bytes),
        mut t: Tunnel,
    ) {
        let slot = t.slot.take();
        let conn = t.conn;
        let started = t.started;
        let mut authenticated = t.authenticated.clone();
        // Boxed: the phase is short, and its state (the frame being read, the outcome)
        // would otherwise weigh on every idle tunnel for its whole life.
        let opened = if t.in_band || t.inject.is_some() {
            Box::pin(self.first_message_phase(
                &mut client,
                &mut upstream,
                (from_client, from_upstream),
                &t,
                &mut authenticated,
            ))
            .await
        } else {
            Some(Opened {
                to_upstream: from_client.to_vec(),
                from_upstream,
                down: ws::FrameTracker::default(),
                prior_out: 0,
            })
        };
        let Some(Opened {
            to_upstream,
            from_upstream,
            down,
            prior_out,
        }) = opened
        else {
            return;
        };
        let revocation = match (&authenticated, self.auth.on_revoke) {
            (Some((presented, _)), OnRevoke::Close) => {
                let store = self.creds.clone();
                let presented = presented.clone();
                Some(splice::Revocation {
                    changed: store.subscribe(),
                    still_valid: Box::new(move || auth::still_valid(&presented, &store.load())),
                })
            }
            _ => None,
        };
        self.metrics.connections_active.inc();
        let controls = splice::Controls {
            zero_copy: self.splice.zero_copy,
            worker_loop: self
                .splice
                .worker_loop
                .then_some(self.splice.worker_loop_after),
            revocation,
            shutdown: Some(self.hard_stop.clone()),
            idle_timeout: self.splice.idle_timeout(),
            max_lifetime: self.splice.max_lifetime(),
        };
        let mut outcome = splice::relay(
            client,
            upstream,
            &to_upstream,
            &from_upstream,
            down,
            controls,
        )
        .await;
        outcome.bytes_out += prior_out;
        if let Some(why @ (EndedBy::IdleTimeout | EndedBy::MaxLifetime)) = outcome.ended_by {
            info!(conn = %conn, remote = %t.remote, reason = %why, "[ws] closing");
        }
        if outcome.ended_by == Some(EndedBy::TokenRevoked) {
            let (presented, credential) = authenticated.as_ref().expect("revocation needs a token");
            warn!(
                conn = %conn,
                reason = %Reason::TokenRevoked,
                client = %credential.who(),
                presented = %Fp(Some(presented.fingerprint)),
                "[ws] revoked"
            );
        }
        self.metrics.connections_active.dec();
        // Released before the log line, so "[ws] closed" means the slot is free again.
        drop(slot);
        self.metrics.spliced(outcome.bytes_in, outcome.bytes_out);
        if outcome.in_loop {
            self.metrics.worker_loop_tunnels.inc();
        }
        self.metrics
            .closed(match (outcome.ended_by, &outcome.close) {
                (Some(EndedBy::TokenRevoked), _) => "revoked",
                (Some(EndedBy::Shutdown), _) => "drained",
                (Some(why), _) => why.as_str(),
                (None, Some(_)) => "normal",
                (None, None) => "abnormal",
            });
        log_closed(conn, t.remote, started, &outcome);
    }

    /// The in-band part of a tunnel's start: the client's first frame is read (the gateway's
    /// bytes relayed meanwhile) and judged, the gateway's token put in where configured.
    /// `None` when the tunnel ended here (refused, closed, gone; all logged).
    async fn first_message_phase(
        &self,
        client: &mut Stream,
        upstream: &mut Stream,
        (from_client, from_upstream): (Bytes, Bytes),
        t: &Tunnel,
        authenticated: &mut Option<(credentials::Presented, Credential)>,
    ) -> Option<Opened> {
        let (conn, started) = (t.conn, t.started);
        let check = first_message::Check {
            authenticate: t.in_band,
            inject: t.inject.as_ref(),
            pointer: &self.auth.first_message_pointer,
            max_bytes: self.auth.first_message_max_bytes,
            timeout: self.auth.first_message_timeout.0,
            preauth_frames: self.auth.first_message_preauth_frames,
            deflate: t.deflate,
        };
        let creds = self.creds.load();
        // The drain's end cuts a tunnel still waiting for its first frame.
        let outcome = tokio::select! {
            o = first_message::run(client, upstream, from_client, from_upstream, &creds, &check) => o,
            _ = self.hard_stop.cancelled() => {
                info!(
                    conn = %conn,
                    code = 1006,
                    reason = ?"gatewarden shut down after drain",
                    duration_ms = started.elapsed().as_millis() as u64,
                    "[ws] closed"
                );
                return None;
            }
        };
        match outcome {
            first_message::Outcome::Proceed(p) => {
                if let (Some(c), Some(presented)) = (p.credential, p.presented) {
                    log_connected(
                        &self.metrics,
                        conn,
                        t.remote,
                        TokenSource::FirstMessage,
                        &c,
                        p.grace,
                    );
                    self.throttle.success(t.ip);
                    *authenticated = Some((presented, c));
                }
                if p.rewritten {
                    debug!(conn = %conn, "[ws] gateway token injected into the first frame");
                }
                Some(Opened {
                    to_upstream: p.to_upstream,
                    from_upstream: Bytes::from(p.held),
                    down: p.down,
                    prior_out: p.bytes_out,
                })
            }
            first_message::Outcome::Reject(r) => {
                warn!(
                    conn = %conn,
                    remote = %t.remote,
                    reason = %r.reason,
                    presented = %Fp(r.presented),
                    generation = %Gen(r.generation),
                    source = %TokenSource::FirstMessage,
                    detail = %match (r.reason, creds.unloaded()) {
                        (Reason::TokenMismatch, Some(why)) => why,
                        _ => r.detail,
                    },
                    "[ws] unauthorized"
                );
                self.metrics
                    .auth_failure(r.reason.as_str(), TokenSource::FirstMessage.as_str());
                self.note_failure(t.ip, t.remote);
                first_message::reject(client, upstream, &r).await;
                None
            }
            first_message::Outcome::ClientClosed {
                frame,
                down,
                bytes_out,
            } => {
                let outcome = first_message::pass_close(
                    client, upstream, &frame, down, bytes_out, !t.in_band,
                )
                .await;
                log_closed(conn, t.remote, started, &outcome);
                None
            }
            first_message::Outcome::Gone { side, bytes_out } => {
                info!(
                    conn = %conn,
                    code = 1006,
                    reason = ?"went away before its first message",
                    by = %side.as_str(),
                    duration_ms = started.elapsed().as_millis() as u64,
                    bytes_in = 0,
                    bytes_out = bytes_out,
                    "[ws] closed"
                );
                None
            }
        }
    }

    /// The token gatewarden presents upstream, when `upstream_auth` asks for one.
    fn gateway_token(&self, creds: &Credentials) -> Option<Secret> {
        if self.upstream_auth.inject == Inject::None {
            return None;
        }
        let name = self.upstream_auth.credential.as_deref()?;
        creds.by_name(name)?.secret.clone()
    }

    /// The upgrade request's head as the gateway should see it: hop-by-hop headers gone
    /// except the upgrade itself, the token-carrying subprotocol entry removed, forwarded
    /// headers only from trusted proxies, and with header injection the gateway's token
    /// instead of the client's own.
    ///
    /// Written straight from the client's header map into the bytes sent upstream: copying
    /// the map, editing it and serializing the copy was 7 % of a handshake's user-space
    /// instructions (callgrind).
    fn upstream_upgrade_head(
        &self,
        parts: &::http::request::Parts,
        remote: SocketAddr,
        found: Option<&auth::Found>,
        inject: Option<&Secret>,
    ) -> Vec<u8> {
        let h = &parts.headers;
        // With injection the client's own credential is removed from where it came.
        let replaced = inject.and(found.map(|f| f.source));
        let inject_name = inject.map(|_| {
            HeaderName::from_bytes(self.upstream_auth.header.as_bytes())
                .expect("validated at config load")
        });
        let trusted = self.is_trusted(remote.ip().to_canonical());
        // Looked up once, not once per header.
        let listed = h.get_all(CONNECTION);
        // RFC 9110 §7.6.1: `Connection` and every header it names, the well-known hop-by-hop
        // ones and any `Proxy-*` header.
        let hop_by_hop = |name: &HeaderName| {
            matches!(
                name.as_str(),
                "connection" | "te" | "trailer" | "transfer-encoding" | "upgrade" | "keep-alive"
            ) || name.as_str().starts_with("proxy-")
                || listed
                    .iter()
                    .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                    .any(|t| {
                        t.trim_ascii()
                            .eq_ignore_ascii_case(name.as_str().as_bytes())
                    })
        };
        let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let pq = if replaced == Some(TokenSource::Query) {
            let query =
                auth::query_without(parts.uri.query().unwrap_or(""), &self.auth.query_param);
            let path = parts.uri.path();
            std::borrow::Cow::Owned(if query.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{query}")
            })
        } else {
            std::borrow::Cow::Borrowed(pq)
        };
        // One buffer, one write: the request line, then the headers.
        let size: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
        let mut head = Vec::with_capacity(256 + pq.len() + size);
        head.extend_from_slice(b"GET ");
        head.extend_from_slice(pq.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        let mut put = |name: &[u8], value: &[u8]| {
            head.extend_from_slice(name);
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        };
        for (name, value) in h {
            let dropped = hop_by_hop(name)
                || match name.as_str() {
                    "x-forwarded-for" | "x-real-ip" | "forwarded" if !trusted => true,
                    // Replaced below.
                    "x-forwarded-for" | "x-real-ip" | "x-forwarded-proto" => self.forwarded_headers,
                    "sec-websocket-protocol" => true,
                    // The first frame may be rewritten: an extension that transforms
                    // payloads (permessage-deflate with context takeover) would make the
                    // client's later frames refer to bytes the gateway never saw.
                    "sec-websocket-extensions" => self.upstream_auth.inject == Inject::FirstMessage,
                    "origin" => self.upstream_origin == UpstreamOrigin::Rewrite,
                    "authorization" => replaced == Some(TokenSource::Header),
                    "cookie" => replaced == Some(TokenSource::Cookie),
                    _ => false,
                }
                || inject_name.as_ref() == Some(name);
            if !dropped {
                put(name.as_str().as_bytes(), value.as_bytes());
            }
        }
        if let Some(list) = auth::strip_token_subprotocols(h, &self.auth.subprotocol_prefix) {
            put(b"sec-websocket-protocol", &list);
        }
        if self.upstream_origin == UpstreamOrigin::Rewrite && h.contains_key(ORIGIN) {
            // The gateway sees its own origin (it refuses non-loopback ones by default); the
            // browser's origin was already checked against auth.allowed_origins.
            put(b"origin", self.upstream.origin().as_bytes());
        }
        put(b"connection", b"Upgrade");
        put(
            b"upgrade",
            h.get(UPGRADE).map_or(&b"websocket"[..], |v| v.as_bytes()),
        );
        if !h.contains_key(HOST) {
            put(b"host", self.upstream.authority().as_bytes());
        }
        if self.forwarded_headers {
            // The peer is appended to a (trusted, else dropped above) `X-Forwarded-For` chain.
            let peer = remote.ip().to_canonical().to_string();
            let prev = h
                .get("x-forwarded-for")
                .filter(|_| trusted)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.trim().is_empty());
            let chain = match prev {
                Some(prev) => format!("{prev}, {peer}"),
                None => peer,
            };
            put(b"x-forwarded-for", chain.as_bytes());
            put(
                b"x-real-ip",
                self.client_ip(remote, h).to_string().as_bytes(),
            );
            put(
                b"x-forwarded-proto",
                if self.tls { b"https" } else { b"http" },
            );
        }
        if let (Some(secret), Some(name)) = (inject, &inject_name) {
            if replaced == Some(TokenSource::Cookie) {
                if let Some(v) = auth::cookies_without(h, &self.auth.cookie) {
                    put(b"cookie", v.as_bytes());
                }
            }
            let value = if *name == AUTHORIZATION {
                format!("Bearer {}", secret.expose())
            } else {
                secret.expose().to_string()
            };
            if HeaderValue::from_str(&value).is_ok() {
                put(name.as_str().as_bytes(), value.as_bytes());
            }
        }
        head.extend_from_slice(b"\r\n");
        head
    }

    /// `upstream_auth.inject = "header"`: remove the client's own credential from wherever
    /// it came and present the gateway's token instead.
    fn present_gateway_token(
        &self,
        headers: &mut HeaderMap,
        uri: &mut ::http::Uri,
        found: Option<&auth::Found>,
        secret: &Secret,
    ) {
        match found.map(|f| f.source) {
            Some(TokenSource::Header) => {
                headers.remove(AUTHORIZATION);
            }
            Some(TokenSource::Query) => {
                let query = auth::query_without(uri.query().unwrap_or(""), &self.auth.query_param);
                let pq = if query.is_empty() {
                    uri.path().to_string()
                } else {
                    format!("{}?{query}", uri.path())
                };
                if let Ok(u) = pq.parse() {
                    *uri = u;
                }
            }
            Some(TokenSource::Cookie) => match auth::cookies_without(headers, &self.auth.cookie) {
                Some(v) => {
                    headers.insert(COOKIE, v);
                }
                None => {
                    headers.remove(COOKIE);
                }
            },
            Some(TokenSource::Subprotocol)
            | Some(TokenSource::FirstMessage)
            | Some(TokenSource::ClientCert)
            | None => {}
        }
        let name = HeaderName::from_bytes(self.upstream_auth.header.as_bytes())
            .expect("validated at config load");
        let value = if name == AUTHORIZATION {
            format!("Bearer {}", secret.expose())
        } else {
            secret.expose().to_string()
        };
        if let Ok(mut v) = HeaderValue::from_str(&value) {
            v.set_sensitive(true);
            headers.insert(name, v);
        }
    }

    /// Whether a connection from `peer` must open with a PROXY protocol header.
    pub fn expects_proxy_header(&self, peer: std::net::IpAddr) -> bool {
        self.proxy_protocol && self.is_trusted(peer.to_canonical())
    }

    fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The real client IP: the peer, or — when the peer is a trusted proxy — the rightmost
    /// `X-Forwarded-For` entry that is not itself a trusted proxy.
    fn client_ip(&self, remote: SocketAddr, headers: &HeaderMap) -> std::net::IpAddr {
        let peer = remote.ip().to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops: Vec<std::net::IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|h| h.trim().parse().ok())
            .collect();
        hops.into_iter()
            .rev()
            .find(|ip| !self.is_trusted(*ip))
            .unwrap_or(peer)
    }

    /// Counts a failed attempt; logs once when the IP starts being refused.
    /// Counts a failed attempt; the one that starts a block is logged (the attempts refused
    /// during it are not: a flood must not become a log flood).
    fn note_failure(&self, ip: std::net::IpAddr, remote: SocketAddr) {
        if let Some(block) = self.throttle.failure(ip) {
            warn!(
                remote = %remote,
                client_ip = %ip,
                failures = block.failures,
                window = %humantime::format_duration(self.auth.failure_window.0),
                blocked_for = %humantime::format_duration(block.blocked_for),
                strike = block.strike,
                "[auth] throttling"
            );
        }
    }

    /// Refuses an upgrade the way `auth.reject` says: an HTTP status, or our own 101 and a
    /// close frame. A throttled client is told when to come back.
    fn refuse(
        self: &Arc<Self>,
        reason: Reason,
        retry_after: Option<std::time::Duration>,
        on_client: Option<OnUpgrade>,
        handoff: &Handoff,
        key: &HeaderValue,
        headers: &HeaderMap,
    ) -> Response<Body> {
        let mut resp = match self.auth.reject {
            RejectMode::Http => unauthorized(reason),
            RejectMode::Close => {
                handoff.put(Pending {
                    proxy: self.clone(),
                    on_client,
                    then: Then::Close(reason),
                });
                self.reject_with_close(key, headers)
            }
        };
        if let Some(left) = retry_after {
            let secs = left.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                resp.headers_mut().insert(RETRY_AFTER, v);
            }
        }
        resp
    }

    /// `forwarded_headers = true`: tell the upstream who the client is. The peer is appended
    /// to a (trusted, already scrubbed otherwise) `X-Forwarded-For` chain.
    fn add_forwarded(&self, headers: &mut HeaderMap, remote: SocketAddr) {
        if !self.forwarded_headers {
            return;
        }
        let peer = remote.ip().to_canonical().to_string();
        let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {peer}"),
            _ => peer,
        };
        let client = self.client_ip(remote, headers).to_string();
        let proto = if self.tls { "https" } else { "http" };
        for (name, value) in [
            ("x-forwarded-for", chain),
            ("x-real-ip", client),
            ("x-forwarded-proto", proto.to_string()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }

    /// Forwarded headers are believed, and passed on, only from `trusted_proxies`: the
    /// OpenClaw gateway answers 403 to them from an unlisted loopback proxy, and from an
    /// untrusted client they are a spoofing vector.
    fn scrub_forwarded(&self, headers: &mut HeaderMap, remote: SocketAddr) {
        if self.is_trusted(remote.ip().to_canonical()) {
            return;
        }
        for name in ["x-forwarded-for", "x-real-ip", "forwarded"] {
            headers.remove(name);
        }
    }

    /// Completes the handshake ourselves and closes with 1008 and the gateway's own reason
    /// text: a browser's WebSocket API exposes close codes and reasons, never HTTP statuses.
    fn reject_with_close(&self, key: &HeaderValue, headers: &HeaderMap) -> Response<Body> {
        let mut resp = Response::new(empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&ws::accept_key(key.as_bytes())) {
            h.insert(SEC_WEBSOCKET_ACCEPT, v);
        }
        // Strict clients fail a handshake that offered subprotocols and got none back; pick the
        // first one that does not carry a token (never echo a token).
        let prefix = self.auth.subprotocol_prefix.as_bytes();
        if let Some(p) = auth::subprotocols(headers).find(|p| !p.starts_with(prefix)) {
            if let Ok(v) = HeaderValue::from_bytes(p) {
                h.insert(SEC_WEBSOCKET_PROTOCOL, v);
            }
        }
        resp
    }

    async fn plain(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
        cert: Option<&ClientCert>,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        if let Some(answer) = self.own_answer(&mut parts, remote) {
            return answer;
        }
        let mut authenticated = None;
        if self.auth.http == HttpAuthMode::Require && !self.is_public(parts.uri.path()) {
            let ip = self.client_ip(remote, &parts.headers);
            if let Some(left) = self.throttle.blocked(ip) {
                debug!(remote = %remote, client_ip = %ip, reason = %Reason::RateLimited, "[http] unauthorized");
                self.metrics
                    .auth_failure(Reason::RateLimited.as_str(), "none");
                let mut resp = unauthorized(Reason::RateLimited);
                if let Ok(v) = HeaderValue::from_str(&left.as_secs().max(1).to_string()) {
                    resp.headers_mut().insert(RETRY_AFTER, v);
                }
                return resp;
            }
            let found = auth::extract(&self.auth, &self.sources, &parts, false, cert);
            let creds = self.creds.load();
            match auth::decide(found.as_ref(), &creds) {
                Decision::Deny {
                    reason,
                    source,
                    presented,
                    generation,
                } => {
                    let path = auth::redact_uri(&parts.uri, &self.auth.query_param);
                    warn!(
                        remote = %remote,
                        method = %parts.method,
                        path = %path,
                        reason = %reason,
                        presented = %Fp(presented),
                        generation = %Gen(generation),
                        source = %SourceName(source),
                        detail = creds.unloaded().map(tracing::field::display),
                        "[http] unauthorized"
                    );
                    self.metrics
                        .auth_failure(reason.as_str(), source.map_or("none", TokenSource::as_str));
                    self.note_failure(ip, remote);
                    return unauthorized(reason);
                }
                Decision::Allow {
                    source,
                    grace,
                    credential,
                    ..
                } => {
                    self.throttle.success(ip);
                    self.metrics.auth_success(source.as_str(), credential.who());
                    if let Some((generation, left)) = grace {
                        self.metrics.stale_accepted.inc();
                        warn!(
                            remote = %remote,
                            presented = %Fp(Some(credential.fingerprint)),
                            generation,
                            grace_left = %format!("{}s", left.as_secs()),
                            client = %credential.who(),
                            "[http] accepted stale token"
                        );
                    }
                    if source == TokenSource::Query && parts.method == Method::GET {
                        if let Some(resp) = self.token_redirect(&parts, found.as_ref()) {
                            return resp;
                        }
                    }
                    authenticated = Some((found, self.gateway_token(&creds)));
                }
            }
        }
        let path = auth::redact_uri(&parts.uri, &self.auth.query_param);
        strip_hop_by_hop(&mut parts.headers);
        self.scrub_forwarded(&mut parts.headers, remote);
        self.add_forwarded(&mut parts.headers, remote);
        // Only requests gatewarden authenticated get the gateway's token.
        if let Some((found, Some(secret))) = &authenticated {
            if self.upstream_auth.inject == Inject::Header {
                self.present_gateway_token(
                    &mut parts.headers,
                    &mut parts.uri,
                    found.as_ref(),
                    secret,
                );
            }
        }
        if parts.version != Version::HTTP_11 && parts.version != Version::HTTP_10 {
            parts.version = Version::HTTP_11;
        }
        let sent = self.upstream.request(Request::from_parts(parts, body));
        let Ok(answer) = tokio::time::timeout(self.upstream_response, sent).await else {
            self.metrics.upstream_timeouts.inc();
            warn!(
                remote = %remote,
                path = %path,
                reason = %"upstream_timeout",
                timeout_s = self.upstream_response.as_secs_f64(),
                "[http] upstream did not answer in time"
            );
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway timeout: upstream did not answer\n",
            );
        };
        match answer {
            Ok(resp) => passthrough(resp),
            Err(e) => {
                self.metrics.upstream_connect_errors.inc();
                warn!(remote = %remote, path = %path, reason = %e.reason(), cause = %e, "[http] upstream unavailable");
                text(
                    StatusCode::BAD_GATEWAY,
                    "bad gateway: upstream unavailable\n",
                )
            }
        }
    }

    /// Requests gatewarden answers itself instead of judging and forwarding them, and the
    /// path made into the one the upstream will act on (see [`crate::path`]): what is
    /// judged below is what is forwarded.
    fn own_answer(
        &self,
        parts: &mut ::http::request::Parts,
        remote: SocketAddr,
    ) -> Option<Response<Body>> {
        let refuse = |status, reason: &str, msg: String| {
            info!(remote = %remote, method = %parts.method, reason = %reason, "[http] request refused");
            Some(text(status, msg))
        };
        // A tunnel to wherever the client names is not what a gateway's proxy is for.
        if parts.method == Method::CONNECT {
            let mut resp = refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed: CONNECT\n".into(),
            )?;
            resp.headers_mut().insert(
                ::http::header::ALLOW,
                HeaderValue::from_static(ALLOWED_METHODS),
            );
            return Some(resp);
        }
        // Asterisk-form (RFC 9112 §3.2.4) asks about the server, not a resource: OPTIONS
        // is answered here, anything else with it is malformed.
        if parts.uri.path() == "*" && parts.uri.authority().is_none() {
            if parts.method != Method::OPTIONS {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "bad request: '*' is a target only for OPTIONS\n".into(),
                );
            }
            let mut resp = Response::new(empty());
            resp.headers_mut().insert(
                ::http::header::ALLOW,
                HeaderValue::from_static(ALLOWED_METHODS),
            );
            return Some(resp);
        }
        let normalized = match crate::path::normalize(parts.uri.path()) {
            Ok(std::borrow::Cow::Borrowed(_)) => return None,
            Ok(std::borrow::Cow::Owned(p)) => p,
            Err(why) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "bad_path",
                    format!("bad request: {why}\n"),
                )
            }
        };
        let pq = match parts.uri.query() {
            Some(q) => format!("{normalized}?{q}"),
            None => normalized,
        };
        let mut uri = ::http::uri::Parts::from(std::mem::take(&mut parts.uri));
        match pq.parse() {
            Ok(pq) => uri.path_and_query = Some(pq),
            Err(_) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "bad_path",
                    "bad request: the path cannot be normalized\n".into(),
                )
            }
        }
        match ::http::Uri::from_parts(uri) {
            Ok(u) => {
                parts.uri = u;
                None
            }
            Err(_) => refuse(
                StatusCode::BAD_REQUEST,
                "bad_path",
                "bad request: the path cannot be normalized\n".into(),
            ),
        }
    }

    /// Under `auth.public_paths`, matched on whole segments of the normalized path.
    fn is_public(&self, path: &str) -> bool {
        self.auth
            .public_paths
            .iter()
            .any(|p| crate::path::is_under(path, p))
    }

    /// `GET /x?token=T` → `303 /x` + auth cookie: a dashboard link works once and the token
    /// does not linger in the address bar or in upstream access logs.
    fn token_redirect(
        &self,
        parts: &::http::request::Parts,
        found: Option<&auth::Found>,
    ) -> Option<Response<Body>> {
        let token = &found?.token;
        if !token.iter().all(|&b| is_cookie_octet(b)) {
            return None;
        }
        let query = auth::query_without(parts.uri.query().unwrap_or(""), &self.auth.query_param);
        let location = if query.is_empty() {
            parts.uri.path().to_string()
        } else {
            format!("{}?{}", parts.uri.path(), query)
        };
        let mut cookie = format!(
            "{}={}; Path=/; HttpOnly; SameSite=Strict",
            self.auth.cookie,
            std::str::from_utf8(token).ok()?
        );
        if self.tls {
            cookie.push_str("; Secure");
        }
        let mut resp = text(StatusCode::SEE_OTHER, "see other\n");
        resp.headers_mut()
            .insert(LOCATION, HeaderValue::from_str(&location).ok()?);
        resp.headers_mut()
            .insert(SET_COOKIE, HeaderValue::from_str(&cookie).ok()?);
        Some(resp)
    }
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

/// A malformed WebSocket handshake gets a plain answer; nothing reaches the upstream.
fn bad_upgrade(bad: ws::BadUpgrade) -> Response<Body> {
    let mut resp = text(bad.status(), format!("bad websocket handshake: {bad}\n"));
    if bad == ws::BadUpgrade::Version {
        // RFC 6455 §4.4: say which version we speak.
        resp.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("13"));
    }
    resp
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

/// RFC 6265 cookie-octet.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

fn log_closed(conn: Uuid, remote: SocketAddr, started: Instant, o: &splice::Outcome) {
    let (code, reason, by) = match &o.close {
        Some((side, c)) => (c.code.unwrap_or(1005), c.reason.as_str(), side.as_str()),
        // No close frame crossed: the client sees an abnormal closure.
        None => (1006, "", "-"),
    };
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    let direct = crate::logging::line(tracing::Level::INFO, "[ws] closed", |l| {
        l.text(
            "conn",
            conn.hyphenated().encode_lower(&mut Uuid::encode_buffer()),
        );
        l.peer("remote", remote);
        l.u64("code", code.into());
        l.quoted("reason", reason);
        l.text("by", by);
        l.u64("duration_ms", duration_ms);
        l.u64("bytes_in", o.bytes_in);
        l.u64("bytes_out", o.bytes_out);
        match &o.error {
            Some(e) => l.display("error", e),
            None => l.text("error", "-"),
        }
    });
    if !direct {
        info!(
            conn = %conn,
            remote = %crate::logging::Peer(remote),
            code = code,
            reason = ?reason,
            by = %by,
            duration_ms,
            bytes_in = o.bytes_in,
            bytes_out = o.bytes_out,
            error = %OrDash(o.error.as_ref()),
            "[ws] closed"
        );
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): `Connection` and every header it names,
/// plus the well-known ones and any `Proxy-*` header.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE] {
        h.remove(n);
    }
    h.remove("keep-alive");
    let proxy: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for n in proxy {
        h.remove(n);
    }
}

fn passthrough(resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.boxed())
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn text(status: StatusCode, msg: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(msg.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The HTTP answer for a refusal: 429 when throttled, 403 for a foreign Origin, else 401.
fn unauthorized(reason: Reason) -> Response<Body> {
    let status = match reason {
        Reason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Reason::OriginNotAllowed => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    let mut resp = text(status, format!("unauthorized: {reason}\n"));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Differential: the hand-built `[ws] unauthorized` line is the line tracing prints.
    #[test]
    fn refused_line_matches_the_event() {
        let fp = Fingerprint::of(b"wrong-token");
        let unreadable = "no credential loaded: credential file /s/openclaw.json cannot be read: permission denied (gatewarden runs as uid 65532, the file is owned by uid 1000 mode 0600)";
        for (remote, presented, generation, source, path, detail) in [
            (
                "10.1.2.3:40000",
                Some(fp),
                Some(7),
                Some(TokenSource::Header),
                "/ws",
                None,
            ),
            ("[2001:db8::1]:443", None, None, None, "/", None),
            (
                "127.0.0.1:9",
                Some(fp),
                Some(0),
                Some(TokenSource::Query),
                "/ws?a=1&token=REDACTED",
                Some(unreadable),
            ),
        ] {
            let uri: ::http::Uri = path.parse().unwrap();
            let line = Refused {
                conn: Uuid::from_u128(0x5f0c1a2b_0000_4000_8000_00000000beef),
                remote: remote.parse().unwrap(),
                reason: Reason::TokenMismatch,
                presented,
                generation,
                source,
                uri: &uri,
                query_param: "token",
                detail,
            };
            let path = line.path();
            let theirs = crate::logging::tests::printed(|| line.event(&path));
            let mut ours = String::new();
            crate::logging::render_line(
                tracing::Level::WARN,
                "[ws] unauthorized",
                |l| line.fields(l, &path),
                |text| ours.push_str(std::str::from_utf8(text).unwrap()),
            );
            // Past the timestamp (27 bytes), which the two took at different moments.
            assert_eq!(ours[27..], theirs[27..], "\nours:   {ours}theirs: {theirs}");
            assert!(ours.contains("reason=token_mismatch"), "{ours}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert("x-end-to-end", HeaderValue::from_static("stays"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-end-to-end"));
    }
}
