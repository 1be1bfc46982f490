//! `mxisd import-ma1sd`: moves a ma1sd (or mxisd 1.x) installation over. It translates
//! the config ([`translate`]), copies the signing key so its id and public key stay the
//! same ([`keystore`]), and imports pending 3PID invites (with their ephemeral public
//! keys) and accepted terms from ma1sd's SQLite or PostgreSQL database ([`db`]).
//!
//! Nothing is half-imported: every problem (config, key store, database, destination)
//! is collected and printed before anything is written, and the writes go to staging
//! names that are renamed into place at the end (or removed on failure). The lookup
//! pepper is not carried over because ma1sd never saves it (it lives in memory and
//! changes at every start); clients fetch `hash_details` again.

pub mod db;
pub mod keystore;
pub mod translate;

use crate::config::{Config, TermsConfig};
use crate::crypto::{b64_decode, b64_encode};
use crate::model::{Medium, Mxid, ThreePid};
use crate::store::invites::InviteRecord;
use crate::store::{now_ms, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// What `mxisd import-ma1sd` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// ma1sd's (or mxisd 1.x's) YAML.
    pub config: PathBuf,
    /// Our config file to write.
    pub output: PathBuf,
    /// Our `storage.path`.
    pub storage: PathBuf,
    pub dry_run: bool,
    /// Replace an existing output file.
    pub force: bool,
    /// Merge into a store that already holds data.
    pub allow_existing_store: bool,
}

impl From<&crate::cli::ImportMa1sdArgs> for Options {
    fn from(a: &crate::cli::ImportMa1sdArgs) -> Self {
        Self {
            config: a.config.clone(),
            output: a
                .output
                .clone()
                .unwrap_or_else(|| PathBuf::from("/etc/mxisd/mxisd.yaml")),
            storage: a
                .storage
                .clone()
                .unwrap_or_else(|| PathBuf::from("/var/lib/mxisd")),
            dry_run: a.dry_run,
            force: a.force,
            allow_existing_store: a.allow_existing_store,
        }
    }
}

/// Invites ready to store, and why the others were left out.
#[derive(Debug, Default)]
pub struct Invites {
    pub records: Vec<InviteRecord>,
    pub skipped: BTreeMap<String, usize>,
    /// Invites without `created_at` (counted from now, as ma1sd counts from its start).
    pub undated: usize,
    /// Invites made before ma1sd kept ephemeral keys: given a fresh public key nobody
    /// holds (they are still delivered on bind; only `sign-ed25519` cannot serve them).
    pub keyless: usize,
}

/// Properties of ma1sd's that are bookkeeping, not request fields.
fn is_bookkeeping(key: &str) -> bool {
    key == "created_at"
        || key.starts_with("p_key_")
        || key.starts_with("e_key_")
        || matches!(key, "medium" | "address" | "room_id" | "sender")
}

/// The 32 bytes of a base64 key in our spelling (standard alphabet, unpadded).
fn normalise_key(text: &str) -> Option<String> {
    b64_decode(text.trim())
        .filter(|b| b.len() == 32)
        .map(|b| b64_encode(&b))
}

