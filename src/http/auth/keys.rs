//! Verification keys built from a fetched JWK set, and which of them a JWS header selects.
//!
//! Selection is what jose libraries do (RFC 7515 §4.1.4 makes `kid` a hint, RFC 7517 §4 gives
//! `kty`, `use`, `key_ops` and `alg`): a header with a `kid` selects the key with that `kid`; a
//! header without one selects the set's *only* key that fits the header's `alg` — `kty` of the
//! algorithm's family (and the curve for EC and OKP), the JWK's `alg` equal when it declares one.
//! None, or several: refused, never guessed. Keys not meant for signatures (`use` other than
//! `sig`, `key_ops` without `verify`) and symmetric (`oct`) keys are never candidates.
//!
//! CDS Hooks 2.0 requires a `kid` on client JWTs, so only the SMART `id_token` check uses the
//! kid-less rule (OpenID Connect Core §10.1: a `kid` is needed when the set has several keys).

use std::sync::Arc;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// Which key a token's header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted<'a> {
    /// The key whose `kid` is this.
    Kid(&'a str),
    /// No `kid` in the header: the one key that fits this algorithm.
    SoleFit(Algorithm),
}

/// The key type of a JWK, as far as selection needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyType {
    Rsa,
    Ec(EllipticCurve),
    Okp(EllipticCurve),
}

/// A usable verification key from a JWK set, built once per fetch (building an RSA key from
/// its JWK components on every request would cost more than the signature check).
pub struct VerifyKey {
    /// The JWK's `kid`, when it has one.
    pub kid: Option<String>,
    /// The JWK's `alg`, when it declares one.
    pub alg: Option<KeyAlgorithm>,
    kty: KeyType,
    pub key: DecodingKey,
}

impl VerifyKey {
    /// Whether this key may verify a JWS signed with `alg`: the key type of the algorithm's
    /// family (RSA for RS*/PS*, the matching curve for ES*/EdDSA) and, when the JWK declares an
    /// `alg`, that one. HMAC never fits: symmetric keys are not loaded.
    pub fn fits(&self, alg: Algorithm) -> bool {
        use Algorithm as A;
        let family = matches!(
            (&self.kty, alg),
            (
                KeyType::Rsa,
                A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512
            ) | (KeyType::Ec(EllipticCurve::P256), A::ES256)
                | (KeyType::Ec(EllipticCurve::P384), A::ES384)
                | (KeyType::Okp(EllipticCurve::Ed25519), A::EdDSA)
        );
        family
            && self
                .alg
                .is_none_or(|declared| same_algorithm(declared, alg))
    }
}

/// `KeyAlgorithm` (a JWK's `alg`) and `Algorithm` (a JWS header's) name the same algorithm.
/// Both print their JOSE name, so the names are compared.
fn same_algorithm(declared: KeyAlgorithm, alg: Algorithm) -> bool {
    format!("{declared:?}") == format!("{alg:?}")
}

/// What selection found in a set.
pub enum Pick {
    Found(Arc<VerifyKey>),
    /// No key has the `kid`, or (no `kid`) none fits the algorithm.
    Absent,
    /// No `kid`, and more than one key fits the algorithm.
    Ambiguous,
}

/// The key of `keys` that `wanted` selects (module doc: the rule).
pub fn pick(keys: &[Arc<VerifyKey>], wanted: Wanted<'_>) -> Pick {
    match wanted {
        Wanted::Kid(kid) => keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .map_or(Pick::Absent, |k| Pick::Found(k.clone())),
        Wanted::SoleFit(alg) => {
            let mut fitting = keys.iter().filter(|k| k.fits(alg));
            match (fitting.next(), fitting.next()) {
                (Some(only), None) => Pick::Found(only.clone()),
                (None, _) => Pick::Absent,
                (Some(_), Some(_)) => Pick::Ambiguous,
            }
        }
    }
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// The signature keys of a JWK set document. Keys that do not parse (an algorithm or key
/// type `jsonwebtoken` does not know) are skipped, as jose libraries skip them, instead of
/// making the whole set unusable; `None` only when the document is not a JWK set at all.
pub fn usable_keys(document: &[u8]) -> Option<Vec<Arc<VerifyKey>>> {
    let raw: RawSet = serde_json::from_slice(document).ok()?;
    Some(
        raw.keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| verify_key(&jwk).map(Arc::new))
            .collect(),
    )
}

