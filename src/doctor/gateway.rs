//! `doctor` asks the gateway: a WebSocket to the upstream and, for an OpenClaw gateway, a
//! minimal `connect` with the secret gatewarden would present (see `gateway_probe`). What
//! the gateway answers is reported: accepted, which mismatch, which auth mode, pairing.

use std::time::Duration;

use crate::config::{Config, CredentialSource, Inject};
use crate::credentials::{self, Fingerprint};
use crate::gateway_probe::{probe, probe_with, Answer, Probe, SecretKind};
use crate::upstream::UpstreamClient;

use super::{Level, Report};

const WAIT: Duration = Duration::from_secs(3);

/// The user `doctor` names to a gateway in trusted-proxy mode.
const PROBE_USER: &str = "gatewarden-doctor";

/// The secret gatewarden would present upstream, with where it comes from: the
/// `upstream_auth` credential when gatewarden injects one, else the gateway's own config (its
/// clients' token), else the first credential.
fn presented(
    config: &Config,
    sources: &[CredentialSource],
) -> Option<(CredentialSource, Option<String>)> {
    let injecting = config.upstream_auth.inject.needs_credential();
    let src = sources
        .iter()
        .find(|s| injecting && s.name.is_some() && s.name == config.upstream_auth.credential)
        .or_else(|| sources.iter().find(|s| s.is_openclaw_config()))
        .or_else(|| sources.first())?
        .clone();
    let secret = credentials::read_source(&src, true, config.credentials.max_file_bytes)
        .ok()
        .and_then(|l| l.entries.into_iter().find_map(|c| c.secret))
        .map(|s| s.expose().to_string());
    Some((src, secret))
}

/// The gateway's `gateway.auth.mode`, when its config is one of the sources and readable.
fn configured_mode(sources: &[CredentialSource]) -> Option<String> {
    let (_, doc) = super::modes::gateway_config(sources)?;
    Some(super::modes::mode_of(&doc))
}

pub(super) async fn check(config: &Config, sources: &[CredentialSource], r: &mut Report) {
    let up = &config.upstream;
    let tls = if up.tls {
        match crate::tls::upstream_client_config(
            config.upstream_tls.ca.as_deref(),
            config.upstream_tls.insecure,
            config.credentials.max_file_bytes,
        ) {
            Ok(c) => Some(c),
            Err(e) => return r.add(Level::Problem, e.to_string(), None),
        }
    } else {
        None
    };
    let client = match UpstreamClient::new(up.clone(), WAIT, tls, false, None) {
        Ok(c) => c,
        Err(e) => return r.add(Level::Problem, e.to_string(), None),
    };
    if config.upstream_auth.inject == Inject::TrustedProxy {
        // Named as gatewarden names a user; from a documentation address (RFC 5737), which
        // the gateway can attribute (a loopback client it cannot).
        let naming = [
            (config.upstream_auth.user_header.as_str(), PROBE_USER),
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-proto", "http"),
        ];
        let found = probe_with(&client, Some((SecretKind::Nothing, "")), &naming, WAIT).await;
        return trusted_proxy_answer(config, found, r);
    }
    let secret = presented(config, sources);
    let offered = secret.as_ref().and_then(|(_, s)| s.as_deref()).map(|s| {
        match config.upstream_auth.inject {
            Inject::Password => (SecretKind::Password, s),
            _ => (SecretKind::Token, s),
        }
    });
    let found = probe(&client, offered, WAIT).await;
    let mode = configured_mode(sources);
    report(config, found, secret.as_ref(), mode.as_deref(), r);
}

fn report(
    config: &Config,
    found: Probe,
    secret: Option<&(CredentialSource, Option<String>)>,
    mode: Option<&str>,
    r: &mut Report,
) {
    let up = &config.upstream;
    let fp = secret
        .and_then(|(_, s)| s.as_deref())
        .map(|s| format!("fp:{}", Fingerprint::of(s.as_bytes())))
        .unwrap_or_else(|| "-".into());
    let from = secret
        .map(|(s, _)| s.path.display().to_string())
        .unwrap_or_default();
    match found {
        Probe::Unreachable(why) => r.add(
            Level::Problem,
            format!("upstream {up} does not answer: {why}"),
            Some("is the gateway running, on that port? (`openclaw gateway status`; the port it was started with, --port or gateway.port)"),
        ),
        Probe::NoWebSocket(status) => r.add(
            Level::Warning,
            format!("upstream {up} answered a WebSocket upgrade with HTTP {status}"),
            Some("403 from an OpenClaw gateway is proxy_attribution_required: a forwarded header reached it (see forwarded_headers / trusted_proxies)"),
        ),
        Probe::NotOpenClaw => r.add(
            Level::Ok,
            format!("upstream {up} speaks WebSocket and is not an OpenClaw gateway (it did not send connect.challenge): tokens are gatewarden's alone to judge"),
            None,
        ),
        Probe::OpenClaw(None) => r.add(
            Level::Problem,
            format!("upstream {up} is an OpenClaw gateway, and gatewarden has no token to present it ({from} holds none)"),
            Some("the gateway runs on a runtime-only token it made at start, which nobody can read: persist one with `openclaw config set gateway.auth.token \"$(openssl rand -hex 24)\"` and restart the gateway"),
        ),
        Probe::OpenClaw(Some(answer)) => gateway_answer(up, &answer, &fp, &from, mode, r),
    }
}

