//! Lookups, answered from the local store only: v2 hashed (`sha256`) and plain
//! (`none`), and the legacy v1 single (signed) and bulk lookups. Results only ever
//! contain entries the caller sent.

use crate::error::{ErrCode, Error};
use crate::metrics::LookupKind;
use crate::model::now_ms;
use crate::model::{Medium, ThreePid};
use crate::service::Services;
use crate::store::bindings::{lookup_hash, BindingEntry};
use serde_json::Value;

/// The `/v2/hash_details` answer. Fields in alphabetical order: the bytes on the wire
/// stay those of the JSON object this replaced.
#[derive(Debug, serde::Serialize)]
pub struct HashDetails {
    pub algorithms: Vec<&'static str>,
    pub lookup_pepper: String,
}

/// `GET /v2/hash_details`
pub fn hash_details(state: &Services) -> HashDetails {
    let mut algorithms = vec!["sha256"];
    if state.config().hashing.allow_none {
        algorithms.push("none");
    }
    HashDetails {
        algorithms,
        lookup_pepper: state.store.pepper().pepper,
    }
}

fn live(not_before: u64, not_after: u64, now: u64) -> bool {
    not_before <= now && now < not_after
}

/// A `/v2/lookup` request, borrowed from the request body.
#[derive(Debug)]
pub struct LookupRequest<'a> {
    pub algorithm: &'a str,
    pub pepper: &'a str,
    pub addresses: Vec<&'a str>,
}

fn invalid_pepper(current: String) -> Error {
    Error::new(
        ErrCode::InvalidPepper,
        "The pepper does not match the current one; fetch /hash_details again",
    )
    .with("algorithm", "sha256")
    .with("lookup_pepper", current)
}

/// Plain-text lookups (v1 single and bulk) follow `hashing.algorithms`: an operator who
/// removed `none` wants no lookup of clear addresses at all.
fn plain_allowed(state: &Services) -> Result<(), Error> {
    if state.config().hashing.allow_none {
        Ok(())
    } else {
        Err(Error::new(
            ErrCode::Forbidden,
            "Plain-text lookups are disabled on this server; use the hashed v2 lookup",
        ))
    }
}

/// The `/v2/lookup` answer: entry as sent → Matrix ID, for the matches only.
#[derive(Debug, serde::Serialize)]
pub struct Mappings<'a> {
    pub mappings: std::collections::BTreeMap<&'a str, String>,
}

/// `POST /v2/lookup`
pub fn lookup<'a>(state: &Services, request: &LookupRequest<'a>) -> Result<Mappings<'a>, Error> {
    let use_hash = match request.algorithm {
        "sha256" => true,
        "none" if state.config().hashing.allow_none => false,
        other => {
            return Err(Error::invalid_param(format!(
                "Unsupported algorithm {:?}",
                other.chars().take(32).collect::<String>()
            )))
        }
    };
    let generation = state
        .store
        .check_pepper(request.pepper)
        .map_err(invalid_pepper)?;
    let max = state.config().lookup.max_addresses;
    if request.addresses.len() > max {
        return Err(Error::new(
            ErrCode::TooMany,
            format!("At most {max} addresses per lookup"),
        ));
    }
    let now = now_ms();
    let mut mappings = std::collections::BTreeMap::new();
    for &entry in &request.addresses {
        let found = if use_hash {
            lookup_hashed(state, generation, entry, now)?
        } else {
            lookup_plain(state, generation, request.pepper, entry, now)?
        };
        if let Some(mxid) = found {
            mappings.insert(entry, mxid);
        }
    }
    // A rotation that switched while we read may have removed entries under us: the
    // answer would be a false "not found", so tell the client to refetch the pepper.
    if use_hash && state.store.pepper_generation() != generation {
        return Err(invalid_pepper(state.store.pepper().pepper));
    }
    state.metrics.lookups(
        if use_hash {
            LookupKind::Hashed
        } else {
            LookupKind::Plain
        },
        mappings.len(),
        request.addresses.len() - mappings.len(),
    );
    Ok(Mappings { mappings })
}

/// The live Matrix ID bound to the 3PID whose lookup hash is `digest`.
fn mxid_by_hash(
    state: &Services,
    generation: u32,
    digest: &[u8; 32],
    now: u64,
) -> Result<Option<String>, Error> {
    Ok(state.store.live_mxid(generation, digest, now)?)
}

