//! Signing and verifying JSON objects the Matrix way: strip `signatures` and `unsigned`,
//! canonicalise, ed25519, standard unpadded base64 under
//! `signatures[<entity>][<algorithm>:<key id>]`.

use super::canonical::{to_canonical, CanonicalError};
use super::{b64_decode, b64_encode};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde_json::{Map, Value};

/// Why signing or verification failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("only JSON objects can be signed")]
    NotAnObject,
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    #[error("no signature by {0}")]
    Missing(String),
    #[error("the signature is not valid base64 ed25519")]
    Malformed,
    #[error("the signature does not match")]
    Mismatch,
}

/// A long-term or ephemeral signing key together with the names it signs under.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    /// `ed25519:<serial>`.
    key_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key_b64())
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(key: SigningKey, key_id: impl Into<String>) -> Self {
        Self {
            key,
            key_id: key_id.into(),
        }
    }

    /// `ed25519:<serial>`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public key in standard unpadded base64, as `/pubkey/{keyId}` serves it.
    pub fn public_key_b64(&self) -> String {
        b64_encode(self.key.verifying_key().as_bytes())
    }

    /// Signs `object` in place as `entity`, keeping any signatures already present.
    pub fn sign_json(&self, entity: &str, object: &mut Value) -> Result<(), SignError> {
        let map = object.as_object_mut().ok_or(SignError::NotAnObject)?;
        let signatures = map.remove("signatures");
        let unsigned = map.remove("unsigned");
        let canonical = to_canonical(object);
        // Put the removed members back whatever happens, so the caller's object is never
        // left half-stripped.
        let map = object.as_object_mut().ok_or(SignError::NotAnObject)?;
        if let Some(unsigned) = unsigned {
            map.insert("unsigned".into(), unsigned);
        }
        let canonical = match canonical {
            Ok(c) => c,
            Err(e) => {
                if let Some(signatures) = signatures {
                    map.insert("signatures".into(), signatures);
                }
                return Err(e.into());
            }
        };
        let mut signatures = match signatures {
            Some(Value::Object(existing)) => existing,
            _ => Map::new(),
        };
        let signature = self.key.sign(canonical.as_bytes());
        let entry = signatures
            .entry(entity.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        if let Value::Object(by_key) = entry {
            by_key.insert(
                self.key_id.clone(),
                Value::String(b64_encode(&signature.to_bytes())),
            );
        }
        map.insert("signatures".into(), Value::Object(signatures));
        Ok(())
    }
}

/// Checks that `object` carries a valid signature by `entity` under `key_id`, made with
/// `key`. The object itself is not modified.
pub fn verify_json(
    object: &Value,
    entity: &str,
    key_id: &str,
    key: &VerifyingKey,
) -> Result<(), SignError> {
    let map = object.as_object().ok_or(SignError::NotAnObject)?;
    let signature = map
        .get("signatures")
        .and_then(|s| s.get(entity))
        .and_then(|s| s.get(key_id))
        .and_then(Value::as_str)
        .ok_or_else(|| SignError::Missing(format!("{entity} with {key_id}")))?;
    let bytes = b64_decode(signature).ok_or(SignError::Malformed)?;
    let signature = Signature::from_slice(&bytes).map_err(|_| SignError::Malformed)?;
    let mut stripped = map.clone();
    stripped.remove("signatures");
    stripped.remove("unsigned");
    let canonical = to_canonical(&Value::Object(stripped))?;
    key.verify(canonical.as_bytes(), &signature)
        .map_err(|_| SignError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The spec appendix's signing test key: seed
    /// `YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1`, key id `ed25519:1`, entity `domain`.
    fn spec_signer() -> Signer {
        let seed = b64_decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1").unwrap();
        let seed: [u8; 32] = seed.try_into().unwrap();
        Signer::new(SigningKey::from_bytes(&seed), "ed25519:1")
    }

    #[test]
    fn spec_vector_empty_object() {
        let mut v = json!({});
        spec_signer().sign_json("domain", &mut v).unwrap();
        assert_eq!(
            v,
            json!({"signatures": {"domain": {"ed25519:1":
                "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"}}})
        );
    }

    #[test]
    fn spec_vector_object_with_data() {
        let mut v = json!({"one": 1, "two": "Two"});
        spec_signer().sign_json("domain", &mut v).unwrap();
        assert_eq!(
            v,
            json!({"one": 1, "two": "Two", "signatures": {"domain": {"ed25519:1":
                "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}}})
        );
    }

    #[test]
    fn unsigned_and_existing_signatures_are_kept_and_not_covered() {
        let signer = spec_signer();
        let mut v = json!({"one": 1, "unsigned": {"age": 5},
            "signatures": {"other.org": {"ed25519:x": "abc"}}});
        signer.sign_json("domain", &mut v).unwrap();
        assert_eq!(v["unsigned"], json!({"age": 5}));
        assert_eq!(v["signatures"]["other.org"]["ed25519:x"], "abc");
        // Same signature as the bare object: unsigned and signatures are not covered.
        let mut bare = json!({"one": 1});
        signer.sign_json("domain", &mut bare).unwrap();
        assert_eq!(
            v["signatures"]["domain"]["ed25519:1"],
            bare["signatures"]["domain"]["ed25519:1"]
        );
        verify_json(&v, "domain", "ed25519:1", &signer.verifying_key()).unwrap();
    }

    #[test]
    fn verification_catches_tampering_and_bad_input() {
        let signer = spec_signer();
        let mut v = json!({"mxid": "@a:b", "ts": 1});
        signer.sign_json("domain", &mut v).unwrap();
        let key = signer.verifying_key();
        verify_json(&v, "domain", "ed25519:1", &key).unwrap();
        let mut tampered = v.clone();
        tampered["mxid"] = json!("@evil:b");
        assert_eq!(
            verify_json(&tampered, "domain", "ed25519:1", &key),
            Err(SignError::Mismatch)
        );
        assert!(matches!(
            verify_json(&v, "other", "ed25519:1", &key),
            Err(SignError::Missing(_))
        ));
        let mut garbled = v.clone();
        garbled["signatures"]["domain"]["ed25519:1"] = json!("!!");
        assert_eq!(
            verify_json(&garbled, "domain", "ed25519:1", &key),
            Err(SignError::Malformed)
        );
        assert_eq!(
            signer.sign_json("domain", &mut json!([1])),
            Err(SignError::NotAnObject)
        );
        let mut float = json!({"f": 1.5});
        assert!(signer.sign_json("domain", &mut float).is_err());
        assert_eq!(float, json!({"f": 1.5}));
    }
}
