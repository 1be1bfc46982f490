//! The sled implementation of the key-value seam. All logical trees live in one sled
//! tree under a `name \0` key prefix, so a [`Batch`] touching several of them is one
//! sled batch: atomic, and far cheaper than sled's multi-tree transactions (which also
//! held hundreds of MB during bulk imports, measured). sled allows one process per
//! directory; its lock error becomes a message an operator can act on.

use super::kv::{full_key, Batch, Entry, Kv, Op};
use super::StoreError;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

pub struct SledKv {
    /// None only while [`Kv::reopen`] replaces it.
    db: RwLock<Option<sled::Db>>,
    path: PathBuf,
    cache_bytes: u64,
    /// Where a copy of the store is made to serve reads when the real one cannot
    /// write (memory, e.g. /dev/shm); None: never copied.
    scratch: Option<PathBuf>,
    /// The copy being served instead of `path` (see [`SledKv::open_copy`] and
    /// [`Kv::serve_copy`]). Locked before `db` by whoever takes both.
    copy: Mutex<Option<PathBuf>>,
}

impl Drop for SledKv {
    fn drop(&mut self) {
        if let Some(copy) = self.copy.get_mut().unwrap_or_else(|p| p.into_inner()) {
            let _ = std::fs::remove_dir_all(copy);
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        total += if entry.file_type()?.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            entry.metadata()?.len()
        };
    }
    Ok(total)
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn memory_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Copies the store at `path` into `scratch` and opens the copy. A copy in memory
/// must not starve the machine: refused when the store is larger than half the
/// memory available.
fn open_scratch_copy(
    path: &Path,
    scratch: &Path,
    cache_bytes: u64,
) -> Result<(PathBuf, sled::Db), StoreError> {
    let refused = |detail: String| StoreError::Io {
        what: format!(
            "the store could not be copied to {} to serve it read-only",
            scratch.display()
        ),
        detail,
    };
    let size = dir_bytes(path).map_err(|e| refused(e.to_string()))?;
    if let Some(available) = memory_available() {
        if size > available / 2 {
            return Err(refused(format!(
                "the store takes {} MiB and only {} MiB of memory is available",
                size >> 20,
                available >> 20
            )));
        }
    }
    let copy = scratch.join(format!("mxisd-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    if let Err(e) = copy_dir(path, &copy) {
        let _ = std::fs::remove_dir_all(&copy);
        return Err(refused(e.to_string()));
    }
    let db = open_db(&copy, cache_bytes).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&copy);
    })?;
    Ok((copy, db))
}

impl SledKv {
    /// Opens (creating if needed) the database under `path` with a page cache bounded to
    /// `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        Ok(Self {
            db: RwLock::new(Some(open_db(path, cache_bytes)?)),
            path: path.to_owned(),
            cache_bytes,
            scratch: None,
            copy: Mutex::new(None),
        })
    }

    /// Lets [`Kv::serve_copy`] copy the store into `scratch` after a failed write.
    pub fn with_scratch(mut self, scratch: &Path) -> Self {
        self.scratch = Some(scratch.to_owned());
        self
    }

    /// For a store whose disk is full (sled cannot open without writing): copies the
    /// store into `scratch` (memory, e.g. /dev/shm) and opens the copy, to be served
    /// read-only. [`Kv::reopen`] opens the real one at `path` and removes the copy.
    pub fn open_copy(path: &Path, scratch: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let (copy, db) = open_scratch_copy(path, scratch, cache_bytes)?;
        Ok(Self {
            db: RwLock::new(Some(db)),
            path: path.to_owned(),
            cache_bytes,
            scratch: Some(scratch.to_owned()),
            copy: Mutex::new(Some(copy)),
        })
    }

    /// The database handle (a cheap clone: operations never hold the lock).
    fn db(&self) -> Result<sled::Db, StoreError> {
        self.db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Io {
                what: "sled".into(),
                detail: "the store is being reopened".into(),
            })
    }

    /// Applies one batch atomically, then hands over what sled freed doing it.
    fn write(&self, batch: sled::Batch) -> Result<(), StoreError> {
        let db = self.db()?;
        may_block(|| {
            let applied = db.apply_batch(batch);
            release_deferred();
            applied
        })
        .map_err(backend)
    }
}

fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    // The store holds 3PIDs: private to the service user.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(path)
        .map_err(|e| StoreError::Io {
            what: format!("cannot create {}", path.display()),
            detail: e.to_string(),
        })?;
    // sled releases its file lock when its last background thread lets go of the
    // database, a moment after a close in this process (a restart in place): wait
    // for it briefly before calling the store taken.
    let mut attempts = 0;
    let db = loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open();
        match opened {
            Ok(db) => break db,
            Err(sled::Error::Io(io)) if io.to_string().contains("lock") => {
                attempts += 1;
                if attempts >= 40 {
                    return Err(StoreError::Locked(path.to_owned()));
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(sled::Error::Io(io)) if is_full(&io) => {
                return Err(StoreError::Full(format!(
                    "cannot open the store in {}: {io}",
                    path.display()
                )))
            }
            Err(other) => {
                return Err(StoreError::Io {
                    what: format!("cannot open the store in {}", path.display()),
                    detail: other.to_string(),
                })
            }
        }
    };
    Ok(db)
}

/// No space (or quota) left on the device.
pub(crate) fn is_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(28 | 122))
}

fn backend(e: sled::Error) -> StoreError {
    match &e {
        sled::Error::Io(io) if is_full(io) => StoreError::Full(e.to_string()),
        _ => StoreError::Io {
            what: "sled".into(),
            detail: e.to_string(),
        },
    }
}

