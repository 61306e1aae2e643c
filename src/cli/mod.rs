//! The `gatewarden` command line: run the proxy (default) or check a configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    self, AdminOverrides, Config, CredentialSource, FlagOverrides, LogFormat, LogOverrides,
    SourcesOverride, TlsOverrides,
};
use crate::credentials;

mod check;

#[derive(Debug, Parser)]
#[command(
    name = "gatewarden",
    version,
    about = "Authentication sidecar for WebSocket gateways"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub args: CommonArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the proxy (the default when no subcommand is given).
    Run {
        #[command(flatten)]
        args: CommonArgs,
    },
    /// Validate the configuration, print the effective one, and check every credential file.
    Check {
        #[command(flatten)]
        args: CommonArgs,
    },
    /// Exit 0 if the admin listener answers 200 (for a Docker HEALTHCHECK without curl). It
    /// probes `admin.listen` from the same config file, environment and flags as the proxy.
    Health {
        #[command(flatten)]
        target: HealthTarget,
        /// Probe readiness (`/readyz`: credentials loaded and the gateway reachable) instead
        /// of liveness (`/healthz`).
        #[arg(long)]
        ready: bool,
        /// Probe this URL instead of the configured admin listener.
        #[arg(long)]
        url: Option<String>,
    },
    /// Diagnose token mismatches: credential files, the usual causes, a given token.
    Doctor {
        #[command(flatten)]
        args: CommonArgs,
        /// A token to identify (compared by fingerprint, never printed); `-` reads stdin.
        /// (Tokens may start with '-', as base64url ones often do.)
        #[arg(long, allow_hyphen_values = true)]
        token: Option<String>,
        /// Stand-in for /proc/self/mountinfo (for tests and post-mortems).
        #[arg(long, hide = true)]
        mountinfo: Option<PathBuf>,
    },
    /// Token helpers for `lines` credential files.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Read a token on stdin and print its `sha256:<hex>` form for a `lines` file.
    Hash,
    /// Print a new random token (32 bytes, base64url).
    Generate,
}

/// What `health` needs to find the admin listener: the config and its one override.
#[derive(Debug, Clone, Args)]
pub(crate) struct HealthTarget {
    /// TOML config file (also GATEWARDEN_CONFIG).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Admin listener to probe [default: from the config, 127.0.0.1:9187].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
}

/// The proxy's flags, for running it and for the subcommands that read its whole config
/// (`check`, `doctor`). Given before a subcommand they still count; after it, they win.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct CommonArgs {
    /// TOML config file (also GATEWARDEN_CONFIG).
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to accept clients on [default: 127.0.0.1:18789].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The gateway: host:port or http://host:port [default: 127.0.0.1:18790].
    #[arg(long, value_name = "ADDR")]
    pub upstream: Option<String>,
    /// A file holding a valid token (repeatable). Replaces `[[credentials]]` from the config.
    #[arg(long = "token-file", value_name = "FILE")]
    pub token_files: Vec<PathBuf>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Admin listener for /healthz, /readyz, /metrics [default: 127.0.0.1:9187]; "" disables.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// PEM certificate chain: the listener speaks TLS (with --tls-key).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Log filter such as `info` or `gatewarden=debug` (RUST_LOG wins when set).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

fn pick<T: Clone>(before: &Option<T>, after: &Option<T>) -> Option<T> {
    after.clone().or_else(|| before.clone())
}

impl CommonArgs {
    /// `self` (flags before the subcommand) overridden by `sub` (flags after it).
    fn merged(&self, sub: &CommonArgs) -> CommonArgs {
        CommonArgs {
            config: pick(&self.config, &sub.config),
            listen: pick(&self.listen, &sub.listen),
            upstream: pick(&self.upstream, &sub.upstream),
            token_files: if sub.token_files.is_empty() {
                self.token_files.clone()
            } else {
                sub.token_files.clone()
            },
            log_format: sub.log_format.or(self.log_format),
            admin_listen: pick(&self.admin_listen, &sub.admin_listen),
            tls_cert: pick(&self.tls_cert, &sub.tls_cert),
            tls_key: pick(&self.tls_key, &sub.tls_key),
            log_level: pick(&self.log_level, &sub.log_level),
        }
    }

    pub(crate) fn overrides(&self) -> FlagOverrides {
        let log = (self.log_format.is_some() || self.log_level.is_some()).then(|| LogOverrides {
            format: self.log_format,
            level: self.log_level.clone(),
        });
        FlagOverrides {
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            credentials: (!self.token_files.is_empty()).then(|| SourcesOverride {
                sources: self
                    .token_files
                    .iter()
                    .map(CredentialSource::plain)
                    .collect(),
            }),
            log,
            admin: self
                .admin_listen
                .clone()
                .map(|listen| AdminOverrides { listen }),
            tls: (self.tls_cert.is_some() || self.tls_key.is_some()).then(|| TlsOverrides {
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
            }),
        }
    }

