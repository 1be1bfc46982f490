//! The store: mxisd's source of truth (bindings, sessions, invites, accounts, keys,
//! outbox as later issues add them). A typed API over the [`kv::Kv`] seam; no sled type
//! leaves this module. Values are versioned records ([`codec`]); the layout is versioned
//! as a whole by `schema_version`, and [`migrations`] run in order at open.
//!
//! Durability: [`Store::commit`] applies a batch atomically and returns only once the
//! batch is on disk (group flush, see [`flush`]). Handlers answer 200 after `commit`
//! returns, so an acknowledged write survives a crash.

pub mod accounts;
pub mod backup;
pub mod bindings;
pub mod codec;
pub mod flush;
pub mod import;
pub mod invites;
pub mod kv;
pub mod mem_kv;
pub mod migrations;
pub mod sessions;
pub mod sled_kv;
pub mod sync;

use crate::model::now_ms;
use codec::Record;
use kv::{Batch, Kv};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Tree holding store-wide metadata (`schema_version`, creation time).
pub(crate) const META: &str = "meta";
const KEY_SCHEMA: &[u8] = b"schema_version";
const KEY_CREATED: &[u8] = b"created";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what}: {detail}")]
    Io { what: String, detail: String },
    #[error("the store in {0} is in use by another mxisd process (sled allows one process at a time); stop it, or use the admin listener of the running server")]
    Locked(PathBuf),
    #[error("the store has schema version {found}, newer than this mxisd supports ({supported}); run a newer mxisd or restore a backup")]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    #[error("the store is closed")]
    Closed,
    #[error("the disk holding the store is full: {0}")]
    Full(String),
    /// A write failed earlier (`full`: for lack of space); writes are refused until the
    /// store is reopened, reads go on.
    #[error("the store is read-only since a write failed ({detail}); writes resume once it can write again")]
    ReadOnly { full: bool, detail: String },
    #[error("a backup is already running; wait for it to finish")]
    BackupRunning,
}

/// The store's version as a whole.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SchemaVersion(pub u32);
impl Record for SchemaVersion {
    const VERSION: u8 = 1;
    const NAME: &'static str = "schema version";
}

/// When this store was first created (unix milliseconds).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Created(pub u64);
impl Record for Created {
    const VERSION: u8 = 1;
    const NAME: &'static str = "creation time";
}

/// A snapshot of the store's health for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    pub schema_version: u32,
    pub created_at_ms: u64,
    pub size_on_disk: Option<u64>,
    pub flush_rounds: u64,
    /// Bindings in the in-memory lookup table; `None` unless it is ready.
    pub lookup_table: Option<u64>,
    /// `ready`, `building` (lookups read the store meanwhile) or `off`.
    pub lookup_table_state: &'static str,
    /// Why writes are refused, while they are (reads go on).
    pub read_only: Option<ReadOnly>,
}

/// Why the store refuses writes.
#[derive(Debug, Clone, Serialize)]
pub struct ReadOnly {
    /// For lack of space.
    pub full: bool,
    pub reason: String,
}

pub struct Store {
    kv: Arc<dyn Kv>,
    flusher: flush::GroupFlusher,
    path: Option<PathBuf>,
    /// Serialises read-modify-write of bindings and the hash index.
    bindings_lock: Arc<tokio::sync::Mutex<()>>,
    /// Serialises read-modify-write of account records.
    accounts_lock: tokio::sync::Mutex<()>,
    sessions_lock: tokio::sync::Mutex<()>,
    invites_lock: tokio::sync::Mutex<()>,
    /// The current lookup pepper (durable copy in `meta`).
    pepper: std::sync::RwLock<bindings::PepperState>,
    /// Its generation, readable without taking the lock.
    pepper_generation: std::sync::atomic::AtomicU32,
    /// The next pepper while a rotation copies the records to it: every binding write
    /// lands under both generations meanwhile (see `bindings::pepper`).
    rotating: std::sync::RwLock<Option<bindings::PepperState>>,
    /// One rotation at a time.
    rotation_lock: tokio::sync::Mutex<()>,
    /// Live access tokens seen recently.
    token_cache: accounts::TokenCache,
    /// The running backup's snapshot, if any: every batch saves what it overwrites into
    /// it first. Batches hold this for reading while they apply.
    backup: Arc<std::sync::RwLock<Option<Arc<backup::Snapshot>>>>,
    /// Every effective binding of the current generation, in memory (see
    /// [`bindings::LookupTable`]).
    lookup_table: bindings::LookupTable,
    /// Bumped by every revocation, so a lookup that read a token from the store just
    /// before it was revoked does not put it back into the cache.
    token_epoch: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the sled store under `path`, running pending migrations. A new store gets
    /// a random lookup pepper of `pepper_length` characters.
    pub fn open(path: &Path, cache_bytes: u64, pepper_length: usize) -> Result<Self, StoreError> {
        Self::on_disk(
            sled_kv::SledKv::open(path, cache_bytes)?,
            path,
            pepper_length,
        )
    }

