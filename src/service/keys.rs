//! The server's long-term signing key as the API sees it: lookup by key id, validity of
//! a public key, and signing of JSON objects under `server.name`.

use crate::crypto::sign::{SignError, Signer};
use crate::crypto::{b64_decode, b64_encode};
use serde_json::Value;

#[derive(Debug)]
pub struct Keys {
    signer: Signer,
    /// The name signatures are made under (`server.name`).
    server_name: String,
    /// Raw bytes of the public key, for comparisons whatever the base64 flavour.
    public_bytes: [u8; 32],
}

impl Keys {
    pub fn new(signer: Signer, server_name: impl Into<String>) -> Self {
        let public_bytes = signer.verifying_key().to_bytes();
        Self {
            signer,
            server_name: server_name.into(),
            public_bytes,
        }
    }

    pub fn key_id(&self) -> &str {
        self.signer.key_id()
    }

    /// The public key for `key_id` in unpadded base64, if we have that key.
    pub fn public_key(&self, key_id: &str) -> Option<String> {
        (key_id == self.signer.key_id()).then(|| b64_encode(&self.public_bytes))
    }

    /// Whether `public_key` (any base64 flavour) is one of our long-term keys.
    pub fn is_valid(&self, public_key: &str) -> bool {
        b64_decode(public_key.trim()).is_some_and(|bytes| bytes == self.public_bytes)
    }

    /// Signs `object` in place as this server.
    pub fn sign(&self, object: &mut Value) -> Result<(), SignError> {
        self.signer.sign_json(&self.server_name, object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::sign::verify_json;
    use ed25519_dalek::SigningKey;
    use serde_json::json;

    fn keys() -> Keys {
        Keys::new(
            Signer::new(SigningKey::from_bytes(&[9; 32]), "ed25519:0"),
            "id.example.org",
        )
    }

    #[test]
    fn lookups_and_validity() {
        let k = keys();
        let public = k.public_key("ed25519:0").unwrap();
        assert!(k.public_key("ed25519:1").is_none());
        assert!(k.is_valid(&public));
        assert!(k.is_valid(&format!("{public}=")));
        assert!(k.is_valid(&public.replace('+', "-").replace('/', "_")));
        assert!(!k.is_valid("AAAA"));
        assert!(!k.is_valid("%%%"));
    }

    #[test]
    fn signs_as_the_server_name() {
        let k = keys();
        let mut assoc = json!({"medium": "email", "address": "a@b.c", "mxid": "@a:b.c",
            "ts": 1, "not_before": 1, "not_after": 2});
        k.sign(&mut assoc).unwrap();
        let vk = k.signer.verifying_key();
        verify_json(&assoc, "id.example.org", "ed25519:0", &vk).unwrap();
    }
}
