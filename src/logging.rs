//! Log output. Text lines read like the gateway's own (`[ws] unauthorized conn=… reason=…`)
//! so existing grep-based checks keep working; JSON puts every field at the top level.
//!
//! Lines are written by a background thread through a buffer, so a connection's task never
//! waits on a `write(2)` to stderr (a slow terminal or pipe would otherwise stall the
//! proxy), and a burst of lines costs one syscall. Nothing is dropped: a full queue makes
//! the logging task wait instead.

use std::io::{BufWriter, IsTerminal};
use std::sync::Mutex;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Flushes the queue when dropped; held until the process ends.
static GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub fn init(cfg: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&cfg.level));
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("gatewarden-log")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    *GUARD.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match cfg.format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// Writes out every queued line; call before exiting the process.
pub fn flush() {
    drop(GUARD.lock().unwrap_or_else(|e| e.into_inner()).take());
}
