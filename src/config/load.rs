//! Loading: defaults < TOML file < `GATEWARDEN_*` environment < flags, through figment, with
//! every error naming the key and where its value came from.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;

use super::error::{closest, ConfigError};
use super::validate::validate;

use super::{Config, CredentialSource, LogFormat, CONFIG_ENV, ENV_PREFIX};

/// Overrides from the command line; only flags that were given are set.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SourcesOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminOverrides>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct AdminOverrides {
    pub listen: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct TlsOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct SourcesOverride {
    pub sources: Vec<CredentialSource>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct LogOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

/// Turns the `[[credentials]]` array form into the table form (`credentials.sources`), so
/// every provider merges into the same shape: without this an environment variable such as
/// `GATEWARDEN_CREDENTIALS__POLL_INTERVAL` would replace a file's array instead of joining it.
struct Normalized<P>(P);

impl<P: Provider> Provider for Normalized<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<figment::value::Map<Profile, figment::value::Dict>, figment::Error> {
        use figment::value::{Dict, Value};
        let mut data = self.0.data()?;
        for dict in data.values_mut() {
            if matches!(dict.get("credentials"), Some(Value::Array(..))) {
                if let Some(Value::Array(tag, list)) = dict.remove("credentials") {
                    let table = Dict::from([("sources".to_string(), Value::Array(tag, list))]);
                    dict.insert("credentials".into(), Value::Dict(tag, table));
                }
            }
        }
        Ok(data)
    }
}

impl Provider for FlagOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("command-line flag")
    }

    fn data(&self) -> Result<figment::value::Map<Profile, figment::value::Dict>, figment::Error> {
        Serialized::defaults(self).data()
    }
}

/// A TOML config file read by gatewarden itself (see [`crate::files`]: a FIFO or a device
/// named as the config must not hang start-up or `check`), shown in errors as the file.
#[derive(Clone)]
struct TomlFile {
    path: PathBuf,
    text: String,
}

impl Provider for TomlFile {
    fn metadata(&self) -> Metadata {
        Metadata::from("TOML file", self.path.as_path())
    }

    fn data(&self) -> Result<figment::value::Map<Profile, figment::value::Dict>, figment::Error> {
        Toml::string(&self.text).data()
    }
}

/// Builds the layered figment over an already-read config file. `ignored`: environment
/// variables (without the prefix) that are not settings and are left out.
fn figment(file: Option<TomlFile>, flags: &FlagOverrides, ignored: &[String]) -> Figment {
    let mut fig = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = file {
        fig = fig.merge(Normalized(file));
    }
    let mut skip: Vec<&str> = vec!["CONFIG"];
    skip.extend(ignored.iter().map(String::as_str));
    fig.merge(Normalized(
        Env::prefixed(ENV_PREFIX)
            .ignore(&skip)
            .split("__")
            .lowercase(true),
    ))
    .merge(flags.clone())
}

/// A `GATEWARDEN_*` environment variable that is not a setting, left out of the
/// configuration. Kubernetes injects `<SERVICE>_PORT`, `<SERVICE>_SERVICE_HOST`, … for
/// every Service, so a Service named `gatewarden` must not stop gatewarden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredVar {
    pub name: String,
    /// The variable a near miss probably meant.
    pub did_you_mean: Option<String>,
}

impl fmt::Display for IgnoredVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(m) = &self.did_you_mean {
            write!(f, " (did you mean {m}?)")?;
        }
        Ok(())
    }
}

/// The one warning that names every ignored variable.
pub fn ignored_env_warning(vars: &[IgnoredVar]) -> String {
    let list: Vec<String> = vars.iter().map(ToString::to_string).collect();
    format!(
        "ignoring environment variables that are not gatewarden settings: {} ({SERVICE_LINKS_HINT})",
        list.join(", ")
    )
}

/// Where such variables usually come from.
pub const SERVICE_LINKS_HINT: &str =
    "Kubernetes sets <SERVICE>_* variables for every Service; enableServiceLinks: false stops them";

/// A loaded configuration and what loading it had to say.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub ignored_env: Vec<IgnoredVar>,
}

