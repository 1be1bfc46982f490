//! The long-term signing key on disk, in ma1sd's key-store layout so an operator can
//! carry their key (and its id `ed25519:0`) across:
//!
//! ```text
//! <key.path>/current                  {"type":"regular","algo":"ed25519","serial":"0"}
//! <key.path>/regular/ed25519/<serial> {"version":"0","isValid":true,"key":"<b64 seed>"}
//! ```
//!
//! A key is generated only when the directory holds none; an existing key that cannot
//! be read is an error, never a reason to overwrite it.

use super::sign::Signer;
use super::{b64_decode, b64_encode, random_bytes};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Serial of a key this server generates: ids are `ed25519:0`, as Sydent and mxisd use.
const DEFAULT_SERIAL: &str = "0";

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key.path {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is not a valid key file: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("key.path {0} is a file; it must be a directory (ma1sd ≥ 1.4 key-store layout)")]
    NotADirectory(PathBuf),
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(getrandom::Error),
}

#[derive(Serialize, Deserialize)]
struct CurrentFile {
    #[serde(rename = "type")]
    kind: String,
    algo: String,
    serial: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyFile {
    version: String,
    is_valid: bool,
    key: String,
}

/// What `load_or_create` did, so start-up can log it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    Loaded,
    Generated,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Loads the current long-term key from `dir`, generating and saving one (mode 0600,
/// directory 0700) when the directory holds no key at all.
pub fn load_or_create(dir: &Path) -> Result<(Signer, KeyOrigin), KeyFileError> {
    if dir.is_file() {
        return Err(KeyFileError::NotADirectory(dir.to_owned()));
    }
    if let Some(signer) = load(dir)? {
        return Ok((signer, KeyOrigin::Loaded));
    }
    let seed = random_bytes::<32>().map_err(KeyFileError::Random)?;
    let signer = create(dir, DEFAULT_SERIAL, &seed)?;
    Ok((signer, KeyOrigin::Generated))
}

/// Saves `seed` as the current key `ed25519:<serial>` of the key store `dir` (created
/// mode 0700; files 0600), which must not hold that key already. For a new key, and
/// for a key brought from ma1sd.
pub fn create(dir: &Path, serial: &str, seed: &[u8; 32]) -> Result<Signer, KeyFileError> {
    if !valid_serial(serial) {
        return Err(KeyFileError::Invalid {
            path: dir.to_owned(),
            why: format!("bad serial {serial:?}"),
        });
    }
    let signer = Signer::new(SigningKey::from_bytes(seed), format!("ed25519:{serial}"));
    let key_dir = dir.join("regular").join("ed25519");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&key_dir)
        .map_err(io_err(dir))?;
    let key_json = serde_json::to_vec_pretty(&KeyFile {
        version: "0".into(),
        is_valid: true,
        key: b64_encode(seed),
    })
    .map_err(|e| KeyFileError::Invalid {
        path: key_dir.clone(),
        why: e.to_string(),
    })?;
    write_new(&key_dir.join(serial), &key_json)?;
    let current = serde_json::to_vec_pretty(&CurrentFile {
        kind: "regular".into(),
        algo: "ed25519".into(),
        serial: serial.into(),
    })
    .map_err(|e| KeyFileError::Invalid {
        path: dir.to_owned(),
        why: e.to_string(),
    })?;
    write_new(&dir.join("current"), &current)?;
    Ok(signer)
}

/// Reads the key without ever creating one (for `mxisd keys show`).
pub fn load(dir: &Path) -> Result<Option<Signer>, KeyFileError> {
    let current_path = dir.join("current");
    let serial = match fs::read(&current_path) {
        Ok(bytes) => {
            let current: CurrentFile =
                serde_json::from_slice(&bytes).map_err(|e| KeyFileError::Invalid {
                    path: current_path.clone(),
                    why: e.to_string(),
                })?;
            // ma1sd writes the type as its Java enum name, `Regular`.
            if current.algo != "ed25519" || !current.kind.eq_ignore_ascii_case("regular") {
                return Err(KeyFileError::Invalid {
                    path: current_path,
                    why: format!(
                        "names a {} {} key; only regular ed25519 keys are supported",
                        current.kind, current.algo
                    ),
                });
            }
            current.serial
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // ma1sd picks the first valid regular key when `current` is missing.
            match first_key_serial(&dir.join("regular").join("ed25519"))? {
                Some(serial) => serial,
                None => return Ok(None),
            }
        }
        Err(e) => return Err(io_err(&current_path)(e)),
    };
    if !valid_serial(&serial) {
        return Err(KeyFileError::Invalid {
            path: current_path,
            why: format!("bad serial {serial:?}"),
        });
    }
    let key_path = dir.join("regular").join("ed25519").join(&serial);
    let bytes = fs::read(&key_path).map_err(io_err(&key_path))?;
    let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| KeyFileError::Invalid {
        path: key_path.clone(),
        why: e.to_string(),
    })?;
    let seed: [u8; 32] = b64_decode(&file.key)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| KeyFileError::Invalid {
            path: key_path.clone(),
            why: "`key` is not a base64 32-byte ed25519 seed".into(),
        })?;
    Ok(Some(Signer::new(
        SigningKey::from_bytes(&seed),
        format!("ed25519:{serial}"),
    )))
}

