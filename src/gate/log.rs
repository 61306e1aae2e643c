//! The log lines of a WebSocket connection's life: `[ws] connected`, `[ws] unauthorized`,
//! `[ws] closed`. They are written on every handshake, so each is one struct with two
//! renderers — written straight to the log (text format), or through tracing (JSON, or no
//! direct writer) — and a differential test holds the two to the same output.

use std::net::SocketAddr;
use std::time::Instant;

use tracing::{info, warn};
use uuid::Uuid;

use crate::auth::Reason;
use crate::config::TokenSource;
use crate::credentials::{Credential, Credentials, Fingerprint};
use crate::metrics::Metrics;
use crate::relay::{self};

use super::audit::Who;

/// The two fields every line of a connection starts with: its id and the client.
fn conn_and_peer(l: &mut crate::logging::Line, conn: Uuid, remote: SocketAddr) {
    l.text(
        "conn",
        conn.hyphenated().encode_lower(&mut Uuid::encode_buffer()),
    );
    l.peer("remote", remote);
}

/// `fp:xxxxxxxx`, or `-` when no token was presented.
pub(crate) struct Fp(pub(crate) Option<Fingerprint>);

/// A path as `Path::display` shows it, without the lossy-UTF-8 scan for the usual UTF-8 path.
pub(crate) struct PathText<'a>(pub(crate) &'a std::path::Path);

/// A value's `Display`, or `-` (no allocation for the common "nothing" case).
pub(crate) struct OrDash<T>(pub(crate) Option<T>);

/// A generation number, or `-`.
pub(crate) struct Gen(pub(crate) Option<u64>);

/// Logs an accepted WebSocket client; a token accepted only thanks to the grace period is a
/// warning, so the operator sees which clients still hold old tokens.
pub(crate) fn log_connected(
    metrics: &Metrics,
    conn: Uuid,
    remote: SocketAddr,
    source: TokenSource,
    credential: &Credential,
    grace: Option<(u64, std::time::Duration)>,
    who: Option<&Who>,
) {
    metrics.auth_success(source.as_str(), credential.who());
    metrics.sessions.accepted(credential.who(), "gatewarden");
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
    Connected {
        conn,
        remote,
        source,
        credential,
        who,
    }
    .log();
}

/// The `[ws] connected` line: every accepted handshake writes one.
pub(crate) struct Connected<'a> {
    pub(crate) conn: Uuid,
    pub(crate) remote: SocketAddr,
    pub(crate) source: TokenSource,
    pub(crate) credential: &'a Credential,
    /// What the first frame said, when it was read before this line.
    pub(crate) who: Option<&'a Who>,
}

impl Connected<'_> {
    pub(crate) fn log(&self) {
        if !tracing::enabled!(tracing::Level::INFO) {
            return;
        }
        if !crate::logging::line(tracing::Level::INFO, "[ws] connected", |l| self.fields(l)) {
            self.event();
        }
    }

    fn fields(&self, l: &mut crate::logging::Line) {
        conn_and_peer(l, self.conn, self.remote);
        l.text("source", self.source.as_str());
        let fp = self.credential.fingerprint.tagged();
        l.text("presented", std::str::from_utf8(&fp).unwrap_or("-"));
        l.text("client", self.credential.who());
        match self.credential.source.to_str() {
            Some(path) => l.text("credential", path),
            None => l.display("credential", &self.credential.source.display()),
        }
        if let Some(who) = self.who {
            who.fields(l);
        }
    }

    /// The same line through tracing (JSON logs, or no direct writer installed).
    fn event(&self) {
        match self.who {
            None => info!(
                conn = %self.conn,
                remote = %crate::logging::Peer(self.remote),
                source = %self.source,
                presented = %Fp(Some(self.credential.fingerprint)),
                client = %self.credential.who(),
                credential = %PathText(&self.credential.source),
                "[ws] connected"
            ),
            Some(who) => info!(
                conn = %self.conn,
                remote = %crate::logging::Peer(self.remote),
                source = %self.source,
                presented = %Fp(Some(self.credential.fingerprint)),
                client = %self.credential.who(),
                credential = %PathText(&self.credential.source),
                client_id = %who.client_id(),
                client_version = %who.client_version(),
                scopes = %who.scopes(),
                authenticated_by = %who.authenticated_by(),
                "[ws] connected"
            ),
        }
    }
}

