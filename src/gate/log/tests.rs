//! The two renderings of each hot log line, held to the same output.
use super::*;

/// Differential: the hand-built `[ws] unauthorized` line is the line tracing prints.
#[test]
pub(super) fn refused_line_matches_the_event() {
    let fp = Fingerprint::of(b"wrong-token");
    let unreadable = "no credential loaded: credential file /s/openclaw.json cannot be read: permission denied (gatewarden runs as uid 65532, the file is owned by uid 1000 mode 0600)";
    for (remote, presented, generation, source, path, detail) in [
        (
            "10.1.2.3:40000",
            Some(fp),
            Some(7),
            Some(TokenSource::Header),
            "/ws",
            None,
        ),
        ("[2001:db8::1]:443", None, None, None, "/", None),
        (
            "127.0.0.1:9",
            Some(fp),
            Some(0),
            Some(TokenSource::Query),
            "/ws?a=1&token=REDACTED",
            Some(unreadable),
        ),
    ] {
        let uri: ::http::Uri = path.parse().unwrap();
        let line = Refused {
            conn: Uuid::from_u128(0x5f0c1a2b_0000_4000_8000_00000000beef),
            remote: remote.parse().unwrap(),
            reason: Reason::TokenMismatch,
            presented,
            generation,
            source,
            uri: &uri,
            creds: &Credentials::default(),
            detail,
        };
        let path = line.path();
        let ours = same_both_ways(
            tracing::Level::WARN,
            "[ws] unauthorized",
            |l| line.fields(l, &path),
            || line.event(&path),
        );
        assert!(ours.contains("reason=token_mismatch"), "{ours}");
    }
}

/// Renders `line` both ways and compares them past the timestamp (27 bytes), which
/// the two took at different moments.
fn same_both_ways(
    level: tracing::Level,
    message: &str,
    fields: impl FnOnce(&mut crate::logging::Line),
    event: impl FnOnce(),
) -> String {
    let theirs = crate::logging::tests::printed(event);
    let mut ours = String::new();
    crate::logging::render_line(level, message, fields, |text| {
        ours.push_str(std::str::from_utf8(text).unwrap())
    });
    assert_eq!(ours[27..], theirs[27..], "\nours:   {ours}theirs: {theirs}");
    ours
}

/// Differential: the hand-built `[ws] connected` line is the line tracing prints.
#[test]
fn connected_line_matches_the_event() {
    let plain = Credential::new(b"token-one", std::path::Path::new("/s/token").into());
    let mut named = Credential::new(
        b"token-two",
        std::path::Path::new("/home/node/.openclaw/openclaw.json").into(),
    );
    named.client = Some("laptop".into());
    let who = Who {
        client_id: Some("cli".into()),
        scopes: Some("operator.read,operator.write".into()),
        ..Who::default()
    };
    for (remote, source, credential, who) in [
        ("10.1.2.3:40000", TokenSource::Header, &plain, None),
        (
            "[2001:db8::1]:443",
            TokenSource::FirstMessage,
            &named,
            Some(&who),
        ),
    ] {
        let line = Connected {
            conn: Uuid::from_u128(0x5f0c1a2b_0000_4000_8000_00000000beef),
            remote: remote.parse().unwrap(),
            source,
            credential,
            who,
        };
        let ours = same_both_ways(
            tracing::Level::INFO,
            "[ws] connected",
            |l| line.fields(l),
            || line.event(),
        );
        assert!(ours.contains(&format!("presented={}", Fp(Some(credential.fingerprint)))));
    }
}

/// Differential: the hand-built `[ws] closed` line is the line tracing prints, for each
/// way a tunnel ends (a close from either side, gatewarden's own, none, an error).
#[test]
fn closed_line_matches_the_event() {
    use crate::relay::{Outcome, Side};
    use crate::ws::Close;
    let close = |side, code, reason: &str| {
        Some((
            side,
            Close {
                code,
                reason: reason.into(),
            },
        ))
    };
    let outcomes = [
        Outcome {
            bytes_in: 120,
            bytes_out: 4096,
            close: close(Side::Client, Some(1000), ""),
            ..Outcome::default()
        },
        Outcome {
            close: close(
                Side::Upstream,
                Some(1008),
                "unauthorized: gateway token mismatch",
            ),
            ..Outcome::default()
        },
        Outcome {
            close: close(Side::Proxy, Some(1001), "token revoked \"quoted\""),
            ..Outcome::default()
        },
        Outcome {
            close: close(Side::Client, None, ""),
            ..Outcome::default()
        },
        Outcome {
            error: Some(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            ..Outcome::default()
        },
    ];
    let who = Who {
        client: Some("phone".into()),
        by_gateway: true,
        client_id: Some("openclaw-node".into()),
        client_version: Some("0.14.0".into()),
        scopes: Some("operator.read".into()),
        device_token: None,
    };
    for (i, outcome) in outcomes.iter().enumerate() {
        let default = Who::default();
        let line = Closed {
            conn: Uuid::from_u128(0x5f0c1a2b_0000_4000_8000_00000000beef),
            remote: "127.0.0.1:9".parse().unwrap(),
            duration_ms: 1234 * i as u64,
            outcome,
            who: if i % 2 == 0 { &who } else { &default },
            early: (i % 3 == 1).then_some(("went away before its first message", "client")),
        };
        let ours = same_both_ways(
            tracing::Level::INFO,
            "[ws] closed",
            |l| line.fields(l),
            || line.event(),
        );
        assert!(ours.contains("code="), "{ours}");
    }
}
