//! Backups of the store: a point-in-time copy taken while the server keeps serving and
//! writing, in one self-checking file, and its restore into a fresh store.
//!
//! **Consistency without stopping writes.** A backup starts by installing a
//! [`Snapshot`] under the store's write gate; from then on every batch, before it is
//! applied, saves the current value (or absence) of each key it touches that the
//! snapshot has not seen changed yet. The copy then walks the live keyspace and, for
//! every key changed since the start, writes the saved value instead; keys deleted
//! since the start are written from the saved values at the end. The file therefore
//! holds exactly the store as it was when the backup started: every batch applied
//! before it, none after it, never half of one. Writers never wait for the copy; the
//! cost is one read per changed key while a backup runs, and memory for the values
//! saved.
//!
//! **File format** (`.mxisd-backup`): the line `MXISD-BACKUP 1\n`, a length-prefixed JSON
//! header ([`Header`]), then records: `E` store entries (tree, key, value), `F` files of
//! the key store (relative path, content), and `Z`, the end: entry and file counts and
//! the SHA-256 of every byte before the digest. A file that is cut short, altered or
//! has trailing bytes is refused as a whole.

use super::kv::{full_key, Entry, Kv};
use super::StoreError;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

pub const MAGIC: &[u8] = b"MXISD-BACKUP 1\n";
const TAG_ENTRY: u8 = b'E';
const TAG_FILE: u8 = b'F';
const TAG_END: u8 = b'Z';
/// Bounds a reader enforces, so a damaged file cannot make it allocate wildly.
const MAX_HEADER: u32 = 64 * 1024;
const MAX_TREE: usize = 255;
const MAX_KEY: u32 = 1024 * 1024;
const MAX_VALUE: u32 = 256 * 1024 * 1024;
const MAX_FILE: u32 = 1024 * 1024;

/// What a backup says about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    /// mxisd version that wrote it.
    pub version: String,
    /// Store layout of the entries.
    pub schema: u32,
    pub created_ms: u64,
    pub server_name: String,
}

/// Pre-images of the keys changed since a backup started.
/// A key of a tree, and its value before the backup started (`None`: it had none).
type Saved = HashMap<(String, Vec<u8>), Option<Vec<u8>>>;

#[derive(Default)]
pub struct Snapshot {
    saved: Mutex<Saved>,
}