/// Serials are file names: letters, digits, `-` and `_` only (ma1sd's are base64url).
pub fn valid_serial(serial: &str) -> bool {
    !serial.is_empty()
        && serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The serial to use when `current` is missing: `0` if present, else the first key
/// file (by name) marked valid, as ma1sd picks the first valid regular key.
fn first_key_serial(key_dir: &Path) -> Result<Option<String>, KeyFileError> {
    let entries = match fs::read_dir(key_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(key_dir)(e)),
    };
    let mut serials: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| valid_serial(name))
        .collect();
    serials.sort_by_key(|s| (s != DEFAULT_SERIAL, s.clone()));
    for serial in serials {
        let valid = fs::read(key_dir.join(&serial))
            .ok()
            .and_then(|b| serde_json::from_slice::<KeyFile>(&b).ok())
            .is_some_and(|k| k.is_valid);
        if valid {
            return Ok(Some(serial));
        }
    }
    Ok(None)
}

/// Writes a file that must not exist yet, mode 0600, synced, via a temporary name so a
/// crash never leaves a truncated key behind.
fn write_new(path: &Path, contents: &[u8]) -> Result<(), KeyFileError> {
    // A dot-prefixed temporary name is never taken for a key serial.
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(contents).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    if path.exists() {
        let _ = fs::remove_file(&tmp);
        return Err(KeyFileError::Invalid {
            path: path.to_owned(),
            why: "exists already; refusing to overwrite it".into(),
        });
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(parent) = path.parent() {
        if let Ok(dir) = fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generates_once_then_loads_the_same_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let (first, origin) = load_or_create(&dir).unwrap();
        assert_eq!(origin, KeyOrigin::Generated);
        assert_eq!(first.key_id(), "ed25519:0");
        let (second, origin) = load_or_create(&dir).unwrap();
        assert_eq!(origin, KeyOrigin::Loaded);
        assert_eq!(first.public_key_b64(), second.public_key_b64());
        let key_file = dir.join("regular/ed25519/0");
        let mode = fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn reads_a_ma1sd_key_store() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir_all(dir.join("regular/ed25519")).unwrap();
        // A ma1sd-style serial and a padded seed.
        let seed = [7u8; 32];
        let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, seed);
        fs::write(
            dir.join("regular/ed25519/AAABcdEf1"),
            format!(r#"{{"version":"0","isValid":true,"key":"{encoded}"}}"#),
        )
        .unwrap();
        // As ma1sd writes it: the type is the Java enum name.
        fs::write(
            dir.join("current"),
            r#"{"type":"Regular","algo":"ed25519","serial":"AAABcdEf1"}"#,
        )
        .unwrap();
        let signer = load(dir).unwrap().unwrap();
        assert_eq!(signer.key_id(), "ed25519:AAABcdEf1");
        let expected = b64_encode(SigningKey::from_bytes(&seed).verifying_key().as_bytes());
        assert_eq!(signer.public_key_b64(), expected);
    }

    #[test]
    fn a_broken_key_is_an_error_and_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        load_or_create(dir).unwrap();
        let key_file = dir.join("regular/ed25519/0");
        fs::write(&key_file, "garbage").unwrap();
        let err = load_or_create(dir).unwrap_err();
        assert!(matches!(err, KeyFileError::Invalid { .. }), "{err}");
        assert_eq!(fs::read_to_string(&key_file).unwrap(), "garbage");
        fs::write(dir.join("current"), "{").unwrap();
        assert!(load_or_create(dir).is_err());
    }

    #[test]
    fn without_current_the_first_valid_key_is_used_and_leftovers_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir_all(dir.join("regular/ed25519")).unwrap();
        let key = |valid: bool, byte: u8| {
            let encoded = b64_encode(&[byte; 32]);
            format!(r#"{{"version":"0","isValid":{valid},"key":"{encoded}"}}"#)
        };
        fs::write(dir.join("regular/ed25519/AAAA"), key(false, 1)).unwrap();
        fs::write(dir.join("regular/ed25519/BBBB"), key(true, 2)).unwrap();
        fs::write(dir.join("regular/ed25519/.0.tmp"), "trunc").unwrap();
        let signer = load(dir).unwrap().unwrap();
        assert_eq!(signer.key_id(), "ed25519:BBBB");
    }

    #[test]
    fn a_file_is_not_a_key_directory() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            load_or_create(tmp.path()),
            Err(KeyFileError::NotADirectory(_))
        ));
    }
}
