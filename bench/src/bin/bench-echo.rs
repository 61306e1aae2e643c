//! A fast WebSocket echo upstream for the benchmark: every client frame is echoed (unmasked)
//! as its bytes arrive, with no per-message allocation. On `/openclaw` it behaves like the
//! OpenClaw gateway's handshake: a `connect.challenge` event first, then a `res` to the
//! first request, then echo. A request that is no upgrade is answered `200 ok` (the
//! `plain` mode), as often as the connection asks.
//!
//! usage: bench-echo ADDR [THREADS]   (prints the bound address)

use gatewarden_bench::{accept_key, head_end, header, parse_header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHALLENGE: &[u8] =
    br#"{"type":"event","event":"connect.challenge","payload":{"nonce":"bench","ts":0}}"#;
const HELLO: &[u8] = br#"{"type":"res","id":"1","ok":true,"payload":{"type":"hello-ok"}}"#;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let threads: usize = args.next().map_or(1, |t| t.parse().unwrap());
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .unwrap();
    rt.block_on(async move {
        let l = TcpListener::bind(&addr).await.unwrap();
        println!("{}", l.local_addr().unwrap());
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = serve(s).await;
            });
        }
    });
}

const PLAIN_ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n";

/// Plain HTTP (the `plain` mode): each request head (no body) answered 200 on a kept-alive
/// connection, as many as the client pipelines.
async fn plain(mut s: TcpStream, mut buf: Vec<u8>, mut have: usize) -> std::io::Result<()> {
    let mut out = Vec::new();
    loop {
        let mut pos = 0;
        while let Some(e) = head_end(&buf[pos..have]) {
            pos += e;
            out.extend_from_slice(PLAIN_ANSWER);
        }
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
        if have == buf.len() {
            return Ok(());
        }
        let n = s.read(&mut buf[have..]).await?;
        if n == 0 {
            return Ok(());
        }
        have += n;
    }
}

enum State {
    Header,
    Payload {
        left: u64,
        mask: [u8; 4],
        off: usize,
        swallow: bool,
        close: bool,
    },
}

async fn serve(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0;
    let end = loop {
        let n = s.read(&mut buf[have..]).await?;
        if n == 0 {
            return Ok(());
        }
        have += n;
        if let Some(e) = head_end(&buf[..have]) {
            break e;
        }
        if have == buf.len() {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    if !head.to_ascii_lowercase().contains("upgrade: websocket") {
        return plain(s, buf, have).await;
    }
    let key = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("sec-websocket-key").then_some(v)
        })
        .unwrap_or("");
    let openclaw = head.starts_with("GET /openclaw");
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    )
    .into_bytes();
    let mut swallow_next = openclaw;
    if openclaw {
        header(&mut out, 0x1, CHALLENGE.len(), None);
        out.extend_from_slice(CHALLENGE);
    }
    s.write_all(&out).await?;
    out.clear();
    buf.copy_within(end..have, 0);
    have -= end;
    let mut state = State::Header;
    loop {
        let mut pos = 0;
        let mut done = false;
        while pos < have {
            match &mut state {
                State::Header => {
                    let Some((b0, masked, len, hl)) = parse_header(&buf[pos..have]) else {
                        break;
                    };
                    let mask = if masked {
                        buf[pos + hl - 4..pos + hl].try_into().unwrap()
                    } else {
                        [0; 4]
                    };
                    let opcode = b0 & 0x0f;
                    let swallow = swallow_next && opcode == 0x1;
                    if !swallow {
                        out.push(b0);
                        let l = len as usize;
                        if l < 126 {
                            out.push(l as u8);
                        } else if l <= 0xffff {
                            out.push(126);
                            out.extend_from_slice(&(l as u16).to_be_bytes());
                        } else {
                            out.push(127);
                            out.extend_from_slice(&len.to_be_bytes());
                        }
                    }
                    pos += hl;
                    state = State::Payload {
                        left: len,
                        mask,
                        off: 0,
                        swallow,
                        close: opcode == 0x8,
                    };
                }
                State::Payload { .. } => {}
            }
            if let State::Payload {
                left,
                mask,
                off,
                swallow,
                close,
            } = &mut state
            {
                let n = (*left).min((have - pos) as u64) as usize;
                if !*swallow {
                    let start = out.len();
                    out.extend_from_slice(&buf[pos..pos + n]);
                    // The load generator masks with zeros: nothing to undo then.
                    if *mask != [0; 4] {
                        for (i, b) in out[start..].iter_mut().enumerate() {
                            *b ^= mask[(*off + i) % 4];
                        }
                    }
                }
                pos += n;
                *left -= n as u64;
                *off += n;
                if *left == 0 {
                    if *swallow {
                        swallow_next = false;
                        header(&mut out, 0x1, HELLO.len(), None);
                        out.extend_from_slice(HELLO);
                    }
                    done = *close;
                    state = State::Header;
                    if done {
                        break;
                    }
                }
            }
        }
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
        if done {
            s.shutdown().await?;
            return Ok(());
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
        let n = s.read(&mut buf[have..]).await?;
        if n == 0 {
            return Ok(());
        }
        have += n;
    }
}
