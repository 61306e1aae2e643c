//! Noticing credential changes.
//!
//! inotify watches each file's *directory*, never the file: an atomic rename, a delete and
//! re-create, or a Kubernetes `..data` symlink swap all replace the file's inode, and a watch
//! on the old inode would go quiet. The nearest existing ancestor is watched too, so a
//! directory that is removed and re-created (a recreated Docker volume) is picked up again.
//! Bursts of events are coalesced, then every source is re-read; the reloader applies only
//! real changes. A poll (size, mtime, inode, content hash) covers filesystems that never
//! deliver events, SIGHUP forces a re-read, and a timer wakes live connections when a grace
//! period ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::credentials::{ReloadResult, Reloader};

/// Something whose files the watcher keeps current: credentials, TLS certificates.
pub(crate) trait Reloadable: Send + Sync + 'static {
    /// The files to watch (their directories are watched).
    fn paths(&self) -> Vec<PathBuf>;
    /// Re-reads everything; one labelled result per item, for the SIGHUP log.
    fn reload_all(&self) -> Vec<(String, ReloadResult)>;
    /// The poll saw `paths()[idx]` change.
    fn reload_path(&self, idx: usize) -> ReloadResult;
    /// The next moment something expires after `after` (a grace period), if any.
    fn next_deadline(&self, _after: std::time::Instant) -> Option<std::time::Instant> {
        None
    }
    /// Deadlines in `(since, now]` have passed.
    fn deadlines_passed(&self, _since: std::time::Instant, _now: std::time::Instant) {}
}

impl Reloadable for Reloader {
    fn paths(&self) -> Vec<PathBuf> {
        self.sources().iter().map(|s| s.path.clone()).collect()
    }

    fn reload_all(&self) -> Vec<(String, ReloadResult)> {
        Reloader::reload_all(self)
            .into_iter()
            .zip(self.sources())
            .map(|(r, s)| (s.path.display().to_string(), r))
            .collect()
    }

    fn reload_path(&self, idx: usize) -> ReloadResult {
        self.reload(idx)
    }

    fn next_deadline(&self, after: std::time::Instant) -> Option<std::time::Instant> {
        self.store().load().next_grace_end(after)
    }

    fn deadlines_passed(&self, since: std::time::Instant, now: std::time::Instant) {
        for r in self.store().load().retired() {
            if r.until > since && r.until <= now {
                info!(
                    previous = %format!("fp:{}", r.credential.fingerprint),
                    generation = r.generation,
                    client = %r.credential.who(),
                    "[reload] grace period over"
                );
            }
        }
        // Live connections re-check their tokens (revocation after grace).
        self.store().notify();
    }
}

/// Events closer together than this are one change (an editor fires 3–5 per save).
const QUIET: Duration = Duration::from_millis(10);
/// A steady stream of events still gets applied at least this often.
const MAX_DELAY: Duration = Duration::from_millis(50);

/// Watches set up before the first load, so no change can slip in between.
pub(crate) struct Prepared {
    fs: Option<DirWatch>,
    rx: mpsc::UnboundedReceiver<()>,
    signatures: Vec<Option<Signature>>,
}

/// Establishes the inotify watches (when `watch`) and the poll baseline. Call it before the
/// initial load: a change made after this point is seen, one made before is in the load.
pub(crate) fn prepare(paths: &[PathBuf], watch: bool, poll: Duration) -> Prepared {
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let dirs: Vec<PathBuf> = paths.iter().map(|p| parent_of(p)).collect();
    let mut fs = if watch {
        match DirWatch::new(tx, dirs) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(cause = %e, poll_s = poll.as_secs_f64(), "[reload] inotify unavailable; relying on polling");
                None
            }
        }
    } else {
        None
    };
    if let Some(fs) = &mut fs {
        fs.ensure();
    }
    Prepared {
        fs,
        rx,
        signatures: paths.iter().map(|p| signature(p)).collect(),
    }
}

