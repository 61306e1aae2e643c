//! Re-reading the sources on a change: a source that fails keeps its last good tokens and
//! says why; the new snapshot is swapped in whole, and each change is logged with
//! fingerprints, never tokens.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::CredentialSource;

use super::sources::read_source;
use super::{Credential, CredentialError, CredentialStore, Credentials, Retired, STALE_MAX};

/// What one reload of one source did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Applied { generation: u64 },
    Unchanged,
    Rejected,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Applied { .. } => "applied",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Rejected => "rejected",
        }
    }
}

/// Owns the credential sources: re-reads them, keeps the last good tokens of each, retires
/// rotated tokens into their grace period, and swaps complete snapshots into the store.
/// Only the watcher task calls it; connections only ever read the store.
pub struct Reloader {
    sources: Vec<CredentialSource>,
    upstream: Option<String>,
    grace: Duration,
    /// Per source: its rotated-away tokens get no grace period (a gateway's own token that
    /// gatewarden forwards unchanged: the gateway refuses the old one at once).
    no_grace: Vec<bool>,
    /// `credentials.max_file_bytes`.
    max_file_bytes: u64,
    store: Arc<CredentialStore>,
    state: Mutex<ReloadState>,
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    /// The fetched `jwks` sources, carried by every snapshot.
    remote: Arc<[Arc<super::RemoteKeySet>]>,
}

struct ReloadState {
    generation: u64,
    /// Last good tokens per source (`None`: never loaded).
    current: Vec<Option<Vec<Credential>>>,
    /// Per source, its tokens from before its last change (generation n-1): the only ones
    /// a grace period covers.
    previous: Vec<Vec<Retired>>,
    /// Older tokens, for `token_stale`.
    stale: Arc<std::collections::HashMap<[u8; 32], u64>>,
    changed_at: Instant,
    /// Per source, why its last read failed (`None`: it succeeded, or was not read yet).
    failing: Vec<Option<String>>,
}

fn fps(entries: &[Credential]) -> String {
    if entries.is_empty() {
        return "-".into();
    }
    entries
        .iter()
        .map(|c| format!("fp:{}", c.fingerprint))
        .collect::<Vec<_>>()
        .join(",")
}

impl Reloader {
    pub fn new(
        sources: Vec<CredentialSource>,
        upstream: Option<String>,
        grace: Duration,
    ) -> Reloader {
        let n = sources.len();
        Reloader {
            sources,
            upstream,
            grace,
            no_grace: vec![false; n],
            max_file_bytes: crate::files::DEFAULT_MAX_BYTES,
            store: Arc::new(CredentialStore::new(Credentials::default())),
            state: Mutex::new(ReloadState {
                generation: 0,
                current: vec![None; n],
                previous: vec![Vec::new(); n],
                stale: Arc::default(),
                changed_at: Instant::now(),
                failing: vec![None; n],
            }),
            metrics: std::sync::OnceLock::new(),
            remote: Arc::default(),
        }
    }

    /// The `jwks` sources whose keys are fetched: every snapshot carries them (set before
    /// `load_initial`, which publishes the first).
    pub(crate) fn with_remote(mut self, remote: Vec<Arc<super::RemoteKeySet>>) -> Reloader {
        self.remote = remote.into();
        self
    }

    /// Sources whose rotated-away tokens get no grace period (see `no_grace`).
    pub fn with_no_grace(mut self, no_grace: impl Fn(&CredentialSource) -> bool) -> Reloader {
        self.no_grace = self.sources.iter().map(no_grace).collect();
        self
    }

    /// Files larger than this are refused (the last good tokens stay).
    pub fn with_max_file_bytes(mut self, max: u64) -> Reloader {
        self.max_file_bytes = max;
        self
    }

    /// Reload results are counted here once set.
    pub fn set_metrics(&self, m: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(m);
    }

    /// When the credentials last changed (or when loading started).
    pub fn changed_at(&self) -> Instant {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .changed_at
    }

    pub fn store(&self) -> Arc<CredentialStore> {
        self.store.clone()
    }

    pub fn sources(&self) -> &[CredentialSource] {
        &self.sources
    }

    fn keep_secret(&self, src: &CredentialSource) -> bool {
        self.upstream.is_some() && src.name.as_deref() == self.upstream.as_deref()
    }

    fn read(&self, idx: usize) -> Result<Vec<Credential>, CredentialError> {
        let src = &self.sources[idx];
        let loaded = read_source(src, self.keep_secret(src), self.max_file_bytes)?;
        for w in &loaded.warnings {
            tracing::warn!(
                "[reload] {}: {w} (skipped; the rest of the file is used)",
                src.path.display()
            );
        }
        Ok(loaded.entries)
    }

    /// First load: every source is tried; one that fails is logged and retried on its next
    /// change, and the proxy starts anyway (a gateway may create its file after we start).
    pub fn load_initial(&self) -> usize {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut ok = 0;
        for idx in 0..self.sources.len() {
            match self.read(idx) {
                Ok(entries) => {
                    st.current[idx] = Some(entries);
                    ok += 1;
                }
                Err(e) => {
                    tracing::warn!(
                        "[reload] credentials rejected source={} cause={e} keeping generation=0",
                        self.sources[idx].path.display()
                    );
                    st.failing[idx] = Some(e.to_string());
                }
            }
        }
        if ok > 0 {
            st.generation = 1;
        }
        self.publish(&st);
        ok
    }

