//! ma1sd's key store, read-only: `<key.path>/current` (`{"type":"Regular","algo":
//! "ed25519","serial":...}`), `regular/ed25519/<serial>` and `ephemeral/ed25519/<serial>`
//! (`{"version":"0","isValid":...,"key":"<base64 seed>"}`), or mxisd's pre-1.4 single
//! key file (the base64 seed on its first line), which ma1sd itself migrates to serial
//! `0`. Never writes; messages name files, never seeds.

use crate::crypto::keyfile::valid_serial;
use crate::crypto::{b64_decode, b64_encode};
use serde::Deserialize;
use std::fs;
use std::path::{Path, PathBuf};

/// ma1sd's long-term key.
pub struct TheirKey {
    pub serial: String,
    pub seed: [u8; 32],
    /// Unpadded base64 of the public key.
    pub public: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// Other regular keys in the store (not carried over: mxisd serves one).
    pub other_regular: Vec<String>,
    /// `<key.path>/ephemeral/ed25519`, when `key.path` is a directory.
    pub ephemeral_dir: Option<PathBuf>,
}

impl std::fmt::Debug for TheirKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TheirKey")
            .field("serial", &self.serial)
            .field("public", &self.public)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Current {
    #[serde(rename = "type")]
    kind: String,
    algo: String,
    serial: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyJson {
    key: String,
    #[serde(default = "yes")]
    is_valid: bool,
}

fn yes() -> bool {
    true
}

fn seed_of(text: &str) -> Option<[u8; 32]> {
    b64_decode(text.trim()).and_then(|b| b.try_into().ok())
}

fn public_of(seed: &[u8; 32]) -> String {
    b64_encode(
        ed25519_dalek::SigningKey::from_bytes(seed)
            .verifying_key()
            .as_bytes(),
    )
}

/// Reads one `{version,isValid,key}` file: (seed, isValid).
fn read_key_file(path: &Path) -> Result<([u8; 32], bool), String> {
    let bytes = fs::read(path).map_err(|e| format!("key file {}: {e}", path.display()))?;
    let json: KeyJson = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "key file {} is not a ma1sd key file ({{\"version\",\"isValid\",\"key\"}}): {e}",
            path.display()
        )
    })?;
    let seed = seed_of(&json.key).ok_or_else(|| {
        format!(
            "key file {}: \"key\" is not a base64 32-byte ed25519 seed",
            path.display()
        )
    })?;
    Ok((seed, json.is_valid))
}

/// File names in `dir` that can be serials, sorted; none when `dir` is missing.
fn serials(dir: &Path) -> Result<Vec<String>, String> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut out: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| valid_serial(n))
        .collect();
    out.sort();
    Ok(out)
}

/// Reads ma1sd's long-term key from `path` (a key store directory, or the pre-1.4
/// single key file). Every problem is a one-line message naming the file.
pub fn read(path: &Path) -> Result<TheirKey, String> {
    let meta = fs::metadata(path).map_err(|e| {
        format!(
            "key.path {}: {e} (ma1sd's key store must be there to keep the key id and public key)",
            path.display()
        )
    })?;
    if meta.is_file() {
        // mxisd < 1.4: one file holding the base64 seed; ma1sd imports it as serial 0.
        let text =
            fs::read_to_string(path).map_err(|e| format!("key file {}: {e}", path.display()))?;
        let line = text.lines().map(str::trim).find(|l| !l.is_empty());
        let seed = line.and_then(seed_of).ok_or_else(|| {
            format!(
                "key file {} is not a key (mxisd before 1.4 kept the base64 ed25519 seed on one line)",
                path.display()
            )
        })?;
        return Ok(TheirKey {
            serial: "0".into(),
            public: public_of(&seed),
            seed,
            file: path.to_owned(),
            other_regular: Vec::new(),
            ephemeral_dir: None,
        });
    }
    let regular = path.join("regular").join("ed25519");
    let all = serials(&regular)?;
    let current_path = path.join("current");
    let serial = match fs::read(&current_path) {
        Ok(bytes) => {
            let c: Current = serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} is not ma1sd's current-key file ({{\"type\",\"algo\",\"serial\"}}): {e}",
                    current_path.display()
                )
            })?;
            if !c.kind.eq_ignore_ascii_case("regular") || c.algo != "ed25519" {
                return Err(format!(
                    "{} names a {} {} key; only a regular ed25519 key can be the signing key",
                    current_path.display(),
                    c.kind,
                    c.algo
                ));
            }
            if !valid_serial(&c.serial) {
                return Err(format!(
                    "{}: {:?} is not a key serial",
                    current_path.display(),
                    c.serial
                ));
            }
            c.serial
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match all.as_slice() {
            [] => {
                return Err(format!(
                    "key.path {}: no signing key (neither current nor regular/ed25519/<serial>)",
                    path.display()
                ))
            }
            [only] => only.clone(),
            _ if all.iter().any(|s| s == "0") => "0".into(),
            _ => {
                return Err(format!(
                    "key.path {}: several regular keys and no current file; write {} naming the one ma1sd signs with",
                    path.display(),
                    current_path.display()
                ))
            }
        },
        Err(e) => return Err(format!("{}: {e}", current_path.display())),
    };
    let file = regular.join(&serial);
    let (seed, _valid) = read_key_file(&file)?;
    Ok(TheirKey {
        other_regular: all.into_iter().filter(|s| *s != serial).collect(),
        public: public_of(&seed),
        seed,
        serial,
        file,
        ephemeral_dir: Some(path.join("ephemeral").join("ed25519")),
    })
}

