//! `gatewarden doctor`: finds out why clients see "token mismatch", from evidence on disk and
//! from a running instance, instead of guessing.
//!
//! It reads the same configuration as the proxy and reports each finding as ok / warning /
//! problem with one line of advice. A token given with `--token` is compared by fingerprint
//! and never printed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::{Config, CredentialSource};
use crate::credentials::{self, Credential};
use profiles::{identify, profiles};

mod gateway;
mod keys;
pub(crate) mod modes;
mod profiles;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Ok,
    Warning,
    Problem,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Problem => "problem",
        })
    }
}

#[derive(Debug)]
pub(crate) struct Finding {
    pub level: Level,
    pub what: String,
    pub advice: Option<String>,
}

#[derive(Default)]
pub(crate) struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    fn add(&mut self, level: Level, what: impl Into<String>, advice: Option<&str>) {
        self.findings.push(Finding {
            level,
            what: what.into(),
            advice: advice.map(str::to_string),
        });
    }

    pub(crate) fn worst(&self) -> Level {
        self.findings
            .iter()
            .map(|f| f.level)
            .max()
            .unwrap_or(Level::Ok)
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            out.push_str(&format!("{:<8} {}\n", f.level.to_string(), f.what));
            if let Some(a) = &f.advice {
                out.push_str(&format!("         advice: {a}\n"));
            }
        }
        out
    }
}

/// Inputs besides the configuration.
#[derive(Default)]
pub(crate) struct Options {
    /// A token to identify (compared by fingerprint only).
    pub token: Option<String>,
    /// `/proc/self/mountinfo`, or a file standing in for it.
    pub mountinfo: Option<PathBuf>,
    /// The running instance's admin address, if any.
    pub admin: Option<String>,
}

fn age(t: SystemTime) -> String {
    match t.elapsed() {
        Ok(d) if d < Duration::from_secs(120) => format!("{}s ago", d.as_secs()),
        Ok(d) if d < Duration::from_secs(7200) => format!("{}m ago", d.as_secs() / 60),
        Ok(d) => format!("{}h ago", d.as_secs() / 3600),
        Err(_) => "in the future".into(),
    }
}

/// A credential file's modification time was this recent: clients may still hold the old one.
const RECENT: Duration = Duration::from_secs(600);

pub(crate) async fn run(config: &Config, opts: &Options) -> Report {
    let mut r = Report::default();
    let sources = effective_sources(config, &mut r);
    // A token file gatewarden made itself changes when it was made: no rotation to report.
    let generated = match credentials::plan(&config.credentials.sources) {
        Ok(credentials::Origin::Generated { path, .. }) => Some(path),
        _ => None,
    };
    keys::check(config, &sources, &mut r).await;
    let sources: Vec<CredentialSource> = sources.into_iter().filter(|s| !s.is_remote()).collect();
    let loaded: Vec<(CredentialSource, Vec<Credential>)> = sources
        .iter()
        .filter_map(|src| {
            let own = generated.as_deref() == Some(src.path.as_path());
            check_source(src, config, opts, own, &mut r)
        })
        .collect();
    // Usual cause 3: dev and prod profiles with different tokens.
    profiles(&sources, &mut r);
    let running = running_instance(opts, &mut r).await;
    if let Some(t) = &opts.token {
        identify(t, &loaded, running.as_ref(), &sources, &mut r);
    }
    gateway::check(config, &sources, &mut r).await;
    if let Some((path, doc)) = modes::gateway_config(&sources) {
        modes::compare(config, &doc, &path, &mut r);
    }
    check_listen(config, running.as_ref(), &mut r);
    check_tls(config, &mut r);
    r
}

/// One credential source: present, private, readable, holding a token, on a volume. Its
/// tokens, when it has any.
fn check_source(
    src: &CredentialSource,
    config: &Config,
    opts: &Options,
    generated: bool,
    r: &mut Report,
) -> Option<(CredentialSource, Vec<Credential>)> {
    let meta = source_metadata(&src.path, r)?;
    let modified = meta.modified().ok();
    let loaded = match credentials::read_source(src, false, config.credentials.max_file_bytes) {
        Ok(l) => {
            report_loaded(src, config, modified, generated, &l.entries, r);
            Some((src.clone(), l.entries))
        }
        Err(e) => {
            report_unreadable(e, r);
            None
        }
    };
    check_volume(&src.path, opts, r);
    loaded
}

/// The file's metadata, with a warning when others may read it; `None` (reported) when it
/// cannot be looked at.
fn source_metadata(p: &Path, r: &mut Report) -> Option<std::fs::Metadata> {
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) => {
            match crate::files::stat_error(p, e) {
                crate::files::FileError::Missing => r.add(
                    Level::Problem,
                    format!("credentials {}: does not exist", p.display()),
                    Some("create it, or fix the path; gatewarden watches for it to appear"),
                ),
                why => r.add(
                    Level::Problem,
                    format!("credential file {} {why}", p.display()),
                    None,
                ),
            }
            return None;
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            r.add(
                Level::Warning,
                format!(
                    "credentials {}: readable by group/others (mode {mode:03o})",
                    p.display()
                ),
                Some(&format!("chmod 600 {}", p.display())),
            );
        }
    }
    Some(meta)
}