    /// Re-reads one source and applies it if it changed; a broken file keeps the last good.
    pub fn reload(&self, idx: usize) -> ReloadResult {
        let r = self.reload_inner(idx);
        if let Some(m) = self.metrics.get() {
            m.reload(r.as_str());
        }
        r
    }

    fn reload_inner(&self, idx: usize) -> ReloadResult {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let entries = match self.read(idx) {
            Ok(e) => e,
            Err(e) => {
                self.rejected(&mut st, idx, &e);
                return ReloadResult::Rejected;
            }
        };
        st.failing[idx] = None;
        let first_time = st.current[idx].is_none();
        let old = st.current[idx].take().unwrap_or_default();
        let unchanged = old.len() == entries.len()
            && entries.iter().all(|n| old.iter().any(|o| o.same(n)))
            && st.generation > 0;
        if unchanged {
            st.current[idx] = Some(old);
            return ReloadResult::Unchanged;
        }
        let now = Instant::now();
        let previous: Vec<Credential> = old
            .iter()
            .filter(|o| !entries.iter().any(|n| n.digest == o.digest))
            .cloned()
            .collect();
        // Only the tokens this change replaced get a grace period (see `retire`).
        let last_current = st.generation;
        let grace = if self.no_grace[idx] {
            Duration::ZERO
        } else {
            self.grace
        };
        let retiring = previous
            .iter()
            .map(|credential| Retired {
                credential: credential.clone(),
                generation: last_current,
                until: now + grace,
            })
            .collect();
        retire(&mut st, idx, retiring);
        st.generation += 1;
        st.changed_at = now;
        let generation = st.generation;
        let current = fps(&entries);
        st.current[idx] = Some(entries);
        // Swapped in before it is logged: whoever reads "applied" (an operator, a test)
        // finds the new tokens in force, even with the reload on another thread.
        self.publish(&st);
        self.log_applied(idx, generation, &current, &previous, first_time);
        ReloadResult::Applied { generation }
    }

    /// A source that could not be read keeps its last good tokens; the cause is said once
    /// (a missing file is re-read on every event in its directory, a gateway writing its
    /// state, and that is not news each time).
    fn rejected(&self, st: &mut ReloadState, idx: usize, e: &CredentialError) {
        let path = self.sources[idx].path.display();
        let why = Some(e.to_string());
        if st.failing[idx] == why {
            tracing::debug!(
                "[reload] credentials rejected source={path} cause={e} keeping generation={}",
                st.generation
            );
            return;
        }
        tracing::warn!(
            "[reload] credentials rejected source={path} cause={e} keeping generation={}",
            st.generation
        );
        st.failing[idx] = why;
        // Only the reason changes, and only while nothing is loaded.
        if self.store.load().entries.is_empty() {
            self.publish(st);
        }
    }

    fn log_applied(
        &self,
        idx: usize,
        generation: u64,
        current: &str,
        previous: &[Credential],
        first_time: bool,
    ) {
        let path = self.sources[idx].path.display();
        tracing::info!(
            generation,
            source = %path,
            current = %current,
            previous = %fps(previous),
            // Absent unless set: an `Option` field records only its `Some`.
            grace = (self.no_grace[idx] && !previous.is_empty())
                .then_some("none (the gateway's own token, forwarded unchanged: the gateway refuses the previous one, so it is refused here as token_stale)")
                .map(tracing::field::display),
            "[reload] credentials applied"
        );
        if first_time {
            // A file that was not there (or not readable) at start: a gateway that started
            // after gatewarden, a volume filled later.
            tracing::info!(
                source = %path,
                current = %current,
                "[auth] credential adopted: it appeared after start, and is in force now"
            );
        }
    }

    pub fn reload_all(&self) -> Vec<ReloadResult> {
        (0..self.sources.len()).map(|i| self.reload(i)).collect()
    }

    /// Builds the snapshot from the last good tokens of every source and swaps it in.
    fn publish(&self, st: &ReloadState) {
        let entries: Vec<Credential> = st.current.iter().flatten().flatten().cloned().collect();
        // A token that is current again (a rotation back) is neither in grace nor stale.
        let retired: Vec<Retired> = st
            .previous
            .iter()
            .flatten()
            .filter(|r| !entries.iter().any(|c| c.digest == r.credential.digest))
            .cloned()
            .collect();
        let mut stale = st.stale.clone();
        if entries.iter().any(|c| stale.contains_key(&c.digest)) {
            Arc::make_mut(&mut stale).retain(|d, _| !entries.iter().any(|c| c.digest == *d));
        }
        // Fetched key sets say for themselves whether they are there (`kinds::jwt`).
        let unloaded = (entries.is_empty() && self.remote.is_empty()).then(|| {
            let why: Vec<&str> = st.failing.iter().flatten().map(String::as_str).collect();
            let why = if why.is_empty() {
                "no credential file holds a token yet".to_string()
            } else {
                why.join("; ")
            };
            Arc::from(format!("no credential loaded: {why}"))
        });
        self.store.store(Credentials {
            generation: st.generation,
            entries,
            retired,
            stale,
            unloaded,
            remote: self.remote.clone(),
        });
    }