/// Runs until `stop` is cancelled. The SIGHUP handler is installed on the call, not at the
/// task's first poll: a SIGHUP sent right after "listening" must not meet the default
/// action (the process ends).
pub(crate) fn run<R: Reloadable + ?Sized>(
    reloader: Arc<R>,
    prepared: Prepared,
    poll: Duration,
    stop: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    let hup = sighup();
    run_with(reloader, prepared, poll, stop, hup)
}

/// The watcher's view of the disk: the inotify watches and what the poll last saw. Only
/// the watcher touches it, from blocking threads.
struct Disk {
    fs: Option<DirWatch>,
    paths: Vec<PathBuf>,
    signatures: Vec<Option<Signature>>,
}

/// A panic in a reload leaves the state as it was; the watcher keeps going with it.
fn lock(d: &std::sync::Mutex<Disk>) -> std::sync::MutexGuard<'_, Disk> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

impl Disk {
    fn resign(&mut self) {
        for (sig, p) in self.signatures.iter_mut().zip(&self.paths) {
            *sig = signature(p);
        }
    }
}

/// Runs file work on a blocking thread: the watcher's task shares its thread with signal
/// handling, the admin listener and (with one worker) connections, and a file read can
/// block (a network mount that stopped answering). `None` if the work panicked.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