/// Each token's fingerprint, and a warning when the file changed recently (usual cause 1b).
fn report_loaded(
    src: &CredentialSource,
    config: &Config,
    modified: Option<SystemTime>,
    generated: bool,
    entries: &[Credential],
    r: &mut Report,
) {
    let p = &src.path;
    for c in entries {
        if let Some(keys) = &c.jwt {
            let (n, algorithms) = keys.summary();
            r.add(
                Level::Ok,
                format!(
                    "key set {}: {n} usable key(s), algorithms {}, modified {}",
                    p.display(),
                    algorithms.join(", "),
                    modified.map(age).unwrap_or_else(|| "?".into())
                ),
                None,
            );
            continue;
        }
        r.add(
            Level::Ok,
            format!(
                "credentials {} ({}{}): fingerprint fp:{}, modified {}",
                p.display(),
                src.format.as_str(),
                c.client
                    .as_deref()
                    .map(|n| format!(", client {n}"))
                    .unwrap_or_default(),
                c.fingerprint,
                modified.map(age).unwrap_or_else(|| "?".into())
            ),
            None,
        );
    }
    let recent = modified.filter(|m| m.elapsed().is_ok_and(|d| d < RECENT));
    if let Some(m) = recent.filter(|_| !generated) {
        r.add(
            Level::Warning,
            format!("credentials {}: changed {} (a restart or rotation?)", p.display(), age(m)),
            Some(if src.is_openclaw_config() && config.upstream_auth.inject == crate::config::Inject::None {
                "clients that fetched the gateway's token before that are now refused (token_stale): it is forwarded as they send it, so it gets no grace period; give them the new one, or give clients tokens of their own and let gatewarden present the gateway's (upstream_auth.inject, README \"Stable client tokens\")"
            } else {
                "clients that fetched the token before that now fail with token_mismatch / token_stale once auth.grace is over; give them the new one"
            }),
        );
    }
}

/// Why a credential file gave no token, with what to do.
fn report_unreadable(e: credentials::CredentialError, r: &mut Report) {
    match e {
        e @ credentials::CredentialError::TokenAbsent { .. } => {
            // Usual cause 1a: no persisted token.
            r.add(
                Level::Problem,
                e.to_string(),
                Some("run `openclaw config set gateway.auth.token <token>` (e.g. from `gatewarden token generate`) so the token survives restarts"),
            );
        }
        // The text already says who gatewarden runs as, who owns the file and what to do.
        e @ credentials::CredentialError::File {
            why: crate::files::FileError::PermissionDenied { .. },
            ..
        } => r.add(Level::Problem, e.to_string(), None),
        e => r.add(
            Level::Problem,
            e.to_string(),
            Some("fix the file; the last good credentials stay in force meanwhile"),
        ),
    }
}

/// Usual cause 4: the file lives on the container's writable layer.
fn check_volume(p: &Path, opts: &Options, r: &mut Report) {
    let Some(mi) = opts.mountinfo.clone().or_else(default_mountinfo) else {
        return;
    };
    let Ok(text) = std::fs::read_to_string(&mi) else {
        return;
    };
    if let Some(fs) = ephemeral_fs(&text, p) {
        r.add(
            Level::Problem,
            format!("credentials {}: on the container's writable layer ({fs} /), not a volume", p.display()),
            Some("mount a named volume or bind mount there; `docker compose down && up` recreates the container and loses the file (and a regenerated token strands clients)"),
        );
    }
}

/// Usual cause 2, rotation churn, as the running instance's admin endpoint tells it.
async fn running_instance(opts: &Options, r: &mut Report) -> Option<serde_json::Value> {
    // Usual cause 2: churn, from a running instance.
    let running = match &opts.admin {
        Some(a) => crate::admin::get_text(&format!("http://{a}/credentials"))
            .await
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok()),
        None => None,
    };
    match &running {
        Some(v) => {
            let generation = v["generation"].as_u64().unwrap_or(0);
            let since = v["seconds_since_change"].as_u64().unwrap_or(0);
            if generation >= 3 && since < RECENT.as_secs() {
                r.add(
                    Level::Warning,
                    format!("running instance: credential generation {generation}, last change {since}s ago — the token keeps changing"),
                    Some("something rewrites the credential file repeatedly (gateway restarts without a persisted token, a sync job, two profiles fighting); find it"),
                );
            } else {
                r.add(Level::Ok, format!("running instance: credential generation {generation}, last change {since}s ago"), None);
            }
        }
        None if opts.admin.is_some() => r.add(
            Level::Warning,
            format!("no running gatewarden answered on admin {}", opts.admin.as_deref().unwrap_or("")),
            Some("start it, or pass --admin-listen with its admin address, to check rotation churn and stale tokens"),
        ),
        None => {}
    }
    running
}