/// sled calls in progress in this process, on any thread.
static IN_SLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs one sled call so that a wait inside it cannot stall a tokio worker's other tasks.
///
/// sled guards every operation with one process-wide reader-writer lock, and a read can
/// wait on the disk while holding it (a page whose log write is still in flight). One
/// slow read makes the next batch wait for the write side, and everything after that
/// batch waits behind it: measured under the fault-injection bench, both tokio workers
/// sat in sled's lock for 30–110 ms at a time (a session read and an invite's batch), and
/// every connection of the process, lookups and search included, stopped with them
/// (probe p99 up to 1.3 s while no handler took over 25 ms).
///
/// So on a multi-thread runtime's worker, a call made while another is in progress runs
/// in `block_in_place`: the worker's queue moves to another thread for the duration. A
/// call made while sled is otherwise idle runs as is (no lock to wait for; handing the
/// queue over costs a thread wake-up, which halved the binds of the mixed-load bench when
/// done for every call), so at most the one worker waits whatever sled does, never all.
/// Elsewhere (the sync thread, blocking-pool threads, a current-thread runtime, which
/// cannot hand its queue over) calls run as they are, counted.
fn may_block<R>(f: impl FnOnce() -> R) -> R {
    use std::sync::atomic::Ordering::{AcqRel, Release};
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_SLED.fetch_sub(1, Release);
        }
    }
    let others = IN_SLED.fetch_add(1, AcqRel);
    let _leave = Leave;
    // Only a busy sled is worth asking which runtime this thread is on.
    let multi_thread = || {
        tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
    };
    if others > 0 && multi_thread() {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Hands over what sled freed on this thread. sled frees what it replaced (sealed
/// 512 KiB write buffers, pages dropped from its cache) through crossbeam's epoch
/// collector, which keeps each thread's frees in a bag of its own (up to 64) until
/// that thread's bag fills: a thread that wrote a sync's chunks and went quiet kept up
/// to 30 MB of write buffers resident for good (20 MB more RssAnon after a first sync of
/// 100k users in some runs, none in others). Pushing the bag to the global queue and
/// collecting what no reader can see any more costs a few atomic operations.
fn release_deferred() {
    sled::crossbeam_pin().flush();
}

/// A sled iterator read ahead in chunks, each chunk in one [`may_block`] (one hand-over
/// of the worker's queue per chunk, not per item). Chunks grow from 8 to 256 items, so a
/// caller that takes one item reads few more.
fn chunked<I: Iterator>(mut items: I) -> impl Iterator<Item = I::Item> {
    let mut ahead = std::collections::VecDeque::new();
    let mut chunk = 8;
    let mut done = false;
    std::iter::from_fn(move || {
        if ahead.is_empty() && !done {
            may_block(|| {
                while ahead.len() < chunk {
                    match items.next() {
                        Some(item) => ahead.push_back(item),
                        None => {
                            done = true;
                            break;
                        }
                    }
                }
                release_deferred();
            });
            chunk = (chunk * 2).min(256);
        }
        ahead.pop_front()
    })
}

impl Kv for SledKv {
    fn get(&self, tree: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let db = self.db()?;
        let found = may_block(|| db.get(full_key(tree, key))).map_err(backend)?;
        Ok(found.map(|v| v.to_vec()))
    }

    fn get_with(
        &self,
        tree: &'static str,
        key: &[u8],
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<bool, StoreError> {
        let db = self.db()?;
        // Lookup keys are short: build the full key on the stack.
        let mut buf = [0u8; 64];
        let len = tree.len() + 1 + key.len();
        let found = if len <= buf.len() {
            buf[..tree.len()].copy_from_slice(tree.as_bytes());
            buf[tree.len() + 1..len].copy_from_slice(key);
            may_block(|| db.get(&buf[..len]))
        } else {
            may_block(|| db.get(full_key(tree, key)))
        }
        .map_err(backend)?;
        match found {
            Some(v) => {
                f(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn scan_prefix<'a>(
        &'a self,
        tree: &'static str,
        prefix: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a> {
        let skip = tree.len() + 1;
        let db = match self.db() {
            Ok(db) => db,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        Box::new(
            chunked(db.scan_prefix(full_key(tree, prefix))).map(move |r| {
                r.map(|(k, v)| (k[skip..].to_vec(), v.to_vec()))
                    .map_err(backend)
            }),
        )
    }

    fn scan_chunk(
        &self,
        tree: &'static str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        use std::ops::Bound;
        let full_prefix = full_key(tree, prefix);
        let start = match after {
            Some(a) => Bound::Excluded(full_key(tree, a)),
            None => Bound::Included(full_prefix.clone()),
        };
        let skip = tree.len() + 1;
        let db = self.db()?;
        may_block(|| {
            db.range::<Vec<u8>, _>((start, Bound::Unbounded))
                .take_while(|r| {
                    r.as_ref()
                        .map_or(true, |(k, _)| k.starts_with(&full_prefix))
                })
                .take(limit)
                .map(|r| {
                    r.map(|(k, v)| (k[skip..].to_vec(), v.to_vec()))
                        .map_err(backend)
                })
                .collect()
        })
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut ops: Vec<(Vec<u8>, Op)> = batch
            .ops
            .into_iter()
            .map(|(tree, key, op)| (full_key(tree, &key), op))
            .collect();
        // In key order the tree is walked once instead of jumping around (stable, so
        // the last change to a key still wins).
        ops.sort_by(|a, b| a.0.cmp(&b.0));
        let mut b = sled::Batch::default();
        for (key, op) in ops {
            match op {
                Op::Put(v) => b.insert(key, v),
                Op::Delete => b.remove(key),
            }
        }
        self.write(b)
    }

    fn flush(&self) -> Result<(), StoreError> {
        let db = self.db()?;
        may_block(|| {
            let flushed = db.flush();
            release_deferred();
            flushed
        })
        .map(|_| ())
        .map_err(backend)
    }

    fn count(&self, tree: &'static str) -> Result<u64, StoreError> {
        let db = self.db()?;
        may_block(|| {
            let mut n = 0u64;
            for item in db.scan_prefix(full_key(tree, b"")).keys() {
                item.map_err(backend)?;
                n += 1;
            }
            Ok(n)
        })
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.db().ok()?.size_on_disk().ok()
    }

    fn scan_all<'a>(&'a self) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a> {
        match self.db() {
            Ok(db) => Box::new(
                chunked(db.iter())
                    .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend)),
            ),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn put_raw(&self, entries: Vec<Entry>) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in entries {
            b.insert(k, v);
        }
        self.write(b)
    }

    /// Drops the database and opens it again from disk: after a failed write sled
    /// refuses every later one, even once the disk has space again. What was applied
    /// but never made durable (and so never acknowledged) is gone, as after a restart.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut copy = self.copy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = copy.take() {
            // Serving a copy: the real store is another directory, so it opens while
            // the copy still answers, and reads never see a gap.
            let real = match open_db(&self.path, self.cache_bytes) {
                Ok(real) => real,
                Err(e) => {
                    *copy = Some(dir);
                    return Err(e);
                }
            };
            let served = self
                .db
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .replace(real);
            drop(served);
            let _ = std::fs::remove_dir_all(dir);
        } else {
            // Operations in flight keep their clone a moment; the open waits for
            // sled's file lock.
            let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
            drop(slot.take());
            *slot = Some(open_db(&self.path, self.cache_bytes)?);
        }
        Ok(())
    }

    /// sled's reads can write (a node split or merge met on the way), so once its
    /// log failed, reads fail now and then too. Reads go to a copy of what is on disk
    /// instead: everything acknowledged is there (it was flushed before the answer).
    fn serve_copy(&self) -> Result<bool, StoreError> {
        let Some(scratch) = &self.scratch else {
            return Ok(false);
        };
        let mut copy = self.copy.lock().unwrap_or_else(|p| p.into_inner());
        if copy.is_some() {
            return Ok(false);
        }
        let (dir, db) = open_scratch_copy(&self.path, scratch, self.cache_bytes)?;
        let failed = self
            .db
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .replace(db);
        drop(failed);
        *copy = Some(dir);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_do_not_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let kv = SledKv::open(dir.path(), 1 << 20).unwrap();
        let mut b = Batch::new();
        b.put("a", b"k1".to_vec(), b"1".to_vec());
        b.put("ab", b"k1".to_vec(), b"2".to_vec());
        b.put("a", b"k2".to_vec(), b"3".to_vec());
        kv.apply(b).unwrap();
        assert_eq!(kv.get("a", b"k1").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get("ab", b"k1").unwrap(), Some(b"2".to_vec()));
        let keys: Vec<Vec<u8>> = kv.scan_prefix("a", b"").map(|r| r.unwrap().0).collect();
        assert_eq!(keys, vec![b"k1".to_vec(), b"k2".to_vec()]);
        assert_eq!(kv.count("ab").unwrap(), 1);
        let mut b = Batch::new();
        b.delete("a", b"k1".to_vec());
        kv.apply(b).unwrap();
        assert_eq!(kv.get("a", b"k1").unwrap(), None);
    }

    #[test]
    fn reads_move_to_a_copy_and_back_to_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let kv = SledKv::open(dir.path(), 1 << 20)
            .unwrap()
            .with_scratch(scratch.path());
        let mut b = Batch::new();
        b.put("a", b"k1".to_vec(), b"1".to_vec());
        kv.apply(b).unwrap();
        kv.flush().unwrap();
        assert!(kv.serve_copy().unwrap());
        assert!(!kv.serve_copy().unwrap(), "one copy at a time");
        let copies = || std::fs::read_dir(scratch.path()).unwrap().count();
        assert_eq!(copies(), 1);
        assert_eq!(kv.get("a", b"k1").unwrap(), Some(b"1".to_vec()));
        kv.reopen().unwrap();
        assert_eq!(copies(), 0, "the copy is removed once the store is back");
        assert_eq!(kv.get("a", b"k1").unwrap(), Some(b"1".to_vec()));
        // Writes land in the real store again.
        let mut b = Batch::new();
        b.put("a", b"k2".to_vec(), b"2".to_vec());
        kv.apply(b).unwrap();
        kv.flush().unwrap();
        drop(kv);
        let kv = SledKv::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(kv.get("a", b"k2").unwrap(), Some(b"2".to_vec()));
    }

    /// Two workers inside sled calls that wait (here for a transaction holding sled's
    /// lock) must not stop the runtime's other tasks (lookups and search, in the server).
    #[test]
    fn a_sled_call_that_waits_does_not_stall_the_runtime() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        use std::sync::{mpsc, Arc};
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let kv = Arc::new(SledKv::open(dir.path(), 1 << 20).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // sled holds its lock for the whole of a transaction: this one until released.
        let (inside_tx, inside) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let holder = {
            let db = kv.db().unwrap();
            std::thread::spawn(move || {
                may_block(|| {
                    db.transaction(|_| {
                        let _ = inside_tx.send(());
                        let _ = released.recv();
                        Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                    })
                })
                .unwrap();
            })
        };
        inside.recv().unwrap();
        // Two tasks call sled: each holds its worker from here until sled answers.
        let entered = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (kv, entered) = (Arc::clone(&kv), Arc::clone(&entered));
                rt.spawn(async move {
                    entered.fetch_add(1, SeqCst);
                    kv.get("t", b"x").unwrap();
                })
            })
            .collect();
        while entered.load(SeqCst) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (pong, ponged) = mpsc::channel();
        rt.spawn(async move {
            let _ = pong.send(());
        });
        let ran_while_held = ponged.recv_timeout(Duration::from_secs(10)).is_ok();
        release.send(()).unwrap();
        holder.join().unwrap();
        for r in readers {
            rt.block_on(r).unwrap();
        }
        assert!(
            ran_while_held,
            "a task waited behind two workers blocked in sled"
        );
    }

    #[test]
    fn a_store_without_scratch_is_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let kv = SledKv::open(dir.path(), 1 << 20).unwrap();
        assert!(!kv.serve_copy().unwrap());
    }
}
