//! Operator commands on bindings (admin listener, `mxisd bindings ...`): add, remove,
//! show and bulk import. Operator bindings have origin `admin`, which outranks users'
//! binds and sync sources.

use crate::error::Error;
use crate::model::now_ms;
use crate::model::{Medium, Mxid, ThreePid};
use crate::service::Services;
use crate::store::bindings::{BindingChange, Origin};
use serde::Serialize;

/// Associations made here are valid for 100 years, as Sydent's.
pub const VALIDITY_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// A 3PID's bindings as operators see them: every origin's entry and the one lookups
/// answer with. (Fields in alphabetical order: the wire shape is the sorted object the
/// admin API always gave.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindingView {
    pub address: String,
    /// `null` when no entry is effective.
    pub effective: Option<Effective>,
    pub entries: Vec<EntryView>,
    pub medium: &'static str,
}

/// The entry lookups answer with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effective {
    pub mxid: String,
    pub origin: String,
}

/// One origin's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryView {
    pub created_ms: u64,
    pub mxid: String,
    pub not_after: u64,
    pub not_before: u64,
    pub origin: String,
    pub updated_ms: u64,
}

/// How a bulk import went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// The first bad lines, with why.
    pub errors: Vec<String>,
    pub imported: u64,
    pub lines: u64,
    pub skipped: u64,
}

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
) -> Result<BindingView, Error> {
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
pub async fn remove(state: &Services, medium: &str, address: &str) -> Result<BindingView, Error> {
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
pub fn show(state: &Services, medium: &str, address: &str) -> Result<BindingView, Error> {
    let (threepid, _) = parse_triple(medium, address, None).map_err(Error::invalid_param)?;
    show_threepid(state, &threepid)
}

fn show_threepid(state: &Services, threepid: &ThreePid) -> Result<BindingView, Error> {
    let record = state.store.binding(threepid)?.unwrap_or_default();
    let entries = record
        .entries
        .iter()
        .map(|e| EntryView {
            created_ms: e.created_ms,
            mxid: e.mxid.clone(),
            not_after: e.not_after_ms,
            not_before: e.not_before_ms,
            origin: e.origin.to_string(),
            updated_ms: e.updated_ms,
        })
        .collect();
    Ok(BindingView {
        address: threepid.address().to_owned(),
        effective: record.effective().map(|e| Effective {
            mxid: e.mxid.clone(),
            origin: e.origin.to_string(),
        }),
        entries,
        medium: threepid.medium().as_str(),
    })
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
    /// Lines (or entries) read so far, for `mxisd` and the log.
    progress: crate::progress::Progress,
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
            progress: crate::progress::Progress::default(),
        }
    }

    /// An import the server watches: listed by the admin API's progress and logged
    /// every few seconds while it runs.
    pub fn watched(state: &Services) -> Self {
        let progress = state.jobs.start("import", "bindings import");
        progress.phase("importing", "lines", None);
        Self {
            progress,
            ..Self::new()
        }
    }

    /// Takes one line (`medium<TAB>address<TAB>mxid`); blank lines and `#` comments are
    /// skipped. Applies a batch when enough lines are pending.
    pub async fn feed(&mut self, state: &Services, line: &str) -> Result<(), Error> {
        self.line += 1;
        self.progress.add(1);
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
        self.take(state, parsed, "line").await
    }

    /// One binding given as fields (an entry of a JSON import).
    pub async fn feed_binding(
        &mut self,
        state: &Services,
        medium: &str,
        address: &str,
        mxid: &str,
    ) -> Result<(), Error> {
        self.line += 1;
        self.progress.add(1);
        let parsed = parse_triple(medium, address, Some(mxid));
        self.take(state, parsed, "entry").await
    }

    async fn take(
        &mut self,
        state: &Services,
        parsed: Result<(ThreePid, Option<Mxid>), String>,
        unit: &str,
    ) -> Result<(), Error> {
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
                    self.errors.push(format!("{unit} {}: {why}", self.line));
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
        self.progress.phase("delivering invites", "", None);
        super::invite::reconcile(state).await?;
        Ok(())
    }

    pub fn report(&self) -> ImportReport {
        ImportReport {
            errors: self.errors.clone(),
            imported: self.imported,
            lines: self.line,
            skipped: self.skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn views_serialise_as_the_sorted_objects_they_replace() {
        let view = BindingView {
            address: "a@x.org".into(),
            effective: None,
            entries: vec![EntryView {
                created_ms: 1,
                mxid: "@a:x.org".into(),
                not_after: 4,
                not_before: 3,
                origin: "admin".into(),
                updated_ms: 2,
            }],
            medium: "email",
        };
        let before = json!({
            "medium": "email", "address": "a@x.org", "effective": null,
            "entries": [{"origin": "admin", "mxid": "@a:x.org", "created_ms": 1,
                "updated_ms": 2, "not_before": 3, "not_after": 4}],
        });
        assert_eq!(serde_json::to_string(&view).unwrap(), before.to_string());
        let report = Import::new().report();
        assert_eq!(
            serde_json::to_string(&report).unwrap(),
            json!({"lines": 0, "imported": 0, "skipped": 0, "errors": []}).to_string()
        );
    }
}
