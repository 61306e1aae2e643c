//! What is read from disk before the first connection: the credentials (with a startup
//! error that names the file and the cause) and what the watcher needs.

use std::sync::Arc;

use tracing::{info, warn};

use crate::config::{Config, CredentialFormat};
use crate::credentials::{self, CredentialError, Reloader};
use crate::tls::ServerTls;

use super::StartError;

/// What the server reads from disk before it starts.
pub(super) struct Files {
    pub(super) reloader: Reloader,
    pub(super) prepared: crate::credentials::watcher::Prepared,
    pub(super) server_tls: Option<Arc<ServerTls>>,
    pub(super) tls_prepared: Option<crate::credentials::watcher::Prepared>,
    pub(super) upstream_tls: Option<Arc<rustls::ClientConfig>>,
    /// The token file gatewarden generated itself, when that is where credentials come from.
    pub(super) generated: Option<std::path::PathBuf>,
}

/// Credentials, the serving certificate and the upstream's CA, each watched from before
/// its first read. Blocking: runs on a blocking thread.
pub(super) fn read_files(config: &Config) -> Result<Files, StartError> {
    let (reloader, prepared, origin) = load_credentials(config)?;
    let generated = match origin {
        credentials::Origin::Generated { path, .. } => Some(path),
        _ => None,
    };
    let max = config.credentials.max_file_bytes;
    let server_tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Some(Arc::new(ServerTls::new(
            cert,
            key,
            config.tls.client_ca.as_deref(),
            &config.tls.alpn,
            max,
        )?)),
        _ => None,
    };
    let tls_prepared = server_tls.as_ref().map(|tls| {
        let prepared = crate::credentials::watcher::prepare(
            &crate::credentials::watcher::Reloadable::paths(&**tls),
            config.credentials.watch,
            config.credentials.poll_interval.0,
        );
        // Changes between loading and watching are caught by this first re-read.
        tls.reload();
        prepared
    });
    let upstream_tls = if config.upstream.tls {
        if config.upstream_tls.insecure {
            warn!(
                upstream = %config.upstream,
                "[tls] upstream_tls.insecure = true: the upstream's certificate is NOT verified; anyone on the path can impersonate it"
            );
        }
        Some(crate::tls::upstream_client_config(
            config.upstream_tls.ca.as_deref(),
            config.upstream_tls.insecure,
            max,
        )?)
    } else {
        None
    };
    Ok(Files {
        reloader,
        prepared,
        server_tls,
        tls_prepared,
        upstream_tls,
        generated,
    })
}

/// Resolves the credential sources, starts watching them, loads them once, and returns the
/// reloader that keeps them current with the prepared watches.
pub(super) fn load_credentials(
    config: &Config,
) -> Result<
    (
        Reloader,
        crate::credentials::watcher::Prepared,
        credentials::Origin,
    ),
    CredentialError,
> {
    let (sources, origin) = credentials::resolve_sources(&config.credentials.sources)?;
    log_origin(&origin);
    // Key sets fetched from a URL have no file: a task each keeps them (`spawn_watchers`).
    let (remote, sources): (Vec<_>, Vec<_>) = sources.into_iter().partition(|s| s.is_remote());
    let remote: Vec<_> = remote
        .into_iter()
        .map(|s| credentials::RemoteKeySet::new(s, config.credentials.jwks_refetch_min.0))
        .collect();
    let paths: Vec<_> = sources.iter().map(|s| s.path.clone()).collect();
    let prepared = crate::credentials::watcher::prepare(
        &paths,
        config.credentials.watch,
        config.credentials.poll_interval.0,
    );
    // Grace only where the upstream will accept the session: without injection, a gateway's
    // own token is forwarded as the client sent it, and the gateway knows only its current one.
    let forwarded_as_is = config.upstream_auth.inject == crate::config::Inject::None;
    let reloader = Reloader::new(
        sources,
        config.upstream_auth.credential.clone(),
        config.auth.grace.0,
    )
    .with_no_grace(|s| forwarded_as_is && s.is_openclaw_config())
    .with_max_file_bytes(config.credentials.max_file_bytes)
    .with_remote(remote);
    let ok = reloader.load_initial();
    let creds = reloader.store().load();
    log_loaded(&reloader, &creds);
    if ok == 0 && !reloader.sources().is_empty() {
        warn!(
            why = %creds.unloaded().unwrap_or("-"),
            "[auth] no valid credential yet: every client is refused until a credential file becomes valid (it is watched)"
        );
    }
    reloader.check_upstream()?;
    Ok((reloader, prepared, origin))
}

/// Where the credentials come from, when gatewarden chose (no `[[credentials]]`).
fn log_origin(origin: &credentials::Origin) {
    match origin {
        credentials::Origin::Configured => {}
        credentials::Origin::OpenClaw(path) => info!(
            path = %path.display(),
            pointer = %crate::config::OPENCLAW_TOKEN_POINTER,
            "[auth] no credential configured; using the OpenClaw gateway's config"
        ),
        credentials::Origin::AwaitingOpenClaw(path) => warn!(
            path = %path.display(),
            pointer = %crate::config::OPENCLAW_TOKEN_POINTER,
            "[auth] no credential configured and the OpenClaw gateway's config is not there yet; waiting for it (watched, adopted when it appears) instead of inventing a token: until then clients are refused (reason=credential_unavailable) and /readyz is 503"
        ),
        credentials::Origin::Generated {
            path,
            created: true,
        } => info!(
            path = %path.display(),
            "[auth] no credential configured and no OpenClaw config found; generated a token file"
        ),
        credentials::Origin::Generated {
            path,
            created: false,
        } => info!(
            path = %path.display(),
            "[auth] no credential configured and no OpenClaw config found; using the generated token file"
        ),
    }
}

/// One line per credential loaded at start: where, and its fingerprint.
fn log_loaded(reloader: &Reloader, creds: &crate::credentials::Credentials) {
    for c in creds.entries() {
        let src = reloader
            .sources()
            .iter()
            .find(|s| *s.path == *c.source)
            .expect("every entry comes from a source");
        let pointer = match src.format {
            CredentialFormat::Json5 => src.json_pointer(),
            CredentialFormat::Dotenv => src.env_key(),
            _ => "-",
        };
        if let Some(keys) = &c.jwt {
            let (n, algorithms) = keys.summary();
            info!(
                path = %c.source.display(),
                format = %src.format.as_str(),
                name = %c.name.as_deref().unwrap_or("-"),
                keys = n,
                algorithms = %algorithms.join(","),
                "[auth] key set loaded"
            );
            continue;
        }
        info!(
            path = %c.source.display(),
            format = %src.format.as_str(),
            pointer = %pointer,
            name = %c.name.as_deref().unwrap_or("-"),
            client = %c.client.as_deref().unwrap_or("-"),
            fingerprint = %c.fingerprint,
            "[auth] credential loaded"
        );
    }
}
