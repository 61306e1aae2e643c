//! Why a client was refused, and every rendering of it: the HTTP status, the log name (the OpenClaw
//! gateway's own `authReason` values, so `grep reason=token_mismatch` works the same in front
//! of and behind gatewarden), the close code and text, and the gateway-shaped error code.

use std::fmt;

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    TokenMissing,
    TokenMismatch,
    /// The first frame was not a JSON text frame carrying a request.
    FirstMessageInvalid,
    /// No first frame within `auth.first_message_timeout`.
    FirstMessageTimeout,
    /// The first frame exceeded `auth.first_message_max_bytes`.
    FirstMessageTooLarge,
    /// The first frame broke RFC 6455 itself (reserved bits no extension defines).
    ProtocolError,
    /// Injection would have to rewrite the token of a device-signed `connect`.
    TokenRewriteRefused,
    /// The token was valid in an earlier generation (rotated away, grace over): the client
    /// kept a token from before a restart or rotation.
    TokenStale,
    /// A live connection's token stopped being valid (`auth.on_revoke = "close"`).
    TokenRevoked,
    /// The browser Origin is not in `auth.allowed_origins` (cross-site WebSocket hijacking).
    OriginNotAllowed,
    /// Too many failed attempts from this client IP: refused without looking at the token.
    RateLimited,
    /// No credential is loaded at all (a file not there yet, unreadable, holding no token):
    /// no token can pass, and it is not the client's fault. The log's `detail` says why.
    CredentialUnavailable,
    /// One source carries two different tokens (two `Authorization` headers, two cookies or
    /// query parameters of the same name, two token subprotocols): which one the client meant
    /// is a guess, and the upstream might guess differently.
    TokenAmbiguous,
    /// The `connect` asks for a role or scope outside its credential's `roles`/`scopes`.
    ScopeNotAllowed,
    /// `upstream_auth.inject = "trusted_proxy"` names the client on the upstream upgrade, so
    /// the client must be known by then: a token only in the first frame comes too late, and
    /// a credential without a name has nothing to say.
    IdentityRequired,
    /// A live connection's signed token (a JWT) reached its `exp`.
    TokenExpired,
    /// A JWT past its `exp` (beyond the leeway).
    JwtExpired,
    /// A JWT before its `nbf` (beyond the leeway).
    JwtNotYetValid,
    /// A JWT whose signature does not verify with the key its `kid` names.
    JwtBadSignature,
    /// A JWT whose `iss` is not the configured `issuer`.
    JwtWrongIssuer,
    /// A JWT whose `aud` does not hold the configured `audience`.
    JwtWrongAudience,
    /// A JWT without `exp`, its name claim, or one of `required_claims`.
    JwtMissingClaim,
    /// A JWT signed with an algorithm outside `algorithms` (`none`, HS256, ...).
    JwtBadAlgorithm,
    /// A JWT whose `kid` is in no loaded key set.
    JwtUnknownKey,
    /// Three dot-separated parts that are no JWT (bad base64url or JSON).
    JwtMalformed,
}

