//! JWT bearer tokens (#41) through the real server: a token signed by a key of the `jwks`
//! file passes and names its client; each bad token is refused with its reason; a tunnel
//! admitted with a token is closed at the token's `exp`; a broken key set keeps the last
//! good one.

use crate::common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use futures_util::SinkExt;
use gatewarden::config::{CredentialFormat, CredentialSource};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

pub(crate) struct Signer {
    enc: EncodingKey,
    jwk: Value,
    kid: String,
}

pub(crate) fn signer(kid: &str) -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    Signer {
        enc: EncodingKey::from_ec_der(&kp.serialize_der()),
        jwk: json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..]),
                    "kid": kid, "alg": "ES256"}),
        kid: kid.into(),
    }
}

impl Signer {
    fn sign(&self, sub: &str, aud: &str, exp_in: i64) -> String {
        self.sign_as("https://idp.test", sub, aud, exp_in)
    }

    /// A token of issuer `iss`.
    pub(crate) fn sign_as(&self, iss: &str, sub: &str, aud: &str, exp_in: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        let claims = json!({"iss": iss, "aud": aud, "sub": sub, "exp": now + exp_in});
        encode(&h, &claims, &self.enc).unwrap()
    }
}

/// The `fp:` of a token, as log lines show it.
pub(crate) fn fingerprint(token: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(token.as_bytes());
    format!("fp:{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
}

pub(crate) fn key_set(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

async fn start_jwt(dir: &std::path::Path, set: &str) -> (Running, std::path::PathBuf) {
    start_jwt_with(dir, set, |_| {}).await
}

async fn start_jwt_with(
    dir: &std::path::Path,
    set: &str,
    tweak: impl FnOnce(&mut gatewarden::config::Config),
) -> (Running, std::path::PathBuf) {
    let up = start_upstream().await;
    let jwks = write_file(dir, "jwks.json", set);
    let mut config = config_for(up.addr, &jwks);
    config.credentials.sources = vec![CredentialSource {
        format: CredentialFormat::Jwks,
        issuer: Some("https://idp.test".into()),
        audience: Some("gatewarden-test".into()),
        leeway: Some(gatewarden::config::Secs(std::time::Duration::ZERO)),
        ..CredentialSource::plain(&jwks)
    }];
    tweak(&mut config);
    (serve(config).await, jwks)
}

#[tokio::test]
async fn a_signed_token_passes_and_names_its_client() {
    let dir = tempfile::tempdir().unwrap();
    let s = signer("k1");
    let (gw, _) = start_jwt(dir.path(), &key_set(&[&s])).await;
    let user = format!("alice-{}", &random_token()[..8]);
    let token = s.sign(&user, "gatewarden-test", 300);
    let mut ws = ws_bearer(gw.addr, &token).await;
    assert_echo(&mut ws, "hello").await;
    let line = wait_log(&["[ws] connected", &format!("client={user}")]).await;
    assert!(!line.contains(&token), "{line}");
    assert!(!logs().contains(&token), "a JWT reached the log");
}

#[tokio::test]
async fn each_bad_token_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let s = signer("k1");
    let (gw, _) = start_jwt(dir.path(), &key_set(&[&s])).await;
    let cases = [
        (s.sign("bob", "another-app", 300), "jwt_wrong_audience"),
        (s.sign("bob", "gatewarden-test", -60), "jwt_expired"),
        (
            signer("k1").sign("bob", "gatewarden-test", 300),
            "jwt_bad_signature",
        ),
        (
            signer("k9").sign("bob", "gatewarden-test", 300),
            "jwt_unknown_key",
        ),
    ];
    for (token, reason) in cases {
        // `auth.reject = "close"` (the default): the upgrade completes, then 1008.
        let auth = format!("Bearer {token}");
        let (mut ws, _) = ws_connect(gw.addr, "/ws", &[("authorization", &auth)])
            .await
            .unwrap();
        match next_msg(&mut ws).await {
            Some(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::Policy, "{reason}"),
            _ => panic!("{reason}: no close frame"),
        }
        let fp = fingerprint(&token);
        wait_log(&["[ws] unauthorized", &format!("reason={reason}"), &fp]).await;
    }
    assert!(!logs().contains("eyJ"), "a JWT reached the log");
}

/// The tunnel a JWT opened is closed when the token expires, with 1008 `token expired`.
#[tokio::test]
async fn a_tunnel_closes_at_its_tokens_exp() {
    let dir = tempfile::tempdir().unwrap();
    let s = signer("k1");
    let (gw, _) = start_jwt(dir.path(), &key_set(&[&s])).await;
    let user = format!("carol-{}", &random_token()[..8]);
    let mut ws = ws_bearer(gw.addr, &s.sign(&user, "gatewarden-test", 2)).await;
    assert_echo(&mut ws, "before exp").await;
    match next_msg(&mut ws).await {
        Some(Message::Close(Some(f))) => {
            assert_eq!(f.code, CloseCode::Policy);
            assert_eq!(f.reason.to_string(), "token expired");
        }
        other => panic!("expected the close at exp, got {other:?}"),
    }
    wait_log(&[
        "[ws] closing",
        "reason=token_expired",
        &format!("client={user}"),
    ])
    .await;
}

/// A key set rewritten into something unusable keeps the last good keys in force.
#[tokio::test]
async fn a_broken_key_set_keeps_the_last_good_keys() {
    let dir = tempfile::tempdir().unwrap();
    let s = signer("k1");
    let (gw, jwks) = start_jwt(dir.path(), &key_set(&[&s])).await;
    let tmp = jwks.with_extension("tmp");
    std::fs::write(&tmp, r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).unwrap();
    std::fs::rename(&tmp, &jwks).unwrap();
    wait_log(&[
        "[reload] credentials rejected",
        &jwks.display().to_string(),
        "no usable key",
    ])
    .await;
    let mut ws = ws_bearer(gw.addr, &s.sign("dave", "gatewarden-test", 300)).await;
    assert_echo(&mut ws, "still in").await;
}

/// OpenClaw clients carry their token in `connect`'s `auth.token`: a JWT there is judged
/// as at the upgrade (the frame goes on to the gateway, here an echo), a bad one refused.
#[tokio::test]
async fn a_jwt_in_the_first_frame_is_judged_as_at_the_upgrade() {
    use gatewarden::config::TokenSource;
    let dir = tempfile::tempdir().unwrap();
    let s = signer("k1");
    let (gw, _) = start_jwt_with(dir.path(), &key_set(&[&s]), |c| {
        c.auth.sources = Some(vec![TokenSource::FirstMessage]);
    })
    .await;
    let connect = |token: &str| {
        json!({"type": "req", "id": "1", "method": "connect",
               "params": {"minProtocol": 3, "maxProtocol": 3, "auth": {"token": token}}})
        .to_string()
    };
    let user = format!("erin-{}", &random_token()[..8]);
    let (mut ws, _) = ws_connect(gw.addr, "/ws", &[]).await.unwrap();
    let frame = connect(&s.sign(&user, "gatewarden-test", 300));
    ws.send(Message::text(frame.clone())).await.unwrap();
    assert_eq!(next_msg(&mut ws).await, Some(Message::text(frame)));
    wait_log(&["[ws] connected", &format!("client={user}")]).await;

    let (mut ws, _) = ws_connect(gw.addr, "/ws", &[]).await.unwrap();
    let stale = s.sign("frank", "gatewarden-test", -60);
    ws.send(Message::text(connect(&stale))).await.unwrap();
    // The gateway-shaped error answer, then the close.
    match next_msg(&mut ws).await {
        Some(Message::Text(t)) => assert!(t.contains(r#""authReason":"jwt_expired""#), "{t}"),
        other => panic!("expected the error answer, got {other:?}"),
    }
    match next_msg(&mut ws).await {
        Some(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::Policy),
        other => panic!("expected the close, got {other:?}"),
    }
    wait_log(&[
        "[ws] unauthorized",
        "reason=jwt_expired",
        &fingerprint(&stale),
    ])
    .await;
}
