//! The gateway's auth mode (read from its `openclaw.json`, where a credential reads it)
//! against gatewarden's `upstream_auth.inject`, and the trusted-proxy pitfalls, as findings
//! for `doctor` and `check`. Pure: the gateway's config comes in as a parsed document.

use std::net::IpAddr;

use serde_json::Value;

use crate::config::{Config, CredentialFormat, CredentialSource, Inject};

use super::{Level, Report};

/// How to move a gateway from token to password mode, said wherever it helps.
pub(crate) const TO_PASSWORD_MODE: &str = "move the gateway to password mode, which keeps every client's signature intact: `openclaw config set gateway.auth.mode password`, `openclaw config set gateway.auth.password \"$(openssl rand -hex 24)\"`, `openclaw config unset gateway.auth.token`, restart the gateway; then in gatewarden: upstream_auth.inject = \"password\", upstream_auth.credential naming a [[credentials]] entry with format = \"json5\" and pointer = \"/gateway/auth/password\"; clients keep their own gatewarden tokens";

/// The gateway's config: the one a credential reads (a `json5` source whose pointer is
/// under `/gateway/`), else OpenClaw's own (`OPENCLAW_CONFIG_PATH`, `OPENCLAW_STATE_DIR`,
/// `~/.openclaw`; a gateway in trusted-proxy mode has no secret for a credential to read).
pub(crate) fn gateway_config(sources: &[CredentialSource]) -> Option<(std::path::PathBuf, Value)> {
    let path = sources
        .iter()
        .find(|s| s.format == CredentialFormat::Json5 && s.json_pointer().starts_with("/gateway/"))
        .map(|s| s.path.clone())
        .or_else(crate::credentials::openclaw_config_path)?;
    let text = std::fs::read_to_string(&path).ok()?;
    let doc: Value = json5::from_str(&text).ok()?;
    Some((path, doc))
}

/// `gateway.auth.mode` as the gateway resolves it: set, else `token` (a token or none),
/// `password` when only a password is set.
pub(crate) fn mode_of(doc: &Value) -> String {
    let auth = doc.pointer("/gateway/auth");
    if let Some(m) = auth.and_then(|a| a.get("mode")).and_then(Value::as_str) {
        return m.to_string();
    }
    let has = |k: &str| auth.and_then(|a| a.get(k)).is_some_and(|v| v.is_string());
    if has("password") && !has("token") {
        "password".into()
    } else {
        "token".into()
    }
}

/// Findings for the gateway's mode against gatewarden's injection.
pub(crate) fn compare(config: &Config, doc: &Value, from: &std::path::Path, r: &mut Report) {
    let mode = mode_of(doc);
    let inject = config.upstream_auth.inject;
    let at = from.display();
    let mismatch = |r: &mut Report, advice: &str| {
        r.add(
            Level::Problem,
            format!("the gateway ({at}) is in {mode} mode, and gatewarden has upstream_auth.inject = \"{}\"", inject.as_str()),
            Some(advice),
        )
    };
    match (mode.as_str(), inject) {
        ("password", Inject::Password) | ("trusted-proxy", Inject::TrustedProxy) => r.add(
            Level::Ok,
            format!("the gateway ({at}) is in {mode} mode and gatewarden injects for it (upstream_auth.inject = \"{}\")", inject.as_str()),
            None,
        ),
        ("token", Inject::FirstMessage) => r.add(
            Level::Warning,
            format!("the gateway ({at}) is in token mode with upstream_auth.inject = \"first_message\": clients that sign (paired devices, the Control UI, nodes) are refused with token_rewrite_refused, since their signature covers the token"),
            Some(TO_PASSWORD_MODE),
        ),
        ("token", Inject::Password) => mismatch(r, TO_PASSWORD_MODE),
        ("password", Inject::None) => mismatch(r, "clients must present the gateway's password themselves; to give them stable gatewarden tokens instead: upstream_auth.inject = \"password\" with a credential reading /gateway/auth/password"),
        ("password", _) => mismatch(r, "use upstream_auth.inject = \"password\": the gateway checks params.auth.password"),
        ("trusted-proxy", _) => mismatch(r, "use upstream_auth.inject = \"trusted_proxy\": the gateway takes the user from gatewarden's upgrade header"),
        (_, Inject::TrustedProxy) => mismatch(r, "set the gateway's gateway.auth.mode = \"trusted-proxy\" with gateway.auth.trustedProxy.userHeader (and no token), or choose another upstream_auth.inject"),
        _ => {}
    }
    if mode == "trusted-proxy" || inject == Inject::TrustedProxy {
        trusted_proxy_pitfalls(config, doc, r);
    }
}

