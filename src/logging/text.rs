//! The text format: `<timestamp> <LEVEL> [tag] message key=value ...`, like the gateway's
//! own lines.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::pieces::{level_text, timestamp, write_u64, Escaping};

/// The text line format, the same bytes tracing-subscriber's default (`with_ansi(false)`,
/// `with_target(false)`) prints: `2026-11-28T00:22:19.210466Z  INFO [ws] connected conn=… `.
///
/// Written by hand because the default formatter was a large share of a proxied handshake
/// (bench/RESULTS.md): each field name went through nu-ansi-term's `Display` even
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

/// `message` first as is, then ` name=value` with values as their `Debug` (so `%` fields
/// print their `Display` and bare strings are quoted), like tracing-subscriber's visitor.
pub(super) struct Fields<'a> {
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
