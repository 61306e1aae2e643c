//! The first-message phase against real frames: tokens found, refused and injected, and
//! the parser against what a hostile client may send.

use super::*;

const POINTERS: &[&str] = &[
    "/params/auth/token",
    "/id",
    "",
    "/a/0",
    "/a/01",
    "/a~1b/c",
    "/~0",
    "/",
    "/params/auth",
    "no-slash",
];

/// A small deterministic generator (xorshift): no extra crate, same cases on every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
    /// JSON text with keys and values chosen to hit the pointers above often: repeated
    /// keys, escaped keys, `id` of every type, arrays on the path.
    fn value(&mut self, depth: u32, out: &mut String) {
        let kinds = match depth {
            0 | 1 => 8, // mostly objects near the top, where the pointer leads
            2..=4 => 6,
            _ => 3,
        };
        match self.next() % kinds {
            0 => out.push_str(self.pick(&[
                "\"tok\"",
                "\"\"",
                "\"t\\u00e9k\\n\"",
                "\"\\ud83d\\ude00\"",
            ])),
            1 => out.push_str(self.pick(&["1", "-0.5e3", "null", "true", "18446744073709551616"])),
            2 => out.push_str(self.pick(&["\"a/b\"", "\"x\"", "0"])),
            3 | 4 | 6 | 7 => {
                out.push('{');
                for i in 0..self.next() % 4 {
                    if i > 0 {
                        out.push(',');
                    }
                    let path = ["params", "auth", "token"];
                    let key = match path.get(depth as usize) {
                        Some(on_path) if self.next() % 2 == 0 => on_path,
                        _ => self.pick(&[
                            "params",
                            "auth",
                            "token",
                            "id",
                            "a",
                            "a/b",
                            "~",
                            "",
                            "\\u0061uth",
                            "to\\u006ben",
                            "device",
                            "client",
                            "role",
                            "scopes",
                            "deviceToken",
                            "version",
                            "mode",
                        ]),
                    };
                    out.push('"');
                    out.push_str(key);
                    out.push_str("\":");
                    if key == "token" && self.next() % 4 != 0 {
                        out.push_str(self.pick(&["\"tok\"", "\"t\\u00e9k\\n\""]));
                        continue;
                    }
                    self.value(depth + 1, out);
                }
                out.push('}');
            }
            _ => {
                out.push('[');
                for i in 0..self.next() % 3 {
                    if i > 0 {
                        out.push(',');
                    }
                    self.value(depth + 1, out);
                }
                out.push(']');
            }
        }
    }
}

fn same_as_value(text: &[u8]) {
    for pointer in POINTERS {
        let scanned = Facts::scan(text, pointer);
        match serde_json::from_slice::<Value>(text) {
            Ok(doc) => assert_eq!(
                scanned.ok(),
                Some(Facts::of(&doc, pointer)),
                "{pointer:?} in {:?}",
                String::from_utf8_lossy(text)
            ),
            Err(_) => assert!(
                scanned.is_err(),
                "scan accepted what Value refuses: {:?}",
                String::from_utf8_lossy(text)
            ),
        }
    }
}

#[test]
fn scan_finds_what_the_document_holds() {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let mut found = 0;
    for _ in 0..4000 {
        let mut text = String::new();
        g.value(0, &mut text);
        same_as_value(text.as_bytes());
        found += usize::from(
            Facts::scan(text.as_bytes(), "/params/auth/token").is_ok_and(|f| f.token.is_some()),
        );
        // Damaged copies: cut short, one byte changed, a byte that is not UTF-8.
        let bytes = text.as_bytes();
        let at = (g.next() % bytes.len() as u64) as usize;
        same_as_value(&bytes[..at]);
        let mut flipped = bytes.to_vec();
        let noise = b"{}[]\",:\\ 0e-x";
        flipped[at] = noise[(g.next() % noise.len() as u64) as usize];
        same_as_value(&flipped);
        flipped[at] = 0xff;
        same_as_value(&flipped);
    }
    // The generator reaches the interesting case, or this test would prove little (the
    // cases are the same on every run: 54 of 4,000 carry a token at the default pointer).
    assert!(found > 40, "only {found} documents carried a token");
}