/// ma1sd's `invite_3pid` rows → our invites. Per-row trouble skips the row (counted by
/// reason); nothing here stops the import.
pub fn convert_invites(
    rows: Vec<db::RawInvite>,
    ephemeral_dir: Option<&Path>,
    expire_after: Option<Duration>,
    now: u64,
) -> Result<Invites, String> {
    let mut out = Invites::default();
    let mut seen = BTreeSet::new();
    let skip = |out: &mut Invites, why: &str| {
        *out.skipped.entry(why.to_owned()).or_default() += 1;
    };
    for row in rows {
        let Some(token) = row.token.filter(|t| !t.is_empty()) else {
            skip(&mut out, "no token");
            continue;
        };
        let Some(medium) = row
            .medium
            .as_deref()
            .and_then(|m| Medium::parse(&m.to_ascii_lowercase()))
        else {
            skip(&mut out, "medium is not email or msisdn");
            continue;
        };
        let Some(threepid) = row
            .address
            .as_deref()
            .and_then(|a| ThreePid::new(medium, a).ok())
        else {
            skip(&mut out, "not a valid address");
            continue;
        };
        let Some(sender) = row.sender.filter(|s| Mxid::parse(s).is_some()) else {
            skip(&mut out, "sender is not a Matrix user ID");
            continue;
        };
        let Some(room_id) = row.room_id.filter(|r| !r.is_empty() && r.len() <= 255) else {
            skip(&mut out, "no room ID");
            continue;
        };
        let props: serde_json::Map<String, serde_json::Value> =
            match row.properties.as_deref().map(str::trim) {
                None | Some("") => serde_json::Map::new(),
                Some(text) => match serde_json::from_str(text) {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => {
                        skip(&mut out, "properties are not a JSON object");
                        continue;
                    }
                },
            };
        let prop = |k: &str| match props.get(k) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let created_ms = match prop("created_at").and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(ms) => ms,
            None => {
                out.undated += 1;
                now
            }
        };
        let expired = expire_after.is_some_and(|after| {
            created_ms.saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX)) <= now
        });
        if expired {
            skip(&mut out, "expired (older than invite.expiration.after)");
            continue;
        }
        let stated = prop("e_key_public").and_then(|k| normalise_key(&k));
        let from_file = match (ephemeral_dir, prop("e_key_serial")) {
            (Some(dir), Some(serial)) => match keystore::ephemeral_public(dir, &serial) {
                Ok(k) => k,
                Err(_) => {
                    skip(&mut out, "its ephemeral key file is unreadable");
                    continue;
                }
            },
            _ => None,
        };
        let ephemeral_public_key = match (stated, from_file) {
            (Some(a), Some(b)) if a != b => {
                skip(
                    &mut out,
                    "its ephemeral key file does not match e_key_public",
                );
                continue;
            }
            (Some(k), _) | (None, Some(k)) => k,
            (None, None) => {
                let seed = crate::crypto::random_bytes::<32>()
                    .map_err(|e| format!("cannot get random bytes: {e}"))?;
                out.keyless += 1;
                b64_encode(
                    ed25519_dalek::SigningKey::from_bytes(&seed)
                        .verifying_key()
                        .as_bytes(),
                )
            }
        };
        if !seen.insert(token.clone()) {
            skip(&mut out, "duplicate token");
            continue;
        }
        // The request's other fields, kept as store-invite keeps them.
        let mut details = BTreeMap::new();
        for (k, v) in &props {
            if let (false, serde_json::Value::String(v)) = (is_bookkeeping(k), v) {
                if details.len() < 32 && k.len() <= 64 && v.len() <= 2048 {
                    details.insert(k.clone(), v.clone());
                }
            }
        }
        out.records.push(InviteRecord {
            token,
            threepid,
            room_id,
            sender,
            ephemeral_public_key,
            created_ms,
            details,
        });
    }
    Ok(out)
}

/// Accepted terms ready to store.
#[derive(Debug, Default)]
pub struct Terms {
    /// User ID → accepted URLs (configured spelling when they match one ignoring case,
    /// as ma1sd compared them).
    pub accepted: BTreeMap<String, BTreeSet<String>>,
    pub rows: usize,
    pub skipped: usize,
    /// Users who accepted some URL but not one of every current policy: ma1sd let them
    /// through, mxisd asks them for the rest.
    pub incomplete: usize,
}

pub fn convert_terms(rows: Vec<(Option<String>, Option<String>)>, terms: &TermsConfig) -> Terms {
    let configured: Vec<&String> = terms
        .policies
        .values()
        .flat_map(|p| p.terms.values().map(|(_, url)| url))
        .collect();
    let mut out = Terms::default();
    for (user, url) in rows {
        out.rows += 1;
        let (Some(user), Some(url)) = (
            user.filter(|u| Mxid::parse(u).is_some()),
            url.map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()),
        ) else {
            out.skipped += 1;
            continue;
        };
        let url = configured
            .iter()
            .find(|c| c.eq_ignore_ascii_case(&url))
            .map_or(url, |c| (*c).clone());
        out.accepted.entry(user).or_default().insert(url);
    }
    out.incomplete = out
        .accepted
        .values()
        .filter(|urls| {
            !terms
                .policies
                .values()
                .all(|p| p.terms.values().any(|(_, u)| urls.contains(u)))
        })
        .count();
    out
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_owned())
    }
}

