//! The demo EHR as a CDS client: a key pair made fresh at each start (ES384, P-384), its JWKS,
//! and the client JWT it signs for every call to bedside, as the CDS Hooks 2.0 spec has an EHR
//! do (`iss`, `aud` = the service URL, `exp` ≤ 5 min, `jti`, `jku` in the header). bedside
//! trusts this key only because `bedside demo` configures it so; `serve` never does.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P384_SHA384_FIXED_SIGNING};
use serde_json::{json, Value};

/// The demo EHR's signing identity.
pub struct DemoClient {
    /// `iss` of its JWTs (the EHR's origin).
    pub iss: String,
    /// Where its public key is served.
    pub jwks_url: String,
    kid: String,
    key: EncodingKey,
    jwks: Value,
}

impl DemoClient {
    /// A fresh P-384 key for `iss`, published at `jwks_url`.
    pub fn generate(iss: &str, jwks_url: &str) -> Result<Self, String> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
            .map_err(|_| "cannot generate the demo's P-384 key".to_owned())?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| "cannot read the demo's P-384 key".to_owned())?;
        // Uncompressed point: 0x04 ‖ x (48 bytes) ‖ y (48 bytes).
        let point = pair.public_key().as_ref();
        if point.len() != 97 {
            return Err("unexpected P-384 public key length".into());
        }
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let kid = format!(
            "bedside-demo-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-384", "alg": "ES384", "use": "sig", "kid": kid,
            "x": b64.encode(&point[1..49]), "y": b64.encode(&point[49..97]),
        }]});
        Ok(Self {
            iss: iss.to_owned(),
            jwks_url: jwks_url.to_owned(),
            kid,
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwks,
        })
    }

    /// The JWKS document (public key only).
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// `Authorization` header value for one call to `audience` (the service's URL).
    pub fn bearer(&self, audience: &str) -> Result<String, String> {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "iss": self.iss, "sub": self.iss, "aud": audience, "iat": now, "exp": now + 300,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        let mut header = Header::new(Algorithm::ES384);
        header.kid = Some(self.kid.clone());
        header.jku = Some(self.jwks_url.clone());
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(|jwt| format!("Bearer {jwt}"))
            .map_err(|e| format!("cannot sign the client JWT: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_verifies_with_the_published_key() {
        let client = DemoClient::generate("http://127.0.0.1:1", "http://127.0.0.1:1/jwks").unwrap();
        let bearer = client.bearer("http://gw/cds-services/x").unwrap();
        let jwt = bearer.strip_prefix("Bearer ").unwrap();
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(client.jwks()["keys"][0].clone()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES384);
        validation.set_audience(&["http://gw/cds-services/x"]);
        let data = jsonwebtoken::decode::<Value>(jwt, &key, &validation).unwrap();
        assert_eq!(data.claims["iss"], "http://127.0.0.1:1");
        assert_eq!(data.header.jku.as_deref(), Some("http://127.0.0.1:1/jwks"));
    }
}