    /// The store over the sled database of `path`.
    fn on_disk(kv: sled_kv::SledKv, path: &Path, pepper_length: usize) -> Result<Self, StoreError> {
        let mut store = Self::with_kv(Arc::new(kv), migrations::ALL, pepper_length)?;
        store.path = Some(path.to_owned());
        Ok(store)
    }

    /// Opens the store for the server: as [`Store::open`], and when the disk is full
    /// (sled cannot open without writing) serves a copy made in `scratch` (memory,
    /// /dev/shm) read-only, until the disk has space again and [`Store::recover`]
    /// reopens the real one.
    pub fn open_serving(
        path: &Path,
        cache_bytes: u64,
        pepper_length: usize,
        scratch: &Path,
    ) -> Result<Self, StoreError> {
        // sled's recovery at open writes; on a full disk it can fail halfway and leave
        // the log unreadable (seen with sled 0.34): never let it try without room.
        let detail = match probe_space(path) {
            Err(StoreError::Full(detail)) => detail,
            _ => match sled_kv::SledKv::open(path, cache_bytes) {
                Ok(kv) => return Self::on_disk(kv.with_scratch(scratch), path, pepper_length),
                Err(StoreError::Full(detail)) => detail,
                Err(other) => return Err(other),
            },
        };
        let kv = sled_kv::SledKv::open_copy(path, scratch, cache_bytes)?;
        let store = Self::on_disk(kv, path, pepper_length)?;
        store.flusher.fail(StoreError::Full(format!(
            "started on a full disk ({detail}); serving a copy of the store made in {}",
            scratch.display()
        )));
        Ok(store)
    }

