//! Request targets as they may be logged: a client can put a secret anywhere in its target
//! (a query parameter spelled `TOKEN`, after a `;`, percent-encoded, a bare `?<token>`, a
//! path segment), and a log line must not carry it. So every query *value* is replaced,
//! whatever its name; names stay, for diagnosis. A bare query name or a path segment is
//! replaced when it is shaped like a secret (long, from a token's alphabet, letters and
//! digits mixed) or is one of the loaded credentials. User info never reaches a logged
//! target: only the path and query are logged.

use std::fmt::Write as _;

use percent_encoding::percent_decode_str;

/// What stands in for a redacted part.
pub const REDACTED: &str = "REDACTED";

/// Shorter parts are checked against the loaded credentials only when at least this long
/// (a hash per part; `/ws` is not worth one).
const KNOWN_MIN: usize = 6;

/// A part this long, from a token's alphabet, with letters and digits, reads as a secret.
const SECRET_MIN: usize = 20;

/// The path and query of `uri` for a log line. `known` tells whether bytes are a loaded
/// credential's token (asked only of parts the shape rule does not already catch).
pub fn target(uri: &http::Uri, known: impl Fn(&[u8]) -> bool) -> String {
    if uri.query().is_none() && plainly_harmless(uri.path()) {
        return uri.path().to_string();
    }
    let mut out = String::with_capacity(uri.path().len() + 16);
    for (i, segment) in uri.path().split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        // Matrix parameters (`/a;token=x`) are values too.
        match segment.split_once(';') {
            Some((name, params)) => {
                push_part(&mut out, name, &known);
                out.push(';');
                push_pairs(&mut out, params, &known);
            }
            None => push_part(&mut out, segment, &known),
        }
    }
    if let Some(q) = uri.query() {
        out.push('?');
        push_pairs(&mut out, q, &known);
    }
    out
}

/// No segment long enough to be looked at, no matrix parameters: `/ws`, `/`, `/api/v1`.
fn plainly_harmless(path: &str) -> bool {
    let mut run = 0;
    for &b in path.as_bytes() {
        match b {
            b'/' => run = 0,
            b';' => return false,
            _ => {
                run += 1;
                if run >= KNOWN_MIN {
                    return false;
                }
            }
        }
    }
    true
}

/// `a=1&b;c` → `a=REDACTED&b;c`, keeping the separators as they were.
fn push_pairs(out: &mut String, pairs: &str, known: &impl Fn(&[u8]) -> bool) {
    let mut rest = pairs;
    loop {
        let end = rest.find(['&', ';']).unwrap_or(rest.len());
        let pair = &rest[..end];
        match pair.split_once('=') {
            Some((name, value)) => {
                push_part(out, name, known);
                out.push('=');
                if !value.is_empty() {
                    out.push_str(REDACTED);
                }
            }
            None => push_part(out, pair, known),
        }
        if end == rest.len() {
            return;
        }
        out.push_str(&rest[end..end + 1]);
        rest = &rest[end + 1..];
    }
}

fn push_part(out: &mut String, part: &str, known: &impl Fn(&[u8]) -> bool) {
    if is_secret(part, known) {
        out.push_str(REDACTED);
    } else {
        let _ = out.write_str(part);
    }
}

/// Whether a name or segment (as sent, percent-encoded or not) may be a secret.
fn is_secret(part: &str, known: &impl Fn(&[u8]) -> bool) -> bool {
    if part.len() < KNOWN_MIN {
        return false;
    }
    let decoded: Vec<u8> = percent_decode_str(part).collect();
    looks_secret(&decoded) || known(&decoded) || known(part.as_bytes())
}

/// Long, from a token's alphabet (base64, base64url, hex, a JWT's dots), letters and digits
/// mixed: what generated tokens look like, and what words and file names do not.
fn looks_secret(s: &[u8]) -> bool {
    s.len() >= SECRET_MIN
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_+/=.~".contains(&b))
        && s.iter().any(u8::is_ascii_digit)
        && s.iter().any(u8::is_ascii_alphabetic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(uri: &str) -> String {
        target(&uri.parse().unwrap(), |s| s == b"hunter22")
    }

    #[test]
    fn every_query_value_goes_and_names_stay() {
        assert_eq!(t("/a?x=1&token=abc&y="), "/a?x=REDACTED&token=REDACTED&y=");
        assert_eq!(t("/?TOKEN=abc"), "/?TOKEN=REDACTED");
        assert_eq!(t("/?a=1;token=abc"), "/?a=REDACTED;token=REDACTED");
        assert_eq!(t("/?%74oken=abc"), "/?%74oken=REDACTED");
        assert_eq!(t("/?access_token=abc"), "/?access_token=REDACTED");
        assert_eq!(t("/plain/path"), "/plain/path");
    }

    #[test]
    fn parts_shaped_like_secrets_or_known_go() {
        let tok = "Zk3_p0Qx9LmW2vB8nR4tY6uI1oA5sD7fG";
        assert_eq!(t(&format!("/public/{tok}")), "/public/REDACTED");
        assert_eq!(t(&format!("/?{tok}")), "/?REDACTED");
        assert_eq!(t("/p/hunter22/x"), "/p/REDACTED/x");
        assert_eq!(t("/p;token=hunter22"), "/p;token=REDACTED");
        assert_eq!(t("/p/hunter%32%32"), "/p/REDACTED");
        // Asset names and words stay.
        assert_eq!(t("/assets/index-D4w8BqYc.js"), "/assets/index-D4w8BqYc.js");
        assert_eq!(t("/api/conversations/latest"), "/api/conversations/latest");
    }
}
