//! The credential file parsers (plain, json5 with a pointer, lines): any file contents give
//! tokens or an error, never a panic, and an error never quotes the file (it could hold the
//! token), so its length does not grow with the input.
#![no_main]

use gatewarden::config::{CredentialFormat, CredentialSource};
use gatewarden::fuzz as credentials;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, contents)) = data.split_first() else { return };
    let format = match selector % 4 {
        0 => CredentialFormat::Plain,
        1 => CredentialFormat::Json5,
        2 => CredentialFormat::Dotenv,
        3 if selector & 0x20 != 0 => CredentialFormat::Jwks,
        _ => CredentialFormat::Lines,
    };
    let pointer = match selector / 3 % 3 {
        0 => None,
        1 => Some("/token".to_string()),
        _ => Some("/a/0/b~1c".to_string()),
    };
    let src = CredentialSource {
        name: Some("fuzz".into()),
        path: "/fuzz/credential".into(),
        format,
        pointer,
        key: (format == CredentialFormat::Dotenv).then(|| "OPENCLAW_GATEWAY_TOKEN".to_string()),
        scopes: (selector & 0x40 != 0).then(|| vec!["operator.read".to_string()]),
        roles: None,
        ..CredentialSource::plain("/fuzz/credential")
    };
    match credentials::parse_source(&src, contents, selector & 0x80 != 0) {
        Ok(loaded) => {
            assert!(!loaded.entries.is_empty(), "a loaded source has a token");
            for w in &loaded.warnings {
                assert!(w.len() < 200, "warning quotes the file: {w}");
            }
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.len() < 600, "error quotes the file ({} bytes)", text.len());
        }
    }
});
