//! Lines that come in floods, folded: a refused connection, a failed TLS handshake, a
//! protocol warning of hyper's or h2's (`recv_reset … reached limit` under rapid reset).
//! The first line from a call site in each second is written; the rest of that second are
//! counted, and the writer reports the count (`[log] repeated lines folded … repeated=N`)
//! when the second is over. A flood then costs the log one line a second per call site,
//! not one per connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata};

/// The target of gatewarden's own lines that may come in floods: `info!(target: FLOOD, …)`.
pub(crate) const FLOOD: &str = "gatewarden::flood";

/// One line a second per call site.
const WINDOW: Duration = Duration::from_secs(1);

/// Call sites followed at most (each a few dozen bytes); past it, lines are not folded.
const MAX_SITES: usize = 64;

struct Site {
    callsite: Identifier,
    message: String,
    window_start: Instant,
    /// Lines not written in the current window.
    suppressed: u64,
    /// Lines not written in windows already over, not reported yet.
    carried: u64,
}

static SITES: Mutex<Vec<Site>> = Mutex::new(Vec::new());
/// Some site has a count to report: the writer looks at `SITES` only then.
static PENDING: AtomicBool = AtomicBool::new(false);

/// Whether lines from this call site may be folded.
pub(super) fn foldable(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    target == FLOOD || !target.starts_with("gatewarden")
}

/// Whether this line is written (the first of its site in the current second).
pub(super) fn admit(event: &Event<'_>) -> bool {
    let now = Instant::now();
    let callsite = event.metadata().callsite();
    let mut sites = SITES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(site) = sites.iter_mut().find(|s| s.callsite == callsite) {
        if now.duration_since(site.window_start) < WINDOW {
            site.suppressed += 1;
            PENDING.store(true, Ordering::Release);
            return false;
        }
        site.carried += std::mem::take(&mut site.suppressed);
        site.window_start = now;
        return true;
    }
    if sites.len() < MAX_SITES {
        let mut message = Message(String::new());
        event.record(&mut message);
        sites.push(Site {
            callsite,
            message: message.0,
            window_start: now,
            suppressed: 0,
            carried: 0,
        });
    }
    true
}

/// How long until a count is due, when one is waiting.
pub(super) fn next_due() -> Option<Duration> {
    if !PENDING.load(Ordering::Acquire) {
        return None;
    }
    let now = Instant::now();
    let sites = SITES.lock().unwrap_or_else(|e| e.into_inner());
    sites
        .iter()
        .filter_map(|s| match (s.carried, s.suppressed) {
            (0, 0) => None,
            (0, _) => Some((s.window_start + WINDOW).saturating_duration_since(now)),
            _ => Some(Duration::ZERO),
        })
        .min()
}

/// Reports the counts that are due, one line per call site (called by the writer thread).
pub(super) fn report_due() {
    if !PENDING.load(Ordering::Acquire) {
        return;
    }
    let now = Instant::now();
    let mut due = Vec::new();
    {
        let mut sites = SITES.lock().unwrap_or_else(|e| e.into_inner());
        let mut left = false;
        for s in sites.iter_mut() {
            if now.duration_since(s.window_start) >= WINDOW {
                s.carried += std::mem::take(&mut s.suppressed);
            }
            if s.carried > 0 {
                due.push((s.message.clone(), std::mem::take(&mut s.carried)));
            }
            left |= s.suppressed > 0;
        }
        PENDING.store(left, Ordering::Release);
    }
    for (line, repeated) in due {
        tracing::info!(line = %line, repeated, window_s = WINDOW.as_secs(), "[log] repeated lines folded");
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
}

/// A formatter that writes nothing for a folded line (see [`admit`]).
pub(super) struct Folding<F>(pub(super) F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Folding<F>
where
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if foldable(event.metadata()) && !admit(event) {
            return Ok(());
        }
        self.0.format_event(ctx, w, event)
    }
}
