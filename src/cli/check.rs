//! `gatewarden check`: what the proxy would read, read the same way, without serving.

use std::process::ExitCode;

use crate::config::{self, Config, CredentialSource};
use crate::credentials;

/// `gatewarden check`: the effective configuration, each credential source and the TLS
/// files, as the proxy would read them; failure when any is unusable.
pub(super) fn check(config: &Config) -> ExitCode {
    println!("# effective configuration (defaults < file < GATEWARDEN_* env < flags)");
    print!("{}", config::to_toml(config));
    let (sources, mut ok) = check_sources(config);
    let effective = config.auth.effective_sources(&sources);
    println!(
        "# token sources: {} ({})",
        effective
            .list
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        effective.why
    );
    for src in &sources {
        ok &= check_credential(src, config);
    }
    // The gateway's auth mode against upstream_auth.inject (read from its config; `doctor`
    // also asks the gateway itself).
    if let Some((path, doc)) = crate::doctor::modes::gateway_config(&sources) {
        let mut r = crate::doctor::Report::default();
        crate::doctor::modes::compare(config, &doc, &path, &mut r);
        for f in &r.findings {
            match &f.advice {
                Some(a) => println!("# gateway: {}: {} ({a})", f.level, f.what),
                None => println!("# gateway: {}: {}", f.level, f.what),
            }
        }
    }
    ok &= check_tls(config);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The credential sources in effect: the configured ones, or the ones gatewarden finds
/// (said so); `false` when none can be found or made.
fn check_sources(config: &Config) -> (Vec<CredentialSource>, bool) {
    let mut ok = true;
    let mut sources = config.credentials.sources.clone();
    match credentials::plan(&sources) {
        Ok(credentials::Origin::Configured) => {}
        Ok(origin @ credentials::Origin::OpenClaw(_)) => {
            sources = origin.sources(&[]);
            println!(
                "# credentials: none configured; using the OpenClaw gateway's config {} at {}",
                sources[0].path.display(),
                config::OPENCLAW_TOKEN_POINTER
            );
        }
        Ok(origin @ credentials::Origin::AwaitingOpenClaw(_)) => {
            sources = origin.sources(&[]);
            println!(
                "# credentials: none configured; OpenClaw is expected here but {} does not exist yet: gatewarden waits for the gateway to write it (clients are refused until then)",
                sources[0].path.display(),
            );
        }
        Ok(credentials::Origin::Generated { path, .. }) => println!(
            "# credentials: none configured and no OpenClaw config found; the generated token file {} will be used ({})",
            path.display(),
            if path.exists() { "exists" } else { "created at start-up" }
        ),
        Err(e) => {
            eprintln!("gatewarden: {e}");
            ok = false;
        }
    }
    (sources, ok)
}

/// One credential file read as the proxy reads it: each token's fingerprint, or the error.
fn check_credential(src: &CredentialSource, config: &Config) -> bool {
    if src.is_remote() {
        // Fetched at run time; `doctor` fetches it now and checks it.
        println!(
            "# credential {}: a key set fetched at run time (`gatewarden doctor` fetches and checks it)",
            src.location()
        );
        return true;
    }
    match credentials::read_source(src, false, config.credentials.max_file_bytes) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("gatewarden: warning: {}: {w}", src.path.display());
            }
            for c in loaded.entries {
                println!(
                    "# credential {}{}: ok, fingerprint fp:{}",
                    src.path.display(),
                    src.name
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default(),
                    c.fingerprint
                );
            }
        }
        Err(e) => {
            eprintln!("gatewarden: {e}");
            return false;
        }
    }
    true
}

/// The TLS pair loads, and how long the certificate has left.
fn check_tls(config: &Config) -> bool {
    if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        match crate::tls::load_pair(cert, key, config.credentials.max_file_bytes) {
            Ok(pair) => {
                let days = pair.info.remaining().as_secs() / 86_400;
                println!(
                    "# tls {}: ok, subject {}, not_after {} ({days} days left), fingerprint {}",
                    cert.display(),
                    pair.info.subject,
                    pair.info.not_after_text,
                    pair.info.fingerprint
                );
                if pair.info.remaining() < crate::tls::EXPIRY_WARNING {
                    eprintln!(
                        "gatewarden: warning: certificate {} expires within 14 days",
                        cert.display()
                    );
                }
            }
            Err(e) => {
                eprintln!("gatewarden: {e}");
                return false;
            }
        }
    }
    true
}
