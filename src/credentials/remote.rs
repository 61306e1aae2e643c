//! `jwks` sources without a file: their keys are fetched, from `jwks_url` or from the
//! `jwks_uri` of the issuer's discovery document, by one background task per source, and
//! cached here for the connection path to read without a lock. A failed fetch keeps the
//! last good keys. A token signed by a key the set lacks (the issuer rotated) wakes the
//! task, which refetches at most once per `credentials.jwks_refetch_min`: a flood of forged `kid`s costs
//! the issuer one request a minute, and the connection path never waits on the network.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::CredentialSource;
use crate::fetch::Fetcher;

use super::jwks::{self, JwtKeys};

/// A set is fetched again after this, or after the server's `max-age` within
/// `credentials.jwks_refetch_min`..=[`REFRESH_MAX`].
const REFRESH: Duration = Duration::from_secs(15 * 60);
const REFRESH_MAX: Duration = Duration::from_secs(24 * 3600);
/// A failed fetch is retried after this, doubling up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// One fetched key set.
pub(crate) struct RemoteKeySet {
    pub(crate) src: CredentialSource,
    keys: ArcSwapOption<JwtKeys>,
    wanted: Arc<Notify>,
    /// `credentials.jwks_refetch_min`.
    refetch_min: Duration,
}

impl std::fmt::Debug for RemoteKeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeySet")
            .field("source", &self.src.location())
            .field("keys", &self.keys.load().as_ref().map(|k| k.summary().0))
            .finish()
    }
}

impl RemoteKeySet {
    pub(crate) fn new(src: CredentialSource, refetch_min: Duration) -> Arc<RemoteKeySet> {
        Arc::new(RemoteKeySet {
            src,
            refetch_min,
            keys: ArcSwapOption::empty(),
            wanted: Arc::new(Notify::new()),
        })
    }

    /// The keys, once fetched.
    pub(crate) fn keys(&self) -> Option<Arc<JwtKeys>> {
        self.keys.load_full()
    }

    /// Fetches now, then keeps the keys current until `stop`.
    pub(crate) async fn run(self: Arc<Self>, fetcher: Fetcher, stop: CancellationToken) {
        let mut backoff = RETRY_MIN;
        loop {
            let fetched_at = Instant::now();
            let wait = match self.refresh(&fetcher).await {
                Ok(max_age) => {
                    backoff = RETRY_MIN;
                    max_age.map_or(REFRESH, |a| a.clamp(self.refetch_min, REFRESH_MAX))
                }
                Err(why) => {
                    let kept = self.keys.load().is_some();
                    warn!(
                        source = %self.src.location(),
                        error = %why,
                        retry_in = %format!("{}s", backoff.as_secs()),
                        kept_last_good = kept,
                        "[auth] key set fetch failed"
                    );
                    let w = backoff;
                    backoff = (backoff * 2).min(RETRY_MAX);
                    w
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.wanted.notified() => {
                    let since = fetched_at.elapsed();
                    if since < self.refetch_min {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(self.refetch_min - since) => {}
                        }
                    }
                    debug!(source = %self.src.location(), "[auth] key set refetch: a token named a key not in the set");
                }
            }
        }
    }

    /// One fetch (after discovery when needed); the keys are swapped in when usable.
    async fn refresh(&self, fetcher: &Fetcher) -> Result<Option<Duration>, String> {
        let url = match &self.src.jwks_url {
            Some(url) => url.clone(),
            None => discover(fetcher, self.src.issuer.as_deref().unwrap_or_default()).await?,
        };
        let fetched = fetcher.get(&url).await.map_err(|e| e.to_string())?;
        let (keys, warnings) = parse_fetched(&self.src, &url, &fetched.body)?;
        for w in warnings {
            warn!(url = %url, warning = %w, "[auth] key set: a key is left out");
        }
        let (count, algorithms) = keys.summary();
        let changed = self.keys.load().as_ref().map(|k| k.kids()) != Some(keys.kids());
        self.keys
            .store(Some(Arc::new(keys.with_refetch(self.wanted.clone()))));
        if changed {
            info!(
                source = %self.src.location(),
                url = %url,
                keys = count,
                algorithms = %algorithms.join(","),
                "[auth] key set fetched"
            );
        }
        Ok(fetched.max_age)
    }
}

/// The keys of a fetched document, checked as a file's would be, and warnings for the
/// keys left out.
pub(crate) fn parse_fetched(
    src: &CredentialSource,
    url: &str,
    body: &[u8],
) -> Result<(JwtKeys, Vec<String>), String> {
    let text = std::str::from_utf8(body).map_err(|_| format!("{url}: not UTF-8"))?;
    let mut named = src.clone();
    named.path = PathBuf::from(url);
    let origin: Arc<Path> = Arc::from(Path::new(url));
    jwks::key_set(&named, text, &origin).map_err(|e| e.to_string())
}

/// The `jwks_uri` of `issuer`'s discovery document (OpenID Connect Discovery 1.0 §4),
/// whose `issuer` must be the configured one exactly (§4.3: no other issuer's keys).
pub(crate) async fn discover(fetcher: &Fetcher, issuer: &str) -> Result<String, String> {
    let url = discovery_url(issuer);
    let doc = fetcher
        .get(&url)
        .await
        .and_then(|f| f.json(&url))
        .map_err(|e| e.to_string())?;
    let said = doc.get("issuer").and_then(|v| v.as_str()).unwrap_or("");
    if said != issuer {
        return Err(format!(
            "{url}: names issuer {said:?}, not the configured {issuer:?}"
        ));
    }
    let jwks = doc
        .get("jwks_uri")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("{url}: no jwks_uri"))?;
    crate::config::fetchable_url(jwks).map_err(|why| format!("{url}: jwks_uri {jwks:?} {why}"))?;
    Ok(jwks.to_string())
}

/// Where an issuer's discovery document is.
pub(crate) fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}