    /// A store that lives in memory only, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::with_kv(Arc::new(mem_kv::MemKv::new()), migrations::ALL, 32)
    }

    pub(crate) fn with_kv(
        kv: Arc<dyn Kv>,
        steps: &[migrations::Migration],
        pepper_length: usize,
    ) -> Result<Self, StoreError> {
        migrations::run(kv.as_ref(), steps)?;
        let pepper = Self::load_or_init_pepper(kv.as_ref(), || {
            crate::crypto::random_alphanumeric(pepper_length).map_err(|e| StoreError::Io {
                what: "random pepper".into(),
                detail: e.to_string(),
            })
        })?;
        kv.flush()?;
        let flusher = flush::GroupFlusher::start(Arc::clone(&kv))?;
        let store = Self {
            kv,
            flusher,
            path: None,
            bindings_lock: Arc::new(tokio::sync::Mutex::new(())),
            accounts_lock: tokio::sync::Mutex::new(()),
            sessions_lock: tokio::sync::Mutex::new(()),
            invites_lock: tokio::sync::Mutex::new(()),
            pepper_generation: std::sync::atomic::AtomicU32::new(pepper.generation),
            pepper: std::sync::RwLock::new(pepper),
            rotating: std::sync::RwLock::new(None),
            rotation_lock: tokio::sync::Mutex::new(()),
            token_cache: Default::default(),
            backup: Default::default(),
            token_epoch: std::sync::atomic::AtomicU64::new(0),
            lookup_table: bindings::LookupTable::new(),
        };
        store.clean_stale_generations()?;
        Ok(store)
    }

    /// Applies `batch` atomically and waits until it is durable.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.apply(batch)?;
        self.flusher.flush().await
    }

    /// Applies a batch without waiting for durability, refusing once a flush failed
    /// (nothing written after a failed fsync may be served as if it were safe).
    pub(crate) fn apply(&self, mut batch: Batch) -> Result<(), StoreError> {
        self.flusher.check()?;
        self.mirror_for_rotation(&mut batch)?;
        self.apply_unmirrored(batch)
    }

    /// [`Store::apply`] without the rotation's mirroring (the rotation's own copies).
    pub(crate) fn apply_unmirrored(&self, batch: Batch) -> Result<(), StoreError> {
        self.flusher.check()?;
        let backup = self.backup.read().unwrap_or_else(|p| p.into_inner());
        if let Some(snapshot) = backup.as_ref() {
            snapshot.capture(self.kv.as_ref(), &batch.ops)?;
        }
        let table = self.lookup_table.prepare(&batch);
        if let Err(e) = self.kv.apply(batch) {
            // sled refuses every write after a failed one: say so from now on (and
            // let `recover` reopen it once the disk can take writes again).
            return Err(self.flusher.fail(e));
        }
        if let Some(table) = table {
            self.lookup_table.apply(table);
        }
        Ok(())
    }

    /// Starts a backup: from now on the store as it is at this moment can be written
    /// out with [`Store::write_backup`], while writes go on. One at a time.
    pub fn start_backup(&self) -> Result<backup::Running, StoreError> {
        let mut slot = self.backup.write().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Err(StoreError::BackupRunning);
        }
        let snapshot = Arc::new(backup::Snapshot::default());
        *slot = Some(Arc::clone(&snapshot));
        Ok(backup::Running {
            snapshot,
            slot: Arc::clone(&self.backup),
        })
    }

    /// Writes the store as it was when `running` started, and `key_files`, to `out`.
    /// Blocking; run it off the async runtime.
    pub fn write_backup(
        &self,
        running: &backup::Running,
        server_name: &str,
        key_files: &[(String, Vec<u8>)],
        out: &mut dyn std::io::Write,
    ) -> Result<backup::Summary, StoreError> {
        let header = backup::Header {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            schema: self.schema_version()?,
            created_ms: now_ms(),
            server_name: server_name.to_owned(),
        };
        backup::write(
            self.kv.as_ref(),
            Some(&running.snapshot),
            &header,
            key_files,
            out,
        )
    }

    /// Reads and decodes one record.
    pub(crate) fn get<T: Record>(
        &self,
        tree: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.kv
            .get(tree, key)?
            .map(|bytes| codec::decode(&bytes))
            .transpose()
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(self
            .get::<SchemaVersion>(META, KEY_SCHEMA)?
            .map_or(0, |v| v.0))
    }

    /// Writes a backup of the store under `path` without opening it as a [`Store`] (no
    /// migrations run): for a server that is stopped. Fails if the store is in use.
    pub fn offline_backup(
        path: &Path,
        server_name: &str,
        key_files: &[(String, Vec<u8>)],
        out: &mut dyn std::io::Write,
    ) -> Result<backup::Summary, StoreError> {
        if !path.is_dir() {
            return Err(StoreError::Io {
                what: format!("no store in {}", path.display()),
                detail: "the directory does not exist".into(),
            });
        }
        let kv = sled_kv::SledKv::open(path, 8 << 20)?;
        let schema = match kv.get(META, KEY_SCHEMA)? {
            Some(bytes) => codec::decode::<SchemaVersion>(&bytes)?.0,
            None => 0,
        };
        let header = backup::Header {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            schema,
            created_ms: now_ms(),
            server_name: server_name.to_owned(),
        };
        backup::write(&kv, None, &header, key_files, out)
    }

    /// Fills a new store under `path` (which must not exist) from a backup, refusing a
    /// backup newer than this binary; nothing is left under `path` on an error. Returns
    /// the header and what was read; the key files are handed to `file`.
    pub fn restore_new(
        path: &Path,
        input: &mut dyn std::io::Read,
        file: &mut dyn FnMut(String, Vec<u8>) -> Result<(), StoreError>,
    ) -> Result<(backup::Header, backup::Summary), StoreError> {
        if path.exists() {
            return Err(StoreError::Io {
                what: format!("cannot restore into {}", path.display()),
                detail: "it already exists".into(),
            });
        }
        let result = (|| {
            let kv = sled_kv::SledKv::open(path, 8 << 20)?;
            let mut filler = backup::Filler::new(&kv);
            let supported = migrations::CURRENT;
            let read = backup::read(
                input,
                &mut |h| {
                    if h.schema > supported {
                        Err(format!(
                            "the backup has schema version {} (mxisd {}), newer than this mxisd supports ({supported}); restore it with mxisd {} or newer",
                            h.schema, h.version, h.version
                        ))
                    } else {
                        Ok(())
                    }
                },
                &mut |item| match item {
                    backup::Item::Entry(tree, key, value) => filler.put(&tree, &key, value),
                    backup::Item::File(name, content) => file(name, content),
                },
            )?;
            filler.finish()?;
            Ok(read)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(path);
        }
        result
    }

    /// Test support: sets the schema version of the (closed) store under `path`, to
    /// rehearse what an older mxisd does with a newer store.
    #[doc(hidden)]
    pub fn stamp_schema_version(path: &Path, version: u32) -> Result<(), StoreError> {
        let kv = sled_kv::SledKv::open(path, 8 << 20)?;
        let mut batch = Batch::new();
        batch.put(
            META,
            KEY_SCHEMA.to_vec(),
            codec::encode(&SchemaVersion(version))?,
        );
        kv.apply(batch)?;
        kv.flush()
    }

    /// Reads the metadata back: proves the store answers.
    pub fn status(&self) -> Result<StoreStatus, StoreError> {
        if let Err(StoreError::Closed) = self.flusher.check() {
            return Err(StoreError::Closed);
        }
        Ok(StoreStatus {
            read_only: self.flusher.failure().map(|f| ReadOnly {
                full: f.full,
                reason: f.detail,
            }),
            schema_version: self.schema_version()?,
            created_at_ms: self.get::<Created>(META, KEY_CREATED)?.map_or(0, |c| c.0),
            size_on_disk: self.kv.size_on_disk(),
            flush_rounds: self.flusher.rounds(),
            lookup_table: self.lookup_table.len(),
            lookup_table_state: self.lookup_table.state(),
        })
    }

    /// Whether writes are refused since one failed.
    pub fn is_read_only(&self) -> bool {
        self.flusher.failure().is_some()
    }

    /// After a failed write: if the disk takes writes again (a probe file of a few
    /// segments is written, synced and removed), reopens the store from disk, rebuilds
    /// the lookup table (it may hold writes that never became durable) and accepts
    /// writes again. Returns whether it did.
    pub async fn recover(self: &Arc<Self>) -> Result<bool, StoreError> {
        if self.flusher.failure().is_none() {
            return Ok(false);
        }
        // No binding write between the reopen and the table's new build.
        let _guard = self.bindings_lock.lock().await;
        let store = Arc::clone(self);
        tokio::task::spawn_blocking(move || store.reopen_from_disk())
            .await
            .map_err(|e| StoreError::Io {
                what: "reopening the store".into(),
                detail: e.to_string(),
            })??;
        if self.lookup_table.is_on() {
            self.lookup_table
                .rebuild(Arc::clone(&self.kv), self.pepper_generation())?;
        }
        Ok(true)
    }

    fn reopen_from_disk(&self) -> Result<(), StoreError> {
        if let Some(path) = &self.path {
            probe_space(path)?;
        }
        self.kv.reopen()?;
        self.token_cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.token_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.flusher.reset();
        Ok(())
    }

    /// Makes everything applied so far durable, blocking the calling thread.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.kv.flush()
    }

    /// Flushes everything and stops the flush thread. Called at shutdown.
    pub fn close(mut self) -> Result<(), StoreError> {
        let read_only = self.flusher.failure();
        self.flusher.stop();
        if let Some(f) = read_only {
            // Nothing was acknowledged since the failure; sled would refuse the flush.
            tracing::warn!(reason = %f.detail, "closing a read-only store: nothing to flush");
            return Ok(());
        }
        self.kv.flush()
    }
}

