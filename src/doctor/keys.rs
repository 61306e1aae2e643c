//! The `jwks` sources fetched from a URL, asked rather than guessed: the issuer's
//! discovery document (reachable, naming itself), the key set (its keys and algorithms),
//! and this host's clock against the issuer's `Date` (a skew past the leeway refuses
//! every token as expired or not yet valid).

use std::time::{Duration, SystemTime};

use crate::config::{Config, CredentialSource};
use crate::credentials::{discover, discovery_url, parse_fetched, DEFAULT_LEEWAY};
use crate::fetch::Fetcher;

use super::{Level, Report};

/// Each fetched key set's checks.
pub(super) async fn check(config: &Config, sources: &[CredentialSource], r: &mut Report) {
    let remote: Vec<_> = sources.iter().filter(|s| s.is_remote()).collect();
    if remote.is_empty() {
        return;
    }
    let fetcher =
        match crate::tls::upstream_client_config(None, false, config.credentials.max_file_bytes) {
            Ok(tls) => Fetcher::new(&tls),
            Err(e) => {
                r.add(
                    Level::Problem,
                    format!("key sets cannot be fetched: {e}"),
                    None,
                );
                return;
            }
        };
    for src in remote {
        check_one(&fetcher, src, r).await;
    }
}

async fn check_one(fetcher: &Fetcher, src: &CredentialSource, r: &mut Report) {
    let url = match (&src.jwks_url, &src.issuer) {
        (Some(url), _) => url.clone(),
        (None, Some(issuer)) => match discover(fetcher, issuer).await {
            Ok(url) => {
                r.add(
                    Level::Ok,
                    format!(
                        "issuer {issuer} reachable: {} names its key set {url}",
                        discovery_url(issuer)
                    ),
                    None,
                );
                url
            }
            Err(why) => {
                r.add(
                    Level::Problem,
                    format!("issuer {issuer} unreachable or not an OpenID provider: {why}"),
                    Some("until it answers, gatewarden refuses every JWT with credential_unavailable (it retries in the background)"),
                );
                return;
            }
        },
        (None, None) => return,
    };
    let fetched = match fetcher.get(&url).await {
        Ok(f) => f,
        Err(e) => {
            r.add(Level::Problem, format!("key set {e}"), None);
            return;
        }
    };
    match parse_fetched(src, &url, &fetched.body) {
        Ok((keys, warnings)) => {
            let (n, algorithms) = keys.summary();
            r.add(
                Level::Ok,
                format!(
                    "key set {url}: {n} usable key(s), algorithms {}",
                    algorithms.join(", ")
                ),
                None,
            );
            for w in warnings {
                r.add(Level::Warning, format!("key set {url}: {w}"), None);
            }
        }
        Err(e) => r.add(Level::Problem, e, None),
    }
    if let Some(date) = fetched.date {
        skew(&url, date, src.leeway.map_or(DEFAULT_LEEWAY, |l| l.0), r);
    }
}

/// This host's clock against the server's `Date` (whole seconds, so within a second).
fn skew(url: &str, date: SystemTime, leeway: Duration, r: &mut Report) {
    let now = SystemTime::now();
    let (ahead, by) = match now.duration_since(date) {
        Ok(d) => (true, d),
        Err(e) => (false, e.duration()),
    };
    let secs = by.as_secs();
    if by > leeway + Duration::from_secs(1) {
        r.add(
            Level::Problem,
            format!(
                "this host's clock is {secs}s {} {url}'s, past the leeway of {}s",
                if ahead { "ahead of" } else { "behind" },
                leeway.as_secs()
            ),
            Some("fix the clock (timedatectl, chrony): tokens are refused as jwt_expired or jwt_not_yet_valid"),
        );
    } else {
        r.add(
            Level::Ok,
            format!(
                "clock within {secs}s of {url}'s (leeway {}s)",
                leeway.as_secs()
            ),
            None,
        );
    }
}
