//! The writer thread: lines gather in a shared buffer and go out in one write(2) per tick,
//! so no connection task ever waits on stderr.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tracing_subscriber::fmt::MakeWriter;

pub(super) const MAX_PENDING: usize = 1 << 20;
/// How long lines gather while the log is busy: one write (and one wake-up) per tick, not
/// per line. Waking the writer per batch (a futex wake from the proxy's thread, the writer's
/// own sleep) was ~3 % of the proxy's CPU at 6,000 handshakes/s.
pub(super) const TICK: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Default)]
pub(super) struct Pending {
    pub(super) buf: Vec<u8>,
    pub(super) closed: bool,
    /// The writer waits on `lines`: the next line must wake it.
    pub(super) writer_idle: bool,
    /// Threads waiting on `room`.
    pub(super) full_waiters: usize,
}

#[derive(Default)]
pub(super) struct Shared {
    pub(super) pending: Mutex<Pending>,
    /// Signalled when lines are waiting (writer side) or room was made (logging side).
    pub(super) lines: Condvar,
    pub(super) room: Condvar,
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
    /// Appends one line (or several) in one piece.
    pub(super) fn push(&self, data: &[u8]) -> std::io::Result<usize> {
        let mut p = self.lock();
        if p.closed {
            drop(p);
            return std::io::stderr().write(data);
        }
        while p.buf.len() > MAX_PENDING {
            p.full_waiters += 1;
            p = self.room.wait(p).unwrap_or_else(|e| e.into_inner());
            p.full_waiters -= 1;
        }
        p.buf.extend_from_slice(data);
        let wake = std::mem::take(&mut p.writer_idle);
        drop(p);
        if wake {
            self.lines.notify_one();
        }
        Ok(data.len())
    }
}

/// The writer tracing gets per event: a borrow, so no reference count moves between the
/// worker threads' caches on every line.
pub struct BatchedRef<'a>(&'a Shared);

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

pub(super) fn write_out(shared: Arc<Shared>) {
    let mut out = Vec::new();
    let mut stderr = std::io::stderr();
    loop {
        {
            let mut p = shared.lock();
            while p.buf.is_empty() && !p.closed {
                p.writer_idle = true;
                p = shared.lines.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            p.writer_idle = false;
        }
        // Busy: write every tick until a tick brings nothing.
        loop {
            let closed = {
                let mut p = shared.lock();
                std::mem::swap(&mut p.buf, &mut out);
                if p.full_waiters > 0 {
                    shared.room.notify_all();
                }
                p.closed
            };
            if out.is_empty() {
                if closed {
                    return;
                }
                break;
            }
            let _ = stderr.write_all(&out);
            out.clear();
            if closed {
                continue;
            }
            std::thread::sleep(TICK);
        }
    }
}
