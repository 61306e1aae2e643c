//! The `jwks` kind against tokens signed here (ES256 keys from rcgen): each check refuses
//! with its own reason, and a good token names its client and expires with it.

use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;
use crate::config::{CredentialFormat, CredentialSource};

/// A signing key and its public JWK.
pub(crate) struct Signer {
    enc: EncodingKey,
    pub(crate) jwk: Value,
    kid: String,
}

pub(crate) fn signer(kid: &str) -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    Signer {
        enc: EncodingKey::from_ec_der(&kp.serialize_der()),
        jwk: json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..]),
                    "kid": kid, "use": "sig", "alg": "ES256"}),
        kid: kid.into(),
    }
}

impl Signer {
    pub(crate) fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        encode(&h, claims, &self.enc).unwrap()
    }
}

fn source() -> CredentialSource {
    CredentialSource {
        format: CredentialFormat::Jwks,
        issuer: Some("https://idp.example".into()),
        audience: Some("gatewarden".into()),
        required_claims: Some(vec!["groups".into()]),
        ..CredentialSource::plain("/run/jwks.json")
    }
}

fn keys(signers: &[&Signer]) -> Arc<JwtKeys> {
    let set = json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()});
    let origin: Arc<Path> = Arc::from(Path::new("/run/jwks.json"));
    let (entry, warnings) = parse(&source(), &set.to_string(), &origin).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    entry.jwt.unwrap()
}

fn claims(exp_in: i64) -> Value {
    json!({"iss": "https://idp.example", "aud": "gatewarden", "sub": "alice",
           "groups": ["ops"], "exp": (now_secs() as i64 + exp_in)})
}

#[test]
fn a_good_token_names_its_client_and_expires_with_it() {
    let s = signer("k1");
    let c = keys(&[&s]).verify(&s.sign(&claims(300))).unwrap();
    assert_eq!(c.who(), "alice");
    let left = c
        .expires
        .unwrap()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(left.as_secs() > 290 && left.as_secs() <= 300, "{left:?}");
}

#[test]
fn each_check_refuses_with_its_own_reason() {
    let s = signer("k1");
    let other = signer("k1");
    let k = keys(&[&s]);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(300);
        f(&mut c);
        s.sign(&c)
    };
    let cases: Vec<(String, Reason)> = vec![
        (s.sign(&claims(-120)), Reason::JwtExpired),
        (
            with(&|c| c["nbf"] = json!(now_secs() + 600)),
            Reason::JwtNotYetValid,
        ),
        (
            with(&|c| c["iss"] = json!("https://evil.example")),
            Reason::JwtWrongIssuer,
        ),
        (
            with(&|c| c["aud"] = json!("another-app")),
            Reason::JwtWrongAudience,
        ),
        (
            with(&|c| {
                c.as_object_mut()
                    .unwrap()
                    .remove("groups")
                    .map(drop)
                    .unwrap_or(())
            }),
            Reason::JwtMissingClaim,
        ),
        (
            with(&|c| {
                c.as_object_mut()
                    .unwrap()
                    .remove("exp")
                    .map(drop)
                    .unwrap_or(())
            }),
            Reason::JwtMissingClaim,
        ),
        (other.sign(&claims(300)), Reason::JwtBadSignature),
        (signer("k2").sign(&claims(300)), Reason::JwtUnknownKey),
        (
            "eyJhbGciOiJFUzI1NiJ9.e30.AAAA".into(),
            Reason::JwtBadSignature,
        ),
        ("eyJ.not.ajwt".into(), Reason::JwtMalformed),
    ];
    for (token, want) in cases {
        assert_eq!(k.verify(&token).unwrap_err(), want, "{token}");
    }
}

/// `none` and HS256 are never accepted, even with a key set that an HMAC would verify
/// against if the public key were taken as its secret (the HS/RS confusion).
#[test]
fn none_and_hmac_are_refused() {
    let s = signer("k1");
    let k = keys(&[&s]);
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "k1"})),
        b64(&claims(300))
    );
    assert_eq!(k.verify(&none).unwrap_err(), Reason::JwtMalformed);
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let secret = serde_json::to_vec(&s.jwk).unwrap();
    let hs = encode(
        &h,
        &claims(300),
        &EncodingKey::from_secret(&secret).unwrap(),
    )
    .unwrap();
    assert_eq!(k.verify(&hs).unwrap_err(), Reason::JwtBadAlgorithm);
}

#[test]
fn a_set_without_a_usable_key_is_an_error_naming_the_file() {
    let origin: Arc<Path> = Arc::from(Path::new("/run/jwks.json"));
    let oct = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}).to_string();
    let e = parse(&source(), &oct, &origin).unwrap_err().to_string();
    assert!(
        e.contains("/run/jwks.json") && e.contains("no usable key"),
        "{e}"
    );
    let e = parse(&source(), "{not json", &origin)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a JSON Web Key Set"), "{e}");
    let bad_alg = CredentialSource {
        algorithms: Some(vec!["HS256".into()]),
        ..source()
    };
    let set = json!({"keys": [signer("k").jwk]}).to_string();
    let e = parse(&bad_alg, &set, &origin).unwrap_err().to_string();
    assert!(e.contains("\"HS256\" is not allowed"), "{e}");
}

/// The entry that carries a key set matches no presented token, not even the set's text.
#[test]
fn the_key_set_itself_is_no_token() {
    let s = signer("k1");
    let set = json!({"keys": [s.jwk.clone()]}).to_string();
    let origin: Arc<Path> = Arc::from(Path::new("/run/jwks.json"));
    let (entry, _) = parse(&source(), &set, &origin).unwrap();
    assert!(!entry.matches(&super::super::Presented::new(set.as_bytes())));
}
