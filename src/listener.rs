//! Accepting clients and serving HTTP/1.1 on each connection, plus the drain on shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{Config, CredentialFormat};
use crate::credentials::{self, CredentialError, CredentialStore, Reloader};
use crate::http::Proxy;
use crate::upstream::UpstreamClient;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// A bound, ready-to-run proxy. Binding and running are separate so callers (tests, the
/// binary) can learn the real address when listening on port 0.
pub struct Server {
    listener: TcpListener,
    proxy: Arc<Proxy>,
    reloader: Arc<Reloader>,
    watcher_stop: CancellationToken,
    header_read_timeout: Duration,
    drain: Duration,
}

impl Server {
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let (reloader, prepared) = load_credentials(&config)?;
        let reloader = Arc::new(reloader);
        let creds = reloader.store();
        let addr = config.listen.0;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let proxy = Arc::new(Proxy {
            upstream: UpstreamClient::new(
                config.upstream.clone(),
                config.timeouts.upstream_connect.0,
            ),
            auth: config.auth.clone(),
            upstream_auth: config.upstream_auth.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            creds,
            tls: false,
            tasks: TaskTracker::new(),
            hard_stop: CancellationToken::new(),
        });
        let watcher_stop = CancellationToken::new();
        tokio::spawn(crate::watcher::run(
            reloader.clone(),
            prepared,
            config.credentials.poll_interval.0,
            watcher_stop.clone(),
        ));
        let server = Server {
            listener,
            proxy,
            reloader,
            watcher_stop,
            header_read_timeout: config.timeouts.header_read.0,
            drain: config.shutdown.drain.0,
        };
        info!(
            addr = %server.local_addr(),
            upstream = %config.upstream,
            "[listen] listening"
        );
        Ok(server)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn credentials(&self) -> Arc<CredentialStore> {
        self.proxy.creds.clone()
    }

    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Serves until `shutdown` resolves, then drains: no new connections, open ones get up to
    /// `shutdown.drain` to finish, whatever is left is cut.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let graceful = CancellationToken::new();
        let tasks = self.proxy.tasks.clone();
        let mut backoff = Duration::ZERO;
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                r = self.listener.accept() => r,
            };
            match accepted {
                Ok((stream, remote)) => {
                    backoff = Duration::ZERO;
                    let proxy = self.proxy.clone();
                    let graceful = graceful.clone();
                    let hrt = self.header_read_timeout;
                    tasks.spawn(serve_connection(stream, remote, proxy, hrt, graceful));
                }
                Err(e) if is_per_connection(&e) => debug!(cause = %e, "[listen] accept"),
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning on a full fd table.
                    backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                    warn!(cause = %e, retry_in_ms = backoff.as_millis() as u64, "[listen] accept failed");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
        drop(self.listener);
        self.watcher_stop.cancel();
        info!(
            active = tasks.len(),
            drain_s = self.drain.as_secs_f64(),
            "[shutdown] stopped accepting; draining"
        );
        graceful.cancel();
        tasks.close();
        if tokio::time::timeout(self.drain, tasks.wait()).await.is_ok() {
            info!("[shutdown] drained");
        } else {
            warn!(
                remaining = tasks.len(),
                "[shutdown] drain time over; closing what is left"
            );
            self.proxy.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
        }
    }
}

/// Errors that concern one incoming connection, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Resolves the credential sources, starts watching them, loads them once, and returns the
/// reloader that keeps them current with the prepared watches.
fn load_credentials(
    config: &Config,
) -> Result<(Reloader, crate::watcher::Prepared), CredentialError> {
    let (sources, origin) = credentials::resolve_sources(&config.credentials.sources)?;
    match &origin {
        credentials::Origin::Configured => {}
        credentials::Origin::OpenClaw(path) => info!(
            path = %path.display(),
            pointer = %crate::config::OPENCLAW_TOKEN_POINTER,
            "[auth] no credential configured; using the OpenClaw gateway's config"
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
    let paths: Vec<_> = sources.iter().map(|s| s.path.clone()).collect();
    let prepared = crate::watcher::prepare(
        &paths,
        config.credentials.watch,
        config.credentials.poll_interval.0,
    );
    let reloader = Reloader::new(
        sources,
        config.upstream_auth.credential.clone(),
        config.auth.grace.0,
    );
    let ok = reloader.load_initial();
    let creds = reloader.store().load();
    for c in creds.entries() {
        let src = reloader
            .sources()
            .iter()
            .find(|s| *s.path == *c.source)
            .expect("every entry comes from a source");
        let pointer = match src.format {
            CredentialFormat::Json5 => src.json_pointer(),
            _ => "-",
        };
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
    if ok == 0 {
        warn!("[auth] no valid credential yet: every client is refused until a credential file becomes valid (it is watched)");
    }
    reloader.check_upstream()?;
    Ok((reloader, prepared))
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    proxy: Arc<Proxy>,
    header_read_timeout: Duration,
    graceful: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let svc = service_fn(move |req| proxy.clone().handle(req, remote));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = graceful.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(remote = %remote, cause = %e, "[http] connection ended with an error");
    }
}