fn lookup_hashed(
    state: &Services,
    generation: u32,
    entry: &str,
    now: u64,
) -> Result<Option<String>, Error> {
    // A hash that does not decode to 32 bytes simply matches nothing.
    let Some(digest) = crate::crypto::b64_decode(entry).and_then(|b| <[u8; 32]>::try_from(b).ok())
    else {
        return Ok(None);
    };
    mxid_by_hash(state, generation, &digest, now)
}

/// A plain entry is hashed here with the (already checked) pepper and then found the
/// same way as a hashed one: records are keyed by their lookup hash.
fn lookup_plain(
    state: &Services,
    generation: u32,
    pepper: &str,
    entry: &str,
    now: u64,
) -> Result<Option<String>, Error> {
    let (address, medium) = entry
        .rsplit_once(' ')
        .ok_or_else(|| Error::invalid_param("A plain lookup entry is \"<address> <medium>\""))?;
    let Some(medium) = Medium::parse(medium) else {
        return Ok(None);
    };
    let Ok(threepid) = ThreePid::new(medium, address) else {
        return Ok(None);
    };
    mxid_by_hash(state, generation, &lookup_hash(&threepid, pepper), now)
}

/// The user a 3PID is bound to here (synced, bound or set by the admin), if any: for
/// logins by 3PID.
pub fn bound_user(state: &Services, threepid: &ThreePid) -> Result<Option<String>, Error> {
    Ok(effective(state, threepid, now_ms())?.map(|e| e.mxid))
}

fn effective(
    state: &Services,
    threepid: &ThreePid,
    now: u64,
) -> Result<Option<BindingEntry>, Error> {
    Ok(state
        .store
        .binding(threepid)?
        .and_then(|r| r.effective().cloned())
        .filter(|e| live(e.not_before_ms, e.not_after_ms, now)))
}

/// Signatures of a signed object: entity → key id → unpadded base64 signature.
pub type Signatures =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;

/// A signed 3PID association: what v1 `/lookup` and `/3pid/bind` answer. Fields in
/// alphabetical order, as the JSON object this replaced had them on the wire.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Association {
    pub address: String,
    /// Pending invites delivered on bind (signed with the rest, as Sydent's are).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invites: Option<Vec<Value>>,
    pub medium: &'static str,
    pub mxid: String,
    pub not_after: u64,
    pub not_before: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signatures: Option<Signatures>,
    pub ts: u64,
}

impl Association {
    /// Signs the association (any signature already present is replaced).
    pub(crate) fn sign(mut self, state: &Services) -> Result<Self, Error> {
        let failed = |e: &dyn std::fmt::Display| Error::internal("signing an association", e);
        self.signatures = None;
        let mut value = serde_json::to_value(&self).map_err(|e| failed(&e))?;
        state.keys.sign(&mut value).map_err(|e| failed(&e))?;
        let signatures = value
            .get_mut("signatures")
            .map(Value::take)
            .unwrap_or_default();
        self.signatures = Some(serde_json::from_value(signatures).map_err(|e| failed(&e))?);
        Ok(self)
    }
}

/// The signed association for a binding: what v1 `/lookup` (and later `/3pid/bind`)
/// answers.
pub fn signed_association(
    state: &Services,
    threepid: &ThreePid,
    entry: &BindingEntry,
) -> Result<Association, Error> {
    Association {
        address: threepid.address().to_owned(),
        invites: None,
        medium: threepid.medium().as_str(),
        mxid: entry.mxid.clone(),
        not_after: entry.not_after_ms,
        not_before: entry.not_before_ms,
        signatures: None,
        ts: entry.created_ms,
    }
    .sign(state)
}

/// The `/api/v1/lookup` answer: the signed association, or `{}`.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum LookupV1 {
    Found(Association),
    NotFound {},
}

/// `GET /api/v1/lookup?medium=&address=`: the signed association, or `{}`.
pub fn lookup_v1(state: &Services, medium: &str, address: &str) -> Result<LookupV1, Error> {
    plain_allowed(state)?;
    let medium = Medium::parse(medium).ok_or_else(|| Error::invalid_param("Unknown medium"))?;
    let Ok(threepid) = ThreePid::new(medium, address) else {
        state.metrics.lookups(LookupKind::V1, 0, 1);
        return Ok(LookupV1::NotFound {});
    };
    let found = effective(state, &threepid, now_ms())?;
    state.metrics.lookups(
        LookupKind::V1,
        usize::from(found.is_some()),
        usize::from(found.is_none()),
    );
    match found {
        Some(entry) => signed_association(state, &threepid, &entry).map(LookupV1::Found),
        None => Ok(LookupV1::NotFound {}),
    }
}

