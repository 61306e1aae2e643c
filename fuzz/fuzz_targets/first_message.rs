//! The first-message parser: any client bytes get "read more" or a verdict, never a panic;
//! a verdict never claims more bytes than were read; the one-pass scan finds what the whole
//! document holds and refuses what it refuses; an injected token is found again.
#![no_main]

use gatewarden::fuzz::{self as first_message, ws, Facts, Parsed};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const POINTER: &str = "/params/auth/token";

fuzz_target!(|data: &[u8]| {
    // Whole input, and as if it had arrived in two reads.
    let whole = first_message::parse(data, 64 * 1024, None);
    let _ = first_message::parse(&data[..data.len() / 2], 64 * 1024, Some(ws::Deflate { client_window_bits: 15 }));
    // The scan against the document, on the raw input as a payload too (more JSON reaches it).
    for payload in [data, &data[..data.len() / 2]] {
        let scanned = Facts::scan(payload, POINTER);
        match serde_json::from_slice::<Value>(payload) {
            Ok(doc) => assert_eq!(scanned.ok(), Some(Facts::of(&doc, POINTER))),
            Err(_) => assert!(scanned.is_err()),
        }
    }
    match whole {
        Parsed::Incomplete | Parsed::TooLarge | Parsed::Invalid(_) | Parsed::ProtocolError(_) => {}
        Parsed::Close { len } => assert!(len <= data.len()),
        Parsed::Message { len, payload } => {
            assert!(len <= data.len());
            let Ok(mut doc) = serde_json::from_slice::<Value>(&payload) else {
                return;
            };
            let _ = first_message::is_device_signed(&doc);
            if first_message::set_pointer(&mut doc, POINTER, Value::String("injected".into())) {
                assert_eq!(first_message::token_at(&doc, POINTER).as_deref(), Some("injected"));
                let payload = serde_json::to_vec(&doc).unwrap();
                let frame = ws::encode_frame(ws::OP_TEXT, &payload, Some([1, 2, 3, 4]));
                match first_message::parse(&frame, usize::MAX, None) {
                    Parsed::Message { len, payload } => {
                        assert_eq!(len, frame.len());
                        let facts = Facts::scan(&payload, POINTER).expect("re-encoded JSON");
                        assert_eq!(facts.token.as_deref(), Some("injected"));
                    }
                    other => panic!("re-encoded message parsed as {other:?}"),
                }
            }
        }
    }
});
