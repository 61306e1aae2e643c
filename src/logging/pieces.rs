//! The pieces both text renderings share (tracing's formatter in `text`, the direct lines
//! in `direct`): the timestamp, the level, numbers, and the escaping of terminal controls.

use std::fmt;

use tracing::Level;
use tracing_subscriber::fmt::format::Writer;

/// Printable ASCII: nothing to escape or check further.
pub(super) fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

pub(super) fn level_text(level: Level) -> &'static str {
    match level {
        Level::TRACE => " TRACE ",
        Level::DEBUG => " DEBUG ",
        Level::INFO => "  INFO ",
        Level::WARN => "  WARN ",
        Level::ERROR => " ERROR ",
    }
}

/// `v` in decimal, written at the end of `buf`.
pub(super) fn write_u64(w: &mut impl fmt::Write, v: u64) -> fmt::Result {
    w.write_str(itoa::Buffer::new().format(v))
}

/// Escapes the characters a terminal would act on (ESC, BEL, BS, FF, DEL and C1 controls),
/// exactly as tracing-subscriber does for messages.
pub(super) struct Escaping<'a, W: fmt::Write>(pub(super) &'a mut W);

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

/// Writes `RFC 3339` UTC with microseconds; the part up to the seconds is computed once per
/// second and kept per thread.
pub(super) fn timestamp(w: &mut impl fmt::Write) -> fmt::Result {
    let (prefix, micros) = timestamp_parts();
    // Both are ASCII by construction.
    w.write_str(std::str::from_utf8(&prefix).unwrap_or("????-??-??T??:??:??."))?;
    w.write_str(std::str::from_utf8(&micros).unwrap_or("??????Z"))
}

/// `YYYY-MM-DDTHH:MM:SS.` and `uuuuuuZ`.
pub(super) fn timestamp_parts() -> ([u8; 20], [u8; 7]) {
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
pub(super) struct Timestamp;

impl tracing_subscriber::fmt::time::FormatTime for Timestamp {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        timestamp(w)
    }
}