/// Everything found before writing: what to write, or every reason not to.
struct Plan {
    config: Option<Config>,
    yaml: String,
    key: Option<keystore::TheirKey>,
    /// Our key store holds this very key already.
    key_present: bool,
    invites: Invites,
    terms: Terms,
    /// An existing store to merge into (already open), or none: a new one is made.
    existing_store: Option<Store>,
    problems: Vec<String>,
}

/// `mxisd import-ma1sd`
pub async fn run(opts: &Options) -> ExitCode {
    let storage = absolute(&opts.storage);
    let output = absolute(&opts.output);
    let their = absolute(&opts.config);
    println!(
        "importing {} into {} (config) and {} (storage){}",
        their.display(),
        output.display(),
        storage.display(),
        if opts.dry_run { ", dry run" } else { "" }
    );
    let plan = plan(opts, &their, &output, &storage).await;
    if !plan.problems.is_empty() {
        eprintln!(
            "error: {} problem(s); nothing was written:",
            plan.problems.len()
        );
        for p in &plan.problems {
            eprintln!("  - {p}");
        }
        if let Some(store) = plan.existing_store {
            let _ = store.close();
        }
        return ExitCode::FAILURE;
    }
    if opts.dry_run {
        println!("dry run: nothing was written");
        if let Some(store) = plan.existing_store {
            let _ = store.close();
        }
        return ExitCode::SUCCESS;
    }
    match write(plan, &output, &storage).await {
        Ok(()) => {
            println!("done. Next:");
            println!("  mxisd check-config -c {}", output.display());
            println!(
                "  give the service user the state: chown -R mxisd:mxisd {} (if mxisd runs as user mxisd)",
                storage.display()
            );
            println!(
                "  stop ma1sd, start mxisd on the same port; Synapse's settings stay as they are"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}; nothing was left in place");
            ExitCode::FAILURE
        }
    }
}

