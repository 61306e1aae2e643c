//! HTTP/2 frames written and read by hand over TLS (ALPN `h2`), for what an HTTP/2 library
//! would never do: stop in the middle of a header block, send HEADERS before SETTINGS,
//! answer no PING, leave a window shut. Header blocks are HPACK literals without indexing
//! or Huffman coding (RFC 7541 §6.2.2), which every decoder must take.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::certs::Ca;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's error code.
    pub fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), `first` holding the bits above.
fn integer(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literals (`:method` and friends first, as the caller lists them).
pub fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        integer(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        integer(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The client side of one TLS connection that chose `h2`.
pub struct H2Raw {
    pub tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

pub fn client_config(ca: &Ca) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

impl H2Raw {
    /// Connects and completes TLS; `None` when the server refused (closed) the connection.
    pub async fn connect(addr: SocketAddr, ca: &Ca) -> Option<H2Raw> {
        let tcp = TcpStream::connect(addr).await.ok()?;
        let tls = tokio_rustls::TlsConnector::from(client_config(ca))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .ok()?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        Some(H2Raw {
            tls,
            buf: Vec::new(),
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.tls.write_all(bytes).await;
        let _ = self.tls.flush().await;
    }

    /// The preface and an empty SETTINGS, as every client opens.
    pub async fn open(&mut self) {
        let mut b = PREFACE.to_vec();
        b.extend(frame(SETTINGS, 0, 0, &[]));
        self.send(&b).await;
    }

    /// The next frame, `None` at EOF, an error, or after `wait`.
    pub async fn read_frame(&mut self, wait: Duration) -> Option<Frame> {
        tokio::time::timeout(wait, self.next_frame()).await.ok()?
    }

    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes(self.buf[5..9].try_into().unwrap())
                            & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Some(f);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.tls.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until the server closes, answering its SETTINGS and (when `pong`) its PINGs:
    /// every frame it sent, or `None` if it had not closed within `wait`.
    pub async fn until_closed(&mut self, pong: bool, wait: Duration) -> Option<Vec<Frame>> {
        let mut seen = Vec::new();
        tokio::time::timeout(wait, async {
            while let Some(f) = self.next_frame().await {
                if f.kind == SETTINGS && f.flags & ACK == 0 {
                    self.send(&frame(SETTINGS, ACK, 0, &[])).await;
                }
                if pong && f.kind == PING && f.flags & ACK == 0 {
                    self.send(&frame(PING, ACK, 0, &f.payload)).await;
                }
                seen.push(f);
            }
        })
        .await
        .ok()?;
        Some(seen)
    }
}
