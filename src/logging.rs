//! Log output. Text lines read like the gateway's own (`[ws] unauthorized conn=… reason=…`)
//! so existing grep-based checks keep working; JSON puts every field at the top level.
//!
//! Lines are appended to a shared buffer and written out by a background thread, so a
//! connection's task never waits on `write(2)` to stderr (a slow terminal or pipe would stall
//! the proxy) and a burst of lines costs one syscall. While lines keep coming the thread
//! writes what gathered every `TICK`, and nobody wakes it; when a tick finds nothing it
//! sleeps on a condition variable until the next line (no spinning, no timer while idle: on
//! a 2-core sidecar host a busy logger steals the proxy's core). Nothing is dropped: past
//! `MAX_PENDING` bytes, logging waits for the writer.

use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tracing::field::{Field, Visit};
use tracing::Level;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

const MAX_PENDING: usize = 1 << 20;
/// How long lines gather while the log is busy: one write (and one wake-up) per tick, not
/// per line. Waking the writer per batch (a futex wake from the proxy's thread, the writer's
/// own sleep) was ~3 % of the proxy's CPU at 6,000 handshakes/s.
const TICK: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    closed: bool,
    /// The writer waits on `lines`: the next line must wake it.
    writer_idle: bool,
    /// Threads waiting on `room`.
    full_waiters: usize,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when lines are waiting (writer side) or room was made (logging side).
    lines: Condvar,
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `MakeWriter` handed to tracing: each event's formatted line is appended in one piece.
#[derive(Clone)]
struct Batched(Arc<Shared>);

impl Shared {
    /// Appends one line (or several) in one piece.
    fn push(&self, data: &[u8]) -> std::io::Result<usize> {
        let mut p = self.lock();
        if p.closed {
            drop(p);
            return std::io::stderr().write(data);
        }
        while p.buf.len() > MAX_PENDING {
            p.full_waiters += 1;
            p = self.room.wait(p).unwrap_or_else(|e| e.into_inner());
            p.full_waiters -= 1;
        }
        p.buf.extend_from_slice(data);
        let wake = std::mem::take(&mut p.writer_idle);
        drop(p);
        if wake {
            self.lines.notify_one();
        }
        Ok(data.len())
    }
}

/// The writer tracing gets per event: a borrow, so no reference count moves between the
/// worker threads' caches on every line.
pub struct BatchedRef<'a>(&'a Shared);

impl Write for BatchedRef<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.push(data)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = BatchedRef<'a>;

    fn make_writer(&'a self) -> BatchedRef<'a> {
        BatchedRef(&self.0)
    }
}

fn write_out(shared: Arc<Shared>) {
    let mut out = Vec::new();
    let mut stderr = std::io::stderr();
    loop {
        {
            let mut p = shared.lock();
            while p.buf.is_empty() && !p.closed {
                p.writer_idle = true;
                p = shared.lines.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            p.writer_idle = false;
        }
        // Busy: write every tick until a tick brings nothing.
        loop {
            let closed = {
                let mut p = shared.lock();
                std::mem::swap(&mut p.buf, &mut out);
                if p.full_waiters > 0 {
                    shared.room.notify_all();
                }
                p.closed
            };
            if out.is_empty() {
                if closed {
                    return;
                }
                break;
            }
            let _ = stderr.write_all(&out);
            out.clear();
            if closed {
                continue;
            }
            std::thread::sleep(TICK);
        }
    }
}

/// The text line format, the same bytes tracing-subscriber's default (`with_ansi(false)`,
/// `with_target(false)`) prints: `2026-11-28T00:22:19.210466Z  INFO [ws] connected conn=… `.
///
/// Written by hand because the default spent ~12,000 instructions per line, a quarter of a
/// proxied handshake (callgrind): each field name went through nu-ansi-term's `Display` even
/// with colours off, the timestamp through a calendar computation. Here a line costs a few
/// `write_str`s plus the fields' own `Display`. Colours (a terminal on stderr) still use the
/// default format.
pub struct TextFormat;

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        timestamp(&mut w)?;
        w.write_str(level_text(*event.metadata().level()))?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                w.write_str(span.metadata().name())?;
                seen = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(w, "{{{fields}}}")?;
                    }
                }
                w.write_char(':')?;
            }
            if seen {
                w.write_char(' ')?;
            }
        }
        // The fields go into a plain `String` first and reach the writer in one piece: its
        // `dyn Write` would cost a virtual call for every separator and name.
        thread_local! {
            static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        let mut own = String::new();
        LINE.with(|line| {
            // A field's Display that logs would find the buffer taken: it gets its own.
            let mut cached = line.try_borrow_mut();
            let buf = match &mut cached {
                Ok(b) => &mut **b,
                Err(_) => &mut own,
            };
            buf.clear();
            let mut v = Fields {
                w: buf,
                first: true,
                result: Ok(()),
            };
            event.record(&mut v);
            v.result?;
            buf.push('\n');
            w.write_str(buf)
        })
    }
}

