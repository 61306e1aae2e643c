use super::*;

fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

/// What no credential makes OpenClaw's: the four upgrade-time sources.
fn generic() -> Vec<TokenSource> {
    AuthConfig::default().effective_sources(&[]).list
}

#[test]
fn sources_in_configured_order() {
    let cfg = AuthConfig::default();
    let p = parts(
        "/ws?token=q",
        &[
            ("authorization", "Bearer h"),
            ("cookie", "a=1; gatewarden_token=c"),
        ],
    );
    let f = extract(&cfg, &generic(), &p, true, None).unwrap();
    assert_eq!(
        (f.token.as_slice(), f.source),
        (&b"h"[..], TokenSource::Header)
    );
    let f = extract(
        &cfg,
        &[TokenSource::Cookie, TokenSource::Query],
        &p,
        true,
        None,
    )
    .unwrap();
    assert_eq!(
        (f.token.as_slice(), f.source),
        (&b"c"[..], TokenSource::Cookie)
    );
    assert!(extract(&cfg, &[TokenSource::Subprotocol], &p, true, None).is_none());
}

/// `first_message` by default only in front of OpenClaw: with any other credential a
/// tokenless upgrade would be connected upstream and shown what the upstream says first.
#[test]
fn first_message_is_a_default_only_for_openclaw_configs() {
    use crate::config::{CredentialFormat, CredentialSource};
    let cfg = AuthConfig::default();
    let plain = CredentialSource::plain("/run/token");
    let lines = CredentialSource {
        format: CredentialFormat::Lines,
        ..CredentialSource::plain("/run/clients")
    };
    let openclaw = CredentialSource {
        format: CredentialFormat::Json5,
        ..CredentialSource::plain("/home/node/.openclaw/openclaw.json")
    };
    let other_json = CredentialSource {
        format: CredentialFormat::Json5,
        pointer: Some("/secrets/token".into()),
        key: None,
        ..CredentialSource::plain("/etc/app.json")
    };
    for creds in [
        vec![],
        vec![plain.clone()],
        vec![lines.clone(), other_json.clone()],
    ] {
        let e = cfg.effective_sources(&creds);
        assert!(!e.list.contains(&TokenSource::FirstMessage), "{e:?}");
        assert!(e.why.contains("first_message is off"), "{e:?}");
    }
    let e = cfg.effective_sources(&[plain, openclaw]);
    assert_eq!(e.list.last(), Some(&TokenSource::FirstMessage));
    assert!(e.why.contains("openclaw.json"), "{e:?}");
    // Configured sources are taken as they are.
    let set = AuthConfig {
        sources: Some(vec![TokenSource::FirstMessage]),
        ..AuthConfig::default()
    };
    assert_eq!(set.effective_sources(&[]).list, [TokenSource::FirstMessage]);
}

#[test]
fn query_is_percent_decoded() {
    assert_eq!(
        query_value("a=1&token=a%2Bb%20c", "token").unwrap(),
        b"a+b c"
    );
    assert_eq!(query_value("token=", "token"), None);
    assert_eq!(query_value("tokens=x", "token"), None);
}

#[test]
fn basic_auth_is_not_a_token() {
    let p = parts("/", &[("authorization", "Basic dXNlcjpwYXNz")]);
    assert!(extract(&AuthConfig::default(), &generic(), &p, false, None).is_none());
}

#[test]
fn subprotocol_entry_found_and_stripped() {
    let p = parts(
        "/",
        &[("sec-websocket-protocol", "chat, bearer.s3cret,  v2")],
    );
    let cfg = AuthConfig::default();
    assert_eq!(
        extract(&cfg, &generic(), &p, true, None).unwrap().token,
        b"s3cret"
    );
    assert!(extract(&cfg, &generic(), &p, false, None).is_none());
    assert_eq!(
        strip_token_subprotocols(&p.headers, "bearer.").unwrap(),
        b"chat, v2"
    );
    let only = parts("/", &[("sec-websocket-protocol", "bearer.x")]);
    assert!(strip_token_subprotocols(&only.headers, "bearer.").is_none());
}

