//! Log output. Text lines read like the gateway's own (`[ws] unauthorized conn=… reason=…`)
//! so existing grep-based checks keep working; JSON puts every field at the top level.
//!
//! Lines are appended to a shared buffer and written out by a background thread, so a
//! connection's task never waits on `write(2)` to stderr (a slow terminal or pipe would stall
//! the proxy) and a burst of lines costs one syscall. While lines keep coming the thread
//! writes what gathered every `TICK`, and nobody wakes it; when a tick finds nothing it
//! sleeps on a condition variable until the next line (no spinning, no timer while idle: on
//! a 2-core sidecar host a busy logger steals the proxy's core). Logging never waits: past
//! `MAX_PENDING` bytes, lines are dropped and counted (`gatewarden_log_lines_dropped_total`,
//! and a line saying how many once the writer caught up), and lines that come in floods are
//! folded to one a second per call site (`fold`).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

mod direct;
mod fold;
mod json;
mod pieces;
#[cfg(test)]
pub(crate) mod tests;
mod text;
mod writer;

pub use direct::*;
use fold::Folding;
pub(crate) use fold::FLOOD;
use json::JsonFormat;
#[cfg(test)]
use pieces::timestamp;
use pieces::Timestamp;
pub use text::*;
pub(crate) use writer::lines_dropped;
use writer::*;

/// The writer thread, for [`flush`].
static WRITER: Mutex<Option<(Arc<Shared>, JoinHandle<()>)>> = Mutex::new(None);

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub(crate) fn init(cfg: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&cfg.level));
    let ansi = std::io::stderr().is_terminal();
    let shared = Arc::new(Shared::default());
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("gatewarden-log".into())
            .spawn(move || write_out(shared))
            .expect("start the log writer thread")
    };
    *WRITER.lock().unwrap_or_else(|e| e.into_inner()) = Some((shared.clone(), thread));
    if cfg.format == LogFormat::Text && !ansi {
        let _ = DIRECT.set(Direct::Batched(shared.clone()));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Batched(shared))
        .with_timer(Timestamp)
        .with_target(false);
    match cfg.format {
        LogFormat::Text if ansi => {
            let format = tracing_subscriber::fmt::format()
                .with_timer(Timestamp)
                .with_target(false);
            builder.with_ansi(true).event_format(Folding(format)).init()
        }
        LogFormat::Text => builder
            .with_ansi(false)
            .event_format(Folding(TextFormat))
            .init(),
        LogFormat::Json => builder.event_format(Folding(JsonFormat)).init(),
    }
}

/// How long the exit waits for pending lines to reach a stderr that does not drain.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Writes out every pending line; call before the process exits. Later lines go to stderr
/// directly. Waits at most `FLUSH_WAIT`: a stuck stderr must not keep the process alive.
pub(crate) fn flush() {
    let writer = WRITER.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((shared, thread)) = writer {
        shared.close(FLUSH_WAIT);
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}
