//! Log output. Text lines read like the gateway's own (`[ws] unauthorized conn=… reason=…`)
//! so existing grep-based checks keep working; JSON puts every field at the top level.
//!
//! Lines are appended to a shared buffer and written out by a background thread, so a
//! connection's task never waits on `write(2)` to stderr (a slow terminal or pipe would stall
//! the proxy) and a burst of lines costs one syscall. The thread sleeps on a condition
//! variable (no spinning: on a 2-core sidecar host a spinning logger steals a core). Nothing
//! is dropped: past `MAX_PENDING` bytes, logging waits for the writer.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

const MAX_PENDING: usize = 1 << 20;
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when lines are waiting (writer side) or room was made (logging side).
    lines: Condvar,
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `MakeWriter` handed to tracing: each event's formatted line is appended in one piece.
#[derive(Clone)]
struct Batched(Arc<Shared>);

impl Write for Batched {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let mut p = self.0.lock();
        if p.closed {
            drop(p);
            return std::io::stderr().write(data);
        }
        while p.buf.len() > MAX_PENDING {
            p = self.0.room.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        let was_empty = p.buf.is_empty();
        p.buf.extend_from_slice(data);
        drop(p);
        if was_empty {
            self.0.lines.notify_one();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Batched;

    fn make_writer(&'a self) -> Batched {
        self.clone()
    }
}

fn write_out(shared: Arc<Shared>) {
    let mut out = Vec::new();
    let mut stderr = std::io::stderr();
    loop {
        let closed = {
            let mut p = shared.lock();
            while p.buf.is_empty() && !p.closed {
                p = shared.lines.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            if !p.closed {
                // Let a burst gather: one wake-up and one write per batch, not per line.
                drop(p);
                std::thread::sleep(BATCH_WINDOW);
                p = shared.lock();
            }
            std::mem::swap(&mut p.buf, &mut out);
            p.closed
        };
        shared.room.notify_all();
        let _ = stderr.write_all(&out);
        out.clear();
        if closed && shared.lock().buf.is_empty() {
            return;
        }
    }
}

/// RFC 3339 timestamps with microseconds, as tracing-subscriber's default prints them, but
/// built digit by digit (humantime) instead of through `write!` with padding: every
/// connection logs two lines, and the timestamp was the costliest part of each.
struct Timestamp;

impl tracing_subscriber::fmt::time::FormatTime for Timestamp {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(
            w,
            "{}",
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
        )
    }
}

/// The writer thread, for [`flush`].
static WRITER: Mutex<Option<(Arc<Shared>, JoinHandle<()>)>> = Mutex::new(None);

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub fn init(cfg: &LogConfig) {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Batched(shared))
        .with_timer(Timestamp)
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

/// Writes out every pending line; call before the process exits. Later lines go to stderr
/// directly.
pub fn flush() {
    let writer = WRITER.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((shared, thread)) = writer {
        shared.lock().closed = true;
        shared.lines.notify_one();
        let _ = thread.join();
    }
}
