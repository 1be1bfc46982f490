//! Operator commands on bindings (admin listener, `mxisd bindings ...`): add, remove,
//! show and bulk import. Operator bindings have origin `admin`, which outranks users'
//! binds and sync sources.

use crate::error::Error;
use crate::model::now_ms;
use crate::model::{Medium, Mxid, ThreePid};
use crate::service::Services;
use crate::store::bindings::{BindingChange, Origin};
use serde_json::{json, Value};

/// Associations made here are valid for 100 years, as Sydent's.
pub const VALIDITY_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Parses and normalises a (medium, address, mxid) triple from an operator.
pub fn parse_triple(
    medium: &str,
    address: &str,
    mxid: Option<&str>,
) -> Result<(ThreePid, Option<Mxid>), String> {
    let medium = Medium::parse(medium.trim())
        .ok_or_else(|| format!("unknown medium {medium:?} (email or msisdn)"))?;
    let threepid = ThreePid::new(medium, address).map_err(|e| format!("{address:?}: {e}"))?;
    let mxid = match mxid {
        Some(m) => {
            Some(Mxid::parse(m.trim()).ok_or_else(|| format!("{m:?} is not a Matrix user ID"))?)
        }
        None => None,
    };
    Ok((threepid, mxid))
}

fn set(threepid: ThreePid, mxid: &Mxid, now: u64) -> BindingChange {
    BindingChange::Set {
        threepid,
        origin: Origin::Admin,
        mxid: mxid.as_str().to_owned(),
        not_before_ms: now,
        not_after_ms: now + VALIDITY_MS,
    }
}

/// Adds (or replaces) the operator binding of a 3PID.
pub async fn add(
    state: &Services,
    medium: &str,
    address: &str,
    mxid: &str,
) -> Result<Value, Error> {
    let (threepid, mxid) =
        parse_triple(medium, address, Some(mxid)).map_err(Error::invalid_param)?;
    let Some(mxid) = mxid else {
        return Err(Error::missing_params(&["mxid"]));
    };
    let effective = state
        .store
        .change_bindings(vec![set(threepid.clone(), &mxid, now_ms())])
        .await?;
    // Pending room invites of the address go out now, as on a user's bind.
    if let Some(Some(entry)) = effective.into_iter().next() {
        super::invite::on_bind(state, &threepid, &entry).await?;
    }
    show_threepid(state, &threepid)
}

/// Removes what operators and users bound for a 3PID. Sync sources' entries stay (the
/// next sync would restore them anyway) and are reported.
pub async fn remove(state: &Services, medium: &str, address: &str) -> Result<Value, Error> {
    let (threepid, _) = parse_triple(medium, address, None).map_err(Error::invalid_param)?;
    state
        .store
        .change_bindings(vec![
            BindingChange::Remove {
                threepid: threepid.clone(),
                origin: Origin::Admin,
            },
            BindingChange::Remove {
                threepid: threepid.clone(),
                origin: Origin::Bind,
            },
        ])
        .await?;
    show_threepid(state, &threepid)
}

/// Every origin's entry for a 3PID and which one lookups answer with.
pub fn show(state: &Services, medium: &str, address: &str) -> Result<Value, Error> {
    let (threepid, _) = parse_triple(medium, address, None).map_err(Error::invalid_param)?;
    show_threepid(state, &threepid)
}

fn show_threepid(state: &Services, threepid: &ThreePid) -> Result<Value, Error> {
    let record = state.store.binding(threepid)?.unwrap_or_default();
    let entries: Vec<Value> = record
        .entries
        .iter()
        .map(|e| {
            json!({
                "origin": e.origin.to_string(),
                "mxid": e.mxid,
                "created_ms": e.created_ms,
                "updated_ms": e.updated_ms,
                "not_before": e.not_before_ms,
                "not_after": e.not_after_ms,
            })
        })
        .collect();
    Ok(json!({
        "medium": threepid.medium().as_str(),
        "address": threepid.address(),
        "effective": record.effective().map(|e| json!({"mxid": e.mxid, "origin": e.origin.to_string()})),
        "entries": entries,
    }))
}

/// Lines applied per store batch during an import.
const IMPORT_BATCH: usize = 10_000;
/// Bad lines reported back in detail (all are counted).
const MAX_REPORTED: usize = 100;

/// Progress of a bulk import fed line by line.
pub struct Import {
    pending: Vec<BindingChange>,
    pub line: u64,
    pub imported: u64,
    pub skipped: u64,
    pub errors: Vec<String>,
    now: u64,
}

impl Default for Import {
    fn default() -> Self {
        Self::new()
    }
}

impl Import {
    pub fn new() -> Self {
        Self {
            pending: Vec::with_capacity(IMPORT_BATCH),
            line: 0,
            imported: 0,
            skipped: 0,
            errors: Vec::new(),
            now: now_ms(),
        }
    }

    /// Takes one line (`medium<TAB>address<TAB>mxid`); blank lines and `#` comments are
    /// skipped. Applies a batch when enough lines are pending.
    pub async fn feed(&mut self, state: &Services, line: &str) -> Result<(), Error> {
        self.line += 1;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() || line.starts_with('#') {
            return Ok(());
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let parsed = match fields.as_slice() {
            [m, a, x] => parse_triple(m, a, Some(x)),
            _ => Err(format!(
                "expected 3 tab-separated fields, found {}",
                fields.len()
            )),
        };
        match parsed {
            Ok((threepid, Some(mxid))) => {
                self.pending.push(set(threepid, &mxid, self.now));
                if self.pending.len() >= IMPORT_BATCH {
                    self.flush(state).await?;
                }
            }
            Ok((_, None)) => {}
            Err(why) => {
                self.skipped += 1;
                if self.errors.len() < MAX_REPORTED {
                    self.errors.push(format!("line {}: {why}", self.line));
                }
            }
        }
        Ok(())
    }

    /// Applies what is pending.
    pub async fn flush(&mut self, state: &Services) -> Result<(), Error> {
        let batch = std::mem::take(&mut self.pending);
        let n = batch.len() as u64;
        state.store.change_bindings(batch).await?;
        self.imported += n;
        Ok(())
    }

    /// After the last batch: invites of the addresses imported go out.
    pub async fn finish(&mut self, state: &Services) -> Result<(), Error> {
        self.flush(state).await?;
        super::invite::reconcile(state).await?;
        Ok(())
    }

    pub fn report(&self) -> Value {
        json!({
            "lines": self.line,
            "imported": self.imported,
            "skipped": self.skipped,
            "errors": self.errors,
        })
    }
}