/// The `/api/v1/bulk_lookup` answer: `[medium, address, mxid]` for the matches, as sent.
#[derive(Debug, serde::Serialize)]
pub struct BulkLookup<'a> {
    pub threepids: Vec<(&'a str, &'a str, String)>,
}

/// Most 3PIDs one bulk lookup may ask for: `lookup.maxAddresses`.
pub fn bulk_max(state: &Services) -> usize {
    state.config().lookup.max_addresses
}

/// `POST /api/v1/bulk_lookup`: `(medium, address)` pairs as sent → the matches.
pub fn bulk_lookup_v1<'a>(
    state: &Services,
    pairs: &[(&'a str, &'a str)],
) -> Result<BulkLookup<'a>, Error> {
    let max = bulk_max(state);
    if pairs.len() > max {
        return Err(too_many_threepids(max));
    }
    plain_allowed(state)?;
    if !state.config().lookup.bulk_enabled {
        return Ok(BulkLookup {
            threepids: Vec::new(),
        });
    }
    let now = now_ms();
    let mut found = Vec::new();
    let pepper = state.store.pepper();
    let asked = pairs.len();
    for &(m, a) in pairs {
        let Some(medium) = Medium::parse(m) else {
            continue;
        };
        let Ok(threepid) = ThreePid::new(medium, a) else {
            continue;
        };
        let digest = lookup_hash(&threepid, &pepper.pepper);
        if let Some(mxid) = mxid_by_hash(state, pepper.generation, &digest, now)? {
            found.push((m, a, mxid));
        }
    }
    state
        .metrics
        .lookups(LookupKind::V1, found.len(), asked - found.len());
    Ok(BulkLookup { threepids: found })
}

/// The error for a bulk lookup over [`bulk_max`] entries.
pub fn too_many_threepids(max: usize) -> Error {
    Error::new(ErrCode::TooMany, format!("At most {max} 3PIDs per lookup"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn association(invites: Option<Vec<Value>>) -> Association {
        Association {
            address: "a@b.c".into(),
            invites,
            medium: "email",
            mxid: "@a:b.c".into(),
            not_after: 3,
            not_before: 1,
            signatures: None,
            ts: 2,
        }
    }

    /// The typed answers serialise to the bytes the `json!` objects they replaced did
    /// (serde_json sorts object keys).
    #[test]
    fn answers_keep_their_wire_bytes() {
        let same = |typed: String, old: Value| assert_eq!(typed, old.to_string());
        let details = HashDetails {
            algorithms: vec!["sha256", "none"],
            lookup_pepper: "p".into(),
        };
        same(
            serde_json::to_string(&details).unwrap(),
            json!({ "lookup_pepper": "p", "algorithms": ["sha256", "none"] }),
        );
        // What is signed is what was signed before, so the signature is the same too.
        let unsigned = json!({"address": "a@b.c", "medium": "email", "mxid": "@a:b.c",
            "not_before": 1, "not_after": 3, "ts": 2});
        assert_eq!(serde_json::to_value(association(None)).unwrap(), unsigned);
        let mut with_invites = unsigned.clone();
        with_invites["invites"] = json!([{"room_id": "!r:b.c"}]);
        assert_eq!(
            serde_json::to_value(association(Some(vec![json!({"room_id": "!r:b.c"})]))).unwrap(),
            with_invites
        );
        let mut signed = association(None);
        let signatures: Signatures =
            serde_json::from_value(json!({"id": {"ed25519:0": "s"}})).unwrap();
        signed.signatures = Some(signatures);
        let mut old = unsigned.clone();
        old["signatures"] = json!({"id": {"ed25519:0": "s"}});
        same(
            serde_json::to_string(&LookupV1::Found(signed)).unwrap(),
            old,
        );
        same(
            serde_json::to_string(&LookupV1::NotFound {}).unwrap(),
            json!({}),
        );
        let bulk = BulkLookup {
            threepids: vec![("email", "a@b.c", "@a:b.c".into())],
        };
        same(
            serde_json::to_string(&bulk).unwrap(),
            json!({ "threepids": [json!(["email", "a@b.c", "@a:b.c"])] }),
        );
        same(
            serde_json::to_string(&BulkLookup { threepids: vec![] }).unwrap(),
            json!({ "threepids": [] }),
        );
    }
}
