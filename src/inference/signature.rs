//! Signed models: an ed25519 signature (`manifest.sig`, written by `bedside sign` with an
//! offline key) over a model version's manifest and the feature spec it names. The manifest
//! carries the sha256 of the model file, checked at every load, so the signature covers what
//! the model is, what it reads and how its output is read. With trusted keys configured
//! (`[[inference.trusted_keys]]`), a model that is unsigned, signed by an unknown key or whose
//! files changed after signing is refused at start-up and on reload (the running set keeps
//! serving); with none, signatures are not checked. The foundation model (`foundation.toml`,
//! which holds the sha256 of its model and vocabulary) is signed and checked the same way.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The signature file beside `manifest.toml`.
pub const SIGNATURE_FILE: &str = "manifest.sig";

/// What the signature is over: a fixed label and the two files' sha256, one per line.
const DOMAIN: &str = "bedside model signature v1";

/// A public key whose signatures the gateway accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// Named in each signature (`key = "…"`), so keys can be rotated.
    pub id: String,
    /// Raw ed25519 public key (32 bytes).
    pub public_key: Vec<u8>,
}

/// Why a model's signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("unsigned: no `{SIGNATURE_FILE}` beside the manifest (sign it with `bedside sign`)")]
    Unsigned,
    #[error("`{SIGNATURE_FILE}` is unreadable: {0}")]
    Malformed(String),
    #[error("signed by key `{0}`, which is not among [[inference.trusted_keys]]")]
    UnknownKey(String),
    #[error("the signature does not match: the manifest or its feature spec changed after signing, or another key signed it")]
    Mismatch,
    #[error("cannot read `{0}`")]
    Read(String),
}

/// `manifest.sig`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    /// The id of the key that signed.
    key: String,
    /// What was signed, for humans (verification recomputes both).
    manifest_sha256: String,
    features_sha256: String,
    /// Base64 of the 64-byte ed25519 signature.
    signature: String,
}

fn sha256_hex(path: &Path) -> Result<String, SignatureError> {
    let bytes =
        std::fs::read(path).map_err(|_| SignatureError::Read(path.display().to_string()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The signed message for a manifest and its feature spec.
fn payload(manifest_sha256: &str, features_sha256: &str) -> String {
    format!("{DOMAIN}\nmanifest sha256 {manifest_sha256}\nfeatures sha256 {features_sha256}\n")
}

/// Checks the signature of the model whose manifest is `manifest` and whose feature spec is
/// `features` against `keys`.
pub fn verify(manifest: &Path, features: &Path, keys: &[TrustedKey]) -> Result<(), SignatureError> {
    let sig_path = signature_path(manifest);
    let text = match std::fs::read_to_string(&sig_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SignatureError::Unsigned),
        Err(_) => return Err(SignatureError::Read(sig_path.display().to_string())),
    };
    let file: SignatureFile =
        toml::from_str(&text).map_err(|e| SignatureError::Malformed(e.message().to_owned()))?;
    let key = keys
        .iter()
        .find(|k| k.id == file.key)
        .ok_or_else(|| SignatureError::UnknownKey(file.key.clone()))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(file.signature.trim())
        .map_err(|_| SignatureError::Malformed("signature is not base64".into()))?;
    let message = payload(&sha256_hex(manifest)?, &sha256_hex(features)?);
    UnparsedPublicKey::new(&ED25519, &key.public_key)
        .verify(message.as_bytes(), &signature)
        .map_err(|_| SignatureError::Mismatch)
}

/// The load-time check every model goes through (task models and the foundation model): with
/// trusted keys configured, [`verify`] or a [`super::LoadError::Signature`] naming the model;
/// with none, nothing is checked.
pub fn check_trusted(
    manifest: &Path,
    features: &Path,
    keys: &[TrustedKey],
    (name, version): (&str, &str),
) -> Result<(), super::LoadError> {
    if keys.is_empty() {
        return Ok(());
    }
    verify(manifest, features, keys).map_err(|e| super::LoadError::Signature {
        name: name.to_owned(),
        version: version.to_owned(),
        message: e.to_string(),
    })
}

fn signature_path(manifest: &Path) -> PathBuf {
    manifest
        .parent()
        .unwrap_or(Path::new("."))
        .join(SIGNATURE_FILE)
}

/// A new ed25519 key: its PKCS#8 document (keep it offline) and its public key in base64 (for
/// `[[inference.trusted_keys]]`).
pub fn generate_key() -> Result<(Vec<u8>, String), String> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "cannot generate a key")?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| "cannot read the new key")?;
    let public = base64::engine::general_purpose::STANDARD.encode(pair.public_key().as_ref());
    Ok((pkcs8.as_ref().to_vec(), public))
}

