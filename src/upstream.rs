//! Talking to the gateway: a pooled client for plain HTTP, and a dedicated connection per
//! WebSocket upgrade (an upgraded connection can never go back to a pool).

use std::io;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::config::Upstream;
use crate::splice::Stream;

/// Why the upstream could not be used. Shown in logs, never to clients in detail.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("connect to {addr} failed: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls { addr: String, source: io::Error },
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake { addr: String, source: hyper::Error },
    #[error("request to {addr} failed: {source}")]
    Request { addr: String, source: hyper::Error },
    #[error("upstream {addr}: {}", chain(.source))]
    Pooled {
        addr: String,
        source: hyper_util::client::legacy::Error,
    },
}

/// An error and its causes on one line: the client error's own text is only "client error
/// (Connect)", the useful part ("Connection refused") is in the chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub struct UpstreamClient {
    target: Upstream,
    authority: String,
    /// `http` or `https`, for pooled request URIs.
    scheme: &'static str,
    connect_timeout: Duration,
    pool: Client<HttpsConnector<HttpConnector>, Incoming>,
    /// Set for an `https://`/`wss://` upstream.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl UpstreamClient {
    /// `tls` is the client config for an `https://` upstream (ignored for plain ones).
    pub fn new(
        target: Upstream,
        connect_timeout: Duration,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<UpstreamClient, crate::tls::TlsError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.enforce_http(false);
        let tls = if target.tls { tls } else { None };
        // hyper-rustls negotiates ALPN itself (http/1.1 here) and refuses a preset list.
        let pool_tls = |cfg: &rustls::ClientConfig| {
            let mut c = cfg.clone();
            c.alpn_protocols.clear();
            c
        };
        let connector = match &tls {
            Some(cfg) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(pool_tls(cfg))
                .https_only()
                .enable_http1()
                .wrap_connector(http),
            None => hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(pool_tls(&*crate::tls::upstream_client_config(None, false)?))
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
        };
        let pool = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let tls = match tls {
            Some(cfg) => Some((
                tokio_rustls::TlsConnector::from(cfg),
                crate::tls::server_name(&target.host)?,
            )),
            None => None,
        };
        Ok(UpstreamClient {
            authority: target.authority(),
            scheme: if target.tls { "https" } else { "http" },
            target,
            connect_timeout,
            pool,
            tls,
        })
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The upstream's own origin (`http://host:port` or `https://…`).
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// Sends a plain HTTP request (URI already in origin form) over the pool.
    pub async fn request(
        &self,
        mut req: Request<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let pq = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        *req.uri_mut() = format!("{}://{}{}", self.scheme, self.authority, pq)
            .parse()
            .expect("authority and path were valid separately");
        self.pool
            .request(req)
            .await
            .map_err(|source| UpstreamError::Pooled {
                addr: self.authority.clone(),
                source,
            })
    }

    /// Opens a fresh connection (TLS for an `https://` upstream, within the connect timeout).
    pub async fn connect(&self) -> Result<Stream, UpstreamError> {
        let tcp = self.connect_tcp().await?;
        let Some((connector, name)) = &self.tls else {
            return Ok(Stream::Tcp(tcp));
        };
        let tls = tokio::time::timeout(self.connect_timeout, connector.connect(name.clone(), tcp))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout {
                addr: self.authority.clone(),
                timeout: self.connect_timeout,
            })?
            .map_err(|source| UpstreamError::Tls {
                addr: self.authority.clone(),
                source,
            })?;
        Ok(Stream::ClientTls(Box::new(tls)))
    }

    /// Readiness probe: can a TCP connection to the upstream be opened within `timeout`?
    pub async fn probe(&self, timeout: Duration) -> Result<(), UpstreamError> {
        let addr = (self.target.host.as_str(), self.target.port);
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(UpstreamError::Connect {
                addr: self.authority.clone(),
                source,
            }),
            Err(_) => Err(UpstreamError::ConnectTimeout {
                addr: self.authority.clone(),
                timeout,
            }),
        }
    }

    async fn connect_tcp(&self) -> Result<TcpStream, UpstreamError> {
        let addr = (self.target.host.as_str(), self.target.port);
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout {
                addr: self.authority.clone(),
                timeout: self.connect_timeout,
            })?
            .map_err(|source| UpstreamError::Connect {
                addr: self.authority.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Sends an upgrade request on a fresh connection and returns the gateway's answer; on a
    /// 101 the caller takes the upgraded stream with `hyper::upgrade::on(&mut response)`.
    pub async fn upgrade(
        &self,
        req: Request<Empty<Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Handshake {
                addr: self.authority.clone(),
                source,
            })?;
        tokio::spawn(async move {
            // Errors surface through send_request or the upgraded stream.
            let _ = conn.with_upgrades().await;
        });
        sender
            .send_request(req)
            .await
            .map_err(|source| UpstreamError::Request {
                addr: self.authority.clone(),
                source,
            })
    }
}
