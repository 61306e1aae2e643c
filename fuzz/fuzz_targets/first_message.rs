//! The first-message parser: any client bytes get "read more" or a verdict, never a panic;
//! a verdict never claims more bytes than were read; an injected token is found again.
#![no_main]

use gatewarden::first_message::{self, Parsed};
use gatewarden::ws;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const POINTER: &str = "/params/auth/token";

fuzz_target!(|data: &[u8]| {
    // Whole input, and as if it had arrived in two reads.
    let whole = first_message::parse(data, 64 * 1024);
    let _ = first_message::parse(&data[..data.len() / 2], 64 * 1024);
    match whole {
        Parsed::Incomplete | Parsed::TooLarge | Parsed::Invalid(_) => {}
        Parsed::Close { len } => assert!(len <= data.len()),
        Parsed::Message { len, mut doc } => {
            assert!(len <= data.len());
            let _ = first_message::token_at(&doc, POINTER);
            let _ = first_message::is_device_signed(&doc);
            if first_message::set_pointer(&mut doc, POINTER, Value::String("injected".into())) {
                assert_eq!(first_message::token_at(&doc, POINTER).as_deref(), Some("injected"));
                let payload = serde_json::to_vec(&doc).unwrap();
                let frame = ws::encode_frame(ws::OP_TEXT, &payload, Some([1, 2, 3, 4]));
                match first_message::parse(&frame, usize::MAX) {
                    Parsed::Message { len, doc } => {
                        assert_eq!(len, frame.len());
                        assert_eq!(first_message::token_at(&doc, POINTER).as_deref(), Some("injected"));
                    }
                    other => panic!("re-encoded message parsed as {other:?}"),
                }
            }
        }
    }
});
