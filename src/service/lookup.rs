//! Lookups, answered from the local store only: v2 hashed (`sha256`) and plain
//! (`none`), and the legacy v1 single (signed) and bulk lookups. Results only ever
//! contain entries the caller sent.

use crate::error::{ErrCode, Error};
use crate::metrics::LookupKind;
use crate::model::now_ms;
use crate::model::{Medium, ThreePid};
use crate::service::Services;
use crate::store::bindings::{lookup_hash, BindingEntry};
use serde_json::{json, Map, Value};

/// `GET /v2/hash_details`
pub fn hash_details(state: &Services) -> Value {
    let mut algorithms = vec!["sha256"];
    if state.config.hashing.allow_none {
        algorithms.push("none");
    }
    json!({ "lookup_pepper": state.store.pepper().pepper, "algorithms": algorithms })
}

fn live(not_before: u64, not_after: u64, now: u64) -> bool {
    not_before <= now && now < not_after
}

fn param_str<'a>(body: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, Error> {
    match body.get(name) {
        None | Some(Value::Null) => Err(Error::missing_params(&[name])),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Error::invalid_param(format!("{name} must be a string"))),
    }
}

/// A `/v2/lookup` request, borrowed from the request body.
#[derive(Debug)]
pub struct LookupRequest<'a> {
    pub algorithm: &'a str,
    pub pepper: &'a str,
    pub addresses: Vec<&'a str>,
}

impl<'a> LookupRequest<'a> {
    /// Validates a parsed body field by field, for a precise error on bad input.
    pub fn from_object(body: &'a Map<String, Value>) -> Result<Self, Error> {
        let algorithm = param_str(body, "algorithm")?;
        let pepper = param_str(body, "pepper")?;
        let list = match body.get("addresses") {
            None | Some(Value::Null) => return Err(Error::missing_params(&["addresses"])),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(Error::invalid_param("addresses must be a list of strings")),
        };
        let mut addresses = Vec::with_capacity(list.len());
        for (i, a) in list.iter().enumerate() {
            match a {
                Value::String(s) => addresses.push(s.as_str()),
                _ => {
                    return Err(Error::invalid_param(format!(
                        "addresses[{i}] is not a string"
                    )))
                }
            }
        }
        Ok(Self {
            algorithm,
            pepper,
            addresses,
        })
    }
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
    if state.config.hashing.allow_none {
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
        "none" if state.config.hashing.allow_none => false,
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
    let max = state.config.lookup.max_addresses;
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
    Ok(state
        .store
        .hashed(generation, digest)?
        .filter(|h| live(h.not_before_ms, h.not_after_ms, now))
        .map(|h| h.mxid))
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

/// The signed association for a binding: what v1 `/lookup` (and later `/3pid/bind`)
/// answers.
pub fn signed_association(
    state: &Services,
    threepid: &ThreePid,
    entry: &BindingEntry,
) -> Result<Value, Error> {
    let mut association = json!({
        "address": threepid.address(),
        "medium": threepid.medium().as_str(),
        "mxid": entry.mxid,
        "not_before": entry.not_before_ms,
        "not_after": entry.not_after_ms,
        "ts": entry.created_ms,
    });
    state
        .keys
        .sign(&mut association)
        .map_err(|e| Error::internal("signing an association", e))?;
    Ok(association)
}

/// `GET /api/v1/lookup?medium=&address=`: the signed association, or `{}`.
pub fn lookup_v1(
    state: &Services,
    medium: Option<&str>,
    address: Option<&str>,
) -> Result<Value, Error> {
    let (medium, address) = match (medium, address) {
        (Some(m), Some(a)) => (m, a),
        (None, None) => return Err(Error::missing_params(&["medium", "address"])),
        (None, _) => return Err(Error::missing_params(&["medium"])),
        (_, None) => return Err(Error::missing_params(&["address"])),
    };
    plain_allowed(state)?;
    let medium = Medium::parse(medium).ok_or_else(|| Error::invalid_param("Unknown medium"))?;
    let Ok(threepid) = ThreePid::new(medium, address) else {
        state.metrics.lookups(LookupKind::V1, 0, 1);
        return Ok(json!({}));
    };
    let found = effective(state, &threepid, now_ms())?;
    state.metrics.lookups(
        LookupKind::V1,
        usize::from(found.is_some()),
        usize::from(found.is_none()),
    );
    match found {
        Some(entry) => signed_association(state, &threepid, &entry),
        None => Ok(json!({})),
    }
}

/// `POST /api/v1/bulk_lookup`: `{"threepids": [[medium, address], ...]}` →
/// `{"threepids": [[medium, address, mxid], ...]}` for the matches, as sent.
pub fn bulk_lookup_v1(state: &Services, body: &Map<String, Value>) -> Result<Value, Error> {
    let list = match body.get("threepids") {
        None | Some(Value::Null) => return Err(Error::missing_params(&["threepids"])),
        Some(Value::Array(l)) => l,
        Some(_) => {
            return Err(Error::invalid_param(
                "threepids must be a list of [medium, address] pairs",
            ))
        }
    };
    let max = state.config.lookup.max_addresses;
    if list.len() > max {
        return Err(Error::new(
            ErrCode::TooMany,
            format!("At most {max} 3PIDs per lookup"),
        ));
    }
    let mut pairs = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        match item.as_array().map(Vec::as_slice) {
            Some([Value::String(m), Value::String(a)]) => pairs.push((m.as_str(), a.as_str())),
            _ => {
                return Err(Error::invalid_param(format!(
                    "threepids[{i}] is not a [medium, address] pair of strings"
                )))
            }
        }
    }
    plain_allowed(state)?;
    if !state.config.lookup.bulk_enabled {
        return Ok(json!({ "threepids": [] }));
    }
    let now = now_ms();
    let mut found = Vec::new();
    let pepper = state.store.pepper();
    let asked = pairs.len();
    for (m, a) in pairs {
        let Some(medium) = Medium::parse(m) else {
            continue;
        };
        let Ok(threepid) = ThreePid::new(medium, a) else {
            continue;
        };
        let digest = lookup_hash(&threepid, &pepper.pepper);
        if let Some(mxid) = mxid_by_hash(state, pepper.generation, &digest, now)? {
            found.push(json!([m, a, mxid]));
        }
    }
    state
        .metrics
        .lookups(LookupKind::V1, found.len(), asked - found.len());
    Ok(json!({ "threepids": found }))
}