/// Milliseconds since the Unix epoch.
/// `sha256(medium ‖ 0 ‖ address ‖ 0 ‖ extra)`: fixed-size keys for per-3PID indexes
/// (the address itself is not a key, so it does not show in key scans).
pub(crate) fn threepid_digest(threepid: &crate::model::ThreePid, extra: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(threepid.medium().as_str().as_bytes());
    h.update([0]);
    h.update(threepid.address().as_bytes());
    h.update([0]);
    h.update(extra);
    h.finalize().into()
}

/// Where the store lives inside `storage.path`.
pub fn dir(config: &crate::config::Config) -> std::path::PathBuf {
    config.storage.path.join("store")
}

impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> Self {
        use crate::error::{ErrCode, Error};
        let message = match &e {
            StoreError::Full(_) | StoreError::ReadOnly { full: true, .. } => {
                "The server's storage is full; writes resume once space is freed"
            }
            StoreError::ReadOnly { full: false, .. } => {
                "The server cannot write to its storage; writes resume once it can"
            }
            _ => return Self::internal("store", e),
        };
        tracing::debug!(error = %e, "write refused: the store is read-only");
        Error::new(ErrCode::ReadOnly, message).with("retry_after_ms", RETRY_WRITES_MS)
    }
}

/// Writes, syncs and removes a file of 4 MiB next to the store: the room a reopen and
/// the next writes need (sled writes in segments of 512 KiB).
fn probe_space(dir: &Path) -> Result<(), StoreError> {
    use std::io::Write as _;
    let path = dir.join(".space-probe");
    let written = (|| {
        let mut file = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..4 {
            file.write_all(&chunk)?;
        }
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    written.map_err(|e| {
        if sled_kv::is_full(&e) {
            StoreError::Full(e.to_string())
        } else {
            StoreError::Io {
                what: "cannot write a probe file next to the store".into(),
                detail: e.to_string(),
            }
        }
    })
}

/// What a refused write is told to wait: the store re-checks the disk every 5 s.
const RETRY_WRITES_MS: u64 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Note(String);
    impl Record for Note {
        const VERSION: u8 = 1;
        const NAME: &'static str = "note";
    }

    /// Found by `fuzz/run.sh store_codec`: a length prefix of 4 GiB in 7 bytes made the
    /// decoder allocate it (out of memory). Some types read these bytes as a small
    /// record, the others must refuse them without asking for the memory.
    #[test]
    fn a_damaged_length_is_an_error_not_an_allocation() {
        let input: &[u8] = &[1, 252, 1, 255, 255, 245, 0];
        let _ = codec::decode::<bindings::ThreePidRecord>(input);
        let _ = codec::decode::<sessions::SessionRecord>(input);
        let _ = codec::decode::<invites::InviteRecord>(input);
        let _ = codec::decode::<accounts::UserRecord>(input);
        let _ = codec::decode::<accounts::TokenRecord>(input);
    }

    #[tokio::test]
    async fn commit_is_durable_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = Store::open(&path, 8 << 20, 32).unwrap();
            let mut batch = Batch::new();
            batch.put(
                "notes",
                b"a".to_vec(),
                codec::encode(&Note("x".into())).unwrap(),
            );
            batch.put(
                "other",
                b"b".to_vec(),
                codec::encode(&Note("y".into())).unwrap(),
            );
            store.commit(batch).await.unwrap();
            assert!(store.status().unwrap().flush_rounds >= 1);
            store.close().unwrap();
        }
        let store = Store::open(&path, 8 << 20, 32).unwrap();
        assert_eq!(
            store.get::<Note>("notes", b"a").unwrap(),
            Some(Note("x".into()))
        );
        assert_eq!(
            store.get::<Note>("other", b"b").unwrap(),
            Some(Note("y".into()))
        );
        assert_eq!(store.schema_version().unwrap(), migrations::CURRENT);
    }

    #[tokio::test]
    async fn a_second_process_gets_a_clear_lock_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), 8 << 20, 32).unwrap();
        // sled takes an flock on its db file; a second open in this process hits it too.
        let err = Store::open(dir.path(), 8 << 20, 32).unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
    }

    #[tokio::test]
    async fn concurrent_commits_all_land() {
        let store = Arc::new(Store::in_memory().unwrap());
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let mut b = Batch::new();
                b.put(
                    "notes",
                    i.to_be_bytes().to_vec(),
                    codec::encode(&Note(i.to_string())).unwrap(),
                );
                store.commit(b).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(store.kv.count("notes").unwrap(), 200);
    }
}