    pub(crate) fn load(&self) -> Result<config::Loaded, config::ConfigError> {
        config::load_reporting(self.config.as_deref(), &self.overrides())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        None => run(&cli.args),
        Some(Command::Run { args }) => run(&cli.args.merged(args)),
        Some(Command::Check { args }) => match load(&cli.args.merged(args)) {
            Ok(config) => check::check(&config),
            Err(code) => code,
        },
        Some(Command::Token(TokenCommand::Generate)) => {
            println!("{}", credentials::generate_token());
            ExitCode::SUCCESS
        }
        Some(Command::Token(TokenCommand::Hash)) => token_hash(),
        Some(Command::Health { target, ready, url }) => {
            let args = CommonArgs {
                config: target.config.clone(),
                admin_listen: target.admin_listen.clone(),
                ..CommonArgs::default()
            };
            health(&cli.args.merged(&args), *ready, url.as_deref())
        }
        Some(Command::Doctor {
            args,
            token,
            mountinfo,
        }) => doctor(&cli.args.merged(args), token.clone(), mountinfo.clone()),
    }
}

fn doctor(args: &CommonArgs, token: Option<String>, mountinfo: Option<PathBuf>) -> ExitCode {
    let config = match load(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let token = match token.as_deref() {
        Some("-") => {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s);
            Some(s.trim().to_string())
        }
        other => other.map(str::to_string),
    };
    let opts = crate::doctor::Options {
        token,
        mountinfo,
        admin: (!config.admin.listen.is_empty()).then(|| config.admin.listen.clone()),
    };
    let rt = match small_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let report = rt.block_on(crate::doctor::run(&config, &opts));
    print!("{}", report.render());
    if report.worst() == crate::doctor::Level::Problem {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn health(args: &CommonArgs, ready: bool, url: Option<&str>) -> ExitCode {
    let url = match url {
        Some(u) => u.to_string(),
        None => {
            let config = match load(args) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match admin_probe_url(&config.admin.listen, ready) {
                Ok(u) => u,
                Err(msg) => {
                    eprintln!("gatewarden: {msg}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let rt = match small_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(crate::admin::check_health(&url)) {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("gatewarden: unhealthy: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Where a local probe reaches the configured admin listener: a wildcard address is
/// reached on loopback.
fn admin_probe_url(listen: &str, ready: bool) -> Result<String, String> {
    if listen.is_empty() {
        return Err(
            "the admin listener is disabled (admin.listen = \"\"); nothing to probe: set admin.listen (or --admin-listen), or pass --url"
                .into(),
        );
    }
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|e| format!("admin.listen `{listen}` is not ip:port: {e}"))?;
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let path = if ready { "readyz" } else { "healthz" };
    Ok(format!(
        "http://{}/{path}",
        std::net::SocketAddr::new(ip, addr.port())
    ))
}

fn token_hash() -> ExitCode {
    let mut input = String::new();
    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input) {
        eprintln!("gatewarden: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    // Only the line break a shell adds is dropped; inner and other whitespace is the token's.
    let token = input.strip_suffix('\n').unwrap_or(&input);
    let token = token.strip_suffix('\r').unwrap_or(token);
    if token.is_empty() {
        eprintln!("gatewarden: no token on stdin");
        return ExitCode::FAILURE;
    }
    println!("{}", credentials::hash_line(token.as_bytes()));
    ExitCode::SUCCESS
}

/// The configuration, or the exit code for a configuration error (2, after saying why).
/// Ignored environment variables are reported on stderr (the subcommands' only channel).
fn load(args: &CommonArgs) -> Result<Config, ExitCode> {
    let loaded = load_quiet(args)?;
    if !loaded.ignored_env.is_empty() {
        eprintln!(
            "gatewarden: warning: {}",
            config::ignored_env_warning(&loaded.ignored_env)
        );
    }
    Ok(loaded.config)
}

fn load_quiet(args: &CommonArgs) -> Result<config::Loaded, ExitCode> {
    args.load().map_err(|e| {
        eprintln!("gatewarden: {e}");
        ExitCode::from(2)
    })
}

/// A single-threaded runtime for the short-lived subcommands.
fn small_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("gatewarden: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn run(args: &CommonArgs) -> ExitCode {
    let config::Loaded {
        config,
        ignored_env,
    } = match load_quiet(args) {
        Ok(l) => l,
        Err(code) => return code,
    };
    crate::logging::init(&config.log);
    if !ignored_env.is_empty() {
        let names: Vec<&str> = ignored_env.iter().map(|v| v.name.as_str()).collect();
        let meant: Vec<&str> = ignored_env
            .iter()
            .filter_map(|v| v.did_you_mean.as_deref())
            .collect();
        tracing::warn!(
            variables = %names.join(","),
            did_you_mean = %if meant.is_empty() { "-".to_string() } else { meant.join(",") },
            hint = %config::SERVICE_LINKS_HINT,
            "[config] ignoring environment variables that are not gatewarden settings"
        );
    }
    // Single-threaded: with one worker it serves everything; with more, the workers run on
    // threads of their own (`Server::run`) and this one keeps signals, watcher and admin.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatewarden: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        // Before binding: once "listening" is logged, a signal must find its handler.
        let shutdown = crate::signals::shutdown();
        let server = match crate::Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(cause = %e, "[start] cannot start");
                return ExitCode::FAILURE;
            }
        };
        server.run(shutdown).await;
        ExitCode::SUCCESS
    });
    crate::logging::flush();
    code
}
