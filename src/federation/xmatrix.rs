//! `Authorization: X-Matrix` requests from homeservers (Synapse's `/3pid/unbind`): parse
//! the header, fetch the origin's signing key from `/_matrix/key/v2/server` (checked
//! against its own self-signature, cached until its `valid_until_ts`, at most a day),
//! and verify the signature over `{method, uri, origin, destination_is, content}`.

use super::Federation;
use crate::crypto::sign::verify_json;
use ed25519_dalek::VerifyingKey;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The parameters of an `X-Matrix` authorization header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    pub origin: String,
    pub key: String,
    pub sig: String,
    pub destination: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XMatrixError {
    #[error("not an X-Matrix authorization header")]
    NotXMatrix,
    #[error("the X-Matrix header lacks {0}")]
    Missing(&'static str),
    #[error("the request is addressed to {0:?}, not to this server")]
    WrongDestination(String),
    #[error("{0:?} is not a valid server name")]
    BadOrigin(String),
    #[error("cannot get the signing key {key} of {origin}: {why}")]
    Key {
        origin: String,
        key: String,
        why: String,
    },
    #[error("the signature does not verify")]
    BadSignature,
}

/// Parses `X-Matrix origin=...,key="...",sig="...",destination="..."`. Names are
/// case-insensitive, values optionally quoted (old Synapse did not quote `origin`).
pub fn parse_header(value: &str) -> Result<XMatrix, XMatrixError> {
    let value = value.trim();
    let (scheme, params) = value.split_once(' ').ok_or(XMatrixError::NotXMatrix)?;
    if !scheme.eq_ignore_ascii_case("x-matrix") {
        return Err(XMatrixError::NotXMatrix);
    }
    let (mut origin, mut key, mut sig, mut destination) = (None, None, None, None);
    for param in split_params(params) {
        let Some((name, raw)) = param.split_once('=') else {
            continue;
        };
        let raw = raw.trim();
        let v = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
            None => raw.to_owned(),
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "origin" => origin = Some(v),
            "key" => key = Some(v),
            "sig" => sig = Some(v),
            "destination" => destination = Some(v),
            _ => {}
        }
    }
    Ok(XMatrix {
        origin: origin.ok_or(XMatrixError::Missing("origin"))?,
        key: key.ok_or(XMatrixError::Missing("key"))?,
        sig: sig.ok_or(XMatrixError::Missing("sig"))?,
        destination,
    })
}

/// Splits on commas outside quotes.
fn split_params(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(text[start..].trim());
    out.retain(|p| !p.is_empty());
    out
}

/// Verified keys of other servers: (server, key id) → key and until when we trust it;
/// and failed fetches, remembered for a minute so a stream of requests naming an
/// unreachable or bogus key does not become a stream of outbound calls.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: std::sync::Mutex<HashMap<(String, String), (VerifyingKey, Instant)>>,
    failures: std::sync::Mutex<HashMap<(String, String), (String, Instant)>>,
}

const FAILURE_MEMORY: Duration = Duration::from_secs(60);

const KEY_CACHE_MAX: usize = 1_000;
const KEY_CACHE_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Sydent's cap on a key response.
const KEY_RESPONSE_MAX: usize = 50 * 1024;

impl KeyCache {
    fn get(&self, origin: &str, key_id: &str) -> Option<VerifyingKey> {
        let map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(origin.to_owned(), key_id.to_owned()))
            .filter(|(_, until)| *until > Instant::now())
            .map(|(k, _)| *k)
    }

    fn recent_failure(&self, origin: &str, key_id: &str) -> Option<String> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(origin.to_owned(), key_id.to_owned()))
            .filter(|(_, until)| *until > Instant::now())
            .map(|(why, _)| why.clone())
    }

    fn fail(&self, origin: &str, key_id: &str, why: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() >= KEY_CACHE_MAX {
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= KEY_CACHE_MAX {
                map.clear();
            }
        }
        map.insert(
            (origin.to_owned(), key_id.to_owned()),
            (why.to_owned(), now + FAILURE_MEMORY),
        );
    }

    fn put(&self, origin: &str, key_id: &str, key: VerifyingKey, ttl: Duration) {
        let mut map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= KEY_CACHE_MAX {
            let now = Instant::now();
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= KEY_CACHE_MAX {
                map.clear();
            }
        }
        map.insert(
            (origin.to_owned(), key_id.to_owned()),
            (key, Instant::now() + ttl.min(KEY_CACHE_MAX_AGE)),
        );
    }
}