/// [`Refused`]'s line through tracing, at a level given by the macro's name.
macro_rules! refused_event {
    ($r:expr, $path:expr, $level:ident) => {
        tracing::$level!(
            conn = %$r.conn,
            remote = %crate::logging::Peer($r.remote),
            reason = %$r.reason,
            presented = %Fp($r.presented),
            generation = %Gen($r.generation),
            source = %SourceName($r.source),
            path = %$path,
            // Absent unless set: an `Option` field records only its `Some`.
            detail = $r.detail.map(tracing::field::display),
            "[ws] unauthorized"
        )
    };
}
/// The `[ws] unauthorized` line of an upgrade refused for its token (the usual refusal).
/// Written by hand like [`log_connected`]'s: tracing's formatter, and core's `SocketAddr`
/// formatting in it, were a large share of a refusal (bench/RESULTS.md).
pub(crate) struct Refused<'a> {
    pub(crate) conn: Uuid,
    pub(crate) remote: SocketAddr,
    pub(crate) reason: Reason,
    pub(crate) presented: Option<Fingerprint>,
    pub(crate) generation: Option<u64>,
    pub(crate) source: Option<TokenSource>,
    pub(crate) uri: &'a ::http::Uri,
    /// The credentials judged against: a known token in the path is redacted too.
    pub(crate) creds: &'a Credentials,
    /// Why no credential is loaded, when none is: the mismatch is not the client's fault.
    pub(crate) detail: Option<&'a str>,
}

impl Refused<'_> {
    /// A warning; a repeat (the same token from the same address again, see `throttle`) is
    /// only debug: the stale client's own line says it once per window.
    pub(crate) fn log(&self, repeat: bool) {
        let (enabled, level) = if repeat {
            (
                tracing::enabled!(tracing::Level::DEBUG),
                tracing::Level::DEBUG,
            )
        } else {
            (
                tracing::enabled!(tracing::Level::WARN),
                tracing::Level::WARN,
            )
        };
        if !enabled {
            return;
        }
        // Only now: the redacted path is a new string, wasted when the line is filtered out.
        let path = self.path();
        if !crate::logging::line(level, "[ws] unauthorized", |l| self.fields(l, &path)) {
            match repeat {
                false => self.event(&path),
                true => refused_event!(self, &path, debug),
            }
        }
    }

    pub(crate) fn path(&self) -> String {
        logged_target(self.uri, self.creds)
    }

    pub(crate) fn fields(&self, l: &mut crate::logging::Line, path: &str) {
        conn_and_peer(l, self.conn, self.remote);
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
    pub(crate) fn event(&self, path: &str) {
        refused_event!(self, path, warn);
    }
}

pub(crate) struct SourceName(pub(crate) Option<TokenSource>);

/// A client that keeps presenting a token it was refused for: once per fingerprint and
/// window, named as well as gatewarden can (the first frame's client, the generation its
/// token was retired at), with what to do.
pub(crate) fn log_stale_client(
    remote: SocketAddr,
    ip: std::net::IpAddr,
    reason: Reason,
    source: Option<TokenSource>,
    seen: &super::audit::Seen<'_>,
    repeats: u64,
) {
    let who = seen
        .client
        .map(|c| c.describe())
        .filter(|d| !d.is_empty())
        .map_or_else(|| "a client".to_string(), |d| format!("client {d}"));
    let fp = Fp(seen.presented);
    let detail = match (reason, seen.retired) {
        (Reason::TokenStale, Some(g)) => format!(
            "{who} keeps presenting token {fp} retired at generation {g}; restart or update that client"
        ),
        (Reason::TokenMissing, _) => {
            format!("{who} keeps connecting without a token; configure its token")
        }
        (Reason::OriginNotAllowed, _) => format!(
            "{who} keeps connecting from an Origin that is not allowed; add it to auth.allowed_origins if it is yours"
        ),
        _ => format!(
            "{who} keeps presenting token {fp}, which no credential has (from before a restart or another profile?); give that client the current token"
        ),
    };
    let client = |f: fn(&crate::first_message::ClientInfo) -> &Option<String>| {
        seen.client.and_then(|c| f(c).as_deref()).unwrap_or("-")
    };
    warn!(
        remote = %remote,
        client_ip = %ip,
        reason = %reason,
        presented = %fp,
        generation = %Gen(seen.retired),
        source = %SourceName(source),
        repeats,
        client.id = %client(|c| &c.id),
        client.mode = %client(|c| &c.mode),
        client.version = %client(|c| &c.version),
        detail = %detail,
        "[auth] stale client"
    );
}