    /// Checks that `upstream_auth.credential` names a loaded credential.
    pub fn check_upstream(&self) -> Result<(), CredentialError> {
        match &self.upstream {
            Some(name)
                if self.store.load().by_name(name).is_none()
                    && !self.sources.iter().any(|s| s.name.as_deref() == Some(name)) =>
            {
                Err(CredentialError::UnknownUpstream { name: name.clone() })
            }
            _ => Ok(()),
        }
    }
}

/// The tokens a change replaced start their grace; the ones an earlier change replaced
/// (generation n-2 and older) are stale from now on, even if their grace had not run out:
/// a token rotated twice in a hurry is one that leaked.
fn retire(st: &mut ReloadState, idx: usize, retiring: Vec<Retired>) {
    let older = std::mem::replace(&mut st.previous[idx], retiring);
    if older.is_empty() {
        return;
    }
    let stale = Arc::make_mut(&mut st.stale);
    for r in older {
        stale.insert(r.credential.digest, r.generation);
    }
    if stale.len() > STALE_MAX {
        let mut by_age: Vec<u64> = stale.values().copied().collect();
        by_age.sort_unstable();
        let cut = by_age[stale.len() - STALE_MAX];
        stale.retain(|_, g| *g >= cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::sources::{hash_line, parse_lines};
    use crate::credentials::{Presented, Verdict};
    use std::path::Path;

    fn write(p: &Path, s: &str) {
        std::fs::write(p, s).unwrap();
    }

    #[test]
    fn rotation_retires_into_grace_and_unchanged_is_not_reapplied() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        write(&f, "one");
        let r = Reloader::new(
            vec![CredentialSource::plain(&f)],
            None,
            Duration::from_secs(60),
        );
        assert_eq!(r.load_initial(), 1);
        assert_eq!(r.store().load().generation, 1);
        assert_eq!(r.reload(0), ReloadResult::Unchanged);
        write(&f, "two");
        assert_eq!(r.reload(0), ReloadResult::Applied { generation: 2 });
        let snap = r.store().load();
        assert_eq!(snap.retired().len(), 1);
        let now = Instant::now();
        assert!(snap.next_grace_end(now).is_some());
        match snap.verify(&Presented::new(b"one"), now) {
            Verdict::Grace { generation, .. } => assert_eq!(generation, 1),
            other => panic!("{other:?}"),
        }
        match snap.verify(&Presented::new(b"one"), now + Duration::from_secs(61)) {
            Verdict::Stale { generation } => assert_eq!(generation, 1),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            snap.verify(&Presented::new(b"two"), now),
            Verdict::Current(_)
        ));
        assert!(matches!(
            snap.verify(&Presented::new(b"zzz"), now),
            Verdict::Unknown
        ));
        // A broken file keeps the last good set.
        write(&f, "");
        assert_eq!(r.reload(0), ReloadResult::Rejected);
        assert!(r.store().load().check(&Presented::new(b"two")).is_some());
    }

    /// A reload that panicked holding the state (a bug, an allocation failure) must not
    /// freeze the credentials: the next change is still applied.
    #[test]
    fn a_poisoned_state_still_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        write(&f, "one");
        let r = Arc::new(Reloader::new(
            vec![CredentialSource::plain(&f)],
            None,
            Duration::from_secs(60),
        ));
        assert_eq!(r.load_initial(), 1);
        let poisoner = r.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.state.lock().unwrap();
            panic!("a reload that panicked");
        })
        .join();
        assert!(r.state.is_poisoned());
        write(&f, "two");
        assert_eq!(r.reload(0), ReloadResult::Applied { generation: 2 });
        assert!(r.store().load().check(&Presented::new(b"two")).is_some());
    }

    #[test]
    fn lines_format() {
        let origin: Arc<Path> = Arc::from(Path::new("/c"));
        let text = format!(
            "# team\n\nalice a-token\nbroken\nbob {}\ncarol sha256:xyz\n",
            hash_line(b"b-token")
        );
        let (entries, warnings) = parse_lines(Path::new("/c"), &text, &origin).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].starts_with("line 4:") && warnings[1].starts_with("line 6:"));
        let creds = Credentials::new(1, entries);
        assert_eq!(
            creds.check(&Presented::new(b"a-token")).unwrap().who(),
            "alice"
        );
        assert_eq!(
            creds.check(&Presented::new(b"b-token")).unwrap().who(),
            "bob"
        );
        let err = parse_lines(Path::new("/c"), "x 1\ny 2\nx 3\n", &origin).unwrap_err();
        assert!(err.to_string().contains("lines 1 and 3"), "{err}");
        assert!(parse_lines(Path::new("/c"), "# nothing\n", &origin).is_err());
    }
}
