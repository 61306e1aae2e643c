//! Hot lines written without tracing's formatter: a line's fields go straight into the
//! writer's buffer in the text format's exact shape. Only the text format, only where
//! installed; every user of it has a differential test against the tracing rendering.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use tracing::Level;

use super::pieces::{level_text, printable, timestamp_parts, Escaping};
use super::writer::Shared;

/// Where [`line()`] writes: the batched stderr sink when the process logs plain text (set by
/// [`super::init`]), or a test's capture ([`capture_direct`]). Unset — JSON, colours, a subscriber
/// of someone else's — callers log through tracing.
pub(super) static DIRECT: std::sync::OnceLock<Direct> = std::sync::OnceLock::new();

pub(super) type Sink = Box<dyn Fn(&[u8]) + Send + Sync>;

pub(super) enum Direct {
    Batched(Arc<Shared>),
    Custom(Sink),
}

/// Sends [`line()`]'s output to `sink` (tests that capture the text format). First call wins.
pub fn capture_direct(sink: impl Fn(&[u8]) + Send + Sync + 'static) {
    let _ = DIRECT.set(Direct::Custom(Box::new(sink)));
}

/// Writes a text line built by hand, byte for byte what [`super::TextFormat`] prints for an event
/// with the same message and fields, and returns `true`; `false` when the process does not
/// log plain text (the caller then logs through tracing). The caller checks the level with
/// `tracing::enabled!` first, so filters apply as they do to events.
///
/// For the lines every connection writes ("connected", "closed"): through tracing each
/// field costs a `fmt` round trip (visitor, `DisplayValue`, `Formatter`); here a line is
/// a few writes (bench/RESULTS.md).
pub(crate) fn line(level: Level, message: &str, fields: impl FnOnce(&mut Line)) -> bool {
    let Some(direct) = DIRECT.get() else {
        return false;
    };
    render_line(level, message, fields, |text| match direct {
        Direct::Batched(shared) => {
            let _ = shared.push(text);
        }
        Direct::Custom(sink) => sink(text),
    });
    true
}

pub(crate) fn render_line(
    level: Level,
    message: &str,
    fields: impl FnOnce(&mut Line),
    out: impl FnOnce(&[u8]),
) {
    thread_local! {
        static TEXT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    TEXT.with(|text| {
        let mut own = Vec::new();
        let mut cached = text.try_borrow_mut();
        let buf = match &mut cached {
            Ok(b) => &mut **b,
            Err(_) => &mut own,
        };
        buf.clear();
        let (prefix, micros) = timestamp_parts();
        buf.extend_from_slice(&prefix);
        buf.extend_from_slice(&micros);
        buf.extend_from_slice(level_text(level).as_bytes());
        if printable(message) {
            buf.extend_from_slice(message.as_bytes());
        } else {
            let mut escaped = String::new();
            let _ = Escaping(&mut escaped).write_str(message);
            buf.extend_from_slice(escaped.as_bytes());
        }
        let mut line = Line(buf);
        fields(&mut line);
        buf.push(b'\n');
        out(buf);
    });
}

/// A line's fields, each printed as tracing-subscriber prints the same kind of field. Bytes,
/// not a `String`: the pieces are text already, no UTF-8 checks on the way.
pub(crate) struct Line<'a>(&'a mut Vec<u8>);

impl Line<'_> {
    fn name(&mut self, name: &str) {
        self.0.reserve(name.len() + 2);
        self.0.push(b' ');
        self.0.extend_from_slice(name.as_bytes());
        self.0.push(b'=');
    }

    /// A `%` field whose value is text.
    pub(crate) fn text(&mut self, name: &str, value: &str) {
        self.name(name);
        self.0.extend_from_slice(value.as_bytes());
    }

    /// A `?` field of a string: quoted, escaped as `Debug` escapes.
    pub(crate) fn quoted(&mut self, name: &str, value: &str) {
        self.name(name);
        if printable(value) && !value.contains(['"', '\\']) {
            self.0.push(b'"');
            self.0.extend_from_slice(value.as_bytes());
            self.0.push(b'"');
        } else {
            let _ = std::io::Write::write_fmt(self.0, format_args!("{value:?}"));
        }
    }

    /// A number field.
    pub(crate) fn u64(&mut self, name: &str, value: u64) {
        self.name(name);
        self.0
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A `%` field holding a peer address (as [`Peer`] prints it).
    pub(crate) fn peer(&mut self, name: &str, value: std::net::SocketAddr) {
        self.name(name);
        match value {
            std::net::SocketAddr::V4(v4) => {
                let t = v4_text(&v4);
                self.0.extend_from_slice(&t.0[..t.1]);
            }
            v6 => {
                let _ = std::io::Write::write_fmt(self.0, format_args!("{v6}"));
            }
        }
    }

    /// A `%` field of any other `Display` (through `fmt`, for the rare values).
    pub(crate) fn display(&mut self, name: &str, value: &dyn fmt::Display) {
        self.name(name);
        let _ = std::io::Write::write_fmt(self.0, format_args!("{value}"));
    }
}

/// A peer address for log fields, printed like `SocketAddr`'s `Display` but for IPv4 in
/// one piece: core's impl pads through a formatter per octet, and every connection logs its
/// peer twice.
pub(crate) struct Peer(pub std::net::SocketAddr);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let std::net::SocketAddr::V4(v4) = self.0 else {
            return self.0.fmt(f);
        };
        let t = v4_text(&v4);
        f.write_str(std::str::from_utf8(&t.0[..t.1]).map_err(|_| fmt::Error)?)
    }
}

/// An IPv4 peer as text (digits, dots, a colon), on the stack.
pub(super) struct V4Text([u8; 21], usize);

pub(super) fn v4_text(v4: &std::net::SocketAddrV4) -> V4Text {
    let mut buf = [0u8; 21];
    let mut n = 0;
    for (k, octet) in v4.ip().octets().into_iter().enumerate() {
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        buf[n + 1] = if k < 3 { b'.' } else { b':' };
        n += 2;
    }
    let mut tmp = itoa::Buffer::new();
    let port = tmp.format(v4.port()).as_bytes();
    buf[n..n + port.len()].copy_from_slice(port);
    V4Text(buf, n + port.len())
}
