//! The JSON format: one object per line, every field at the top level.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::pieces::timestamp;

/// One JSON object per line: `timestamp`, `level`, `message`, then every field at the top
/// level. Values are data, not text-format notation: a string field is a JSON string
/// without the text format's quotes (`"reason":"going away"`, not `"\"going away\""`),
/// numbers and booleans are JSON numbers and booleans, and the text format's `-` for
/// "none" is `null`.
pub(super) struct JsonFormat;

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

pub(super) struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

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
pub(super) fn unquote_debug(s: &str) -> Option<String> {
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