#[test]
fn scan_edge_cases() {
    for text in [
        r#"{"type":"req","id":"1","method":"connect","params":{"auth":{"token":"T"}}}"#,
        r#"{"params":{"auth":{"token":"first"}},"params":{"auth":{}}}"#,
        r#"{"params":{"auth":{"token":"a","token":"b"}}}"#,
        r#"{"id":1,"id":{"x":[1,2]},"params":{"auth":{"token":""}}}"#,
        r#"{"params":{"auth":{"token":"\ud800"}}}"#,
        r#"{"params":{"auth":{"token":"T"}}} x"#,
        r#"{"params":{"auth":{"token":"T"}}}   "#,
        r#"{"n":1e400}"#,
        r#"{"n":-0}"#,
        r#"{"a":["x",{"b":1}],"a~1b":{"c":"slash"},"~":"tilde","":"empty"}"#,
        r#"{"id":"only"}"#,
        r#""just a string""#,
        r#"[]"#,
        "",
    ] {
        same_as_value(text.as_bytes());
    }
    // Nesting past the deserializer's limit is refused by both.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    same_as_value(deep.as_bytes());
    assert!(Facts::scan(deep.as_bytes(), "/a").is_err());
    let f = Facts::scan(
        br#"{"id":"r1","params":{"auth":{"token":"T"}}}"#,
        "/params/auth/token",
    )
    .unwrap();
    assert_eq!(f.id, Some(Value::String("r1".into())));
    assert_eq!(f.token.as_deref(), Some("T"));
    // What a log or a failed assertion would show holds no token.
    let secret = "s3cr3t-first-message-token";
    let frame = ws::encode_frame(
        ws::OP_TEXT,
        format!(r#"{{"params":{{"auth":{{"token":"{secret}"}}}}}}"#).as_bytes(),
        Some([1, 2, 3, 4]),
    );
    let parsed = parse(&frame, 1 << 16, None);
    let len = frame.len();
    assert_eq!(
        format!("{parsed:?}"),
        format!("Message {{ len: {len}, payload_len: {} }}", len - 6)
    );
    let Parsed::Message { payload, .. } = parsed else {
        panic!("not a message: {parsed:?}");
    };
    let facts = Facts::scan(&payload, "/params/auth/token").unwrap();
    assert_eq!(facts.token.as_deref(), Some(secret));
    assert!(!format!("{facts:?}").contains(secret));
}

/// A compressed first frame (RSV1, permessage-deflate negotiated) is judged on its
/// inflated payload; the inflated size counts against the limit; RSV1 on a control frame
/// or without the extension is a protocol error.
#[test]
fn compressed_first_frames_are_judged_inflated() {
    use flate2::{Compress, Compression, FlushCompress};
    let doc = br#"{"id":"c1","params":{"auth":{"token":"T0k3n"}}}"#;
    let mut c = Compress::new_with_window_bits(Compression::default(), false, 12);
    let mut z = Vec::with_capacity(256);
    c.compress_vec(doc, &mut z, FlushCompress::Sync).unwrap();
    z.truncate(z.len() - 4);
    let mut frame = ws::encode_frame(ws::OP_TEXT, &z, Some([9, 8, 7, 6]));
    frame[0] |= 0x40;
    let d = Some(ws::Deflate {
        client_window_bits: 12,
    });
    let Parsed::Message { len, payload } = parse(&frame, 1 << 16, d) else {
        panic!("not a message");
    };
    assert_eq!((len, payload.as_slice()), (frame.len(), &doc[..]));
    assert!(matches!(parse(&frame, doc.len() - 1, d), Parsed::TooLarge));
    assert!(matches!(
        parse(&frame, 1 << 16, None),
        Parsed::ProtocolError(_)
    ));
    let mut close = ws::close_frame_masked(1000, "", Some([1, 2, 3, 4]));
    close[0] |= 0x40;
    assert!(matches!(
        parse(&close, 1 << 16, d),
        Parsed::ProtocolError(_)
    ));
    let mut junk = ws::encode_frame(ws::OP_TEXT, b"\xff\xff\xff", Some([1, 1, 1, 1]));
    junk[0] |= 0x40;
    assert!(matches!(parse(&junk, 1 << 16, d), Parsed::Invalid(_)));
}