impl Snapshot {
    /// Saves the current value of each key of `ops` that has not been saved yet. Called
    /// before the batch is applied, under the store's write gate.
    pub(crate) fn capture(
        &self,
        kv: &dyn Kv,
        ops: &[(&'static str, Vec<u8>, super::kv::Op)],
    ) -> Result<(), StoreError> {
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        for (tree, key, _) in ops {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                saved.entry(((*tree).to_owned(), key.clone()))
            {
                slot.insert(kv.get(tree, key)?);
            }
        }
        Ok(())
    }

    fn saved(&self, tree: &str, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        saved.get(&(tree.to_owned(), key.to_vec())).cloned()
    }

    fn deleted_since(&self) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        let saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        saved
            .iter()
            .filter_map(|((t, k), v)| v.as_ref().map(|v| (t.clone(), k.clone(), v.clone())))
            .collect()
    }

    /// Keys saved so far (for status and tests).
    pub fn len(&self) -> usize {
        self.saved.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Splits a full key (`tree ‖ 0 ‖ key`) into its tree and key.
fn split(full: &[u8]) -> Option<(&str, &[u8])> {
    let at = full.iter().position(|b| *b == 0)?;
    let tree = std::str::from_utf8(&full[..at]).ok()?;
    Some((tree, &full[at + 1..]))
}

/// Writes the store's entries as of `snapshot`'s start (or, with no snapshot, as they
/// are: the store must not change meanwhile) and the key files to `out`.
pub fn write(
    kv: &dyn Kv,
    snapshot: Option<&Snapshot>,
    header: &Header,
    key_files: &[(String, Vec<u8>)],
    out: &mut dyn Write,
) -> Result<Summary, StoreError> {
    let mut w = Writer::new(out);
    w.raw(MAGIC)?;
    let header = serde_json::to_vec(header).map_err(|e| corrupt(e.to_string()))?;
    w.u32(len32(header.len())?)?;
    w.raw(&header)?;
    let mut entries = 0u64;
    for item in kv.scan_all() {
        let (full, value) = item?;
        let Some((tree, key)) = split(&full) else {
            return Err(corrupt("a key without a tree name".into()));
        };
        let value = match snapshot.and_then(|s| s.saved(tree, key)) {
            Some(Some(before)) => before,
            Some(None) => continue, // created after the start
            None => value,
        };
        w.entry(tree, key, &value)?;
        entries += 1;
    }
    if let Some(s) = snapshot {
        // Deleted after the start. A key the walk already wrote before it was deleted
        // comes again with the same value; a restore writes it twice, harmlessly.
        for (tree, key, value) in s.deleted_since() {
            w.entry(&tree, &key, &value)?;
            entries += 1;
        }
    }
    for (path, content) in key_files {
        w.tag(TAG_FILE)?;
        w.u16(u16::try_from(path.len()).map_err(|_| corrupt("key file path too long".into()))?)?;
        w.raw(path.as_bytes())?;
        w.u32(len32(content.len())?)?;
        w.raw(content)?;
    }
    w.tag(TAG_END)?;
    w.u64(entries)?;
    w.u64(key_files.len() as u64)?;
    let digest = w.hash.clone().finalize();
    w.out.write_all(&digest).map_err(io)?;
    w.out.flush().map_err(io)?;
    Ok(Summary {
        entries,
        files: key_files.len() as u64,
        bytes: w.written + 32,
    })
}

/// What a backup held.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// What [`read`] hands over as it goes.
pub enum Item {
    Entry(String, Vec<u8>, Vec<u8>),
    File(String, Vec<u8>),
}

/// Reads a backup from `input`, giving the header first (to refuse early) and then each
/// item to `each`. Only when this returns `Ok` was the file whole and unaltered: callers
/// write into staging places and throw them away on an error.
pub fn read(
    input: &mut dyn Read,
    check_header: &mut dyn FnMut(&Header) -> Result<(), String>,
    each: &mut dyn FnMut(Item) -> Result<(), StoreError>,
) -> Result<(Header, Summary), StoreError> {
    let mut r = Reader {
        input,
        hash: Sha256::new(),
        read: 0,
    };
    let mut magic = [0u8; MAGIC.len()];
    r.exact(&mut magic)
        .map_err(|_| corrupt("not an mxisd backup (too short)".into()))?;
    if magic != MAGIC {
        return Err(corrupt("not an mxisd backup (wrong magic line)".into()));
    }
    let header_len = r.u32()?;
    if header_len > MAX_HEADER {
        return Err(corrupt("header too long".into()));
    }
    let header: Header = serde_json::from_slice(&r.bytes(header_len)?)
        .map_err(|e| corrupt(format!("unreadable header: {e}")))?;
    check_header(&header).map_err(StoreError::Corrupt)?;
    let (mut entries, mut files) = (0u64, 0u64);
    loop {
        match r.u8()? {
            TAG_ENTRY => {
                let tree_len = usize::from(r.u8()?);
                let tree = String::from_utf8(r.bytes_usize(tree_len)?)
                    .map_err(|_| corrupt("a tree name is not UTF-8".into()))?;
                let key_len = r.u32()?;
                if key_len > MAX_KEY {
                    return Err(corrupt("a key is too long".into()));
                }
                let key = r.bytes(key_len)?;
                let value_len = r.u32()?;
                if value_len > MAX_VALUE {
                    return Err(corrupt("a value is too long".into()));
                }
                let value = r.bytes(value_len)?;
                entries += 1;
                each(Item::Entry(tree, key, value))?;
            }
            TAG_FILE => {
                let path_len = r.u16()?;
                let path = String::from_utf8(r.bytes_usize(usize::from(path_len))?)
                    .map_err(|_| corrupt("a key file name is not UTF-8".into()))?;
                let len = r.u32()?;
                if len > MAX_FILE {
                    return Err(corrupt("a key file is too long".into()));
                }
                let content = r.bytes(len)?;
                files += 1;
                each(Item::File(path, content))?;
            }
            TAG_END => {
                let (want_entries, want_files) = (r.u64()?, r.u64()?);
                let computed = r.hash.clone().finalize();
                let mut stored = [0u8; 32];
                r.input
                    .read_exact(&mut stored)
                    .map_err(|_| corrupt("cut short in the checksum".into()))?;
                if computed[..] != stored {
                    return Err(corrupt(
                        "checksum mismatch: the file was altered or damaged".into(),
                    ));
                }
                if (want_entries, want_files) != (entries, files) {
                    return Err(corrupt("record counts do not match".into()));
                }
                let mut extra = [0u8; 1];
                if r.input.read(&mut extra).map_err(io)? != 0 {
                    return Err(corrupt("bytes after the end".into()));
                }
                return Ok((
                    header,
                    Summary {
                        entries,
                        files,
                        bytes: r.read + 32,
                    },
                ));
            }
            other => return Err(corrupt(format!("unknown record type {other:#04x}"))),
        }
    }
}

fn corrupt(why: String) -> StoreError {
    StoreError::Corrupt(format!("backup: {why}"))
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Io {
        what: "backup".into(),
        detail: e.to_string(),
    }
}

fn len32(n: usize) -> Result<u32, StoreError> {
    u32::try_from(n).map_err(|_| corrupt("a value is larger than 4 GiB".into()))
}

struct Writer<'a> {
    out: &'a mut dyn Write,
    hash: Sha256,
    written: u64,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut dyn Write) -> Self {
        Self {
            out,
            hash: Sha256::new(),
            written: 0,
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.hash.update(bytes);
        self.written += bytes.len() as u64;
        self.out.write_all(bytes).map_err(io)
    }

    fn tag(&mut self, tag: u8) -> Result<(), StoreError> {
        self.raw(&[tag])
    }

    fn u16(&mut self, n: u16) -> Result<(), StoreError> {
        self.raw(&n.to_be_bytes())
    }

    fn u32(&mut self, n: u32) -> Result<(), StoreError> {
        self.raw(&n.to_be_bytes())
    }

    fn u64(&mut self, n: u64) -> Result<(), StoreError> {
        self.raw(&n.to_be_bytes())
    }

    fn entry(&mut self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if tree.len() > MAX_TREE {
            return Err(corrupt("a tree name is too long".into()));
        }
        self.tag(TAG_ENTRY)?;
        self.raw(&[tree.len() as u8])?;
        self.raw(tree.as_bytes())?;
        self.u32(len32(key.len())?)?;
        self.raw(key)?;
        self.u32(len32(value.len())?)?;
        self.raw(value)
    }
}

struct Reader<'a> {
    input: &'a mut dyn Read,
    hash: Sha256,
    read: u64,
}

impl Reader<'_> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), StoreError> {
        self.input
            .read_exact(buf)
            .map_err(|_| corrupt("the file is cut short".into()))?;
        self.hash.update(&*buf);
        self.read += buf.len() as u64;
        Ok(())
    }

    fn bytes(&mut self, n: u32) -> Result<Vec<u8>, StoreError> {
        self.bytes_usize(n as usize)
    }

    fn bytes_usize(&mut self, n: usize) -> Result<Vec<u8>, StoreError> {
        let mut v = Vec::new();
        // Read in steps so a damaged length costs at most what the file really holds.
        let mut left = n;
        let mut chunk = [0u8; 64 * 1024];
        while left > 0 {
            let step = left.min(chunk.len());
            self.exact(&mut chunk[..step])?;
            v.extend_from_slice(&chunk[..step]);
            left -= step;
        }
        Ok(v)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        let mut b = [0u8; 2];
        self.exact(&mut b)?;
        Ok(u16::from_be_bytes(b))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut b = [0u8; 8];
        self.exact(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }
}