impl Federation {
    /// The verified signing key `key_id` of `origin`.
    async fn server_key(&self, origin: &str, key_id: &str) -> Result<VerifyingKey, XMatrixError> {
        if let Some(k) = self.keys.get(origin, key_id) {
            return Ok(k);
        }
        let fail = |why: String| XMatrixError::Key {
            origin: origin.to_owned(),
            key: key_id.to_owned(),
            why,
        };
        if let Some(why) = self.keys.recent_failure(origin, key_id) {
            return Err(fail(why));
        }
        match self.fetch_key(origin, key_id).await {
            Ok((key, ttl)) => {
                self.keys.put(origin, key_id, key, ttl);
                Ok(key)
            }
            Err(why) => {
                self.keys.fail(origin, key_id, &why);
                Err(fail(why))
            }
        }
    }

    /// Fetches `/_matrix/key/v2/server` of `origin` and checks it: the key, how long
    /// to trust it, or why not.
    async fn fetch_key(
        &self,
        origin: &str,
        key_id: &str,
    ) -> Result<(VerifyingKey, Duration), String> {
        let (status, body) = self
            .get_json(origin, "/_matrix/key/v2/server", KEY_RESPONSE_MAX)
            .await
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("the key server answered HTTP {status}"));
        }
        if body.get("server_name").and_then(Value::as_str) != Some(origin) {
            return Err("the answer is for another server".into());
        }
        let encoded = body
            .get("verify_keys")
            .and_then(|k| k.get(key_id))
            .and_then(|k| k.get("key"))
            .and_then(Value::as_str)
            .ok_or("no such key")?;
        let bytes: [u8; 32] = crate::crypto::b64_decode(encoded)
            .and_then(|b| b.try_into().ok())
            .ok_or("the key is not 32 bytes of base64")?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| "not an ed25519 key")?;
        // The answer must be signed by the key it publishes.
        verify_json(&body, origin, key_id, &key)
            .map_err(|_| "the key answer is not signed by that key")?;
        let valid_until = body
            .get("valid_until_ts")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let ttl = Duration::from_millis(valid_until.saturating_sub(crate::model::now_ms()));
        if ttl.is_zero() {
            return Err("the key has expired (valid_until_ts)".into());
        }
        Ok((key, ttl))
    }

    /// Checks an X-Matrix request to us (known as any of `our_names`; the first is the
    /// signing name): returns the verified origin.
    pub async fn verify_request(
        &self,
        header: &XMatrix,
        our_names: &[&str],
        method: &str,
        uri: &str,
        content: &Value,
    ) -> Result<String, XMatrixError> {
        let candidates: Vec<&str> = match &header.destination {
            Some(d) => match our_names.iter().find(|n| n.eq_ignore_ascii_case(d)) {
                Some(n) => vec![*n],
                None => return Err(XMatrixError::WrongDestination(d.clone())),
            },
            None => our_names.to_vec(),
        };
        if !crate::model::is_server_name(&header.origin) {
            return Err(XMatrixError::BadOrigin(header.origin.clone()));
        }
        let origin = header.origin.to_ascii_lowercase();
        let key = self.server_key(&origin, &header.key).await?;
        for destination in candidates {
            let signed = json!({
                "method": method,
                "uri": uri,
                "origin": header.origin,
                "destination_is": destination,
                "content": content,
                "signatures": { header.origin.clone(): { header.key.clone(): header.sig } },
            });
            if verify_json(&signed, &header.origin, &header.key, &key).is_ok() {
                return Ok(origin);
            }
        }
        Err(XMatrixError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_quoted_and_bare() {
        let h = parse_header(
            r#"X-Matrix origin="hs.example",key="ed25519:abc",sig="c2ln",destination="id.example""#,
        )
        .unwrap();
        assert_eq!(h.origin, "hs.example");
        assert_eq!(h.key, "ed25519:abc");
        assert_eq!(h.sig, "c2ln");
        assert_eq!(h.destination.as_deref(), Some("id.example"));
        let old =
            parse_header("x-matrix ORIGIN=hs.example:8448,Key=\"ed25519:a\",sig=\"s\"").unwrap();
        assert_eq!(old.origin, "hs.example:8448");
        assert_eq!(old.destination, None);
        assert_eq!(parse_header("Bearer abc"), Err(XMatrixError::NotXMatrix));
        assert_eq!(
            parse_header("X-Matrix key=\"a\",sig=\"b\""),
            Err(XMatrixError::Missing("origin"))
        );
        let commas = parse_header(r#"X-Matrix origin="a,b",key="k",sig="s""#).unwrap();
        assert_eq!(commas.origin, "a,b");
    }
}
