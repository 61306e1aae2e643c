//! The log formats against tracing's own output, and the writer thread.

use super::json::unquote_debug;
use super::*;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing::Level;

#[test]
fn debug_quoted_strings_unquote_to_what_they_show() {
    for original in [
        "",
        "going away",
        "a \"b\"\n\t\\ c",
        "nul\0 é \u{7f} \u{200b}",
    ] {
        let quoted = format!("{original:?}");
        assert_eq!(
            unquote_debug(&quoted).as_deref(),
            Some(original),
            "{quoted}"
        );
    }
    assert_eq!(unquote_debug("plain"), None);
    assert_eq!(unquote_debug("\"a\" \"b\""), None);
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

/// What the text format prints for the events `f` emits (differential tests of lines
/// written by hand).
pub(crate) fn printed(f: impl FnOnce()) -> String {
    let buf = Buf::default();
    let out = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || out.clone())
        .with_ansi(false)
        .with_target(false)
        .event_format(TextFormat)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = buf.0.lock().unwrap().clone();
    String::from_utf8(text).unwrap()
}

impl Write for Buf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct Outer(std::io::Error);

impl std::fmt::Display for Outer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream refused")
    }
}

impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn events() {
    let addr: std::net::SocketAddr = "127.0.0.1:4242".parse().unwrap();
    tracing::info!(
        conn = %"5f0c-ab",
        remote = %addr,
        code = 1000u64,
        delta = -17i64,
        zero = 0u64,
        big = u64::MAX,
        small = i64::MIN,
        ok = true,
        no = false,
        quoted = "a \"b\"\n\x1b",
        reason = ?"x",
        ratio = 0.25f64,
        wide = 1u128 << 100,
        r#type = "raw",
        "[ws] closed"
    );
    tracing::warn!("message with \x1b[31m escape \u{9b} and {} args", 5);
    tracing::error!(
        error = &Outer(std::io::Error::other("refused\x07")) as &(dyn std::error::Error + 'static),
        "[upstream] failed"
    );
    tracing::error!(
        error = &std::io::Error::other("plain") as &(dyn std::error::Error + 'static),
        "no source"
    );
    tracing::debug!(only = 1u64);
    tracing::info_span!("outer", a = 1u64).in_scope(|| {
        tracing::info_span!("inner").in_scope(|| tracing::info!(x = %"y", "in spans"));
    });
}

fn render(ours: bool) -> String {
    let buf = Buf::default();
    let out = buf.clone();
    let builder = tracing_subscriber::fmt()
        .with_max_level(Level::TRACE)
        .with_writer(move || out.clone())
        .with_ansi(false)
        .with_target(false);
    if ours {
        tracing::subscriber::with_default(builder.event_format(TextFormat).finish(), events);
    } else {
        tracing::subscriber::with_default(builder.finish(), events);
    }
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    text
}

/// Differential: every kind of field, message escaping, errors with sources and spans
/// print exactly as tracing-subscriber's own formatter prints them, timestamps aside.
#[test]
fn text_format_matches_tracing_subscriber() {
    let (ours, theirs) = (render(true), render(false));
    let cut = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| {
                let (ts, rest) = l.split_at(27);
                assert!(
                    ts.len() == 27
                        && ts.as_bytes()[4] == b'-'
                        && ts.as_bytes()[10] == b'T'
                        && ts.as_bytes()[19] == b'.'
                        && ts.ends_with('Z'),
                    "timestamp {ts:?} in {l:?}"
                );
                rest.to_string()
            })
            .collect()
    };
    assert_eq!(
        cut(&ours),
        cut(&theirs),
        "\nours:\n{ours}\ntheirs:\n{theirs}"
    );
    assert_eq!(ours.lines().count(), 6);
    assert!(ours.contains("\\x1b[31m escape \\u{9b}"), "{ours}");
}

/// Differential: a line built by hand is the line tracing prints for the same event.
#[test]
fn hand_built_lines_match_events() {
    let v4: std::net::SocketAddr = "10.1.2.3:40000".parse().unwrap();
    let v6: std::net::SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    let err = std::io::Error::other("connection reset by peer");
    for (remote, reason, error) in [
        (v4, "", None),
        (v6, "bye \"now\"\n\u{1b}", Some(&err)),
        (v4, "plain reason", Some(&err)),
    ] {
        let theirs = printed(|| {
            tracing::info!(
                conn = %"5f0c1a2b-0000-4000-8000-00000000beef",
                remote = %Peer(remote),
                code = 1000u16,
                reason = ?reason,
                by = %"client",
                duration_ms = 12u64,
                bytes_in = 0u64,
                bytes_out = u64::MAX,
                error = %error.map_or("-".to_string(), |e| e.to_string()),
                "[ws] closed"
            );
        });
        let mut ours = String::new();
        render_line(
            Level::INFO,
            "[ws] closed",
            |l| {
                l.text("conn", "5f0c1a2b-0000-4000-8000-00000000beef");
                l.peer("remote", remote);
                l.u64("code", 1000);
                l.quoted("reason", reason);
                l.text("by", "client");
                l.u64("duration_ms", 12);
                l.u64("bytes_in", 0);
                l.u64("bytes_out", u64::MAX);
                match error {
                    Some(e) => l.display("error", e),
                    None => l.text("error", "-"),
                }
            },
            |text| ours.push_str(std::str::from_utf8(text).unwrap()),
        );
        assert_eq!(ours[27..], theirs[27..], "\nours:   {ours}theirs: {theirs}");
        assert!(humantime::parse_rfc3339(&ours[..27]).is_ok(), "{ours}");
    }
}

#[test]
fn peers_print_like_socket_addrs() {
    for a in [
        "0.0.0.0:0",
        "127.0.0.1:4242",
        "255.255.255.255:65535",
        "10.20.3.40:80",
        "[::1]:8080",
        "[2001:db8::17]:443",
        "[::ffff:10.0.0.1]:9",
    ] {
        let addr: std::net::SocketAddr = a.parse().unwrap();
        assert_eq!(Peer(addr).to_string(), addr.to_string());
    }
}

#[test]
fn timestamps_are_rfc3339_micros_and_current() {
    let mut s = String::new();
    timestamp(&mut s).unwrap();
    let parsed = humantime::parse_rfc3339(&s).unwrap();
    let age = std::time::SystemTime::now().duration_since(parsed).unwrap();
    assert!(age < std::time::Duration::from_secs(5), "{s}");
    assert_eq!(s.len(), 27, "{s}");
    // The cached prefix is reused within the second and still right.
    let mut again = String::new();
    timestamp(&mut again).unwrap();
    assert!(humantime::parse_rfc3339(&again).unwrap() >= parsed);
}
