//! Request paths as the upstream will read them.
//!
//! An upstream that normalizes paths (Node's `new URL()`, most web frameworks) serves
//! `/healthz/%2e%2e/admin` as `/admin`. A decision taken on the raw text — "is this under a
//! public path?" — would then be about a different resource than the one served. So the
//! path is normalized once, the decision is taken on the result, and exactly that result is
//! forwarded. What normalization cannot settle (an encoded `/`, a backslash, a NUL: servers
//! disagree on them) is refused.

use std::borrow::Cow;

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadPath {
    #[error("a backslash in the path")]
    Backslash,
    #[error("an encoded '/', '\\' or NUL in the path")]
    EncodedSeparator,
    #[error("a malformed percent-encoding in the path")]
    BadEscape,
    #[error("the path is not absolute")]
    NotAbsolute,
}

/// The path with unreserved characters percent-decoded (RFC 3986 §2.3) and dot-segments
/// removed (§5.2.4). Borrowed when there was nothing to do, which is the usual case.
pub(crate) fn normalize(path: &str) -> Result<Cow<'_, str>, BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath::NotAbsolute);
    }
    if path.contains('\\') {
        return Err(BadPath::Backslash);
    }
    let decoded = decode_unreserved(path)?;
    if !has_dot_segment(&decoded) {
        return Ok(decoded);
    }
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// Whether `path` (already normalized) is `prefix` or lies below it. A prefix ending in `/`
/// covers what is under it; one that does not also covers itself: `/healthz` covers
/// `/healthz` and `/healthz/live`, never `/healthzadmin`.
pub(crate) fn is_under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` where it stands for an unreserved character; keeps other escapes as they
/// are, except those no server agrees on, which are refused.
fn decode_unreserved(path: &str) -> Result<Cow<'_, str>, BadPath> {
    if !path.contains('%') {
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Copy up to the next escape in one go (keeps multi-byte UTF-8 whole).
            let next = path[i..].find('%').map_or(bytes.len(), |n| i + n);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(BadPath::BadEscape);
        };
        let b = hi << 4 | lo;
        if matches!(b, b'/' | b'\\' | 0) {
            return Err(BadPath::EncodedSeparator);
        }
        if is_unreserved(b) {
            out.push(b as char);
        } else {
            out.push_str(&path[i..i + 3]);
        }
        i += 3;
    }
    Ok(Cow::Owned(out))
}

/// A `.` or `..` segment anywhere in an absolute path.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

/// RFC 3986 §5.2.4 for an absolute path: `.` segments go, `..` removes the segment before
/// it (never above the root), and a path ending in a dot-segment ends in `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in path.split('/').skip(1) {
        trailing = false;
        match seg {
            "." => trailing = true,
            ".." => {
                out.pop();
                trailing = true;
            }
            s => out.push(s),
        }
    }
    let mut p = String::with_capacity(path.len());
    for s in &out {
        p.push('/');
        p.push_str(s);
    }
    if trailing || p.is_empty() {
        p.push('/');
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_3986_examples_and_bypass_attempts() {
        for (raw, want) in [
            ("/", "/"),
            ("/healthz", "/healthz"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/healthz/../admin", "/admin"),
            ("/healthz/%2e%2e/admin", "/admin"),
            ("/healthz/%2E%2E/admin", "/admin"),
            ("/healthz/.%2e/admin", "/admin"),
            ("/healthz/./live", "/healthz/live"),
            ("/%68ealthz", "/healthz"),
            ("/..", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a//b", "/a//b"),
            ("/a/..b/c", "/a/..b/c"),
            ("/caf%C3%A9/%20x", "/caf%C3%A9/%20x"),
            ("/é/../x", "/x"),
        ] {
            assert_eq!(normalize(raw).unwrap(), want, "{raw}");
        }
        for (raw, why) in [
            ("/healthz\\..\\admin", BadPath::Backslash),
            ("/healthz%00/../admin", BadPath::EncodedSeparator),
            ("/healthz%2f..%2fadmin", BadPath::EncodedSeparator),
            ("/healthz%5c..%5cadmin", BadPath::EncodedSeparator),
            ("/x%2", BadPath::BadEscape),
            ("/x%zz", BadPath::BadEscape),
            ("*", BadPath::NotAbsolute),
            ("", BadPath::NotAbsolute),
        ] {
            assert_eq!(normalize(raw), Err(why), "{raw}");
        }
        assert!(matches!(normalize("/plain/path"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn public_prefixes_match_whole_segments() {
        assert!(is_under("/healthz", "/healthz"));
        assert!(is_under("/healthz/live", "/healthz"));
        assert!(!is_under("/healthzadmin", "/healthz"));
        assert!(is_under("/assets/app.js", "/assets/"));
        assert!(!is_under("/assets", "/assets/"));
        assert!(is_under("/anything", "/"));
        assert!(!is_under("/admin", "/healthz"));
    }
}
