//! `mxisd import-ma1sd`: moves a ma1sd (or mxisd 1.x) installation over. It translates
//! the config ([`translate`]), copies the signing key so its id and public key stay the
//! same ([`keystore`]), and imports pending 3PID invites (with their ephemeral public
//! keys; `invites`) and accepted terms (`terms`) from ma1sd's SQLite or PostgreSQL
//! database ([`db`]). This file holds the orchestration: the plan and its report.
//!
//! Nothing is half-imported: every problem (config, key store, database, destination)
//! is collected and printed before anything is written, and the writes (`write`) go to
//! staging names that are renamed into place at the end (or removed on failure). The lookup
//! pepper is not carried over because ma1sd never saves it (it lives in memory and
//! changes at every start); clients fetch `hash_details` again.

pub mod db;
pub mod keystore;
pub mod translate;

mod invites;
mod terms;
mod write;

pub use invites::{convert_invites, Invites};
pub use terms::{convert_terms, Terms};

use crate::config::Config;
use crate::model::now_ms;
use crate::store::Store;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    crate::outln!(
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
        crate::outln!("dry run: nothing was written");
        if let Some(store) = plan.existing_store {
            let _ = store.close();
        }
        return ExitCode::SUCCESS;
    }
    match write::write(plan, &output, &storage).await {
        Ok(()) => {
            crate::outln!("done. Next:");
            crate::outln!("  mxisd check-config -c {}", output.display());
            crate::outln!(
                "  give the service user the state: chown -R mxisd:mxisd {} (if mxisd runs as user mxisd)",
                storage.display()
            );
            crate::outln!(
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
        crate::outln!("config:");
    }
    for (key, what) in &t.changed {
        crate::outln!("  changed {key}: {what}");
    }
    for (key, why) in &t.dropped {
        crate::outln!("  dropped {key}: {why}");
    }

    // The signing key.
    match &t.keys {
        Some(translate::KeySource::Path(p)) => match keystore::read(p) {
            Ok(k) => {
                crate::outln!(
                    "key: ed25519:{} (public key {}) from {}",
                    k.serial,
                    k.public,
                    k.file.display()
                );
                if !k.other_regular.is_empty() {
                    crate::outln!(
                        "  not carried over: {} other regular key(s) ({}); mxisd serves one long-term key",
                        k.other_regular.len(),
                        k.other_regular.join(", ")
                    );
                }
                plan.key = Some(k);
            }
            Err(e) => plan.problems.push(e),
        },
        Some(translate::KeySource::Memory) => crate::outln!(
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
        crate::outln!("database: in memory (:memory:): no invites or terms to import");
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
        crate::outln!("invites: {} pending invite(s) to import", i.records.len());
        for (why, n) in &i.skipped {
            crate::outln!("  skipped {n}: {why}");
        }
        if i.undated > 0 {
            crate::outln!(
                "  {} without a creation time: their expiry counts from now, as ma1sd counted from its start",
                i.undated
            );
        }
        if i.keyless > 0 {
            crate::outln!(
                "  {} made before ma1sd kept ephemeral keys: delivered on bind as before; sign-ed25519 cannot serve them",
                i.keyless
            );
        }
        if let Some(dir) = &ephemeral_dir {
            let total = keystore::ephemeral_count(dir);
            let used = i.records.len() - i.keyless;
            if total > used {
                crate::outln!(
                    "  not carried over: {} ephemeral key(s) of invites that are no longer pending",
                    total - used
                );
            }
        }
        match data.accepted {
            Some(rows) => {
                plan.terms = convert_terms(rows, &config.terms);
                let tm = &plan.terms;
                crate::outln!(
                    "terms: {} acceptance(s) of {} user(s) to import",
                    tm.rows - tm.skipped,
                    tm.accepted.len()
                );
                if tm.skipped > 0 {
                    crate::outln!("  skipped {}: not a Matrix user ID or no URL", tm.skipped);
                }
                if tm.incomplete > 0 {
                    crate::outln!(
                        "  {} user(s) accepted only some current policies: ma1sd counted one as all, mxisd asks them for the rest",
                        tm.incomplete
                    );
                }
            }
            None => {
                crate::outln!(
                    "terms: no accepted table (mxisd 1.x had no terms): nothing to import"
                )
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
            crate::outln!("  not imported: {table} ({n} row(s)): {why}");
        }
    }
    crate::outln!(
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
                    crate::outln!("  {} holds this key already", keys_dir.display());
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
                    crate::outln!(
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
