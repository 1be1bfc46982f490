//! How typed values become bytes in the store: one version byte, then bincode (2.x,
//! serde mode, standard config). All encoding lives here, so swapping the codec is this
//! file plus a migration. A record type bumps its `VERSION` when its layout changes and
//! a migration rewrites the old records; decoding a wrong version is a corruption error,
//! never a silent misread.

use super::StoreError;
use serde::{de::DeserializeOwned, Serialize};

/// A value stored in a tree.
pub trait Record: Serialize + DeserializeOwned {
    /// Layout version written in front of every encoded value.
    const VERSION: u8;
    /// Name for error messages.
    const NAME: &'static str;
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The most a decoded record may claim: a damaged length prefix must be an error, not
/// an allocation of gigabytes (found by fuzzing: 7 bytes asked for 2^38 of them).
const MAX_DECODED: usize = 16 << 20;

fn decode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_DECODED>,
> {
    config().with_limit::<MAX_DECODED>()
}

pub fn encode<T: Record>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![T::VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a {}: {e}", T::NAME)))?;
    Ok(out)
}

pub fn decode<T: Record>(bytes: &[u8]) -> Result<T, StoreError> {
    let rest = payload::<T>(bytes)?;
    finish::<T, _>(
        rest,
        bincode::serde::decode_from_slice(rest, decode_config()),
    )
}

/// Decodes a borrowed view `V` of a record of type `T` (same layout, with `&str` for
/// strings), so hot reads allocate nothing.
pub fn decode_view<'a, T: Record, V: serde::Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<V, StoreError> {
    let rest = payload::<T>(bytes)?;
    finish::<T, _>(
        rest,
        bincode::serde::borrow_decode_from_slice(rest, decode_config()),
    )
}

/// The bytes after a version byte that must be `T`'s.
fn payload<T: Record>(bytes: &[u8]) -> Result<&[u8], StoreError> {
    match bytes.split_first() {
        Some((&v, rest)) if v == T::VERSION => Ok(rest),
        Some((&v, _)) => Err(StoreError::Corrupt(format!(
            "a stored {} has layout version {v}, this binary reads version {}",
            T::NAME,
            T::VERSION
        ))),
        None => Err(StoreError::Corrupt(format!(
            "a stored {} is empty",
            T::NAME
        ))),
    }
}

/// A decoded value, if it used up every byte.
fn finish<T: Record, V>(
    rest: &[u8],
    decoded: Result<(V, usize), bincode::error::DecodeError>,
) -> Result<V, StoreError> {
    let (value, used) = decoded
        .map_err(|e| StoreError::Corrupt(format!("a stored {} is unreadable: {e}", T::NAME)))?;
    if used != rest.len() {
        return Err(StoreError::Corrupt(format!(
            "a stored {} has {} trailing bytes",
            T::NAME,
            rest.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        n: u64,
        tags: Vec<String>,
    }
    impl Record for Sample {
        const VERSION: u8 = 3;
        const NAME: &'static str = "sample";
    }

    #[test]
    fn round_trip_carries_the_version() {
        let s = Sample {
            name: "a".into(),
            n: 1 << 40,
            tags: vec!["x".into()],
        };
        let bytes = encode(&s).unwrap();
        assert_eq!(bytes[0], 3);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), s);
    }

    #[test]
    fn wrong_version_truncation_and_trailing_bytes_are_errors() {
        let mut bytes = encode(&Sample {
            name: "a".into(),
            n: 1,
            tags: vec![],
        })
        .unwrap();
        assert!(decode::<Sample>(&bytes[..bytes.len() - 1]).is_err());
        bytes.push(0);
        assert!(decode::<Sample>(&bytes).is_err());
        bytes[0] = 2;
        assert!(decode::<Sample>(&bytes).is_err());
        assert!(decode::<Sample>(&[]).is_err());
    }

    /// A damaged length prefix is an error, not an allocation (see store.rs's test).
    #[test]
    fn a_huge_claimed_length_is_an_error() {
        let huge = [3, 253, 255, 255, 255, 255, 255, 255, 255, 127];
        assert!(decode::<Sample>(&huge).is_err());
    }
}