async fn run_with<R: Reloadable + ?Sized>(
    reloader: Arc<R>,
    prepared: Prepared,
    poll: Duration,
    stop: CancellationToken,
    mut hup: Hup,
) {
    let Prepared {
        fs,
        mut rx,
        signatures,
    } = prepared;
    let disk = Arc::new(std::sync::Mutex::new(Disk {
        fs,
        paths: reloader.paths(),
        signatures,
    }));
    let mut poll_tick = (!poll.is_zero()).then(|| {
        let mut i = tokio::time::interval_at(Instant::now() + poll, poll);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut grace_seen = std::time::Instant::now();
    loop {
        // Relative to the last grace end handled, not to now: a deadline that passed while
        // this loop was busy still fires (at once).
        let next_grace = reloader.next_deadline(grace_seen).map(Instant::from_std);
        let (r, d) = (reloader.clone(), disk.clone());
        tokio::select! {
            _ = stop.cancelled() => return,
            Some(()) = rx.recv() => {
                coalesce(&mut rx).await;
                blocking(move || {
                    let mut d = lock(&d);
                    if let Some(fs) = &mut d.fs {
                        fs.ensure();
                    }
                    Reloadable::reload_all(&*r);
                    d.resign();
                })
                .await;
            }
            _ = tick(&mut poll_tick) => {
                blocking(move || {
                    let mut d = lock(&d);
                    for idx in 0..d.paths.len() {
                        let now = signature(&d.paths[idx]);
                        if now != d.signatures[idx] {
                            d.signatures[idx] = now;
                            let result = r.reload_path(idx);
                            debug!(source = %d.paths[idx].display(), result = %result.as_str(), "[reload] poll saw a change");
                        }
                    }
                    debug!(sources = d.paths.len(), "[reload] poll checked");
                })
                .await;
            }
            Some(()) = recv_hup(&mut hup) => {
                info!("[reload] SIGHUP: re-reading every watched file");
                let results = blocking(move || Reloadable::reload_all(&*r)).await;
                for (label, r) in results.into_iter().flatten() {
                    info!(source = %label, result = %r.as_str(), "[reload] SIGHUP result");
                }
            }
            _ = sleep_until_opt(next_grace) => {
                let now = std::time::Instant::now();
                reloader.deadlines_passed(grace_seen, now);
                grace_seen = now;
            }
        }
    }
}

/// Waits until the event stream has been quiet for [`QUIET`] (at most [`MAX_DELAY`]).
async fn coalesce(rx: &mut mpsc::UnboundedReceiver<()>) {
    let deadline = Instant::now() + MAX_DELAY;
    while Instant::now() < deadline {
        match tokio::time::timeout(QUIET, rx.recv()).await {
            Ok(Some(())) => continue,
            _ => break,
        }
    }
}

async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
type Hup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hup = Option<()>;

#[cfg(unix)]
fn sighup() -> Hup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn sighup() -> Hup {
    None
}

#[cfg(unix)]
async fn recv_hup(h: &mut Hup) -> Option<()> {
    match h {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv_hup(_: &mut Hup) -> Option<()> {
    std::future::pending().await
}

fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What the poll compares: a change in any of these means "re-read".
#[derive(Debug, Clone, PartialEq, Eq)]
struct Signature {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
    content: [u8; 32],
}

/// Bytes of a file the poll hashes; past them size, mtime and inode tell a change (and the
/// reload refuses a file over `credentials.max_file_bytes` anyway).
const SIGNATURE_BYTES: u64 = 4 * 1024 * 1024;

/// `None` for what cannot be opened as a regular file (missing, a FIFO, a device), without
/// blocking on it.
fn signature(path: &Path) -> Option<Signature> {
    use std::io::Read;
    let (file, meta) = crate::files::open_regular(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buf = [0u8; 16 * 1024];
    let mut rest = file.take(SIGNATURE_BYTES);
    loop {
        match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(_) => return None,
        }
    }
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Signature {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
        content: hasher.finalize().into(),
    })
}

/// inotify watches on the credential directories and their nearest existing ancestors.
struct DirWatch {
    watcher: RecommendedWatcher,
    dirs: Vec<PathBuf>,
    /// Watched path → the inode it had when watched (a re-created directory is a new inode).
    watched: HashMap<PathBuf, u64>,
}

impl DirWatch {
    fn new(tx: mpsc::UnboundedSender<()>, dirs: Vec<PathBuf>) -> notify::Result<DirWatch> {
        let interesting = dirs.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Only events in (or on) a credential directory matter; an ancestor is watched
            // for the directory's own re-creation, not for its other entries.
            // Access events (our own reads open the file) are not changes; reacting to them
            // would make every reload trigger the next.
            let relevant = match &res {
                Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => false,
                Ok(ev) => {
                    ev.need_rescan()
                        || ev
                            .paths
                            .iter()
                            .any(|p| interesting.iter().any(|d| p.starts_with(d)))
                }
                Err(_) => true,
            };
            if relevant {
                let _ = tx.send(());
            }
        })?;
        Ok(DirWatch {
            watcher,
            dirs,
            watched: HashMap::new(),
        })
    }

    /// (Re-)establishes watches; cheap when nothing changed.
    fn ensure(&mut self) {
        let mut wanted: Vec<PathBuf> = Vec::new();
        for d in &self.dirs {
            if d.is_dir() {
                wanted.push(d.clone());
            }
            // The nearest existing ancestor sees `d` appear or disappear.
            if let Some(anc) = d.ancestors().skip(1).find(|a| a.is_dir()) {
                wanted.push(anc.to_path_buf());
            }
        }
        wanted.sort();
        wanted.dedup();
        let stale: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|(p, ino)| !wanted.contains(p) || dir_inode(p) != Some(**ino))
            .map(|(p, _)| p.clone())
            .collect();
        for p in stale {
            let _ = self.watcher.unwatch(&p);
            self.watched.remove(&p);
        }
        for p in wanted {
            if self.watched.contains_key(&p) {
                continue;
            }
            let Some(ino) = dir_inode(&p) else { continue };
            match self.watcher.watch(&p, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    debug!(dir = %p.display(), "[reload] watching");
                    self.watched.insert(p, ino);
                }
                Err(e) => warn!(dir = %p.display(), cause = %e, "[reload] cannot watch directory"),
            }
        }
    }
}

fn dir_inode(p: &Path) -> Option<u64> {
    let meta = std::fs::metadata(p).ok()?;
    #[cfg(unix)]
    return Some(std::os::unix::fs::MetadataExt::ino(&meta));
    #[cfg(not(unix))]
    return Some(meta.len());
}