/// Writes restored entries in batches of this many.
pub const RESTORE_BATCH: usize = 10_000;

/// A store being filled by a restore.
pub struct Filler<'a> {
    kv: &'a dyn Kv,
    pending: Vec<Entry>,
}

impl<'a> Filler<'a> {
    pub fn new(kv: &'a dyn Kv) -> Self {
        Self {
            kv,
            pending: Vec::new(),
        }
    }

    pub fn put(&mut self, tree: &str, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.pending.push((full_key(tree, key), value));
        if self.pending.len() >= RESTORE_BATCH {
            self.kv.put_raw(std::mem::take(&mut self.pending))?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<(), StoreError> {
        self.kv.put_raw(std::mem::take(&mut self.pending))?;
        self.kv.flush()
    }
}

/// A running backup's hold on the store: removes the snapshot when dropped.
pub struct Running {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) slot: Arc<std::sync::RwLock<Option<Arc<Snapshot>>>>,
}

impl Running {
    /// Keys changed since the backup started (their old values are held in memory).
    pub fn snapshot_len(&self) -> usize {
        self.snapshot.len()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        if slot
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &self.snapshot))
        {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::Batch;
    use crate::store::mem_kv::MemKv;

    fn header() -> Header {
        Header {
            version: "test".into(),
            schema: 1,
            created_ms: 1,
            server_name: "example.org".into(),
        }
    }

    type Triples = Vec<(String, Vec<u8>, Vec<u8>)>;

    fn read_all(bytes: &[u8]) -> Result<(Triples, Vec<String>), StoreError> {
        let mut entries = Vec::new();
        let mut files = Vec::new();
        read(&mut &bytes[..], &mut |_| Ok(()), &mut |item| {
            match item {
                Item::Entry(t, k, v) => entries.push((t, k, v)),
                Item::File(p, _) => files.push(p),
            }
            Ok(())
        })?;
        entries.sort();
        entries.dedup();
        Ok((entries, files))
    }

    #[test]
    fn round_trip_and_damage_is_refused() {
        let kv = MemKv::new();
        let mut b = Batch::new();
        b.put("a", b"k1".to_vec(), b"v1".to_vec());
        b.put("b", b"k\x002".to_vec(), vec![0; 100_000]);
        kv.apply(b).unwrap();
        let mut out = Vec::new();
        let files = vec![("current".to_owned(), b"{}".to_vec())];
        let summary = write(&kv, None, &header(), &files, &mut out).unwrap();
        assert_eq!((summary.entries, summary.files), (2, 1));
        assert_eq!(summary.bytes, out.len() as u64);
        let (entries, names) = read_all(&out).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].1, b"k\x002");
        assert_eq!(names, ["current"]);
        // Every single flipped byte, a cut anywhere and extra bytes are all refused.
        for at in (0..out.len()).step_by(997).chain([out.len() - 1]) {
            let mut bad = out.clone();
            bad[at] ^= 0x40;
            assert!(read_all(&bad).is_err(), "flip at {at}");
        }
        for cut in [0, 5, 40, out.len() / 2, out.len() - 1] {
            assert!(read_all(&out[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = out.clone();
        longer.push(0);
        assert!(read_all(&longer).is_err());
        // A header the caller refuses stops the read before any item.
        let mut seen = 0;
        let refused = read(&mut &out[..], &mut |_| Err("too new".into()), &mut |_| {
            seen += 1;
            Ok(())
        });
        assert!(refused.is_err());
        assert_eq!(seen, 0);
    }

    #[test]
    fn a_snapshot_hides_every_change_after_its_start() {
        let kv = MemKv::new();
        let mut b = Batch::new();
        for i in 0..10u8 {
            b.put("t", vec![i], vec![i]);
        }
        kv.apply(b).unwrap();
        let snap = Snapshot::default();
        // After the start: change 1, delete 2, create 20 (each captured before applied).
        let mut b = Batch::new();
        b.put("t", vec![1], vec![99]);
        b.delete("t", vec![2]);
        b.put("t", vec![20], vec![20]);
        snap.capture(&kv, &b.ops).unwrap();
        kv.apply(b.clone()).unwrap();
        // A second change of the same key keeps the first saved value.
        let mut b2 = Batch::new();
        b2.put("t", vec![1], vec![100]);
        snap.capture(&kv, &b2.ops).unwrap();
        kv.apply(b2).unwrap();
        let mut out = Vec::new();
        write(&kv, Some(&snap), &header(), &[], &mut out).unwrap();
        let (entries, _) = read_all(&out).unwrap();
        let expect: Vec<_> = (0..10u8)
            .map(|i| ("t".to_owned(), vec![i], vec![i]))
            .collect();
        assert_eq!(entries, expect);
    }
}
