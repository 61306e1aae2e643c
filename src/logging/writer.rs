//! The writer thread: lines gather in a shared buffer and go out in one write(2) per tick,
//! so no connection task ever waits on stderr. Past `MAX_PENDING` bytes waiting, a line is
//! dropped and counted instead: a thread that serves sockets or signals never blocks on a
//! stderr that does not drain (a busy journald, `docker logs` on a slow disk, a pipe nobody
//! reads). The writer says how many were dropped once it has caught up.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tracing_subscriber::fmt::MakeWriter;

use super::fold;

pub(super) const MAX_PENDING: usize = 1 << 20;
/// How long lines gather while the log is busy: one write (and one wake-up) per tick, not
/// per line. Waking the writer per batch (a futex wake from the proxy's thread, the writer's
/// own sleep) was ~3 % of the proxy's CPU at 6,000 handshakes/s.
pub(super) const TICK: Duration = Duration::from_millis(10);

/// Lines dropped since start (`gatewarden_log_lines_dropped_total`).
pub(crate) fn lines_dropped() -> Counter {
    static DROPPED: OnceLock<Counter> = OnceLock::new();
    DROPPED.get_or_init(Counter::default).clone()
}

#[derive(Default)]
pub(super) struct Pending {
    pub(super) buf: Vec<u8>,
    pub(super) closed: bool,
    /// The writer has written everything and ended: stderr drains.
    pub(super) finished: bool,
    /// The writer waits on `lines`: the next line must wake it.
    pub(super) writer_idle: bool,
    /// Lines dropped since the writer last said so.
    pub(super) dropped: u64,
}

#[derive(Default)]
pub(super) struct Shared {
    pub(super) pending: Mutex<Pending>,
    /// Signalled when lines are waiting.
    pub(super) lines: Condvar,
    /// Signalled when the writer has finished (after `closed`).
    pub(super) done: Condvar,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `MakeWriter` handed to tracing: each event's formatted line is appended in one piece.
#[derive(Clone)]
pub(super) struct Batched(pub(super) Arc<Shared>);

impl Shared {
    /// Appends one line (or several) in one piece, or drops it when the writer is that far
    /// behind. Never waits for the writer.
    pub(super) fn push(&self, data: &[u8]) -> std::io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut p = self.lock();
        if p.closed {
            // After the end of the writer: straight to stderr if it drained, else dropped
            // (the process is exiting; it must not hang on a stuck stderr).
            let finished = p.finished;
            drop(p);
            if finished {
                return std::io::stderr().write(data);
            }
            lines_dropped().inc();
            return Ok(data.len());
        }
        if p.buf.len() + data.len() > MAX_PENDING {
            p.dropped += 1;
            drop(p);
            lines_dropped().inc();
            return Ok(data.len());
        }
        p.buf.extend_from_slice(data);
        let wake = std::mem::take(&mut p.writer_idle);
        drop(p);
        if wake {
            self.lines.notify_one();
        }
        Ok(data.len())
    }

    /// Marks the log closed and waits up to `wait` for the writer to write what is pending.
    pub(super) fn close(&self, wait: Duration) {
        let mut p = self.lock();
        p.closed = true;
        self.lines.notify_one();
        let deadline = std::time::Instant::now() + wait;
        while !p.finished {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            p = self
                .done
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The writer tracing gets per event: a borrow, so no reference count moves between the
/// worker threads' caches on every line.
pub(super) struct BatchedRef<'a>(&'a Shared);

impl Write for BatchedRef<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.push(data)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = BatchedRef<'a>;

    fn make_writer(&'a self) -> BatchedRef<'a> {
        BatchedRef(&self.0)
    }
}

/// The writer thread's loop: sleeps while nothing is pending (waking for a folded line's
/// count when one is due), writes every tick while lines keep coming.
pub(super) fn write_out(shared: Arc<Shared>) {
    let mut out = Vec::new();
    let mut stderr = std::io::stderr();
    loop {
        {
            let mut p = shared.lock();
            while p.buf.is_empty() && !p.closed && p.dropped == 0 {
                p.writer_idle = true;
                p = match fold::next_due() {
                    Some(left) => {
                        let (p, waited) = shared
                            .lines
                            .wait_timeout(p, left)
                            .unwrap_or_else(|e| e.into_inner());
                        if waited.timed_out() {
                            drop(p);
                            // Through tracing, into the buffer: it wakes nobody (we are the
                            // writer), so look again.
                            fold::report_due();
                            shared.lock()
                        } else {
                            p
                        }
                    }
                    None => shared.lines.wait(p).unwrap_or_else(|e| e.into_inner()),
                };
            }
            p.writer_idle = false;
        }
        // Busy: write every tick until a tick brings nothing.
        loop {
            let (closed, dropped) = {
                let mut p = shared.lock();
                std::mem::swap(&mut p.buf, &mut out);
                (p.closed, std::mem::take(&mut p.dropped))
            };
            if out.is_empty() && dropped == 0 {
                if closed {
                    let mut p = shared.lock();
                    p.finished = true;
                    shared.done.notify_all();
                    return;
                }
                break;
            }
            let _ = stderr.write_all(&out);
            out.clear();
            if dropped > 0 {
                // Caught up: say what was lost (this line goes into the buffer we just
                // emptied, and out on the next round).
                tracing::warn!(
                    dropped,
                    "[log] lines dropped: stderr did not keep up (logging never blocks serving)"
                );
            }
            fold::report_due();
            if closed {
                continue;
            }
            std::thread::sleep(TICK);
        }
    }
}
