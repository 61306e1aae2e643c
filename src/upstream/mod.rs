//! Talking to the gateway: a pooled client for plain HTTP, and a dedicated connection per
//! WebSocket upgrade (an upgraded connection can never go back to a pool).

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Upstream;
use crate::http1::body::ClientBody;
use crate::net::Stream;

mod answer;
mod error;

pub(crate) use answer::Answer;
use answer::{read_body, BodyError, ANSWER_TIMEOUT, MAX_RESPONSE_HEAD, MAX_RESPONSE_HEADERS};
pub(crate) use error::UpstreamError;

pub(crate) struct UpstreamClient {
    target: Upstream,
    /// The target's address when its host is an IP literal (no resolution needed).
    literal: Option<std::net::SocketAddr>,
    authority: String,
    /// `http` or `https`, for pooled request URIs.
    scheme: &'static str,
    connect_timeout: Duration,
    /// `tcp.delayed_ack`: quick ACKs off on sockets connected by hand.
    delayed_ack: bool,
    /// `tcp.keepalive`, for sockets connected by hand.
    keepalive: Option<Duration>,
    pool: Client<HttpsConnector<HttpConnector>, ClientBody>,
    /// Set for an `https://`/`wss://` upstream.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl UpstreamClient {
    /// `tls` is the client config for an `https://` upstream (ignored for plain ones).
    pub(crate) fn new(
        target: Upstream,
        connect_timeout: Duration,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        delayed_ack: bool,
        keepalive: Option<Duration>,
    ) -> Result<UpstreamClient, crate::tls::TlsError> {
        let mut http = HttpConnector::new();
        crate::net::sockopt::connector(&mut http, keepalive);
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
                .with_tls_config(pool_tls(&*crate::tls::upstream_client_config(
                    None,
                    false,
                    crate::files::DEFAULT_MAX_BYTES,
                )?))
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
            literal: target
                .host
                .parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| std::net::SocketAddr::new(ip, target.port)),
            authority: target.authority(),
            scheme: if target.tls { "https" } else { "http" },
            target,
            connect_timeout,
            delayed_ack,
            keepalive,
            pool,
            tls,
        })
    }

    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// The upstream's own origin (`http://host:port` or `https://…`).
    pub(crate) fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// Sends a plain HTTP request over the pool, to the configured upstream whatever the
    /// request's own target named: the URI is built from typed parts (scheme, authority,
    /// the request's path and query), never by pasting text together.
    pub(crate) async fn request(
        &self,
        mut req: Request<ClientBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .filter(|pq| pq.path().starts_with('/'))
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = http::Uri::builder()
            .scheme(self.scheme)
            .authority(self.authority.as_str())
            .path_and_query(pq)
            .build()
            .map_err(|e| UpstreamError::Protocol {
                addr: self.authority.clone(),
                what: format!("cannot build the request URI: {e}"),
            })?;
        self.pool
            .request(req)
            .await
            .map_err(|source| UpstreamError::Pooled {
                addr: self.authority.clone(),
                source,
            })
    }

    /// Opens a fresh connection (TLS for an `https://` upstream, within the connect timeout).
    pub(crate) async fn connect(&self) -> Result<Stream, UpstreamError> {
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
    pub(crate) async fn probe(&self, timeout: Duration) -> Result<(), UpstreamError> {
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
        if let Ok(peer) = stream.peer_addr() {
            crate::net::sockopt::upstream(&stream, &peer, self.keepalive);
        }
        Ok(stream)
    }

    /// Connects to a plain upstream and sends `head` as soon as the socket takes it, within
    /// the connect timeout. On loopback (a sidecar's usual upstream) the kernel completes the
    /// TCP handshake inside connect(2), so the head goes out at once: no wait for a
    /// writability event (a task wake-up) and no `SO_ERROR` query per upgrade. Elsewhere the
    /// send finds the handshake unfinished (EAGAIN) and waits for it as `connect` does.
    async fn connect_sending(
        &self,
        addr: std::net::SocketAddr,
        head: &[u8],
    ) -> Result<TcpStream, UpstreamError> {
        use rustix::io::Errno;
        use rustix::net::SendFlags;
        let failed = |e: io::Error| UpstreamError::Connect {
            addr: self.authority.clone(),
            source: e,
        };
        let fd = crate::net::sockopt::tcp_socket(&addr).map_err(failed)?;
        crate::net::sockopt::upstream(&fd, &addr, self.keepalive);
        // Before connect: the kernel then holds the handshake's last ACK for the head sent
        // right behind it, instead of sending it alone (one segment fewer per upgrade).
        if self.delayed_ack {
            crate::net::sockopt::quick_acks_off(&fd);
        }
        match rustix::net::connect(&fd, &addr) {
            Ok(()) | Err(Errno::INPROGRESS) => {}
            Err(e) => return Err(failed(e.into())),
        }
        let sent = match rustix::net::send(&fd, head, SendFlags::NOSIGNAL) {
            Ok(n) => n,
            Err(Errno::AGAIN) => 0,
            // A refused connection is reported here (ECONNREFUSED), as connect would.
            Err(e) => return Err(failed(e.into())),
        };
        let mut stream = TcpStream::from_std(std::net::TcpStream::from(fd)).map_err(failed)?;
        if sent == head.len() {
            self.head_sent(&stream);
            return Ok(stream);
        }
        if sent == 0 {
            let connected = async {
                stream.writable().await?;
                match stream.take_error()? {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            };
            tokio::time::timeout(self.connect_timeout, connected)
                .await
                .map_err(|_| UpstreamError::ConnectTimeout {
                    addr: self.authority.clone(),
                    timeout: self.connect_timeout,
                })?
                .map_err(failed)?;
        }
        stream
            .write_all(&head[sent..])
            .await
            .map_err(|e| self.io_error(e))?;
        self.head_sent(&stream);
        Ok(stream)
    }

    /// The ACK saved was the handshake's; the gateway's answer is acknowledged at once, as
    /// the kernel would: a gateway may write its 101 and its first frame apart (OpenClaw's
    /// challenge) with Nagle's algorithm on, and the frame would wait for that ACK.
    fn head_sent(&self, stream: &TcpStream) {
        if self.delayed_ack {
            crate::net::sockopt::quick_acks(stream);
        }
    }

    fn bad_answer(&self, what: &str) -> UpstreamError {
        UpstreamError::Protocol {
            addr: self.authority.clone(),
            what: what.to_string(),
        }
    }

    fn io_error(&self, source: io::Error) -> UpstreamError {
        UpstreamError::Io {
            addr: self.authority.clone(),
            source,
        }
    }

    /// Sends an upgrade request on a fresh connection and reads the gateway's answer.
    ///
    /// Written and parsed here rather than through hyper's client: an upgrade is one request
    /// on a connection of its own, and hyper's dispatch task, channels and upgrade hand-over
    /// cost more than the exchange itself on every WebSocket handshake.
    pub(crate) async fn upgrade(&self, head: &[u8]) -> Result<Answer, UpstreamError> {
        let bad = |what: &str| self.bad_answer(what);
        let io_err = |source| self.io_error(source);
        let mut stream = match (self.literal, &self.tls) {
            (Some(addr), None) => Stream::Tcp(self.connect_sending(addr, head).await?),
            _ => {
                let mut stream = self.connect().await?;
                stream.write_all(head).await.map_err(io_err)?;
                stream
            }
        };

        let answer = tokio::time::timeout(ANSWER_TIMEOUT, self.read_answer(&mut stream))
            .await
            .map_err(|_| bad("no complete answer within 30 s"))??;
        let (status, headers, rest, body) = answer;
        Ok(Answer {
            status,
            headers,
            rest,
            body,
            stream,
        })
    }

    /// Reads the answer's head and, unless it is a 101, its body. Returns the bytes behind
    /// a 101's head, which belong to the tunnel (a gateway may speak first).
    async fn read_answer(
        &self,
        stream: &mut Stream,
    ) -> Result<(StatusCode, HeaderMap, Bytes, Bytes), UpstreamError> {
        let bad = |what: &str| self.bad_answer(what);
        let io_err = |source| self.io_error(source);
        let mut buf = BytesMut::with_capacity(4096);
        let (status, headers, len) = loop {
            if stream.read_buf(&mut buf).await.map_err(io_err)? == 0 {
                return Err(bad("connection closed before a complete response head"));
            }
            let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
            let mut resp = httparse::Response::new(&mut slots);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = StatusCode::from_u16(resp.code.unwrap_or(0))
                        .map_err(|_| bad("invalid status code"))?;
                    let mut headers = HeaderMap::with_capacity(resp.headers.len());
                    for h in resp.headers.iter() {
                        let name = HeaderName::from_bytes(h.name.as_bytes())
                            .map_err(|_| bad("invalid header name"))?;
                        let value = HeaderValue::from_bytes(h.value)
                            .map_err(|_| bad("invalid header value"))?;
                        headers.append(name, value);
                    }
                    break (status, headers, len);
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => {}
                Ok(httparse::Status::Partial) => return Err(bad("response head too large")),
                Err(e) => return Err(bad(&format!("malformed response head: {e}"))),
            }
        };
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // Copied: a slice would keep the whole read buffer alive with the tunnel.
            return Ok((
                status,
                headers,
                Bytes::copy_from_slice(&buf[len..]),
                Bytes::new(),
            ));
        }
        // RFC 9112 §6.3: these never have a body, whatever the headers say.
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok((status, headers, Bytes::new(), Bytes::new()));
        }
        let body = read_body(stream, &headers, buf.split_off(len))
            .await
            .map_err(|e| match e {
                BodyError::Io(source) => io_err(source),
                BodyError::Bad(what) => bad(what),
            })?;
        Ok((status, headers, Bytes::new(), body))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// `tcp.delayed_ack` saves the handshake's last ACK only: once the head is out, the
    /// gateway's answer is acknowledged at once again (quick ACKs on).
    #[tokio::test]
    async fn quick_acks_are_back_once_the_head_is_sent() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for delayed_ack in [true, false] {
            let client = UpstreamClient::new(
                addr.to_string().parse().unwrap(),
                Duration::from_secs(20),
                None,
                delayed_ack,
                None,
            )
            .unwrap();
            let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
            let stream = client.connect_sending(addr, head).await.unwrap();
            assert!(
                rustix::net::sockopt::tcp_quickack(&stream).unwrap(),
                "delayed_ack = {delayed_ack}"
            );
            let (mut up, _) = listener.accept().await.unwrap();
            let mut got = vec![0; head.len()];
            up.read_exact(&mut got).await.unwrap();
            assert_eq!(got, head);
        }
    }
}