/// Writes `RFC 3339` UTC with microseconds; the part up to the seconds is computed once per
/// second and kept per thread.
fn timestamp(w: &mut impl fmt::Write) -> fmt::Result {
    let (prefix, micros) = timestamp_parts();
    // Both are ASCII by construction.
    w.write_str(std::str::from_utf8(&prefix).unwrap_or("????-??-??T??:??:??."))?;
    w.write_str(std::str::from_utf8(&micros).unwrap_or("??????Z"))
}

/// `YYYY-MM-DDTHH:MM:SS.` and `uuuuuuZ`.
fn timestamp_parts() -> ([u8; 20], [u8; 7]) {
    thread_local! {
        static SECOND: std::cell::Cell<(u64, [u8; 20])> = const { std::cell::Cell::new((u64::MAX, [0; 20])) };
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let prefix = SECOND.with(|c| {
        let (cached, text) = c.get();
        if cached == secs {
            return text;
        }
        // humantime prints `YYYY-MM-DDTHH:MM:SSZ`; keep all but the `Z`.
        let mut text = [0u8; 20];
        let full = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        )
        .to_string();
        let n = full.len().min(19);
        text[..n].copy_from_slice(&full.as_bytes()[..n]);
        text[19] = b'.';
        c.set((secs, text));
        text
    });
    let mut micros = [b'0'; 7];
    let mut m = now.subsec_micros();
    for d in micros[..6].iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    micros[6] = b'Z';
    (prefix, micros)
}

/// The same timestamps for the JSON format.
struct Timestamp;

impl tracing_subscriber::fmt::time::FormatTime for Timestamp {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        timestamp(w)
    }
}