/// Loads and validates the configuration. `config_file` is the `-c/--config` flag (else
/// `$GATEWARDEN_CONFIG`).
pub fn load(config_file: Option<&Path>, flags: &FlagOverrides) -> Result<Config, ConfigError> {
    load_reporting(config_file, flags).map(|l| l.config)
}

/// [`load`], also returning the environment variables it ignored, for the caller to warn
/// about once logging is set up. An unknown key in the config file stays an error: the
/// operator wrote it.
pub fn load_reporting(
    config_file: Option<&Path>,
    flags: &FlagOverrides,
) -> Result<Loaded, ConfigError> {
    let path = config_file
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from));
    let file = match path {
        Some(path) => {
            let bytes = crate::files::read_limited(&path, crate::files::DEFAULT_MAX_BYTES)
                .map_err(|why| {
                    ConfigError(format!(
                        "config error: config file {} {why}",
                        path.display()
                    ))
                })?;
            let text = String::from_utf8(bytes).map_err(|_| {
                ConfigError(format!(
                    "config error: config file {} is not valid UTF-8",
                    path.display()
                ))
            })?;
            Some(TomlFile { path, text })
        }
        None => None,
    };
    let mut ignored: Vec<String> = Vec::new();
    let mut ignored_env = Vec::new();
    // serde stops at the first unknown field, so each round finds at most one more; the
    // environment is finite and every round ignores a new variable.
    let (fig, mut config) = loop {
        let fig = figment(file.clone(), flags, &ignored);
        match fig.extract::<Config>() {
            Ok(config) => break (fig, config),
            Err(err) => {
                let unknown: Vec<(String, Option<String>)> = err
                    .clone()
                    .into_iter()
                    .filter_map(|e| unknown_env_var(&e))
                    .filter(|(k, _)| !ignored.contains(k))
                    .collect();
                if unknown.is_empty() {
                    return Err(ConfigError::from_figment(err));
                }
                for (key, near) in unknown {
                    ignored_env.push(IgnoredVar {
                        name: format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
                        did_you_mean: near,
                    });
                    ignored.push(key);
                }
            }
        }
    };
    validate(&config, &fig)?;
    config.resolve_paths();
    Ok(Loaded {
        config,
        ignored_env,
    })
}

/// For an unknown key that came from the environment: the variable's name without the
/// prefix (as `Env::ignore` wants it) and the variable a near miss probably meant.
fn unknown_env_var(e: &figment::Error) -> Option<(String, Option<String>)> {
    let figment::error::Kind::UnknownField(field, expected) = &e.kind else {
        return None;
    };
    if !e
        .metadata
        .as_ref()
        .is_some_and(|md| md.name.contains("environment variable"))
    {
        return None;
    }
    let mut path = e.path.clone();
    path.pop();
    // `GATEWARDEN_LOG_FORMAT` for `GATEWARDEN_LOG__FORMAT`: nesting takes two `_`.
    let nested = expected
        .iter()
        .filter(|k| field.len() > k.len() + 1 && field.starts_with(&format!("{k}_")))
        .max_by_key(|k| k.len())
        .map(|k| format!("{k}__{}", &field[k.len() + 1..]));
    let near = nested
        .or_else(|| closest(field, expected).map(str::to_string))
        .map(|near| {
            path.push(near);
            format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase())
        });
    Some((e.path.join("__"), near))
}

impl Config {
    /// Makes every file path absolute against the working directory at start. The watcher
    /// compares inotify's (absolute) event paths with these, and a relative path would
    /// only ever be noticed by the slow poll; logs then name the file unambiguously too.
    pub fn resolve_paths(&mut self) {
        let paths = self
            .credentials
            .sources
            .iter_mut()
            .map(|s| &mut s.path)
            .chain(self.tls.cert.as_mut())
            .chain(self.tls.key.as_mut())
            .chain(self.tls.client_ca.as_mut())
            .chain(self.upstream_tls.ca.as_mut());
        for p in paths {
            *p = absolute(p);
        }
    }
}

/// `path` made absolute against the working directory, lexically (`..` and symlinks are
/// left for the kernel: the watched directory is the one the operator named).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The effective configuration as TOML. Nothing secret lives in the config itself (tokens are
/// only ever read from credential files), so nothing needs redacting yet; keep it that way.
pub fn to_toml(config: &Config) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
}