#[test]
fn origin_policy() {
    let mut cfg = AuthConfig::default();
    let h = |origin: Option<&str>, host: &str| {
        let mut b = http::Request::builder().uri("/").header("host", host);
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(()).unwrap().into_parts().0.headers
    };
    // Default: none, same origin, loopback.
    assert!(origin_allowed(&cfg, &h(None, "gw:18789")));
    assert!(origin_allowed(
        &cfg,
        &h(Some("http://gw:18789"), "gw:18789")
    ));
    assert!(origin_allowed(
        &cfg,
        &h(Some("http://127.0.0.1:5173"), "gw:18789")
    ));
    assert!(origin_allowed(&cfg, &h(Some("http://localhost"), "gw")));
    assert!(!origin_allowed(
        &cfg,
        &h(Some("https://evil.example"), "gw:18789")
    ));
    assert!(!origin_allowed(&cfg, &h(Some("null"), "gw")));
    cfg.allow_missing_origin = false;
    assert!(!origin_allowed(&cfg, &h(None, "gw")));
    // Configured: exact and *.suffix.
    cfg.allowed_origins = vec![
        "https://app.example.com".into(),
        "https://*.corp.example".into(),
    ];
    assert!(origin_allowed(
        &cfg,
        &h(Some("https://app.example.com"), "x")
    ));
    assert!(origin_allowed(
        &cfg,
        &h(Some("https://a.b.corp.example"), "x")
    ));
    assert!(!origin_allowed(&cfg, &h(Some("https://corp.example"), "x")));
    assert!(
        !origin_allowed(&cfg, &h(Some("http://a.corp.example"), "x")),
        "scheme matters"
    );
    assert!(!origin_allowed(
        &cfg,
        &h(Some("https://evilcorp.example"), "x")
    ));
    assert!(
        !origin_allowed(&cfg, &h(Some("https://a.corp.example:8443"), "x")),
        "port matters"
    );
}

#[test]
fn query_token_removal() {
    assert_eq!(query_without("x=1&token=secret&y=2", "token"), "x=1&y=2");
    assert_eq!(query_without("token=secret", "token"), "");
}

/// Each source's rule finds the token where that source puts it, and its `Strip` is the
/// one that takes it out of what is forwarded.
#[test]
fn every_source_strips_what_it_extracts() {
    let cfg = AuthConfig::default();
    let cases = [
        (
            TokenSource::Header,
            parts("/ws", &[("authorization", "Bearer t0k3n")]),
            Strip::Header,
        ),
        (
            TokenSource::Query,
            parts("/ws?a=1&token=t0k3n", &[]),
            Strip::Query,
        ),
        (
            TokenSource::Cookie,
            parts("/ws", &[("cookie", "a=1; gatewarden_token=t0k3n")]),
            Strip::Cookie,
        ),
        (
            TokenSource::Subprotocol,
            parts("/ws", &[("sec-websocket-protocol", "chat, bearer.t0k3n")]),
            Strip::Subprotocol,
        ),
    ];
    for (source, p, strip) in cases {
        let r = rule(source);
        assert_eq!(r.strip, strip, "{source:?}");
        let (token, ambiguous) = r
            .extract(&cfg, &p, true)
            .unwrap_or_else(|| panic!("{source:?}"));
        assert_eq!(
            (token.as_slice(), ambiguous),
            (&b"t0k3n"[..], false),
            "{source:?}"
        );
        let left = match strip {
            Strip::Query => query_without(p.uri.query().unwrap(), &cfg.query_param),
            Strip::Cookie => cookies_without(&p.headers, &cfg.cookie)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
            Strip::Subprotocol => strip_token_subprotocols(&p.headers, &cfg.subprotocol_prefix)
                .map(|v| String::from_utf8(v).unwrap())
                .unwrap_or_default(),
            Strip::Header | Strip::Nothing => String::new(),
        };
        assert!(!left.contains("t0k3n"), "{source:?}: {left}");
    }
    for source in [TokenSource::FirstMessage, TokenSource::ClientCert] {
        assert_eq!(rule(source).strip, Strip::Nothing);
        assert!(rule(source)
            .extract(&cfg, &parts("/ws?token=x", &[]), true)
            .is_none());
    }
}