fn verify_key(jwk: &Jwk) -> Option<VerifyKey> {
    let for_signatures = matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    ) && jwk
        .common
        .key_operations
        .as_ref()
        .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
    if !for_signatures {
        return None;
    }
    let kty = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyType::Rsa,
        AlgorithmParameters::EllipticCurve(p) => KeyType::Ec(p.curve.clone()),
        AlgorithmParameters::OctetKeyPair(p) => KeyType::Okp(p.curve.clone()),
        // A symmetric key in a public JWK set is a mistake; HMAC is never accepted anyway.
        AlgorithmParameters::OctetKey(_) => return None,
    };
    Some(VerifyKey {
        kid: jwk.common.key_id.clone(),
        alg: jwk.common.key_algorithm,
        kty,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The public halves of tests/fixtures/keys (RSA 2048, EC P-384).
    const RSA_N: &str = "5ZMwgC_iK_yHdpGPruElS9I0gey-h286RVTb1_tL472eflTDkcHDfz6ebUZ4U22vJ5tKU-4jK_mavspWta5nL1AJ8f_MceDdkQKNt7i6ZEqnDhdA1ymbbILlApH50G2Q-Km-1_4yoQfnx9GXzxNHgHU064VrFt5zUUfXrYE31iN6g3AulYW72jcnbUJlHJ1R7Y1quxswFaLdMK0HqasKmE69oPnJpUBOuRGlbzylL68el97mLr7ckaVMgz_aOrRf5FlA_SyfX1HrwMCg_N7-Wy68oqvZN88DcZLPbdZ7J8fWi64V2CmuRz4dQ_uq5KYOzUb0R3vYogyRfDny0-Q-uQ";

    fn rsa(extra: serde_json::Value) -> serde_json::Value {
        let mut key = serde_json::json!({"kty": "RSA", "n": RSA_N, "e": "AQAB"});
        key.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        key
    }

    fn set(keys: Vec<serde_json::Value>) -> Vec<Arc<VerifyKey>> {
        usable_keys(serde_json::json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    fn found_kid(p: Pick) -> Option<String> {
        match p {
            Pick::Found(k) => Some(k.kid.clone().unwrap_or_default()),
            _ => None,
        }
    }

    #[test]
    fn a_kidless_header_selects_the_only_key_of_its_family() {
        // The SMART launcher's case: one RSA key, an RS256 id_token without `kid`.
        let keys = set(vec![rsa(serde_json::json!({"kid": "k1"}))]);
        assert_eq!(
            found_kid(pick(&keys, Wanted::SoleFit(Algorithm::RS256))).as_deref(),
            Some("k1")
        );
        // No `kid` on the JWK either.
        let keys = set(vec![rsa(serde_json::json!({}))]);
        assert!(matches!(
            pick(&keys, Wanted::SoleFit(Algorithm::PS256)),
            Pick::Found(_)
        ));
        // An RSA key cannot verify ES384.
        assert!(matches!(
            pick(&keys, Wanted::SoleFit(Algorithm::ES384)),
            Pick::Absent
        ));
    }

    #[test]
    fn declared_alg_use_and_key_ops_narrow_the_candidates() {
        let keys = set(vec![
            rsa(serde_json::json!({"kid": "rs384", "alg": "RS384"})),
            rsa(serde_json::json!({"kid": "enc", "use": "enc"})),
            rsa(serde_json::json!({"kid": "sign-only", "key_ops": ["sign"]})),
            rsa(serde_json::json!({"kid": "rs256", "alg": "RS256", "use": "sig"})),
        ]);
        // Only `rs256` fits RS256: `rs384` declares another alg, the others are not for
        // verifying signatures.
        assert_eq!(
            found_kid(pick(&keys, Wanted::SoleFit(Algorithm::RS256))).as_deref(),
            Some("rs256")
        );
        assert_eq!(keys.len(), 2, "enc and sign-only keys are not loaded");
    }

    #[test]
    fn two_fitting_keys_without_a_kid_are_ambiguous() {
        let keys = set(vec![
            rsa(serde_json::json!({"kid": "a"})),
            rsa(serde_json::json!({"kid": "b", "alg": "RS256"})),
        ]);
        assert!(matches!(
            pick(&keys, Wanted::SoleFit(Algorithm::RS256)),
            Pick::Ambiguous
        ));
        // With a kid there is nothing to choose.
        assert_eq!(
            found_kid(pick(&keys, Wanted::Kid("b"))).as_deref(),
            Some("b")
        );
        assert!(matches!(pick(&keys, Wanted::Kid("c")), Pick::Absent));
    }

    #[test]
    fn unparseable_keys_are_skipped_not_fatal() {
        let keys = set(vec![
            serde_json::json!({"kty": "RSA", "kid": "x", "alg": "RSA-OAEP-512", "n": RSA_N, "e": "AQAB"}),
            serde_json::json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
            serde_json::json!({"kty": "weird"}),
            rsa(serde_json::json!({"kid": "good"})),
        ]);
        assert_eq!(keys.len(), 1);
        assert!(usable_keys(b"[]").is_none());
        assert!(usable_keys(b"{\"keys\": []}").unwrap().is_empty());
    }
}
