//! A configuration problem phrased for the operator: which key, from which file, flag or
//! environment variable, and what was probably meant.

use figment::Metadata;

use super::ENV_PREFIX;

/// A configuration problem, already phrased for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub(super) String);

impl ConfigError {
    pub(super) fn from_figment(err: figment::Error) -> ConfigError {
        let lines: Vec<String> = err.into_iter().map(describe_figment_error).collect();
        ConfigError(lines.join("\n"))
    }
}

fn describe_figment_error(e: figment::Error) -> String {
    use figment::error::Kind;
    let key = e.path.join(".");
    let from = e
        .metadata
        .as_ref()
        .map(|md| format!(" (from {})", origin_of(md, &e.path)))
        .unwrap_or_default();
    match &e.kind {
        Kind::UnknownField(field, expected) => {
            let hint = match closest(field, expected) {
                Some(near) => {
                    let mut path = e.path.clone();
                    path.pop();
                    path.push(near.to_string());
                    format!("; did you mean `{}`?", path.join("."))
                }
                None => format!("; known keys here: {}", expected.join(", ")),
            };
            format!("config error: unknown key `{key}`{hint}{from}")
        }
        Kind::UnknownVariant(value, expected) => {
            let hint = closest(value, expected)
                .map(|near| format!(" (did you mean `{near}`?)"))
                .unwrap_or_default();
            format!(
                "config error: key `{key}`: unknown value `{value}`; expected one of: {}{hint}{from}",
                expected.join(", ")
            )
        }
        kind => {
            let what = kind.to_string();
            let what = what.trim_end();
            let at = if key.is_empty() {
                String::new()
            } else {
                format!(": key `{key}`")
            };
            if what.contains('\n') {
                // A parser's multi-line report (with a caret under the column): where first.
                format!("config error{at}{from}:\n{what}")
            } else {
                format!("config error{at}: {what}{from}")
            }
        }
    }
}

/// The candidate a near miss was probably meant to be (one or two typing slips away).
pub(super) fn closest<'a>(typed: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let typed = typed.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&typed, c), *c))
        .filter(|(d, c)| *d <= (c.len() / 4).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Where a value came from, in words an operator can act on.
pub(super) fn origin_of(md: &Metadata, path: &[String]) -> String {
    if md.name.contains("environment variable") {
        let var = format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase());
        return format!("environment variable {var}");
    }
    match &md.source {
        Some(figment::Source::File(p)) => format!("{} {}", md.name, p.display()),
        _ => md.name.to_string(),
    }
}