impl Reason {
    /// Whether a refusal for this reason counts against the client's IP as a guess. A
    /// token signed by a key gatewarden has not fetched yet is what every client presents
    /// right after the issuer rotates its keys (and all of them may share one address),
    /// and guessing a signature is hopeless anyway.
    pub(crate) fn is_guess(self) -> bool {
        !matches!(self, Reason::JwtUnknownKey | Reason::CredentialUnavailable)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TokenMissing => "token_missing",
            Reason::TokenMismatch => "token_mismatch",
            Reason::FirstMessageInvalid => "first_message_invalid",
            Reason::FirstMessageTimeout => "first_message_timeout",
            Reason::FirstMessageTooLarge => "first_message_too_large",
            Reason::ProtocolError => "protocol_error",
            Reason::TokenRewriteRefused => "token_rewrite_refused",
            Reason::TokenStale => "token_stale",
            Reason::TokenRevoked => "token_revoked",
            Reason::OriginNotAllowed => "origin_not_allowed",
            Reason::RateLimited => "rate_limited",
            Reason::TokenAmbiguous => "token_ambiguous",
            Reason::CredentialUnavailable => "credential_unavailable",
            Reason::ScopeNotAllowed => "scope_not_allowed",
            Reason::IdentityRequired => "identity_required",
            Reason::TokenExpired => "token_expired",
            Reason::JwtExpired => "jwt_expired",
            Reason::JwtNotYetValid => "jwt_not_yet_valid",
            Reason::JwtBadSignature => "jwt_bad_signature",
            Reason::JwtWrongIssuer => "jwt_wrong_issuer",
            Reason::JwtWrongAudience => "jwt_wrong_audience",
            Reason::JwtMissingClaim => "jwt_missing_claim",
            Reason::JwtBadAlgorithm => "jwt_bad_algorithm",
            Reason::JwtUnknownKey => "jwt_unknown_key",
            Reason::JwtMalformed => "jwt_malformed",
        }
    }

    /// The close reason the OpenClaw gateway itself sends, so clients' existing error
    /// handling (which matches "token mismatch" / "token missing") keeps working.
    pub fn close_text(self) -> &'static str {
        match self {
            Reason::TokenMissing => {
                "unauthorized: gateway token missing (provide gateway auth token)"
            }
            // A stale token is a mismatch to the client: keep the gateway's words, which
            // clients match on; the log says `token_stale`.
            Reason::TokenMismatch | Reason::TokenStale => {
                "unauthorized: gateway token mismatch (provide gateway auth token)"
            }
            // Still "token mismatch": what clients match on.
            Reason::CredentialUnavailable => {
                "unauthorized: gateway token mismatch (gatewarden has no gateway token loaded yet; see its log)"
            }
            Reason::TokenRevoked => "token revoked",
            Reason::OriginNotAllowed => "origin not allowed",
            Reason::RateLimited => "rate_limited: too many failed attempts, retry later",
            Reason::TokenAmbiguous => "unauthorized: more than one gateway token presented",
            Reason::FirstMessageInvalid => "invalid connect: expected a JSON connect request",
            Reason::FirstMessageTimeout => "connect timeout: no connect request received",
            Reason::FirstMessageTooLarge => "connect request too large",
            Reason::ProtocolError => "invalid WebSocket frame",
            Reason::TokenRewriteRefused => {
                "unauthorized: device-signed connect must carry the gateway token (proxy cannot rewrite it)"
            }
            Reason::ScopeNotAllowed => {
                "unauthorized: role or scope not allowed for this client"
            }
            Reason::IdentityRequired => {
                "unauthorized: a named token is needed at the upgrade (header, query, cookie), not only in connect"
            }
            Reason::TokenExpired => "token expired",
            Reason::JwtExpired => "unauthorized: token expired",
            Reason::JwtNotYetValid => "unauthorized: token not yet valid",
            Reason::JwtBadSignature => "unauthorized: token signature invalid",
            Reason::JwtWrongIssuer => "unauthorized: token from another issuer",
            Reason::JwtWrongAudience => "unauthorized: token for another audience",
            Reason::JwtMissingClaim => "unauthorized: token lacks a required claim",
            Reason::JwtBadAlgorithm => "unauthorized: token algorithm not allowed",
            Reason::JwtUnknownKey => "unauthorized: token signed by an unknown key",
            Reason::JwtMalformed => "unauthorized: malformed token",
        }
    }

    /// The HTTP status of a refused request: 429 when throttled, 403 for a foreign Origin,
    /// 503 while nothing is loaded (not the client's fault), else 401.
    pub fn http_status(self) -> http::StatusCode {
        match self {
            Reason::RateLimited => http::StatusCode::TOO_MANY_REQUESTS,
            Reason::OriginNotAllowed => http::StatusCode::FORBIDDEN,
            Reason::CredentialUnavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::UNAUTHORIZED,
        }
    }

    /// WebSocket close code: 1009 for a too-big message, 1002 for a frame that breaks the
    /// protocol, 1008 (policy) otherwise.
    pub fn close_code(self) -> u16 {
        match self {
            Reason::FirstMessageTooLarge => 1009,
            Reason::ProtocolError => 1002,
            _ => 1008,
        }
    }

    /// `error.details.code` of the gateway-shaped error response.
    pub fn detail_code(self) -> &'static str {
        match self {
            Reason::TokenMissing => "AUTH_TOKEN_MISSING",
            Reason::TokenMismatch | Reason::TokenStale | Reason::CredentialUnavailable => {
                "AUTH_TOKEN_MISMATCH"
            }
            Reason::TokenRevoked => "AUTH_TOKEN_REVOKED",
            Reason::OriginNotAllowed => "ORIGIN_NOT_ALLOWED",
            Reason::RateLimited => "RATE_LIMITED",
            Reason::TokenAmbiguous => "AUTH_TOKEN_AMBIGUOUS",
            Reason::FirstMessageInvalid => "INVALID_CONNECT",
            Reason::FirstMessageTimeout => "CONNECT_TIMEOUT",
            Reason::FirstMessageTooLarge => "CONNECT_TOO_LARGE",
            Reason::ProtocolError => "PROTOCOL_ERROR",
            Reason::TokenRewriteRefused => "AUTH_TOKEN_REWRITE_REFUSED",
            Reason::ScopeNotAllowed => "AUTH_SCOPE_NOT_ALLOWED",
            Reason::IdentityRequired => "AUTH_IDENTITY_REQUIRED",
            Reason::TokenExpired | Reason::JwtExpired => "AUTH_TOKEN_EXPIRED",
            Reason::JwtNotYetValid
            | Reason::JwtBadSignature
            | Reason::JwtWrongIssuer
            | Reason::JwtWrongAudience
            | Reason::JwtMissingClaim
            | Reason::JwtBadAlgorithm
            | Reason::JwtUnknownKey
            | Reason::JwtMalformed => "AUTH_TOKEN_INVALID",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