/// `message` first as is, then ` name=value` with values as their `Debug` (so `%` fields
/// print their `Display` and bare strings are quoted), like tracing-subscriber's visitor.
struct Fields<'a> {
    w: &'a mut String,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_> {
    /// Writes the separator and `name=`; `false` for the message and for `log.*` metadata
    /// of `log` records (already shown as the level).
    fn start(&mut self, field: &Field) -> Option<bool> {
        if self.result.is_err() || field.name().starts_with("log.") {
            return None;
        }
        let r = (|| {
            if !std::mem::take(&mut self.first) {
                self.w.push(' ');
            }
            match field.name() {
                "message" => return Ok(false),
                name => {
                    self.w.push_str(name.strip_prefix("r#").unwrap_or(name));
                    self.w.push('=');
                }
            }
            Ok::<_, fmt::Error>(true)
        })();
        match r {
            Ok(named) => Some(named),
            Err(e) => {
                self.result = Err(e);
                None
            }
        }
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match self.start(field) {
            Some(true) => self.result = write!(self.w, "{value:?}"),
            // A message may carry outside text: no terminal escape sequences through it.
            Some(false) => self.result = write!(Escaping(self.w), "{value:?}"),
            None => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match self.start(field) {
            Some(true) => self.result = write!(self.w, "{value:?}"),
            Some(false) => self.result = Escaping(self.w).write_str(value),
            None => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field).is_some() {
            self.result = write_u64(self.w, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field).is_some() {
            self.result = (|| {
                if value < 0 {
                    self.w.write_char('-')?;
                }
                write_u64(self.w, value.unsigned_abs())
            })();
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field).is_some() {
            self.result = self.w.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.start(field).is_none() {
            return;
        }
        self.result = (|| {
            write!(Escaping(self.w), "{value}")?;
            if let Some(source) = value.source() {
                let name = field.name();
                write!(
                    self.w,
                    " {}.sources=[",
                    name.strip_prefix("r#").unwrap_or(name)
                )?;
                let mut next = Some(source);
                let mut first = true;
                while let Some(e) = next {
                    if !std::mem::take(&mut first) {
                        self.w.write_str(", ")?;
                    }
                    write!(Escaping(self.w), "{e}")?;
                    next = e.source();
                }
                self.w.write_char(']')?;
            }
            Ok(())
        })();
    }
}

/// Where [`line`] writes: the batched stderr sink when the process logs plain text (set by
/// [`init`]), or a test's capture ([`capture_direct`]). Unset — JSON, colours, a subscriber
/// of someone else's — callers log through tracing.
static DIRECT: std::sync::OnceLock<Direct> = std::sync::OnceLock::new();

type Sink = Box<dyn Fn(&[u8]) + Send + Sync>;

enum Direct {
    Batched(Arc<Shared>),
    Custom(Sink),
}

/// Sends [`line`]'s output to `sink` (tests that capture the text format). First call wins.
pub fn capture_direct(sink: impl Fn(&[u8]) + Send + Sync + 'static) {
    let _ = DIRECT.set(Direct::Custom(Box::new(sink)));
}

/// Writes a text line built by hand, byte for byte what [`TextFormat`] prints for an event
/// with the same message and fields, and returns `true`; `false` when the process does not
/// log plain text (the caller then logs through tracing). The caller checks the level with
/// `tracing::enabled!` first, so filters apply as they do to events.
///
/// For the lines every connection writes ("connected", "closed"): through tracing each
/// field costs a `fmt` round trip (visitor, `DisplayValue`, `Formatter`), ~4,300
/// instructions a line; here ~1,000 (callgrind).
pub fn line(level: Level, message: &str, fields: impl FnOnce(&mut Line)) -> bool {
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

/// Printable ASCII: nothing to escape or check further.
fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fn level_text(level: Level) -> &'static str {
    match level {
        Level::TRACE => " TRACE ",
        Level::DEBUG => " DEBUG ",
        Level::INFO => "  INFO ",
        Level::WARN => "  WARN ",
        Level::ERROR => " ERROR ",
    }
}

/// A line's fields, each printed as tracing-subscriber prints the same kind of field. Bytes,
/// not a `String`: the pieces are text already, no UTF-8 checks on the way.
pub struct Line<'a>(&'a mut Vec<u8>);

impl Line<'_> {
    fn name(&mut self, name: &str) {
        self.0.reserve(name.len() + 2);
        self.0.push(b' ');
        self.0.extend_from_slice(name.as_bytes());
        self.0.push(b'=');
    }

    /// A `%` field whose value is text.
    pub fn text(&mut self, name: &str, value: &str) {
        self.name(name);
        self.0.extend_from_slice(value.as_bytes());
    }

    /// A `?` field of a string: quoted, escaped as `Debug` escapes.
    pub fn quoted(&mut self, name: &str, value: &str) {
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
    pub fn u64(&mut self, name: &str, value: u64) {
        self.name(name);
        self.0
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// A `%` field holding a peer address (as [`Peer`] prints it).
    pub fn peer(&mut self, name: &str, value: std::net::SocketAddr) {
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
    pub fn display(&mut self, name: &str, value: &dyn fmt::Display) {
        self.name(name);
        let _ = std::io::Write::write_fmt(self.0, format_args!("{value}"));
    }
}

/// `v` in decimal, written at the end of `buf`.
fn write_u64(w: &mut impl fmt::Write, v: u64) -> fmt::Result {
    w.write_str(itoa::Buffer::new().format(v))
}

/// Escapes the characters a terminal would act on (ESC, BEL, BS, FF, DEL and C1 controls),
/// exactly as tracing-subscriber does for messages.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let risky = |c: char| {
            matches!(
                c,
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
            )
        };
        // Printable ASCII (nearly every value) is checked a byte at a time, no decoding.
        if s.bytes().all(|b| (0x20..0x7f).contains(&b)) || !s.contains(risky) {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                c if risky(c) => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A peer address for log fields, printed like `SocketAddr`'s `Display` but for IPv4 in
/// one piece: core's impl pads through a formatter per octet, and every connection logs its
/// peer twice.
pub struct Peer(pub std::net::SocketAddr);

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
struct V4Text([u8; 21], usize);

fn v4_text(v4: &std::net::SocketAddrV4) -> V4Text {
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

/// One JSON object per line: `timestamp`, `level`, `message`, then every field at the top
/// level. Values are data, not text-format notation: a string field is a JSON string
/// without the text format's quotes (`"reason":"going away"`, not `"\"going away\""`),
/// numbers and booleans are JSON numbers and booleans, and the text format's `-` for
/// "none" is `null`.
struct JsonFormat;

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut ts = String::with_capacity(32);
        timestamp(&mut Writer::new(&mut ts))?;
        let mut obj = serde_json::Map::new();
        obj.insert("timestamp".into(), ts.into());
        obj.insert(
            "level".into(),
            event.metadata().level().as_str().to_string().into(),
        );
        let mut v = JsonFields(&mut obj);
        event.record(&mut v);
        let line = serde_json::to_string(&obj).map_err(|_| fmt::Error)?;
        w.write_str(&line)?;
        w.write_char('\n')
    }
}

struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl JsonFields<'_> {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        // `log` records carry their metadata as fields: shown as the level already.
        if !field.name().starts_with("log.") {
            self.0.insert(field.name().to_string(), value);
        }
    }

    fn text(&mut self, field: &Field, s: String) {
        let value = if s == "-" && field.name() != "message" {
            serde_json::Value::Null
        } else {
            s.into()
        };
        self.put(field, value);
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.text(field, value.to_string());
    }

    /// `%` fields arrive here as their `Display`; `?` fields of strings as Rust's quoted,
    /// escaped `Debug`, which is unquoted back to the string it shows.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let s = format!("{value:?}");
        let s = match s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(_) => unquote_debug(&s).unwrap_or(s),
            None => s,
        };
        self.text(field, s);
    }
}

