//! Cryptography: Matrix canonical JSON, ed25519 signing and verification, and the
//! signing-key files on disk. Nothing here knows about HTTP or the store; callers hand
//! in JSON values and get signed JSON values back.

pub mod canonical;
pub mod keyfile;
pub mod sign;

use base64::Engine as _;

/// Standard alphabet, no padding: the encoding Matrix uses for keys and signatures.
pub fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// Decodes base64 leniently: standard or URL-safe alphabet, padded or not, non-zero
/// trailing bits allowed (the spec asks decoders to accept padded and unpadded input,
/// v1.15 allows URL-safe ephemeral keys, and the spec's own test seed has trailing bits).
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::alphabet::{STANDARD, URL_SAFE};
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(&STANDARD, CONFIG);
    const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&URL_SAFE, CONFIG);
    if text.contains(['-', '_']) {
        LENIENT_URL_SAFE.decode(text).ok()
    } else {
        LENIENT_STANDARD.decode(text).ok()
    }
}

/// Fills a buffer from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf)?;
    Ok(buf)
}

/// A random string over `[A-Za-z0-9]`, built by rejection sampling so every character is
/// equally likely. Used for tokens, session secrets and peppers.
pub fn random_alphanumeric(len: usize) -> Result<String, getrandom::Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let chunk = random_bytes::<64>()?;
        for byte in chunk {
            // 248 = 4 * 62: bytes above it would bias the first characters.
            if byte < 248 && out.len() < len {
                out.push(char::from(ALPHABET[usize::from(byte % 62)]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_accepts_every_variant() {
        let bytes = [0xfbu8, 0xff, 0x01, 0x02];
        let std = b64_encode(&bytes);
        assert_eq!(std, "+/8BAg");
        assert_eq!(b64_decode("+/8BAg").as_deref(), Some(&bytes[..]));
        assert_eq!(b64_decode("+/8BAg==").as_deref(), Some(&bytes[..]));
        assert_eq!(b64_decode("-_8BAg").as_deref(), Some(&bytes[..]));
        assert_eq!(b64_decode("not base64!"), None);
    }

    #[test]
    fn random_alphanumeric_has_the_asked_length_and_alphabet() {
        let a = random_alphanumeric(64).unwrap();
        let b = random_alphanumeric(64).unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
