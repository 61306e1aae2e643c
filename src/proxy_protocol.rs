//! The PROXY protocol (HAProxy, v1 text and v2 binary): a load balancer in front of
//! gatewarden says who the client is before the client's bytes. Believed only from a peer in
//! `trusted_proxies` with `listen_proxy_protocol = true`; anyone else could claim any address
//! and escape per-IP throttling and limits.
//!
//! Read with exact-length reads, never past the header: what follows (a TLS ClientHello, an
//! HTTP request) stays in the socket for the next stage.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 line is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// Beyond the addresses a v2 header may carry TLVs; more than this is not a load balancer.
const V2_MAX_LEN: usize = 1024;

/// Why a header was refused (the connection is closed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ProxyHeaderError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("connection closed within the PROXY protocol header")]
    Closed,
}

/// Reads one header; `Ok(None)`: a v1 `UNKNOWN` or v2 `LOCAL` header (a health check by the
/// balancer itself) — the peer's own address stands.
pub(crate) async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut start = [0u8; 12];
    read_exact(r, &mut start).await?;
    if start == V2_SIGNATURE {
        let mut fixed = [0u8; 4];
        read_exact(r, &mut fixed).await?;
        let len = u16::from_be_bytes([fixed[2], fixed[3]]) as usize;
        if len > V2_MAX_LEN {
            return Err(ProxyHeaderError::Malformed("v2 header too long"));
        }
        let mut rest = vec![0u8; len];
        read_exact(r, &mut rest).await?;
        return parse_v2(fixed[0], fixed[1], &rest);
    }
    if !start.starts_with(b"PROXY ") {
        return Err(ProxyHeaderError::Missing);
    }
    let mut line = start.to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyHeaderError::Malformed("v1 line too long"));
        }
        let mut b = [0u8; 1];
        read_exact(r, &mut b).await?;
        line.push(b[0]);
    }
    parse_v1(&line)
}

async fn read_exact<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> Result<(), ProxyHeaderError> {
    r.read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|_| ProxyHeaderError::Closed)
}

/// `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n`, or `PROXY UNKNOWN …\r\n`.
pub(crate) fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let bad = ProxyHeaderError::Malformed;
    let text = std::str::from_utf8(line).map_err(|_| bad("v1 not ASCII"))?;
    let text = text.strip_suffix("\r\n").ok_or(bad("v1 without CRLF"))?;
    let mut parts = text.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(bad("v1 without PROXY"));
    }
    let family = parts.next().ok_or(bad("v1 without protocol"))?;
    if family == "UNKNOWN" {
        return Ok(None);
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, _dport] = fields[..] else {
        return Err(bad("v1 needs four fields"));
    };
    let src: IpAddr = match family {
        "TCP4" => src.parse::<Ipv4Addr>().map(IpAddr::V4),
        "TCP6" => src.parse::<Ipv6Addr>().map(IpAddr::V6),
        _ => return Err(bad("v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    }
    .map_err(|_| bad("v1 source address"))?;
    dst.parse::<IpAddr>()
        .map_err(|_| bad("v1 destination address"))?;
    let port: u16 = sport.parse().map_err(|_| bad("v1 source port"))?;
    Ok(Some(SocketAddr::new(src, port)))
}

/// The v2 header after its signature: version/command, family/protocol, the address block.
pub(crate) fn parse_v2(
    ver_cmd: u8,
    fam: u8,
    rest: &[u8],
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let bad = ProxyHeaderError::Malformed;
    if ver_cmd >> 4 != 2 {
        return Err(bad("v2 version is not 2"));
    }
    match ver_cmd & 0x0f {
        0 => return Ok(None), // LOCAL
        1 => {}
        _ => return Err(bad("v2 command is not LOCAL or PROXY")),
    }
    match fam {
        // TCP over IPv4: src 4, dst 4, sport 2, dport 2.
        0x11 if rest.len() >= 12 => {
            let ip = Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([rest[8], rest[9]]),
            )))
        }
        // TCP over IPv6: src 16, dst 16, sport 2, dport 2.
        0x21 if rest.len() >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&rest[..16]);
            Ok(Some(SocketAddr::new(
                Ipv6Addr::from(a).into(),
                u16::from_be_bytes([rest[32], rest[33]]),
            )))
        }
        0x11 | 0x21 => Err(bad("v2 address block too short")),
        // UNSPEC or a family without an IP address (UNIX): the peer's address stands.
        0x00 => Ok(None),
        _ => Err(bad("v2 family is not TCP over IPv4/IPv6")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let mut r = bytes;
        let got = read_header(&mut r).await;
        (got, r.to_vec())
    }

    #[tokio::test]
    async fn v1_and_v2_headers_leave_the_rest_unread() {
        let (a, rest) =
            read(b"PROXY TCP4 203.0.113.9 10.0.0.1 5555 443\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(a, Ok(Some("203.0.113.9:5555".parse().unwrap())));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (a, _) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\n").await;
        assert_eq!(a, Ok(Some("[2001:db8::7]:4000".parse().unwrap())));
        assert_eq!(read(b"PROXY UNKNOWN\r\nx").await.0, Ok(None));

        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend([
            0x21, 0x11, 0, 12, 198, 51, 100, 4, 10, 0, 0, 1, 0x30, 0x39, 1, 187,
        ]);
        v2.extend(b"\x16\x03\x01");
        let (a, rest) = read(&v2).await;
        assert_eq!(a, Ok(Some("198.51.100.4:12345".parse().unwrap())));
        assert_eq!(rest, b"\x16\x03\x01");
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(read(&local).await.0, Ok(None));
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        assert_eq!(
            read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.0,
            Err(ProxyHeaderError::Missing)
        );
        assert!(matches!(
            read(b"PROXY TCP4 1.2.3.4\r\n").await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
        assert!(matches!(
            read(b"PROXY TCP4 ::1 ::1 1 2\r\n").await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert!(matches!(
            read(long.as_bytes()).await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
        assert_eq!(
            read(b"PROXY TCP4 1.2").await.0,
            Err(ProxyHeaderError::Closed)
        );
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend([0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(
            read(&v2).await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
    }
}
