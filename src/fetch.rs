//! Documents gatewarden fetches from elsewhere (a JWKS, an issuer's discovery document):
//! one GET with a deadline and a size cap, over TLS checked against the web's roots, or
//! plain HTTP to loopback (the config refuses anything else, `config::fetchable_url`).
//! Never on a connection's path: the callers are background tasks and `doctor`.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, DATE, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A document larger than this is refused: a key set is a few KB.
pub(crate) const MAX_DOCUMENT: usize = 1 << 20;

/// How long one fetch may take, connection and body included.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a fetch failed, as its log line says it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("{url}: {why}")]
    Connect { url: String, why: String },
    #[error("{url}: answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: larger than {MAX_DOCUMENT} bytes")]
    TooLarge { url: String },
    #[error("{url}: no answer within {}s", FETCH_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("{url}: not JSON ({why})")]
    NotJson { url: String, why: String },
}

/// A fetched document.
pub(crate) struct Fetched {
    pub(crate) body: Bytes,
    /// The server's `Date`: how far this host's clock is from the issuer's.
    pub(crate) date: Option<SystemTime>,
    /// `Cache-Control: max-age`, when the server gave one.
    pub(crate) max_age: Option<Duration>,
}

impl Fetched {
    pub(crate) fn json(&self, url: &str) -> Result<serde_json::Value, FetchError> {
        serde_json::from_slice(&self.body).map_err(|e| FetchError::NotJson {
            url: url.into(),
            why: e.to_string(),
        })
    }
}

/// A pooled client for such documents.
#[derive(Clone)]
pub(crate) struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Fetcher {
    /// `tls` verifies the servers (the web's roots: `tls::upstream_client_config`).
    pub(crate) fn new(tls: &rustls::ClientConfig) -> Fetcher {
        let mut tls = tls.clone();
        tls.alpn_protocols.clear();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(FETCH_TIMEOUT));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Fetcher {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// GETs `url`; anything but a 200 is an error.
    pub(crate) async fn get(&self, url: &str) -> Result<Fetched, FetchError> {
        let connect = |why: String| FetchError::Connect {
            url: url.into(),
            why,
        };
        let uri: Uri = url.parse().map_err(|_| connect("not a URL".into()))?;
        let req = Request::get(uri)
            .header(ACCEPT, "application/json")
            .header(
                USER_AGENT,
                concat!("gatewarden/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| connect(e.to_string()))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| connect(crate::error_text::chain(&e)))?;
            if resp.status() != StatusCode::OK {
                return Err(FetchError::Status {
                    url: url.into(),
                    status: resp.status(),
                });
            }
            let headers = resp.headers().clone();
            let body = Limited::new(resp.into_body(), MAX_DOCUMENT)
                .collect()
                .await
                .map_err(|e| match e.downcast::<http_body_util::LengthLimitError>() {
                    Ok(_) => FetchError::TooLarge { url: url.into() },
                    Err(e) => connect(e.to_string()),
                })?
                .to_bytes();
            Ok(Fetched {
                body,
                date: headers
                    .get(DATE)
                    .and_then(|d| d.to_str().ok())
                    .and_then(|d| httpdate::parse_http_date(d).ok()),
                max_age: headers
                    .get(CACHE_CONTROL)
                    .and_then(|v| v.to_str().ok())
                    .and_then(max_age),
            })
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| FetchError::Timeout { url: url.into() })?
    }
}

/// `max-age=N` of a `Cache-Control` value.
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|d| {
        let secs = d.trim().strip_prefix("max-age=")?;
        secs.trim_matches('"').parse().ok().map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_among_other_directives() {
        assert_eq!(
            max_age("public, max-age=3600, must-revalidate"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(max_age("no-store"), None);
    }
}