/// What makes a trusted-proxy gateway refuse (or not start) behind gatewarden.
fn trusted_proxy_pitfalls(config: &Config, doc: &Value, r: &mut Report) {
    let tp = doc.pointer("/gateway/auth/trustedProxy");
    let host = config.upstream.host.as_str();
    let upstream_loopback = host
        .parse::<IpAddr>()
        .map_or(host == "localhost", |ip| ip.is_loopback());
    if doc
        .pointer("/gateway/auth/token")
        .is_some_and(|t| t.is_string())
    {
        r.add(
            Level::Problem,
            "the gateway's config has a token and trusted-proxy mode: the gateway does not start with both",
            Some("`openclaw config unset gateway.auth.token`"),
        );
    }
    let header = tp
        .and_then(|t| t.get("userHeader"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !header.eq_ignore_ascii_case(&config.upstream_auth.user_header) {
        r.add(
            Level::Problem,
            format!("the gateway reads the user from {header:?}, gatewarden sends {:?}", config.upstream_auth.user_header),
            Some("make gateway.auth.trustedProxy.userHeader and upstream_auth.user_header the same header"),
        );
    }
    let allow_loopback = tp
        .and_then(|t| t.get("allowLoopback"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if upstream_loopback && !allow_loopback {
        r.add(
            Level::Problem,
            "gatewarden reaches the gateway over loopback, and the gateway's trustedProxy has no allowLoopback: it refuses every upgrade (trusted_proxy_loopback_source)",
            Some("`openclaw config set gateway.auth.trustedProxy.allowLoopback true`"),
        );
    }
    let proxies: Vec<ipnet::IpNet> = doc
        .pointer("/gateway/trustedProxies")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(net_of)
                .collect()
        })
        .unwrap_or_default();
    let source: IpAddr = if upstream_loopback {
        "127.0.0.1".parse().expect("an address")
    } else {
        config.listen.0.ip()
    };
    if upstream_loopback && !proxies.iter().any(|n| n.contains(&source)) {
        r.add(
            Level::Problem,
            format!("gateway.trustedProxies does not name gatewarden's address {source}: the gateway refuses it (trusted_proxy_untrusted_source)"),
            Some("`openclaw config set gateway.trustedProxies '[\"127.0.0.1/32\",\"::1/128\"]' --strict-json`"),
        );
    }
    if config.listen.0.ip().is_loopback() {
        r.add(
            Level::Warning,
            format!("gatewarden listens on loopback ({}): a client on this host arrives from a loopback address, which a trusted-proxy gateway cannot attribute (it closes such sessions with 1011)", config.listen.0),
            Some("clients of a trusted-proxy gateway must come from another address: listen on the host's address (or 0.0.0.0) and connect through it"),
        );
    }
}

fn net_of(s: &str) -> Option<ipnet::IpNet> {
    s.parse()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(inject: Inject, doc: Value) -> String {
        let mut config = Config::default();
        config.upstream_auth.inject = inject;
        let mut r = Report::default();
        compare(
            &config,
            &doc,
            std::path::Path::new("/s/openclaw.json"),
            &mut r,
        );
        r.findings
            .iter()
            .map(|f| {
                format!(
                    "{} {} {}\n",
                    f.level,
                    f.what,
                    f.advice.as_deref().unwrap_or("")
                )
            })
            .collect()
    }

    #[test]
    fn a_token_gateway_with_first_message_injection_is_told_how_to_move_to_password_mode() {
        let out = findings(
            Inject::FirstMessage,
            serde_json::json!({"gateway":{"auth":{"mode":"token","token":"t"}}}),
        );
        assert!(out.contains("token_rewrite_refused"), "{out}");
        assert!(
            out.contains("openclaw config set gateway.auth.mode password"),
            "{out}"
        );
        let out = findings(
            Inject::Password,
            serde_json::json!({"gateway":{"auth":{"token":"t"}}}),
        );
        assert!(
            out.starts_with("problem") && out.contains("token mode"),
            "{out}"
        );
        let out = findings(
            Inject::Password,
            serde_json::json!({"gateway":{"auth":{"password":"p"}}}),
        );
        assert!(out.starts_with("ok"), "{out}");
    }

    #[test]
    fn trusted_proxy_pitfalls_are_named() {
        let out = findings(
            Inject::TrustedProxy,
            serde_json::json!({"gateway":{"auth":{"mode":"trusted-proxy","token":"t","trustedProxy":{"userHeader":"x-forwarded-user"}}}}),
        );
        for needle in [
            "does not start",
            "allowLoopback",
            "trustedProxies",
            "cannot attribute",
        ] {
            assert!(out.contains(needle), "{needle} missing from {out}");
        }
        let good = findings(
            Inject::TrustedProxy,
            serde_json::json!({"gateway":{"trustedProxies":["127.0.0.1/32"],"auth":{"mode":"trusted-proxy","trustedProxy":{"userHeader":"x-forwarded-user","allowLoopback":true}}}}),
        );
        assert!(!good.contains("problem"), "{good}");
    }
}