/// The string a Rust `Debug`-quoted string shows (`"a \"b\"\n"` → `a "b"` + newline);
/// `None` if it is not one.
fn unquote_debug(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            if c == '"' {
                return None; // an unescaped quote: two strings, not one
            }
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            '0' => out.push('\0'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            '\'' => out.push('\''),
            'u' => {
                // \u{hex}
                if chars.next()? != '{' {
                    return None;
                }
                let hex: String = chars.by_ref().take_while(|&c| c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The writer thread, for [`flush`].
static WRITER: Mutex<Option<(Arc<Shared>, JoinHandle<()>)>> = Mutex::new(None);

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub fn init(cfg: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&cfg.level));
    let ansi = std::io::stderr().is_terminal();
    let shared = Arc::new(Shared::default());
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("gatewarden-log".into())
            .spawn(move || write_out(shared))
            .expect("start the log writer thread")
    };
    *WRITER.lock().unwrap_or_else(|e| e.into_inner()) = Some((shared.clone(), thread));
    if cfg.format == LogFormat::Text && !ansi {
        let _ = DIRECT.set(Direct::Batched(shared.clone()));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Batched(shared))
        .with_timer(Timestamp)
        .with_target(false);
    match cfg.format {
        LogFormat::Text if ansi => builder.with_ansi(true).init(),
        LogFormat::Text => builder.with_ansi(false).event_format(TextFormat).init(),
        LogFormat::Json => builder.event_format(JsonFormat).init(),
    }
}

/// Writes out every pending line; call before the process exits. Later lines go to stderr
/// directly.
pub fn flush() {
    let writer = WRITER.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((shared, thread)) = writer {
        shared.lock().closed = true;
        shared.lines.notify_one();
        let _ = thread.join();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

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
            error =
                &Outer(std::io::Error::other("refused\x07")) as &(dyn std::error::Error + 'static),
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
}
