//! Large payloads between two plain sockets through a pipe with splice(2)
//! (`splice.zero_copy`): frame headers and small frames still take the copy path, so the
//! frame tracker sees every header.
//!
//! Invariants: only between two plain TCP sockets (a TLS stream's bytes must pass through
//! rustls); only inside a data payload the tracker has already parsed the header of, and
//! never more than that payload's remaining length, so a frame boundary is never crossed
//! unseen; a pipe with bytes inside is never returned to the pool. The step itself is `Half::poll_zero_copy` (`half`), next to the copy path it
//! shares the buffer state with. Tested against the copy
//! path by the byte-exact bulk and close-code tests run with `zero_copy = true`.

/// What one zero-copy step did.
pub(super) enum ZeroCopy {
    /// Bytes moved (into or out of the pipe): look again.
    Moved,
    /// The source reached EOF.
    Eof,
    /// Nothing to splice here (pipe empty, not inside a large payload): copy as usual.
    NotNow,
}

/// Copy-path read size with zero-copy on, and the least payload worth a splice.
pub(super) const ZC_READ: usize = 16 * 1024;
pub(super) const ZC_MIN: u64 = 16 * 1024;

/// Pipes for splice(2), pooled per thread like the copy buffers: a tunnel holds one only
/// while payload bytes are inside it.
pub(super) mod pipe {
    use std::io;
    use std::os::fd::{AsFd, OwnedFd};

    use rustix::pipe::{pipe_with, splice, PipeFlags, SpliceFlags};

    /// Default Linux pipe capacity.
    const CAPACITY: usize = 64 * 1024;
    const POOL_MAX: usize = 32;

    pub(crate) struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        /// Bytes inside.
        pub len: usize,
    }

    impl Pipe {
        /// Splices up to `max` bytes from `from` into the pipe.
        pub(crate) fn fill_from(&mut self, from: impl AsFd, max: u64) -> io::Result<usize> {
            let want = (CAPACITY - self.len).min(max.min(usize::MAX as u64) as usize);
            let n = splice(
                from,
                None,
                &self.write,
                None,
                want,
                SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
            )?;
            self.len += n;
            Ok(n)
        }

        /// Splices what the pipe holds into `to`.
        pub(crate) fn drain_into(&mut self, to: impl AsFd) -> io::Result<usize> {
            let n = splice(
                &self.read,
                None,
                to,
                None,
                self.len,
                SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
            )?;
            self.len -= n;
            Ok(n)
        }
    }

    thread_local! {
        static POOL: std::cell::RefCell<Vec<Pipe>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    pub(crate) fn take() -> io::Result<Pipe> {
        if let Some(p) = POOL.with(|p| p.borrow_mut().pop()) {
            return Ok(p);
        }
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        Ok(Pipe {
            read,
            write,
            len: 0,
        })
    }

    /// Back to the pool if empty (a pipe with bytes inside is closed instead).
    pub(crate) fn give(p: Pipe) {
        if p.len != 0 {
            return;
        }
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOL_MAX {
                pool.push(p);
            }
        });
    }
}