/// The public key of ma1sd's ephemeral key `serial`: `Ok(None)` when its file is gone.
pub fn ephemeral_public(dir: &Path, serial: &str) -> Result<Option<String>, String> {
    if !valid_serial(serial) {
        return Err(format!("{serial:?} is not a key serial"));
    }
    let file = dir.join(serial);
    if !file.exists() {
        return Ok(None);
    }
    read_key_file(&file).map(|(seed, _)| Some(public_of(&seed)))
}

/// How many ephemeral keys the store holds.
pub fn ephemeral_count(dir: &Path) -> usize {
    serials(dir).map_or(0, |s| s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_json(seed: [u8; 32], valid: bool) -> String {
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD_NO_PAD, seed);
        format!(r#"{{"version":"0","isValid":{valid},"key":"{key}"}}"#)
    }

    #[test]
    fn reads_the_current_key_of_a_ma1sd_store() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir_all(dir.join("regular/ed25519")).unwrap();
        fs::create_dir_all(dir.join("ephemeral/ed25519")).unwrap();
        fs::write(
            dir.join("regular/ed25519/AAAAAb1x"),
            key_json([1; 32], true),
        )
        .unwrap();
        fs::write(
            dir.join("regular/ed25519/AAAAAc2y"),
            key_json([2; 32], true),
        )
        .unwrap();
        fs::write(
            dir.join("current"),
            r#"{"type":"Regular","algo":"ed25519","serial":"AAAAAc2y"}"#,
        )
        .unwrap();
        fs::write(dir.join("ephemeral/ed25519/E1"), key_json([3; 32], true)).unwrap();
        let k = read(dir).unwrap();
        assert_eq!(k.serial, "AAAAAc2y");
        assert_eq!(k.seed, [2; 32]);
        assert_eq!(k.public, public_of(&[2; 32]));
        assert_eq!(k.other_regular, vec!["AAAAAb1x".to_owned()]);
        let eph = k.ephemeral_dir.unwrap();
        assert_eq!(
            ephemeral_public(&eph, "E1").unwrap(),
            Some(public_of(&[3; 32]))
        );
        assert_eq!(ephemeral_public(&eph, "E2").unwrap(), None);
        assert!(ephemeral_public(&eph, "../x").is_err());
        assert_eq!(ephemeral_count(&eph), 1);
    }

    #[test]
    fn the_pre_1_4_single_file_becomes_serial_0() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("sign.key");
        let seed = [7u8; 32];
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD_NO_PAD, seed);
        fs::write(&file, format!("\n{b64}\n")).unwrap();
        let k = read(&file).unwrap();
        assert_eq!((k.serial.as_str(), k.seed), ("0", seed));
        fs::write(&file, "not a key").unwrap();
        assert!(read(&file).unwrap_err().contains("is not a key"));
    }

    #[test]
    fn broken_stores_are_one_line_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert!(read(&dir.join("nope")).unwrap_err().contains("nope"));
        assert!(read(dir).unwrap_err().contains("no signing key"));
        fs::create_dir_all(dir.join("regular/ed25519")).unwrap();
        fs::write(dir.join("regular/ed25519/0"), "garbage").unwrap();
        let e = read(dir).unwrap_err();
        assert!(
            e.contains("regular/ed25519/0") && e.contains("not a ma1sd key file"),
            "{e}"
        );
        fs::write(dir.join("regular/ed25519/0"), key_json([1; 32], true)).unwrap();
        fs::write(dir.join("regular/ed25519/1"), key_json([2; 32], true)).unwrap();
        // Two keys, no current: serial 0 wins, as our own loader picks it.
        assert_eq!(read(dir).unwrap().serial, "0");
        fs::write(dir.join("current"), "{").unwrap();
        assert!(read(dir).unwrap_err().contains("current-key file"));
        fs::write(
            dir.join("current"),
            r#"{"type":"Ephemeral","algo":"ed25519","serial":"1"}"#,
        )
        .unwrap();
        assert!(read(dir).unwrap_err().contains("Ephemeral"));
    }
}