/// What a gateway in trusted-proxy mode said to a connect naming nobody: a missing user
/// means it trusts gatewarden's address (what it needs), the other refusals say why not.
fn trusted_proxy_answer(config: &Config, found: Probe, r: &mut Report) {
    let up = &config.upstream;
    let header = &config.upstream_auth.user_header;
    let Probe::OpenClaw(Some(answer)) = found else {
        return report(config, found, None, None, r);
    };
    if let Answer::Accepted { version } = &answer {
        return r.add(
            Level::Ok,
            format!(
                "gateway {up} (OpenClaw{}, trusted-proxy mode) accepts the user gatewarden names ({header}: {PROBE_USER}, from a client address it can attribute)",
                version.as_deref().map(|v| format!(" {v}")).unwrap_or_default()
            ),
            None,
        );
    }
    let reason = match &answer {
        Answer::Refused {
            auth_reason: Some(reason),
            ..
        } => reason.as_str(),
        Answer::Closed { reason, .. } => reason.as_str(),
        _ => "",
    };
    match reason {
        "trusted_proxy_user_missing" => r.add(
            Level::Ok,
            format!("gateway {up} (trusted-proxy mode) trusts gatewarden's address and wants the user in a header: gatewarden sends {header}"),
            None,
        ),
        "trusted_proxy_untrusted_source" | "trusted_proxy_local_interface_source" => r.add(
            Level::Problem,
            format!("gateway {up} (trusted-proxy mode) does not trust gatewarden's address ({reason})"),
            Some("list the address gatewarden connects from in gateway.trustedProxies (127.0.0.1/32 for a sidecar on loopback)"),
        ),
        "trusted_proxy_loopback_source" => r.add(
            Level::Problem,
            format!("gateway {up} (trusted-proxy mode) refuses a proxy on loopback ({reason})"),
            Some("`openclaw config set gateway.auth.trustedProxy.allowLoopback true`"),
        ),
        _ => r.add(
            Level::Problem,
            format!("gateway {up} (trusted-proxy mode) did not take the user gatewarden names: {}", said(&answer)),
            Some("the gateway does not treat gatewarden as its trusted proxy: check gateway.trustedProxies (gatewarden's address), gateway.auth.trustedProxy.allowLoopback (a sidecar on loopback) and userHeader; `gatewarden check` reads them"),
        ),
    }
}

/// A refusal or close, as one line.
fn said(answer: &Answer) -> String {
    match answer {
        Answer::Refused {
            code,
            detail,
            auth_reason,
            message,
        } => format!(
            "{code}{} {message}",
            [detail.as_deref(), auth_reason.as_deref()]
                .into_iter()
                .flatten()
                .map(|d| format!(" {d}"))
                .collect::<String>()
        ),
        Answer::Closed { code, reason } => format!("closed {code} {reason:?}"),
        Answer::Silent => "no answer".into(),
        Answer::Accepted { .. } => "accepted".into(),
    }
}

fn gateway_answer(
    up: &crate::config::Upstream,
    answer: &Answer,
    fp: &str,
    from: &str,
    mode: Option<&str>,
    r: &mut Report,
) {
    let mode = mode.or(answer.auth_mode());
    let mode_text = mode.map(|m| format!(", auth mode {m}")).unwrap_or_default();
    match answer {
        Answer::Accepted { version } => r.add(
            Level::Ok,
            format!(
                "gateway {up} (OpenClaw{}{mode_text}) accepts the {} gatewarden presents ({fp}, from {from})",
                version.as_deref().map(|v| format!(" {v}")).unwrap_or_default(),
                if mode == Some("password") { "password" } else { "token" },
            ),
            None,
        ),
        Answer::Refused { auth_reason: Some(reason), message, .. } if reason.starts_with("token_mismatch") => r.add(
            Level::Problem,
            format!("gateway {up}{mode_text} refuses the token gatewarden presents ({fp}, from {from}): token_mismatch ({message})"),
            Some("the running gateway has another token than its config gives gatewarden: a runtime-only token (no gateway.auth.token: set one and restart the gateway), a gateway of another profile or state directory on this port (--dev, OPENCLAW_STATE_DIR), or a config changed without a gateway restart"),
        ),
        Answer::Refused { auth_reason: Some(reason), .. } if reason.starts_with("password") => r.add(
            Level::Problem,
            format!("gateway {up} is in password mode ({reason}); gatewarden presents a token ({fp})"),
            Some("present the gateway's password: upstream_auth.inject = \"password\" with a credential reading gateway.auth.password"),
        ),
        Answer::Refused { auth_reason: Some(reason), .. } if reason.starts_with("trusted_proxy") => r.add(
            Level::Problem,
            format!("gateway {up} is in trusted-proxy mode and refuses gatewarden ({reason})"),
            Some("with upstream_auth.inject = \"trusted_proxy\", list gatewarden's address in gateway.trustedProxies (and allowLoopback for a loopback sidecar)"),
        ),
        Answer::Refused { code, detail, message, .. } if code == "NOT_PAIRED" || detail.as_deref().is_some_and(|d| d.contains("PAIRING") || d.contains("DEVICE")) => r.add(
            Level::Ok,
            format!("gateway {up}{mode_text} takes the token ({fp}) but asks for device pairing: {message}"),
            None,
        ),
        Answer::Refused { code, detail, auth_reason, message } => r.add(
            Level::Warning,
            format!(
                "gateway {up}{mode_text} refused gatewarden's probe: {code}{} {message}",
                [detail.as_deref(), auth_reason.as_deref()]
                    .into_iter()
                    .flatten()
                    .map(|d| format!(" {d}"))
                    .collect::<String>()
            ),
            None,
        ),
        Answer::Closed { code, reason } => r.add(
            Level::Warning,
            format!("gateway {up}{mode_text} closed the probe's connect with {code} {reason:?}"),
            None,
        ),
        Answer::Silent => r.add(
            Level::Warning,
            format!("gateway {up} sent connect.challenge but did not answer the probe's connect within {WAIT:?}"),
            None,
        ),
    }
}
