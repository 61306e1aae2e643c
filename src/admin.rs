//! The admin listener: liveness, readiness and metrics, on its own address so it is never
//! exposed on the proxy port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Stale tokens listed on the admin endpoint (the newest); doctor looks a token up there.
const STALE_SHOWN: usize = 1000;

use crate::credentials::Reloader;
use crate::metrics::Metrics;
use crate::tls::ServerTls;
use crate::upstream::UpstreamClient;

/// How long a readiness verdict on the upstream is reused: probes from several checkers
/// must not turn into a connection storm against the gateway.
const READY_CACHE: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Open connections per worker thread, for `/metrics` (the server keeps the counts).
pub(crate) trait WorkerLoad: Send + Sync {
    fn open(&self) -> Vec<usize>;
}

pub(crate) struct Admin {
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
    pub upstream: Arc<UpstreamClient>,
    pub tls: Option<Arc<ServerTls>>,
    /// Per-worker connection counts, with 2 or more workers.
    pub workers: Option<Arc<dyn WorkerLoad>>,
    /// Set once shutdown starts: readiness fails so load balancers stop sending.
    pub draining: AtomicBool,
    /// Where this instance accepts clients (`doctor` asks, to tell "taken by gatewarden
    /// itself" from "taken by another program").
    pub listen: std::sync::OnceLock<SocketAddr>,
    probe: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Admin {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        reloader: Arc<Reloader>,
        upstream: Arc<UpstreamClient>,
        tls: Option<Arc<ServerTls>>,
        workers: Option<Arc<dyn WorkerLoad>>,
    ) -> Admin {
        Admin {
            metrics,
            reloader,
            upstream,
            tls,
            workers,
            draining: AtomicBool::new(false),
            listen: std::sync::OnceLock::new(),
            probe: Mutex::new(None),
        }
    }

    async fn upstream_ok(&self) -> Result<(), String> {
        if let Some((at, r)) = self
            .probe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            if at.elapsed() < READY_CACHE {
                return r.clone();
            }
        }
        let r = self
            .upstream
            .probe(PROBE_TIMEOUT)
            .await
            .map_err(|e| e.to_string());
        *self.probe.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), r.clone()));
        r
    }

    async fn readiness(&self) -> (StatusCode, String) {
        let creds = self.reloader.store().load();
        let credentials = if creds.is_empty() {
            Err("no valid credential loaded".to_string())
        } else {
            Ok(())
        };
        let upstream = self.upstream_ok().await;
        let draining = self.draining.load(Ordering::Relaxed);
        let word = |r: &Result<(), String>| match r {
            Ok(()) => "ok".to_string(),
            Err(e) => e.clone(),
        };
        let ready = credentials.is_ok() && upstream.is_ok() && !draining;
        let body = json!({
            "ready": ready,
            "checks": {
                "credentials": word(&credentials),
                "upstream": word(&upstream),
                "shutdown": if draining { "draining" } else { "ok" },
            },
            "generation": creds.generation,
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, body.to_string())
    }

    /// Fingerprints (never tokens) of the current, previous (in grace) and the newest
    /// stale credentials, for
    /// `gatewarden doctor --token` to recognise a stale token.
    fn credentials_json(&self) -> String {
        let snap = self.reloader.store().load();
        let now = Instant::now();
        let current: Vec<_> = snap
            .entries()
            .iter()
            .map(|c| json!({"fingerprint": c.fingerprint.to_string(), "source": c.source.display().to_string(), "client": c.who()}))
            .collect();
        let retired: Vec<_> = snap
            .retired()
            .iter()
            .map(|r| {
                json!({
                    "fingerprint": r.credential.fingerprint.to_string(),
                    "generation": r.generation,
                    "grace_left_s": r.until.saturating_duration_since(now).as_secs(),
                    "client": r.credential.who(),
                })
            })
            .chain(
                snap.stale()
                    .into_iter()
                    .take(STALE_SHOWN)
                    .map(|(fp, generation)| {
                        json!({
                            "fingerprint": fp.to_string(),
                            "generation": generation,
                            "grace_left_s": 0,
                        })
                    }),
            )
            .collect();
        json!({
            "listen": self.listen.get().map(|a| a.to_string()),
            "generation": snap.generation,
            "seconds_since_change": self.reloader.changed_at().elapsed().as_secs(),
            "current": current,
            "retired": retired,
        })
        .to_string()
    }

    /// Gauges that describe current state are set at scrape time.
    fn metrics_text(&self) -> String {
        let m = &self.metrics;
        m.credentials_generation
            .set(self.reloader.store().load().generation as i64);
        m.seconds_since_reload
            .set(self.reloader.changed_at().elapsed().as_secs() as i64);
        let not_after = self.tls.as_ref().map_or(0, |t| {
            t.resolver
                .current()
                .info
                .not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
        m.tls_not_after.set(not_after);
        if let Some(workers) = &self.workers {
            for (worker, open) in workers.open().into_iter().enumerate() {
                m.worker_connections
                    .get_or_create(&crate::metrics::WorkerLabels {
                        worker: worker as u64,
                    })
                    .set(open as i64);
            }
        }
        m.encode()
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let reply = |status: StatusCode, ctype: &'static str, body: String| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(ctype),
            );
            Ok(r)
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        match req.uri().path() {
            "/healthz" => reply(
                StatusCode::OK,
                "application/json",
                r#"{"ok":true,"status":"live"}"#.into(),
            ),
            "/readyz" => {
                let (status, body) = self.readiness().await;
                reply(status, "application/json", body)
            }
            "/credentials" => reply(StatusCode::OK, "application/json", self.credentials_json()),
            "/metrics" => reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics_text(),
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found: /healthz, /readyz, /metrics\n".into(),
            ),
        }
    }
}

/// Serves the admin endpoints until `stop`.
pub(crate) async fn serve(listener: TcpListener, admin: Arc<Admin>, stop: CancellationToken) {
    loop {
        let (stream, remote) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    debug!(cause = %e, "[admin] accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| admin.clone().handle(req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                debug!(remote = %remote, cause = %e, "[admin] connection error");
            }
        });
    }
}

/// `gatewarden health`: GETs `url` and succeeds on a 200, for a container HEALTHCHECK in an
/// image without curl.
pub(crate) async fn check_health(url: &str) -> Result<String, String> {
    get_text(url)
        .await
        .map(|(status, _)| format!("{url}: {status}"))
}

/// GET `url` (plain HTTP, 5 s budget); Ok((status, body)) only for a 200.
pub(crate) async fn get_text(url: &str) -> Result<(StatusCode, String), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
    let host = uri.host().ok_or_else(|| format!("no host in {url}"))?;
    let port = uri.port_u16().unwrap_or(80);
    let addr: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let work = async {
        let stream = tokio::net::TcpStream::connect(&addr[..])
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, format!("{host}:{port}"))
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status == StatusCode::OK {
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        } else {
            Err(format!("{url}: {status}"))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| format!("{url}: no answer within 5s"))?
}