/// Signs the model version whose manifest is `manifest` (and the feature spec it names) with
/// the PKCS#8 ed25519 key `pkcs8`, writing `manifest.sig` beside it.
pub fn sign(
    manifest: &Path,
    features: &Path,
    key_id: &str,
    pkcs8: &[u8],
) -> Result<PathBuf, String> {
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
        .map_err(|_| "the key is not a PKCS#8 ed25519 key (make one with `bedside keygen`)")?;
    let manifest_sha256 = sha256_hex(manifest).map_err(|e| e.to_string())?;
    let features_sha256 = sha256_hex(features).map_err(|e| e.to_string())?;
    let signature = pair.sign(payload(&manifest_sha256, &features_sha256).as_bytes());
    let file = SignatureFile {
        key: key_id.to_owned(),
        manifest_sha256,
        features_sha256,
        signature: base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
    };
    let text = format!(
        "# ed25519 signature of manifest.toml and its feature spec, by `bedside sign`.\n{}",
        toml::to_string(&file).map_err(|e| e.to_string())?
    );
    let path = signature_path(manifest);
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// The manifests a model folder may hold: a task model's, else the foundation model's.
pub const MANIFEST_FILES: [&str; 2] = ["manifest.toml", "foundation.toml"];

/// Signs the model version in `dir` (its `manifest.toml`, or a foundation model's
/// `foundation.toml`, and the feature spec that manifest's `features` names).
pub fn sign_version(dir: &Path, key_id: &str, pkcs8: &[u8]) -> Result<PathBuf, String> {
    let manifest = MANIFEST_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{}: no {} (not a model version folder)",
                dir.display(),
                MANIFEST_FILES.join(" or ")
            )
        })?;
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let value: toml::Value =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let features = value
        .get("features")
        .and_then(toml::Value::as_str)
        .ok_or_else(|| format!("{}: no `features` path", manifest.display()))?;
    sign(&manifest, &dir.join(features), key_id, pkcs8)
}

/// Reads a base64 public key from configuration (32 bytes once decoded).
pub fn parse_public_key(text: &str) -> Result<Vec<u8>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "not base64".to_owned())?;
    if bytes.len() != 32 {
        return Err(format!(
            "an ed25519 public key is 32 bytes, this one is {}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("manifest.toml");
        let features = dir.path().join("features.toml");
        std::fs::write(&manifest, "name = \"m\"\nsha256 = \"abc\"\n").unwrap();
        std::fs::write(&features, "window_hours = 48\n").unwrap();
        (dir, manifest, features)
    }

    #[test]
    fn a_signed_model_verifies_and_any_change_or_other_key_is_refused() {
        let (_dir, manifest, features) = model_dir();
        let (pkcs8, public) = generate_key().unwrap();
        let key = TrustedKey {
            id: "site".into(),
            public_key: parse_public_key(&public).unwrap(),
        };
        assert_eq!(
            verify(&manifest, &features, std::slice::from_ref(&key)),
            Err(SignatureError::Unsigned)
        );
        sign(&manifest, &features, "site", &pkcs8).unwrap();
        assert_eq!(
            verify(&manifest, &features, std::slice::from_ref(&key)),
            Ok(())
        );
        // Another key under the same id: a mismatch; an id nobody trusts: unknown.
        let (_, other) = generate_key().unwrap();
        let impostor = TrustedKey {
            id: "site".into(),
            public_key: parse_public_key(&other).unwrap(),
        };
        assert_eq!(
            verify(&manifest, &features, &[impostor]),
            Err(SignatureError::Mismatch)
        );
        let stranger = TrustedKey {
            id: "other".into(),
            public_key: key.public_key.clone(),
        };
        assert!(matches!(
            verify(&manifest, &features, &[stranger]),
            Err(SignatureError::UnknownKey(_))
        ));
        // The feature spec edited after signing.
        std::fs::write(&features, "window_hours = 24\n").unwrap();
        assert_eq!(
            verify(&manifest, &features, std::slice::from_ref(&key)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_foundation_folder_is_signed_through_its_own_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let (pkcs8, public) = generate_key().unwrap();
        assert!(sign_version(dir.path(), "site", &pkcs8)
            .unwrap_err()
            .contains("not a model version folder"));
        let manifest = dir.path().join("foundation.toml");
        std::fs::write(&manifest, "name = \"foundation\"\nfeatures = \"f.toml\"\n").unwrap();
        std::fs::write(dir.path().join("f.toml"), "window_hours = 48\n").unwrap();
        let sig = sign_version(dir.path(), "site", &pkcs8).unwrap();
        assert_eq!(sig, dir.path().join(SIGNATURE_FILE));
        let key = TrustedKey {
            id: "site".into(),
            public_key: parse_public_key(&public).unwrap(),
        };
        assert_eq!(
            verify(&manifest, &dir.path().join("f.toml"), &[key]),
            Ok(())
        );
    }

    #[test]
    fn public_keys_must_be_32_bytes_of_base64() {
        assert!(parse_public_key("not base64!").is_err());
        assert!(parse_public_key("AAAA").is_err());
        let (_, public) = generate_key().unwrap();
        assert_eq!(parse_public_key(&public).unwrap().len(), 32);
    }
}