/// The listen address is free, held by the running gatewarden (its admin listener says
/// where it listens), or taken by another program.
fn check_listen(config: &Config, running: Option<&serde_json::Value>, r: &mut Report) {
    let want = config.listen.0;
    let ours = running
        .and_then(|v| v["listen"].as_str())
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .is_some_and(|a| {
            a.port() == want.port() && (want.ip().is_unspecified() || a.ip() == want.ip())
        });
    match std::net::TcpListener::bind(want) {
        Ok(_) => r.add(Level::Ok, format!("listen {want} is free"), None),
        Err(_) if ours => r.add(
            Level::Ok,
            format!("listen {want} is held by the running gatewarden"),
            None,
        ),
        Err(e) => r.add(
            Level::Warning,
            format!("listen {want} is taken ({e}), and not by a gatewarden whose admin listener answered"),
            Some("another program holds the port (the gateway itself on 18789?); or gatewarden runs with its admin listener elsewhere: pass --admin-listen"),
        ),
    }
}

/// The TLS certificate and key load, and how long the certificate has left.
fn check_tls(config: &Config, r: &mut Report) {
    if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        match crate::tls::load_pair(cert, key, config.credentials.max_file_bytes) {
            Ok(pair) => {
                let days = pair.info.remaining().as_secs() / 86_400;
                let level = if pair.info.remaining() <= crate::tls::EXPIRY_WARNING {
                    Level::Warning
                } else {
                    Level::Ok
                };
                r.add(
                    level,
                    format!(
                        "tls {}: {}, expires {} ({days} days)",
                        cert.display(),
                        pair.info.subject,
                        pair.info.not_after_text
                    ),
                    (level == Level::Warning).then_some(
                        "renew the certificate; gatewarden picks up the new pair without a restart",
                    ),
                );
            }
            Err(e) => r.add(
                Level::Problem,
                e.to_string(),
                Some("fix the certificate/key files"),
            ),
        }
    }
}

fn effective_sources(config: &Config, r: &mut Report) -> Vec<CredentialSource> {
    let configured = &config.credentials.sources;
    match credentials::plan(configured) {
        Ok(credentials::Origin::Configured) => configured.clone(),
        Ok(origin @ credentials::Origin::OpenClaw(_)) => {
            let sources = origin.sources(configured);
            r.add(
                Level::Ok,
                format!(
                    "no credentials configured: using OpenClaw's config {}",
                    sources[0].path.display()
                ),
                None,
            );
            sources
        }
        Ok(origin @ credentials::Origin::AwaitingOpenClaw(_)) => {
            let sources = origin.sources(configured);
            r.add(
                Level::Warning,
                format!(
                    "no credentials configured: OpenClaw is expected here, and gatewarden waits for {} to appear",
                    sources[0].path.display()
                ),
                Some("start the gateway with a persisted token (openclaw config set gateway.auth.token …); until its config holds one, every client is refused"),
            );
            sources
        }
        Ok(credentials::Origin::Generated { path, .. }) => {
            r.add(Level::Ok, format!("no credentials configured and no OpenClaw config found: gatewarden's own token file {}", path.display()), None);
            vec![CredentialSource::plain(path)]
        }
        Err(e) => {
            r.add(Level::Problem, e.to_string(), None);
            Vec::new()
        }
    }
}

fn default_mountinfo() -> Option<PathBuf> {
    let p = PathBuf::from("/proc/self/mountinfo");
    p.exists().then_some(p)
}

/// When `path` lives on an overlay root filesystem with no mount covering it (a container's
/// writable layer), the filesystem type; `None` when it is on a volume, a bind mount, or not
/// in a container at all.
pub(crate) fn ephemeral_fs(mountinfo: &str, path: &Path) -> Option<String> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut best: Option<(&str, String)> = None;
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options ... - fstype source super-options
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount_point), Some(fstype)) = (fields.get(4), fields.get(dash + 1)) else {
            continue;
        };
        if path.starts_with(mount_point)
            && best
                .as_ref()
                .is_none_or(|(m, _)| mount_point.len() >= m.len())
        {
            best = Some((mount_point, fstype.to_string()));
        }
    }
    match best {
        Some(("/", fs)) if fs == "overlay" || fs == "aufs" => Some(fs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_layer_detection() {
        let overlay_root = "22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/x\n\
                            30 22 0:5 / /proc rw - proc proc rw\n";
        assert_eq!(
            ephemeral_fs(
                overlay_root,
                Path::new("/home/node/.openclaw/openclaw.json")
            )
            .as_deref(),
            Some("overlay")
        );
        let with_volume = format!("{overlay_root}40 22 8:1 /volumes/state/_data /home/node/.openclaw rw - ext4 /dev/sda1 rw\n");
        assert_eq!(
            ephemeral_fs(
                &with_volume,
                Path::new("/home/node/.openclaw/openclaw.json")
            ),
            None
        );
        let host = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n";
        assert_eq!(ephemeral_fs(host, Path::new("/etc/x")), None);
    }
}
