use http::HeaderMap;

use super::*;

/// Raw DEFLATE of `data` with a `bits` window, sync-flushed, trailing `00 00 ff ff`
/// removed: a permessage-deflate message payload (RFC 7692 §7.2.1).
fn compress(data: &[u8], bits: u8) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new_with_window_bits(Compression::default(), false, bits);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn ext(v: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::SEC_WEBSOCKET_EXTENSIONS, v.parse().unwrap());
    h
}

#[test]
fn negotiated_deflate_reads_the_clients_window() {
    let d = |v| Deflate::negotiated(&ext(v)).map(|d| d.client_window_bits);
    assert_eq!(d("permessage-deflate"), Some(15));
    assert_eq!(
        d("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"),
        Some(12)
    );
    assert_eq!(
        d("PerMessage-Deflate;client_max_window_bits=\"9\""),
        Some(9)
    );
    assert_eq!(d("x-webkit-deflate-frame"), None);
    assert_eq!(
        d("foo, permessage-deflate; client_max_window_bits=10"),
        Some(10)
    );
    assert_eq!(Deflate::negotiated(&HeaderMap::new()), None);
}

#[test]
fn a_first_message_inflates_within_its_window_and_its_limit() {
    let msg = br#"{"type":"req","id":"1","method":"connect","params":{"auth":{"token":"t"}}}"#;
    for bits in [9, 12, 15] {
        let d = Deflate {
            client_window_bits: bits,
        };
        let z = compress(msg, bits);
        assert_eq!(inflate_first_message(&z, d, 1024).unwrap(), msg);
        // One byte under the inflated size: refused before more is produced.
        assert_eq!(
            inflate_first_message(&z, d, msg.len() - 1),
            Err(InflateError::TooLarge)
        );
    }
    // Output that exactly fills a buffer, or needs it grown several times.
    let d15 = Deflate {
        client_window_bits: 15,
    };
    for n in [256, 257, 4096, 100_000] {
        let m = vec![b'a'; n];
        assert_eq!(inflate_first_message(&compress(&m, 15), d15, n).unwrap(), m);
    }
    // A bomb: 16 MiB of zeros compress to ~16 KiB; the limit stops it early.
    let zeros = compress(&vec![0u8; 16 << 20], 15);
    assert_eq!(
        inflate_first_message(&zeros, d15, 64 * 1024),
        Err(InflateError::TooLarge)
    );
    assert_eq!(
        inflate_first_message(b"\xff\xfe\xfd not deflate", d15, 1024),
        Err(InflateError::Corrupt)
    );
    // A client that reaches back further than the window it agreed to is refused, as
    // the gateway's own inflater (same window) would refuse it.
    let mut far = vec![0u8; 0];
    far.extend((0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    far.extend_from_within(..1024);
    let z = compress(&far, 15);
    let d9 = Deflate {
        client_window_bits: 9,
    };
    assert_eq!(
        inflate_first_message(&z, d9, 1 << 20),
        Err(InflateError::Corrupt)
    );
    assert_eq!(inflate_first_message(&z, d15, 1 << 20).unwrap(), far);
}

#[test]
fn rfc_accept_example() {
    assert_eq!(
        accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

fn masked(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    encode_frame(opcode, payload, Some(mask))
}

#[test]
fn header_parse_all_length_forms() {
    for len in [0usize, 125, 126, 65535, 65536] {
        let f = encode_frame(OP_BINARY, &vec![0u8; len], Some([1, 2, 3, 4]));
        let h = FrameHeader::parse(&f).unwrap();
        assert_eq!(h.payload_len as usize, len);
        assert_eq!(h.header_len + len, f.len());
        assert_eq!(h.mask, Some([1, 2, 3, 4]));
        assert!(h.fin);
        assert!(FrameHeader::parse(&f[..h.header_len - 1]).is_none());
    }
}

#[test]
fn observe_frames_stops_at_the_limit_on_a_boundary() {
    let mut stream = encode_frame(OP_TEXT, b"challenge", None);
    let first = stream.len();
    stream.extend(encode_frame(OP_BINARY, &vec![1u8; 300], None));
    let second = stream.len();
    stream.extend(encode_frame(OP_TEXT, b"", None));
    // Whole, and in pieces of every size: always cut right after a frame.
    for piece in [stream.len(), 1, 2, 7, 130] {
        for limit in [0u64, 1, 2] {
            let mut t = FrameTracker::default();
            let mut taken = 0;
            for chunk in stream.chunks(piece) {
                let n = t.observe_frames(chunk, limit);
                taken += n;
                if n < chunk.len() {
                    break;
                }
            }
            let want = [0, first, second][limit as usize];
            assert_eq!((taken, t.frames()), (want, limit), "piece {piece}");
            assert!(t.at_boundary());
        }
    }
    let mut t = FrameTracker::default();
    assert_eq!(t.observe_frames(&stream, u64::MAX), stream.len());
    assert_eq!(t.frames(), 3);
}

#[test]
fn rsv_bits_are_read() {
    let mut f = encode_frame(OP_TEXT, b"x", Some([1, 2, 3, 4]));
    assert_eq!(FrameHeader::parse(&f).unwrap().rsv, 0);
    f[0] |= 0x40;
    assert_eq!(FrameHeader::parse(&f).unwrap().rsv, 0x40);
}

#[test]
fn tracks_close_after_large_frames_byte_by_byte() {
    let mut stream = masked(0x2, &vec![7u8; 70_000], [1, 2, 3, 4]);
    stream.extend(masked(0x1, &vec![b'a'; 300], [9, 9, 9, 9]));
    stream.extend(masked(0x9, b"", [0, 0, 0, 0]));
    let mut close_payload = 4001u16.to_be_bytes().to_vec();
    close_payload.extend_from_slice(b"gateway auth changed");
    stream.extend(masked(0x8, &close_payload, [0xde, 0xad, 0xbe, 0xef]));
    for chunk in [1usize, 3, 7, 4096, stream.len()] {
        let mut t = FrameTracker::default();
        for c in stream.chunks(chunk) {
            t.observe(c);
        }
        assert_eq!(t.frames(), 4, "chunk size {chunk}");
        assert!(t.at_boundary());
        let c = t.close().unwrap();
        assert_eq!(c.code, Some(4001));
        assert_eq!(c.reason, "gateway auth changed");
    }
}

/// Headers read in place and headers gathered across reads give the same result,
/// wherever a read ends.
#[test]
fn tracks_frames_split_anywhere() {
    let mut stream = masked(0x1, b"hi", [1, 2, 3, 4]);
    stream.extend(masked(0x2, &[5u8; 200], [4, 3, 2, 1]));
    stream.extend(masked(0xA, b"", [0, 0, 0, 0]));
    stream.extend(masked(0x8, &1000u16.to_be_bytes(), [7, 7, 7, 7]));
    for cut in 0..=stream.len() {
        let mut t = FrameTracker::default();
        t.observe(&stream[..cut]);
        t.observe(&stream[cut..]);
        assert_eq!(t.frames(), 4, "cut at {cut}");
        assert!(t.at_boundary(), "cut at {cut}");
        assert_eq!(t.close().unwrap().code, Some(1000), "cut at {cut}");
    }
}

/// Many short frames in one read (the fast path), then a close frame in the same read,
/// then short frames cut at every point: counted alike, and the close still captured.
#[test]
fn short_frames_in_one_read() {
    let mut stream = Vec::new();
    for i in 0..50u8 {
        let payload = vec![i; (i as usize * 7) % 126];
        stream.extend(if i % 2 == 0 {
            masked(0x2, &payload, [i, 1, 2, 3])
        } else {
            encode_frame(0x1, &payload, None)
        });
    }
    stream.extend(encode_frame(0x8, &1001u16.to_be_bytes(), None));
    stream.extend(masked(0x9, b"ping", [1, 1, 1, 1]));
    let mut t = FrameTracker::default();
    t.observe(&stream);
    assert_eq!(t.frames(), 52);
    assert!(t.at_boundary());
    assert_eq!(t.close().unwrap().code, Some(1001));
    for cut in 0..=stream.len() {
        let mut t = FrameTracker::default();
        t.observe(&stream[..cut]);
        t.observe(&stream[cut..]);
        assert_eq!(t.frames(), 52, "cut at {cut}");
        assert_eq!(t.close().unwrap().code, Some(1001), "cut at {cut}");
    }
}

/// Generated streams (every opcode, 7-, 16- and 64-bit lengths, masked or not, sometimes
/// two close frames) fed in random chunks track exactly what a byte-at-a-time feed,
/// which never takes the whole-frame fast path, tracks.
#[test]
fn random_chunks_track_like_single_bytes() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let mut stream = Vec::new();
        for _ in 0..1 + next() % 12 {
            let opcode = [0x0, 0x1, 0x2, 0x8, 0x9, 0xA][(next() % 6) as usize];
            let len = match next() % 4 {
                0 => 0,
                1 => next() % 126,
                2 => 126 + next() % 1000,
                _ => 65_536 + next() % 5,
            } as usize;
            let mut payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if opcode == 0x8 && len >= 2 {
                payload.truncate(125);
            }
            let mask = (next() % 2 == 0).then(|| (next() as u32).to_be_bytes());
            stream.extend(encode_frame(opcode, &payload, mask));
        }
        let mut one = FrameTracker::default();
        for b in &stream {
            one.observe(std::slice::from_ref(b));
        }
        let mut chunked = FrameTracker::default();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = match next() % 3 {
                0 => 1 + next() % 8,
                1 => 1 + next() % 300,
                _ => 1 + next() % 100_000,
            } as usize;
            let (chunk, tail) = rest.split_at(n.min(rest.len()));
            chunked.observe(chunk);
            rest = tail;
        }
        assert_eq!(chunked.frames(), one.frames());
        assert_eq!(chunked.close(), one.close());
        assert!(chunked.at_boundary() && one.at_boundary());
    }
}

#[test]
fn unmasked_close_frame_round_trips() {
    let f = close_frame(1008, "unauthorized: gateway token mismatch");
    let mut t = FrameTracker::default();
    t.observe(&f);
    assert_eq!(t.close().unwrap().code, Some(1008));
    assert_eq!(
        t.close().unwrap().reason,
        "unauthorized: gateway token mismatch"
    );
    let long = "é".repeat(100);
    let f = close_frame(1000, &long);
    assert!(f.len() <= 127);
    assert!(std::str::from_utf8(&f[4..]).is_ok());
}
