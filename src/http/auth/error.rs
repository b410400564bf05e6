//! Why a client JWT was refused. Messages go to the client (401 body): they say what was
//! wrong with the token, never which keys exist or what they contain.

/// A refused client token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token in the Authorization header")]
    MissingToken,
    #[error("the Authorization header must use the Bearer scheme")]
    NotBearer,
    #[error("malformed JWT: {0}")]
    Malformed(String),
    #[error("JWT header `typ` is required and must be \"JWT\"")]
    WrongType,
    #[error("JWT header has no `kid`")]
    MissingKid,
    #[error("JWT is missing the `{0}` claim")]
    MissingClaim(&'static str),
    #[error("issuer `{0}` is not a trusted CDS client")]
    UnknownIssuer(String),
    #[error("JWT algorithm {0} is not accepted for this client")]
    AlgorithmNotAllowed(String),
    #[error("the `jku` header is not on this client's JWKS allowlist")]
    JkuNotAllowed,
    #[error("no key with the JWT's `kid` in the client's JWK set")]
    UnknownKid,
    /// A token without `kid` (allowed for SMART `id_token`s only) and several keys that fit.
    #[error("JWT has no `kid` and more than one key of the JWK set fits its algorithm")]
    AmbiguousKey,
    /// A token without `kid` and no key of the set that fits its algorithm.
    #[error("JWT has no `kid` and no key of the JWK set fits its algorithm")]
    NoFittingKey,
    #[error("the client's JWK set could not be retrieved")]
    JwksUnavailable,
    #[error("the client's key for this `kid` cannot verify this JWT")]
    UnusableKey,
    #[error("JWT signature is invalid")]
    BadSignature,
    #[error("JWT has expired")]
    Expired,
    #[error("JWT is not valid yet (`nbf`)")]
    NotYetValid,
    #[error("JWT `iat` is in the future")]
    IssuedInFuture,
    #[error("JWT lifetime (`exp` - `iat`) exceeds the accepted maximum")]
    LifetimeTooLong,
    /// `iat` or `exp` further from now than any token this gateway accepts could be.
    #[error("JWT `iat`/`exp` lie outside now ± the accepted maximum lifetime")]
    OutsideLifetimeWindow,
    #[error("JWT `aud` is not this CDS service's URL")]
    WrongAudience,
    #[error("JWT `iss` does not match the verified client")]
    WrongIssuer,
    #[error("JWT `jti` was already used")]
    Replayed,
    /// Set-up failure (the HTTP client for JWKS could not be built); not a token problem.
    #[error("authentication is unavailable")]
    Setup,
}

impl AuthError {
    /// A stable code for the JSON body and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken | Self::NotBearer => "missing_token",
            Self::Expired => "token_expired",
            Self::Replayed => "token_replayed",
            Self::JwksUnavailable | Self::Setup => "keys_unavailable",
            _ => "invalid_token",
        }
    }

    pub(super) fn from_jwt(e: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::ExpiredSignature => Self::Expired,
            K::ImmatureSignature => Self::NotYetValid,
            K::InvalidAudience => Self::WrongAudience,
            K::InvalidIssuer => Self::WrongIssuer,
            K::InvalidSignature => Self::BadSignature,
            K::MissingRequiredClaim(c) => Self::MissingClaim(match c.as_str() {
                "exp" => "exp",
                "aud" => "aud",
                "iss" => "iss",
                _ => "required claim",
            }),
            K::InvalidAlgorithm | K::InvalidAlgorithmName => {
                Self::AlgorithmNotAllowed("(key/algorithm mismatch)".into())
            }
            K::InvalidEcdsaKey | K::InvalidRsaKey(_) | K::InvalidKeyFormat => Self::UnusableKey,
            _ => Self::Malformed("token could not be decoded".into()),
        }
    }
}