async fn plan(opts: &Options, their: &Path, output: &Path, storage: &Path) -> Plan {
    let mut plan = Plan {
        config: None,
        yaml: String::new(),
        key: None,
        key_present: false,
        invites: Invites::default(),
        terms: Terms::default(),
        existing_store: None,
        problems: Vec::new(),
    };
    let text = match fs::read_to_string(their) {
        Ok(t) => t,
        Err(e) => {
            plan.problems
                .push(format!("{}: cannot read it: {e}", their.display()));
            return plan;
        }
    };
    let their_dir = their
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let t = translate::translate(
        &text,
        &their.display().to_string(),
        &their_dir,
        storage,
        output,
    );
    plan.problems.extend(t.problems.iter().cloned());
    if !t.changed.is_empty() || !t.dropped.is_empty() {
        println!("config:");
    }
    for (key, what) in &t.changed {
        println!("  changed {key}: {what}");
    }
    for (key, why) in &t.dropped {
        println!("  dropped {key}: {why}");
    }

    // The signing key.
    match &t.keys {
        Some(translate::KeySource::Path(p)) => match keystore::read(p) {
            Ok(k) => {
                println!(
                    "key: ed25519:{} (public key {}) from {}",
                    k.serial,
                    k.public,
                    k.file.display()
                );
                if !k.other_regular.is_empty() {
                    println!(
                        "  not carried over: {} other regular key(s) ({}); mxisd serves one long-term key",
                        k.other_regular.len(),
                        k.other_regular.join(", ")
                    );
                }
                plan.key = Some(k);
            }
            Err(e) => plan.problems.push(e),
        },
        Some(translate::KeySource::Memory) => println!(
            "key: ma1sd kept its key in memory (key.path: :memory:); nothing to carry over, mxisd makes ed25519:0 at first start"
        ),
        None => {}
    }

    // The database.
    let target = match t.db.as_ref().map(db::Target::from_source) {
        Some(Ok(target)) => target,
        Some(Err(e)) => {
            plan.problems
                .push(format!("storage.provider.postgresql.database: {e}"));
            None
        }
        None => None,
    };
    if matches!(t.db, Some(translate::DbSource::Memory)) {
        println!("database: in memory (:memory:): no invites or terms to import");
    }
    let data = match &target {
        Some(target) => match db::read(target).await {
            Ok(d) => Some(d),
            Err(e) => {
                plan.problems.push(e);
                None
            }
        },
        None => None,
    };

    if let (Some(config), Some(data)) = (&t.config, data) {
        let ephemeral_dir = plan.key.as_ref().and_then(|k| k.ephemeral_dir.clone());
        match convert_invites(
            data.invites,
            ephemeral_dir.as_deref(),
            config.invite.expire_after,
            now_ms(),
        ) {
            Ok(inv) => plan.invites = inv,
            Err(e) => plan.problems.push(e),
        }
        let i = &plan.invites;
        println!("invites: {} pending invite(s) to import", i.records.len());
        for (why, n) in &i.skipped {
            println!("  skipped {n}: {why}");
        }
        if i.undated > 0 {
            println!(
                "  {} without a creation time: their expiry counts from now, as ma1sd counted from its start",
                i.undated
            );
        }
        if i.keyless > 0 {
            println!(
                "  {} made before ma1sd kept ephemeral keys: delivered on bind as before; sign-ed25519 cannot serve them",
                i.keyless
            );
        }
        if let Some(dir) = &ephemeral_dir {
            let total = keystore::ephemeral_count(dir);
            let used = i.records.len() - i.keyless;
            if total > used {
                println!(
                    "  not carried over: {} ephemeral key(s) of invites that are no longer pending",
                    total - used
                );
            }
        }
        match data.accepted {
            Some(rows) => {
                plan.terms = convert_terms(rows, &config.terms);
                let tm = &plan.terms;
                println!(
                    "terms: {} acceptance(s) of {} user(s) to import",
                    tm.rows - tm.skipped,
                    tm.accepted.len()
                );
                if tm.skipped > 0 {
                    println!("  skipped {}: not a Matrix user ID or no URL", tm.skipped);
                }
                if tm.incomplete > 0 {
                    println!(
                        "  {} user(s) accepted only some current policies: ma1sd counted one as all, mxisd asks them for the rest",
                        tm.incomplete
                    );
                }
            }
            None => {
                println!("terms: no accepted table (mxisd 1.x had no terms): nothing to import")
            }
        }
        for (table, n) in &data.left_behind {
            let why = match *table {
                "hashes" => "lookup hashes depend on ma1sd's pepper; mxisd hashes its own bindings",
                "account" => "identity-server tokens; ma1sd's expired with the OpenID token (about an hour), clients register again by themselves",
                "session_3pid" => "validation sessions are short-lived; a validation in progress starts again",
                "invite_3pid_history" => "ma1sd's record of invites already delivered or expired",
                _ => "application-service transactions; mxisd has no application service",
            };
            println!("  not imported: {table} ({n} row(s)): {why}");
        }
    }
    println!(
        "pepper: not carried over; ma1sd keeps the lookup pepper in memory only (a new one at each start), so clients fetch hash_details again, as after any ma1sd restart"
    );

    // The destination.
    if output.exists() && !opts.force {
        plan.problems.push(format!(
            "{} exists; pass --force to replace it (or choose another --output)",
            output.display()
        ));
    }
    let keys_dir = storage.join("keys");
    if let Some(k) = &plan.key {
        match crate::crypto::keyfile::load(&keys_dir) {
            Ok(Some(ours)) => {
                if ours.key_id() == format!("ed25519:{}", k.serial)
                    && ours.public_key_b64() == k.public
                {
                    plan.key_present = true;
                    println!("  {} holds this key already", keys_dir.display());
                } else {
                    plan.problems.push(format!(
                        "{} holds another key ({}, public key {}); refusing to replace it: move it away, or choose another --storage",
                        keys_dir.display(),
                        ours.key_id(),
                        ours.public_key_b64()
                    ));
                }
            }
            Ok(None) if dir_has_entries(&keys_dir) => plan.problems.push(format!(
                "{} holds files but no key; empty it or choose another --storage",
                keys_dir.display()
            )),
            Ok(None) => {}
            Err(e) => plan.problems.push(format!("our key store: {e}")),
        }
    }
    let store_dir = storage.join("store");
    // An empty directory is as good as none (the new store is renamed onto it).
    if dir_has_entries(&store_dir) {
        let (cache, pepper) = t.config.as_ref().map_or((8 << 20, 32), |c| {
            (c.storage.cache_size, c.hashing.pepper_length)
        });
        let path = store_dir.clone();
        match tokio::task::spawn_blocking(move || Store::open(&path, cache, pepper)).await {
            Ok(Ok(store)) => match store.user_data_entries() {
                Ok(0) => plan.existing_store = Some(store),
                Ok(n) if opts.allow_existing_store => {
                    println!(
                        "  merging into the store in {} ({n} entries already; --allow-existing-store)",
                        store_dir.display()
                    );
                    plan.existing_store = Some(store);
                }
                Ok(n) => {
                    plan.problems.push(format!(
                        "the store in {} already holds {n} entries (has mxisd run there?); pass --allow-existing-store to merge into it, or choose an empty --storage",
                        store_dir.display()
                    ));
                    let _ = store.close();
                }
                Err(e) => {
                    plan.problems
                        .push(format!("the store in {}: {e}", store_dir.display()));
                    let _ = store.close();
                }
            },
            Ok(Err(e)) => plan
                .problems
                .push(format!("the store in {}: {e}", store_dir.display())),
            Err(e) => plan.problems.push(format!("opening the store: {e}")),
        }
    }
    plan.config = t.config;
    plan.yaml = t.yaml;
    plan
}