/// A request's target as every log line shows it: query values, and parts that are or look
/// like tokens, redacted (see [`crate::redact`]).
pub(crate) fn logged_target(uri: &::http::Uri, creds: &Credentials) -> String {
    crate::redact::target(uri, |part| creds.knows(part))
}

pub(crate) fn log_closed(
    conn: Uuid,
    remote: SocketAddr,
    started: Instant,
    o: &relay::Outcome,
    who: &Who,
) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let closed = Closed {
        conn,
        remote,
        duration_ms: started.elapsed().as_millis() as u64,
        outcome: o,
        who,
        early: None,
    };
    closed.log();
}

/// The `[ws] closed` line of a tunnel that ended before its relay, with no close frame
/// crossing: why (`reason`), and which side went (`by`, `-` when gatewarden cut it).
pub(crate) fn log_closed_early(
    (conn, remote, started): (Uuid, SocketAddr, Instant),
    reason: &'static str,
    by: &'static str,
    bytes_out: u64,
    who: &Who,
) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let outcome = relay::Outcome {
        bytes_out,
        ..Default::default()
    };
    Closed {
        conn,
        remote,
        duration_ms: started.elapsed().as_millis() as u64,
        outcome: &outcome,
        who,
        early: Some((reason, by)),
    }
    .log();
}

impl Closed<'_> {
    fn log(&self) {
        if !crate::logging::line(tracing::Level::INFO, "[ws] closed", |l| self.fields(l)) {
            self.event();
        }
    }
}

/// The `[ws] closed` line: every tunnel's last word, with who closed it and how.
pub(crate) struct Closed<'a> {
    pub(crate) conn: Uuid,
    pub(crate) remote: SocketAddr,
    pub(crate) duration_ms: u64,
    pub(crate) outcome: &'a relay::Outcome,
    pub(crate) who: &'a Who,
    /// Ended before the relay: the reason and who went (see [`log_closed_early`]).
    pub(crate) early: Option<(&'static str, &'static str)>,
}

impl Closed<'_> {
    /// Close code, reason and who sent the close first.
    fn close(&self) -> (u16, &str, &'static str) {
        match (&self.outcome.close, self.early) {
            (Some((side, c)), _) => (c.code.unwrap_or(1005), c.reason.as_str(), side.as_str()),
            // No close frame crossed: the client sees an abnormal closure.
            (None, Some((reason, by))) => (1006, reason, by),
            (None, None) => (1006, "", "-"),
        }
    }

    fn fields(&self, l: &mut crate::logging::Line) {
        let (code, reason, by) = self.close();
        let o = self.outcome;
        conn_and_peer(l, self.conn, self.remote);
        l.u64("code", code.into());
        l.quoted("reason", reason);
        l.text("by", by);
        l.u64("duration_ms", self.duration_ms);
        l.u64("bytes_in", o.bytes_in);
        l.u64("bytes_out", o.bytes_out);
        match &o.error {
            Some(e) => l.display("error", e),
            None => l.text("error", "-"),
        }
        l.text("client", self.who.client());
        self.who.fields(l);
    }

    /// The same line through tracing (JSON logs, or no direct writer installed).
    fn event(&self) {
        let (code, reason, by) = self.close();
        let o = self.outcome;
        info!(
            conn = %self.conn,
            remote = %crate::logging::Peer(self.remote),
            code = code,
            reason = ?reason,
            by = %by,
            duration_ms = self.duration_ms,
            bytes_in = o.bytes_in,
            bytes_out = o.bytes_out,
            error = %OrDash(o.error.as_ref()),
            client = %self.who.client(),
            client_id = %self.who.client_id(),
            client_version = %self.who.client_version(),
            scopes = %self.who.scopes(),
            authenticated_by = %self.who.authenticated_by(),
            "[ws] closed"
        );
    }
}
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

impl std::fmt::Display for PathText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.to_str() {
            Some(s) => f.write_str(s),
            None => self.0.display().fmt(f),
        }
    }
}

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

impl std::fmt::Display for Gen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(g) => write!(f, "{g}"),
            None => f.write_str("-"),
        }
    }
}

impl std::fmt::Display for SourceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.map_or("-", TokenSource::as_str))
    }
}

#[cfg(test)]
mod tests;
mod unauthorized;
pub(crate) use unauthorized::Unauthorized;