fn dir_has_entries(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// Undoes the renames done so far when a later step fails.
#[derive(Default)]
struct Undo {
    dirs: Vec<PathBuf>,
}

impl Undo {
    fn run(&self) {
        for d in self.dirs.iter().rev() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// Creates `dir` and its missing parents with `mode`; returns the top-most directory
/// it created, to remove on failure.
fn create_dirs(dir: &Path, mode: u32) -> std::io::Result<Option<PathBuf>> {
    let mut top = None;
    let mut p = Some(dir);
    while let Some(d) = p {
        if d.exists() {
            break;
        }
        top = Some(d.to_owned());
        p = d.parent();
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    Ok(top)
}

async fn write(plan: Plan, output: &Path, storage: &Path) -> Result<(), String> {
    let Some(config) = plan.config else {
        return Err("no configuration to write".into());
    };
    let created_storage = create_dirs(storage, 0o750)
        .map_err(|e| format!("cannot create {}: {e}", storage.display()))?;
    let staging = storage.join(format!(".import-ma1sd.{}", std::process::id()));
    let result = write_staged(
        &plan.yaml,
        &config,
        plan.key.as_ref().filter(|_| !plan.key_present),
        &plan.invites,
        &plan.terms,
        plan.existing_store,
        &staging,
        output,
        storage,
    )
    .await;
    let _ = fs::remove_dir_all(&staging);
    if result.is_err() {
        if let Some(top) = created_storage {
            let _ = fs::remove_dir_all(top);
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn write_staged(
    yaml: &str,
    config: &Config,
    key: Option<&keystore::TheirKey>,
    invites: &Invites,
    terms: &Terms,
    existing_store: Option<Store>,
    staging: &Path,
    output: &Path,
    storage: &Path,
) -> Result<(), String> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(staging)
        .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    // 1. Everything into staging.
    if let Some(k) = key {
        crate::crypto::keyfile::create(&staging.join("keys"), &k.serial, &k.seed)
            .map_err(|e| e.to_string())?;
    }
    if existing_store.is_none() {
        let path = staging.join("store");
        let (cache, pepper) = (config.storage.cache_size, config.hashing.pepper_length);
        let store = tokio::task::spawn_blocking(move || Store::open(&path, cache, pepper))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the new store: {e}"))?;
        store
            .import(&invites.records, &terms.accepted)
            .await
            .map_err(|e| format!("the new store: {e}"))?;
        store.close().map_err(|e| format!("the new store: {e}"))?;
    }
    let out_dir = output
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let created_out_dir = create_dirs(&out_dir, 0o755)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let name = output
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("mxisd.yaml");
    let tmp = out_dir.join(format!(".{name}.import-ma1sd.{}", std::process::id()));
    let write_tmp = || -> std::io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&tmp)?;
        f.write_all(yaml.as_bytes())?;
        f.sync_all()
    };
    let fail_tmp = |e: String| {
        let _ = fs::remove_file(&tmp);
        if let Some(d) = &created_out_dir {
            let _ = fs::remove_dir_all(d);
        }
        e
    };
    write_tmp().map_err(|e| fail_tmp(format!("cannot write {}: {e}", tmp.display())))?;

    // 2. Into place, undoing on failure.
    let mut undo = Undo::default();
    let step = |from: PathBuf, to: PathBuf, undo: &mut Undo| -> Result<(), String> {
        fs::rename(&from, &to)
            .map_err(|e| format!("cannot move {} to {}: {e}", from.display(), to.display()))?;
        undo.dirs.push(to);
        Ok(())
    };
    let moved = (|| {
        if key.is_some() {
            step(staging.join("keys"), storage.join("keys"), &mut undo)?;
        }
        if existing_store.is_none() {
            step(staging.join("store"), storage.join("store"), &mut undo)?;
        }
        Ok::<(), String>(())
    })();
    if let Err(e) = moved {
        undo.run();
        if let Some(store) = existing_store {
            let _ = store.close();
        }
        return Err(fail_tmp(e));
    }
    if let Some(store) = existing_store {
        let merged = store
            .import(&invites.records, &terms.accepted)
            .await
            .map_err(|e| format!("the store in {}: {e}", storage.join("store").display()));
        let closed = store.close();
        if let Err(e) = merged {
            undo.run();
            return Err(fail_tmp(e));
        }
        closed.map_err(|e| format!("closing the store: {e}"))?;
    }
    if let Err(e) = fs::rename(&tmp, output) {
        undo.run();
        return Err(fail_tmp(format!(
            "cannot move {} to {}: {e}",
            tmp.display(),
            output.display()
        )));
    }
    if let Ok(d) = fs::File::open(&out_dir) {
        let _ = d.sync_all();
    }
    println!(
        "wrote {} (mode 0640){}{} and {} invite(s), {} user(s)' accepted terms into {}",
        output.display(),
        if key.is_some() {
            ", the signing key into "
        } else {
            ""
        },
        if key.is_some() {
            storage.join("keys").display().to_string()
        } else {
            String::new()
        },
        invites.records.len(),
        terms.accepted.len(),
        storage.join("store").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Policy;

    fn raw(token: &str, address: &str, props: &str) -> db::RawInvite {
        db::RawInvite {
            token: Some(token.into()),
            sender: Some("@alice:example.org".into()),
            medium: Some("email".into()),
            address: Some(address.into()),
            room_id: Some("!room:example.org".into()),
            properties: Some(props.into()),
        }
    }

    #[test]
    fn invites_keep_their_key_and_fields_and_expired_ones_go() {
        let now = 10_000_000_000;
        let seed = [4u8; 32];
        let public = b64_encode(
            ed25519_dalek::SigningKey::from_bytes(&seed)
                .verifying_key()
                .as_bytes(),
        );
        let props = |created: u64| {
            format!(
                r#"{{"created_at":"{created}","e_key_algo":"ed25519","e_key_serial":"S1","e_key_public":"{public}","p_key_serial":"0","room_name":"Room","sender_display_name":"Alice"}}"#
            )
        };
        let week = Duration::from_secs(7 * 86_400);
        let rows = vec![
            raw("t1", "Bob@Example.org", &props(now - 1000)),
            raw("t2", "old@example.org", &props(now - 8 * 86_400_000)),
            raw("t3", "not an address", &props(now)),
            raw("t1", "dup@example.org", &props(now)),
            raw("t4", "nokey@example.org", "{}"),
            raw("t5", "bad@example.org", "[1]"),
        ];
        let inv = convert_invites(rows, None, Some(week), now).unwrap();
        assert_eq!(inv.records.len(), 2);
        let r = &inv.records[0];
        assert_eq!(r.token, "t1");
        assert_eq!(r.threepid.address(), "bob@example.org");
        assert_eq!(r.ephemeral_public_key, public);
        assert_eq!(r.created_ms, now - 1000);
        assert_eq!(r.details.get("room_name").map(String::as_str), Some("Room"));
        assert!(!r
            .details
            .keys()
            .any(|k| k.contains("key") || k == "created_at"));
        assert_eq!(inv.records[1].created_ms, now);
        assert_eq!((inv.undated, inv.keyless), (1, 1));
        let skipped: usize = inv.skipped.values().sum();
        assert_eq!(skipped, 4, "{:?}", inv.skipped);
        assert!(inv.skipped.keys().any(|k| k.starts_with("expired")));
        // Without expiry the old one stays.
        let inv = convert_invites(
            vec![raw("t2", "old@example.org", &props(1))],
            None,
            None,
            now,
        )
        .unwrap();
        assert_eq!(inv.records.len(), 1);
    }

    #[test]
    fn the_ephemeral_key_file_must_match() {
        let tmp = tempfile::tempdir().unwrap();
        let other = b64_encode(&[9u8; 32]);
        let key = b64_encode(&[5u8; 32]);
        fs::write(
            tmp.path().join("S1"),
            format!(r#"{{"version":"0","isValid":true,"key":"{key}"}}"#),
        )
        .unwrap();
        let p = format!(r#"{{"e_key_serial":"S1","e_key_public":"{other}"}}"#);
        let inv =
            convert_invites(vec![raw("t", "a@b.org", &p)], Some(tmp.path()), None, 1).unwrap();
        assert!(inv.records.is_empty());
        assert!(inv.skipped.keys().any(|k| k.contains("does not match")));
        // With the file alone, its public key is used.
        let inv = convert_invites(
            vec![raw("t", "a@b.org", r#"{"e_key_serial":"S1"}"#)],
            Some(tmp.path()),
            None,
            1,
        )
        .unwrap();
        let expected = b64_encode(
            ed25519_dalek::SigningKey::from_bytes(&[5u8; 32])
                .verifying_key()
                .as_bytes(),
        );
        assert_eq!(inv.records[0].ephemeral_public_key, expected);
    }

    #[test]
    fn terms_take_the_configured_spelling_and_count_incomplete_users() {
        let mut policies = BTreeMap::new();
        for (name, url) in [
            ("tos", "https://x/ToS-1.html"),
            ("privacy", "https://x/p-1.html"),
        ] {
            policies.insert(
                name.to_owned(),
                Policy {
                    version: "1".into(),
                    terms: BTreeMap::from([("en".to_owned(), ("T".to_owned(), url.to_owned()))]),
                },
            );
        }
        let terms = TermsConfig { policies };
        let rows = vec![
            (Some("@a:x.org".into()), Some("https://x/tos-1.html".into())),
            (Some("@a:x.org".into()), Some("https://x/p-1.html".into())),
            (Some("@b:x.org".into()), Some("https://x/p-1.html".into())),
            (Some("nobody".into()), Some("https://x/p-1.html".into())),
            (Some("@c:x.org".into()), None),
        ];
        let t = convert_terms(rows, &terms);
        assert_eq!(t.rows, 5);
        assert_eq!(t.skipped, 2);
        assert_eq!(t.accepted.len(), 2);
        assert!(t.accepted["@a:x.org"].contains("https://x/ToS-1.html"));
        assert_eq!(t.incomplete, 1);
    }
}
